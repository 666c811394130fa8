//! `--on-hung-evaluation kill`: once EvaluationHung fires, the process subtree of each
//! hung evaluation is ended (SIGTERM, then SIGKILL after `--grace`), and the loop goes
//! on without it, as after its own timeout.
//!
//! Only a pid the evaluation reported is acted on, and only when that pid is a
//! process of the loop's own tree (below loopwatch, which is the subreaper of the
//! loop) and still the process it named: the monitor read that process's start time
//! when the evaluation reported the pid ([`HungEvaluation::pid_start_ticks`]), and
//! each process is checked by its start time right before each signal, so a pid
//! reused meanwhile is never signalled. Never signalled, each refusal counted in
//! `loopwatch_rejected_observations_total{field="evaluation"}` and logged:
//! - a pid outside the tree (`reason="pid_outside_tree"`);
//! - the loop itself (`reason="loop_process"`): its direct child, a process that
//!   reported the loop's iterations over the socket (its sender, by `SO_PEERCRED`),
//!   or any process above one of those, since ending a subtree that holds the loop
//!   ends the loop (which is `--on-stall`'s business);
//! - a pid that other evaluations in flight reported too (`reason="shared_process"`):
//!   they would end with it. This one is looked at again once the others have ended.
//!
//! Each kill ends the evaluation with outcome `killed`, and is logged with the
//! evaluation's id and age.
//!
//! A hung evaluation whose pid no longer runs (its process exited without the
//! evaluation's end, before or while it was being signalled), or runs a process
//! with another start time than the one reported, is not outside the tree: it ends
//! as failed with the reason `process gone`
//! ([`Supervision::evaluation_process_gone`]), which resolves EvaluationHung.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use loopwatch::cleanup::{descendants, ProcessId};
use loopwatch::supervise::{HungEvaluation, Intake, KillRefused, Supervision};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// What to do with the evaluations EvaluationHung finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OnHungEvaluation {
    /// Nothing beyond the alert (the default).
    #[default]
    None,
    /// Terminate each hung evaluation's process subtree (SIGTERM, SIGKILL after the
    /// grace period) when it reported a pid inside the loop's own process tree.
    Kill,
}

/// What is done with a hung evaluation's reported pid, given the loop's processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// A process of the loop's tree: ended, with every process below it (each as
    /// listed, with its start time; the evaluation's own first).
    End(Vec<ProcessId>),
    /// The loop itself, or a process above it: never ended for one evaluation.
    TheLoop,
    /// A running process outside the loop's tree: never signalled.
    Outside,
    /// A process that other evaluations in flight run in too: not signalled.
    Shared,
    /// The evaluation's process is gone: no process runs under the pid any more, or
    /// one with another start time than when the evaluation reported it.
    Gone,
}

/// What the supervisor knows of the loop's processes at one look.
#[derive(Debug)]
pub(crate) struct LoopProcesses {
    /// Every process below loopwatch now, each with its start time.
    pub(crate) tree: Vec<ProcessId>,
    /// The loop's direct child.
    pub(crate) leader: u32,
    /// The processes that reported the loop's iterations.
    pub(crate) reporters: Vec<ProcessId>,
}

impl LoopProcesses {
    /// Reads them now.
    fn now(intake: &Intake, leader: Pid) -> Self {
        LoopProcesses {
            tree: descendants(std::process::id()),
            leader: u32::try_from(leader.as_raw()).unwrap_or(0),
            reporters: intake.loop_processes(),
        }
    }

    /// Decides on `pid`, reported by a hung evaluation when the process under it had
    /// started at `started` (clock ticks after boot; `None`: no process ran under it
    /// then), and that `sharing` other evaluations in flight reported too.
    pub(crate) fn decide(&self, pid: u32, started: Option<u64>, sharing: usize) -> Decision {
        if pid == self.leader {
            return Decision::TheLoop;
        }
        let listed = self.tree.iter().find(|process| process.pid == pid).copied();
        let Some(root) = listed.or_else(|| ProcessId::running(pid)) else {
            return Decision::Gone;
        };
        if Some(root.start_ticks) != started {
            // Another process took the pid since: the evaluation's is gone.
            return Decision::Gone;
        }
        if listed.is_none() {
            return Decision::Outside;
        }
        let mut processes = vec![root];
        processes.extend(descendants(root.pid));
        if processes.iter().any(|p| self.reporters.contains(p)) {
            return Decision::TheLoop;
        }
        if sharing > 0 {
            return Decision::Shared;
        }
        Decision::End(processes)
    }
}

/// One hung evaluation being ended: its processes, and when what is left of them is
/// killed.
#[derive(Debug)]
struct Ending {
    /// The evaluation's process first, then those below it.
    processes: Vec<ProcessId>,
    kill_at: Instant,
}

/// The hung evaluations of one start of the loop: those being ended, and those
/// already acted on (each is acted on once).
#[derive(Debug, Default)]
pub(super) struct HungEvaluations {
    ending: Vec<Ending>,
    /// Ids acted on (ended, refused, or without a pid), while they stay hung.
    handled: HashSet<String>,
    /// Ids refused because others share their pid, while they stay hung: looked at
    /// again once no other evaluation does.
    shared: HashSet<String>,
}

impl HungEvaluations {
    /// One look, on the supervisor's tick: what is left of the evaluations ended a
    /// grace period ago is killed, and the newly hung ones are ended or refused.
    /// `intake` knows the processes that reported the loop's iterations, `leader` is
    /// the loop's direct child.
    pub(super) fn tick(
        &mut self,
        supervision: &Supervision,
        intake: &Intake,
        leader: Pid,
        grace: Duration,
    ) {
        let now = Instant::now();
        self.ending.retain(|ending| {
            if ending.kill_at > now {
                return true;
            }
            let mut processes = ending.processes.clone();
            if let Some(root) = processes.first().filter(|root| root.is_running()) {
                // What it started since SIGTERM.
                processes.extend(descendants(root.pid));
            }
            let killed = signal_each(&processes, Signal::SIGKILL);
            if killed > 0 {
                tracing::warn!(
                    pid = processes[0].pid,
                    killed,
                    "a hung evaluation's processes outlived the grace period; killed them"
                );
            }
            false
        });
        let hung = supervision.hung_evaluations();
        let ids: HashSet<&str> = hung.iter().map(|h| h.id.as_str()).collect();
        self.handled.retain(|id| ids.contains(id.as_str()));
        self.shared.retain(|id| ids.contains(id.as_str()));
        // The loop's processes, read once per look and only when there is news.
        let mut processes: Option<LoopProcesses> = None;
        for evaluation in &hung {
            let news = !self.handled.contains(&evaluation.id)
                && (evaluation.sharing_pid == 0 || !self.shared.contains(&evaluation.id));
            if news {
                let processes = processes.get_or_insert_with(|| LoopProcesses::now(intake, leader));
                self.act_on(supervision, evaluation, processes, grace);
            }
        }
    }

    /// Ends `evaluation`'s processes, or refuses to.
    fn act_on(
        &mut self,
        supervision: &Supervision,
        evaluation: &HungEvaluation,
        processes: &LoopProcesses,
        grace: Duration,
    ) {
        let age = humantime::format_duration(Duration::from_secs(evaluation.age.as_secs()));
        let id = evaluation.id.as_str();
        self.handled.insert(evaluation.id.clone());
        let Some(pid) = evaluation.pid else {
            tracing::warn!(evaluation = id, %age, "a hung evaluation reported no pid; not ending it");
            return;
        };
        let started = evaluation.pid_start_ticks;
        let processes = match processes.decide(pid, started, evaluation.sharing_pid) {
            Decision::End(processes) => processes,
            Decision::TheLoop => {
                tracing::warn!(evaluation = id, %age, pid, "a hung evaluation runs in the loop's own process, or above it; not ending it (see --on-stall)");
                supervision.evaluation_kill_refused(pid, KillRefused::LoopProcess);
                return;
            }
            Decision::Outside => {
                tracing::warn!(evaluation = id, %age, pid, "a hung evaluation reported a pid outside the loop's process tree; not signalling it");
                supervision.evaluation_kill_refused(pid, KillRefused::OutsideTree);
                return;
            }
            Decision::Shared => {
                // Looked at again once no other evaluation reports its pid.
                self.handled.remove(id);
                if self.shared.insert(evaluation.id.clone()) {
                    tracing::warn!(evaluation = id, %age, pid, sharing = evaluation.sharing_pid, "a hung evaluation's process runs other evaluations in flight too; not signalling it while they do");
                    supervision.evaluation_kill_refused(pid, KillRefused::SharedProcess);
                }
                return;
            }
            Decision::Gone => {
                tracing::warn!(evaluation = id, %age, pid, "a hung evaluation's process is gone without its end (the pid no longer runs, or runs another process since); it ends as failed (process gone)");
                supervision.evaluation_process_gone(id);
                return;
            }
        };
        // The evaluation's own process first: the rest are its.
        if signal_each(&processes[..1], Signal::SIGTERM) == 0 {
            tracing::warn!(
                evaluation = id,
                %age,
                pid,
                "a hung evaluation's process ended before it could be signalled; it ends as failed (process gone)"
            );
            supervision.evaluation_process_gone(id);
            return;
        }
        signal_each(&processes[1..], Signal::SIGTERM);
        signal_each(&processes, Signal::SIGCONT);
        tracing::warn!(
            evaluation = id,
            %age,
            pid,
            worker = evaluation.worker.as_deref().unwrap_or(""),
            processes = processes.len(),
            grace = %humantime::format_duration(grace),
            "ending a hung evaluation: SIGTERM to its processes, SIGKILL after the grace period"
        );
        supervision.evaluation_killed(id);
        self.ending.push(Ending {
            processes,
            kill_at: Instant::now() + grace,
        });
    }
}

/// Sends `signal` to each process still running (checked by start time just
/// before); how many were signalled.
fn signal_each(processes: &[ProcessId], signal: Signal) -> usize {
    processes
        .iter()
        .filter(|process| {
            process.is_running()
                && kill(
                    Pid::from_raw(i32::try_from(process.pid).unwrap_or(i32::MAX)),
                    signal,
                )
                .is_ok()
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start time of the process under `pid` now.
    fn started(pid: u32) -> Option<u64> {
        ProcessId::running(pid).map(|p| p.start_ticks)
    }

    /// The loop's processes as seen now, `leader` its direct child.
    fn seen(leader: u32, reporters: &[ProcessId]) -> LoopProcesses {
        LoopProcesses {
            tree: descendants(std::process::id()),
            leader,
            reporters: reporters.to_vec(),
        }
    }

    /// A `sh` that runs a `sleep` below it, and the `sleep` once it runs.
    fn parent_and_child() -> (std::process::Child, ProcessId) {
        let parent = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        let mut child = None;
        wait_for("the sleep below sh", || {
            child = descendants(parent.id()).first().copied();
            child.is_some()
        });
        (parent, child.unwrap())
    }

    /// Ends `parent` and the `child` below it.
    fn end(mut parent: std::process::Child, child: ProcessId) {
        signal_each(&[child], Signal::SIGKILL);
        parent.kill().unwrap();
        parent.wait().unwrap();
    }

    #[test]
    fn only_a_pid_of_the_loops_tree_other_than_the_loop_itself_is_ended() {
        let mut worker = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let tree = descendants(std::process::id());
        let listed = *tree.iter().find(|p| p.pid == worker.id()).unwrap();
        let since = Some(listed.start_ticks);
        assert_eq!(
            seen(1, &[]).decide(worker.id(), since, 0),
            Decision::End(vec![listed]),
            "below this process"
        );
        assert_eq!(
            seen(worker.id(), &[]).decide(worker.id(), since, 0),
            Decision::TheLoop
        );
        // This process's parent runs, and is not below it.
        let parent = std::os::unix::process::parent_id();
        assert!(ProcessId::running(parent).is_some());
        assert_eq!(
            seen(1, &[]).decide(parent, started(parent), 0),
            Decision::Outside
        );
        let me = std::process::id();
        assert_eq!(seen(1, &[]).decide(me, started(me), 0), Decision::Outside);
        worker.kill().unwrap();
        worker.wait().unwrap();
        // Gone: not outside the tree, and not signalled whatever reuses its pid.
        assert_eq!(seen(1, &[]).decide(worker.id(), since, 0), Decision::Gone);
        assert!(!listed.is_running());
        assert_eq!(signal_each(&[listed], Signal::SIGTERM), 0);
    }

    /// A process that runs under a pid the evaluation reported for another (its pid
    /// reused since: another start time), or that ran under none when it was
    /// reported, is never signalled: the evaluation's process is gone.
    #[test]
    fn a_pid_is_signalled_only_while_its_start_time_is_the_one_reported() {
        let mut worker = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let running = ProcessId::running(worker.id()).unwrap();
        let loop_now = seen(1, &[]);
        let pid = worker.id();
        assert_eq!(
            loop_now.decide(pid, Some(running.start_ticks), 0),
            Decision::End(vec![running])
        );
        for reported in [
            Some(running.start_ticks - 1),
            Some(running.start_ticks + 1),
            None,
        ] {
            assert_eq!(
                loop_now.decide(pid, reported, 0),
                Decision::Gone,
                "reported with {reported:?}"
            );
        }
        // Outside the tree too.
        let parent = std::os::unix::process::parent_id();
        let other = started(parent).map(|t| t + 1);
        assert_eq!(loop_now.decide(parent, other, 0), Decision::Gone);
        worker.kill().unwrap();
        worker.wait().unwrap();
    }

    #[test]
    fn a_process_reporting_iterations_and_every_process_above_it_are_never_ended() {
        let (parent, child) = parent_and_child();
        let above = ProcessId::running(parent.id()).unwrap();
        let (sh, sleep) = (Some(above.start_ticks), Some(child.start_ticks));
        assert_eq!(
            seen(1, &[]).decide(parent.id(), sh, 0),
            Decision::End(vec![above, child]),
            "a worker with a child of its own"
        );
        // The sleep reports the loop's iterations: neither it nor the sh is ended.
        let the_loop = seen(1, &[child]);
        assert_eq!(the_loop.decide(child.pid, sleep, 0), Decision::TheLoop);
        assert_eq!(the_loop.decide(parent.id(), sh, 0), Decision::TheLoop);
        // Other evaluations in flight on the same pid: not signalled.
        assert_eq!(seen(1, &[]).decide(child.pid, sleep, 1), Decision::Shared);
        assert_eq!(
            seen(1, &[]).decide(child.pid, sleep, 0),
            Decision::End(vec![child])
        );
        end(parent, child);
    }

    /// A loop's direct child that is none of the processes here.
    const LEADER: Pid = Pid::from_raw(1);

    const GRACE: Duration = Duration::from_secs(1);

    /// A rejection's count in the monitor's exposition.
    fn refused(monitor: &loopwatch::Monitor, reason: &str) -> f64 {
        value(
            monitor,
            &format!(
                r#"loopwatch_rejected_observations_total{{field="evaluation",reason="{reason}"}}"#
            ),
        )
    }

    /// A monitor whose evaluations hang after 1 ms, settled every 20 ms.
    fn monitor() -> (loopwatch::Monitor, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let thresholds = loopwatch::Thresholds::default()
            .with_evaluation_floor(Duration::from_millis(1))
            .unwrap();
        let monitor = loopwatch::Monitor::builder()
            .listen("127.0.0.1:0".parse().unwrap())
            .output_dir(dir.path())
            .final_export(false)
            .signals(loopwatch::Signals::Off)
            .containers(false)
            .sample_interval(Duration::from_millis(20))
            .thresholds(thresholds)
            .build()
            .unwrap();
        (monitor, dir)
    }

    /// Waits (10 s at most) until `condition` holds.
    fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A series' value in the monitor's exposition, 0 when absent.
    fn value(monitor: &loopwatch::Monitor, series: &str) -> f64 {
        let text = monitor.render_metrics().unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.parse().unwrap())
    }

    #[test]
    fn a_hung_evaluation_whose_process_exited_ends_as_failed_not_outside_the_tree() {
        let (monitor, _dir) = monitor();
        let supervision = monitor.supervision();
        let mut worker = std::process::Command::new("true").spawn().unwrap();
        let gone = worker.id();
        worker.wait().unwrap();
        let intake = supervision.intake();
        let evaluation = monitor.evaluation("prog-1").pid(gone);
        wait_for("EvaluationHung", || {
            !supervision.hung_evaluations().is_empty()
        });
        let mut hung = HungEvaluations::default();
        hung.tick(&supervision, &intake, LEADER, GRACE);
        assert!(supervision.hung_evaluations().is_empty(), "it ended");
        assert!(hung.ending.is_empty(), "nothing signalled");
        hung.tick(&supervision, &intake, LEADER, GRACE);
        assert!(hung.handled.is_empty(), "not kept once it ended");
        assert_eq!(
            value(&monitor, r#"loopwatch_evaluations_total{outcome="failed"}"#),
            1.0
        );
        assert_eq!(value(&monitor, "loopwatch_evaluations_in_flight"), 0.0);
        assert_eq!(
            value(
                &monitor,
                r#"loopwatch_rejected_observations_total{field="evaluation",reason="pid_outside_tree"}"#
            ),
            0.0
        );
        assert!(!monitor.is_firing(loopwatch::AlertName::EvaluationHung));
        drop(evaluation);
        monitor.shutdown();
    }

    #[test]
    fn the_process_that_reports_iterations_is_refused_as_the_loop_counted_once() {
        let (monitor, _dir) = monitor();
        let supervision = monitor.supervision();
        let intake = supervision.intake();
        let (parent, child) = parent_and_child();
        intake.handle_line_from(br#"{"v":1,"type":"iteration_start"}"#, Some(child));
        let evaluation = monitor.evaluation("above-the-loop").pid(parent.id());
        wait_for("EvaluationHung", || {
            !supervision.hung_evaluations().is_empty()
        });
        let mut hung = HungEvaluations::default();
        hung.tick(&supervision, &intake, LEADER, GRACE);
        hung.tick(&supervision, &intake, LEADER, GRACE);
        assert!(hung.ending.is_empty(), "nothing signalled");
        assert!(child.is_running());
        assert!(ProcessId::running(parent.id()).is_some());
        assert_eq!(refused(&monitor, "loop_process"), 1.0, "counted once");
        assert_eq!(refused(&monitor, "pid_outside_tree"), 0.0);
        assert_eq!(supervision.hung_evaluations().len(), 1, "still in flight");
        drop(evaluation);
        end(parent, child);
        monitor.shutdown();
    }

    #[test]
    fn a_process_running_other_evaluations_is_spared_until_they_end() {
        let (monitor, _dir) = monitor();
        let supervision = monitor.supervision();
        let intake = supervision.intake();
        let mut worker = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let first = monitor.evaluation("first").pid(worker.id());
        let second = monitor.evaluation("second").pid(worker.id());
        wait_for("both hung", || supervision.hung_evaluations().len() == 2);
        let mut hung = HungEvaluations::default();
        hung.tick(&supervision, &intake, LEADER, GRACE);
        hung.tick(&supervision, &intake, LEADER, GRACE);
        assert!(hung.ending.is_empty(), "nothing signalled");
        assert_eq!(refused(&monitor, "shared_process"), 2.0, "each once");
        assert!(ProcessId::running(worker.id()).is_some());
        second.ok();
        hung.tick(&supervision, &intake, LEADER, GRACE);
        assert_eq!(hung.ending.len(), 1, "ended once alone");
        let status = worker.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(15)
        );
        assert_eq!(value(&monitor, "loopwatch_evaluations_killed_total"), 1.0);
        assert_eq!(refused(&monitor, "shared_process"), 2.0);
        drop(first);
        monitor.shutdown();
    }
}

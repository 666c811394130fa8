//! `--on-hung-evaluation kill`: once EvaluationHung fires, the process subtree of each
//! hung evaluation is ended (SIGTERM, then SIGKILL after `--grace`), and the loop goes
//! on without it, as after its own timeout.
//!
//! Only a pid the evaluation reported is acted on, and only when that pid is a
//! process of the loop's own tree (below loopwatch, which is the subreaper of the
//! loop) other than the loop's direct child: ending the loop itself is
//! `--on-stall`'s business. Each process is checked by its start time right before
//! each signal, so a pid reused meanwhile is never signalled. A pid outside the tree
//! is never signalled: the refusal is counted
//! (`loopwatch_rejected_observations_total{field="evaluation",reason="pid_outside_tree"}`)
//! and logged. Each kill ends the evaluation with outcome `killed`, and is logged
//! with the evaluation's id and age.
//!
//! A hung evaluation whose pid no longer runs (its process exited without the
//! evaluation's end, before or while it was being signalled) is not outside the
//! tree: it ends as failed with the reason `process gone`
//! ([`Supervision::evaluation_process_gone`]), which resolves EvaluationHung.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use loopwatch::cleanup::{descendants, ProcessId};
use loopwatch::supervise::{HungEvaluation, Supervision};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// A process of the loop's tree, as listed (with its start time): ended.
    End(ProcessId),
    /// The loop's direct child: the loop itself, never ended for one evaluation.
    TheLoop,
    /// A running process outside the loop's tree: never signalled.
    Outside,
    /// No process runs under the pid any more: the evaluation's process is gone.
    Gone,
}

/// Decides on `pid`, reported by a hung evaluation: `tree` is every process below
/// loopwatch now, each with its start time, and `leader` the loop's direct child.
pub(crate) fn decide(pid: u32, tree: &[ProcessId], leader: u32) -> Decision {
    if pid == leader {
        return Decision::TheLoop;
    }
    if let Some(process) = tree.iter().find(|process| process.pid == pid) {
        return Decision::End(*process);
    }
    if ProcessId::running(pid).is_none() {
        return Decision::Gone;
    }
    Decision::Outside
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
}

impl HungEvaluations {
    /// One look, on the supervisor's tick: what is left of the evaluations ended a
    /// grace period ago is killed, and the newly hung ones are ended or refused.
    pub(super) fn tick(&mut self, supervision: &Supervision, leader: Pid, grace: Duration) {
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
        // The loop's processes, read once per look and only when there is news.
        let mut tree: Option<Vec<ProcessId>> = None;
        for evaluation in &hung {
            if self.handled.insert(evaluation.id.clone()) {
                let tree = tree.get_or_insert_with(|| descendants(std::process::id()));
                self.act_on(supervision, evaluation, tree, leader, grace);
            }
        }
    }

    /// Ends `evaluation`'s processes, or refuses to; `tree` is every process below
    /// loopwatch.
    fn act_on(
        &mut self,
        supervision: &Supervision,
        evaluation: &HungEvaluation,
        tree: &[ProcessId],
        leader: Pid,
        grace: Duration,
    ) {
        let age = humantime::format_duration(Duration::from_secs(evaluation.age.as_secs()));
        let id = evaluation.id.as_str();
        let Some(pid) = evaluation.pid else {
            tracing::warn!(evaluation = id, %age, "a hung evaluation reported no pid; not ending it");
            return;
        };
        let leader = u32::try_from(leader.as_raw()).unwrap_or(0);
        let root = match decide(pid, tree, leader) {
            Decision::End(root) => root,
            Decision::TheLoop => {
                tracing::warn!(evaluation = id, %age, pid, "a hung evaluation runs in the loop's own process; not ending it (see --on-stall)");
                return;
            }
            Decision::Outside => {
                tracing::warn!(evaluation = id, %age, pid, "a hung evaluation reported a pid outside the loop's process tree; not signalling it");
                supervision.evaluation_kill_refused(pid);
                return;
            }
            Decision::Gone => {
                tracing::warn!(evaluation = id, %age, pid, "a hung evaluation's process is gone without its end; it ends as failed (process gone)");
                supervision.evaluation_process_gone(id);
                return;
            }
        };
        let mut processes = vec![root];
        processes.extend(descendants(root.pid));
        if signal_each(&processes, Signal::SIGTERM) == 0 {
            tracing::warn!(
                evaluation = id,
                %age,
                pid,
                "a hung evaluation's process ended before it could be signalled; it ends as failed (process gone)"
            );
            supervision.evaluation_process_gone(id);
            return;
        }
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

    #[test]
    fn only_a_pid_of_the_loops_tree_other_than_the_loop_itself_is_ended() {
        let mut worker = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let tree = descendants(std::process::id());
        let listed = *tree.iter().find(|p| p.pid == worker.id()).unwrap();
        assert_eq!(
            decide(worker.id(), &tree, 1),
            Decision::End(listed),
            "below this process"
        );
        assert_eq!(decide(worker.id(), &tree, worker.id()), Decision::TheLoop);
        // This process's parent runs, and is not below it.
        let parent = std::os::unix::process::parent_id();
        assert!(ProcessId::running(parent).is_some());
        assert_eq!(decide(parent, &tree, 1), Decision::Outside);
        assert_eq!(decide(std::process::id(), &tree, 1), Decision::Outside);
        worker.kill().unwrap();
        worker.wait().unwrap();
        // Gone: not outside the tree, and not signalled whatever reuses its pid.
        assert_eq!(
            decide(worker.id(), &descendants(std::process::id()), 1),
            Decision::Gone
        );
        assert!(!listed.is_running());
        assert_eq!(signal_each(&[listed], Signal::SIGTERM), 0);
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
        let evaluation = monitor.evaluation("prog-1").pid(gone);
        wait_for("EvaluationHung", || {
            !supervision.hung_evaluations().is_empty()
        });
        let mut hung = HungEvaluations::default();
        hung.tick(&supervision, Pid::from_raw(1), Duration::from_secs(1));
        assert!(supervision.hung_evaluations().is_empty(), "it ended");
        assert!(hung.ending.is_empty(), "nothing signalled");
        hung.tick(&supervision, Pid::from_raw(1), Duration::from_secs(1));
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
}

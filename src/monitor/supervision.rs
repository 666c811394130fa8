//! [`Supervision`]: the calls of a supervisor that runs the loop as a child process
//! (`loopwatch run`): the child's process starting, ending and restarting, its
//! process tree, its socket's intake, and the cleanup of what the run leaves
//! behind. A loop that holds its own [`Monitor`](crate::Monitor) needs none of them.

use std::sync::Arc;

use crate::processes::ProcessSweepReport;
use crate::records::{HungEvaluation, KillRefused, LoopExit};
use crate::reported::Rejection;

use super::event::Event;
use super::hub::Hub;
use super::intake::Intake;

/// A supervisor's handle on a monitor, from
/// [`Monitor::supervision`](crate::Monitor::supervision); cheap to clone.
///
/// ```
/// use loopwatch::supervise::{ExitReason, LoopExit};
///
/// # let dir = tempfile::tempdir().unwrap();
/// let monitor = loopwatch::Monitor::builder()
///     .listen("127.0.0.1:0".parse().unwrap())
///     .output_dir(dir.path())
///     .build()
///     .unwrap();
/// let supervision = monitor.supervision();
/// let child = std::process::Command::new("true").spawn().unwrap();
/// supervision.loop_started(child.id());
/// // The child failed; the supervisor starts it again.
/// supervision.loop_restarting(LoopExit::new(Some(1), None).with_reason(ExitReason::Exited));
/// supervision.loop_started(child.id());
/// assert_eq!(monitor.summary().exits.len(), 1);
/// supervision.loop_exited(LoopExit::new(Some(0), None));
/// assert!(monitor.said_done(), "an exit ends the run");
/// # monitor.shutdown();
/// ```
#[derive(Clone)]
pub struct Supervision {
    hub: Arc<Hub>,
}

impl std::fmt::Debug for Supervision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervision")
            .field("run_id", &self.hub.identity.run_id)
            .finish()
    }
}

impl Supervision {
    pub(super) fn new(hub: Arc<Hub>) -> Self {
        Supervision { hub }
    }

    /// An intake for reports from the loop, in the line protocol of
    /// [`crate::protocol`]; `loopwatch run` feeds it from its socket. Every intake of
    /// a monitor reports into the same run; keep one per run and share it.
    pub fn intake(&self) -> Intake {
        Intake::new(Arc::clone(&self.hub))
    }

    /// Watches a loop running in another process and every process below it:
    /// `memory_usage_bytes` and `cpu_usage_percent` become their sums,
    /// `loopwatch_loop_processes` their count. The `process_*` metrics stay this
    /// process's own.
    pub fn watch_process_tree(&self, root_pid: u32) {
        self.hub.watch_process_tree(root_pid);
    }

    /// The loop's process starts (again, after [`Supervision::loop_restarting`]):
    /// watches its process tree ([`Supervision::watch_process_tree`]), publishes
    /// `loopwatch_loop_start_timestamp_seconds`, and waiting for its first iteration
    /// counts toward a stall from now. A restart is counted in
    /// `loopwatch_loop_restarts_total` and evaluated for LoopCrashLooping.
    pub fn loop_started(&self, root_pid: u32) {
        self.hub.watch_process_tree(root_pid);
        self.hub.send(Event::LoopStarted {
            at: self.hub.clock.now(),
        });
    }

    /// Says that the loop has no way to report (`loopwatch run` could make no socket
    /// for it): its silence then says nothing about its progress, so LoopStalled is
    /// not evaluated from now on, restarts included, and cannot set off a stall
    /// action. Every other rule stays.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let monitor = loopwatch::Monitor::builder()
    /// #     .listen("127.0.0.1:0".parse().unwrap()).output_dir(dir.path()).build().unwrap();
    /// let supervision = monitor.supervision();
    /// supervision.loop_cannot_report();
    /// supervision.loop_started(std::process::id());
    /// assert!(!monitor.is_firing(loopwatch::AlertName::LoopStalled));
    /// # monitor.shutdown();
    /// ```
    pub fn loop_cannot_report(&self) {
        self.hub.send(Event::LoopCannotReport {
            at: self.hub.clock.now(),
        });
    }

    /// Records how the loop's process ended when the supervisor is going to start it
    /// again: the exit joins `summary.exits`, every evaluation still in flight ends as
    /// failed with the reason `process gone` (see
    /// [`Supervision::evaluation_process_gone`]), LoopExited is not raised (a restart
    /// answers it; LoopCrashLooping watches the restarts), and stall checks pause
    /// until [`Supervision::loop_started`]. Should the restart be called off,
    /// [`Supervision::loop_exited`] with the same exit records it as the last.
    pub fn loop_restarting(&self, exit: LoopExit) {
        self.hub.send(Event::LoopRestarting {
            exit,
            at: self.hub.clock.now(),
        });
    }

    /// Records how the loop's process ended for good, and raises LoopExited when it
    /// failed (non-zero, or by a signal) without having said it was done. The exit is
    /// in the final export; stall checks stop; every evaluation still in flight ends
    /// as failed with the reason `process gone` (see
    /// [`Supervision::evaluation_process_gone`]).
    pub fn loop_exited(&self, exit: LoopExit) {
        self.hub.send(Event::LoopExited {
            exit,
            at: self.hub.clock.now(),
        });
    }

    /// While EvaluationHung fires: the evaluations in flight that have run past its
    /// limit, oldest first (none while it does not fire).
    pub fn hung_evaluations(&self) -> Vec<HungEvaluation> {
        self.hub.hung_evaluations()
    }

    /// The supervisor ended hung evaluation `id` (its processes were signalled): it
    /// ends with outcome `killed`, counted in `loopwatch_evaluations_total` and
    /// `loopwatch_evaluations_killed_total`, kept out of the 95th percentile, and
    /// listed among the killed evaluations of the page and the final JSON. An id no
    /// longer in flight (it ended meanwhile) is a counted rejection, as any end of an
    /// unknown id.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let monitor = loopwatch::Monitor::builder()
    /// #     .listen("127.0.0.1:0".parse().unwrap()).output_dir(dir.path()).build().unwrap();
    /// let evaluation = monitor.evaluation("prog-17");
    /// monitor.supervision().evaluation_killed("prog-17");
    /// drop(evaluation); // its own end comes too late and is turned away
    /// # monitor.shutdown();
    /// ```
    pub fn evaluation_killed(&self, id: &str) {
        self.hub.send(Event::EvaluationEnded {
            id: id.into(),
            outcome: crate::records::Ended::Killed,
            reason: None,
            reported: None,
            at: self.hub.clock.now(),
        });
    }

    /// The supervisor found that the process evaluation `id` reported is gone: it
    /// exited (or its pid now belongs to another process) without the evaluation's
    /// end. The evaluation ends as failed with the reason `process gone`, counted in
    /// `loopwatch_evaluations_total{outcome="failed"}` and kept out of the 95th
    /// percentile (its duration says when the supervisor found out), and
    /// EvaluationHung resolves when it was the one hung. An id no longer in flight
    /// changes nothing. ([`Supervision::loop_restarting`] and
    /// [`Supervision::loop_exited`] end every evaluation in flight so.)
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let monitor = loopwatch::Monitor::builder()
    /// #     .listen("127.0.0.1:0".parse().unwrap()).output_dir(dir.path()).build().unwrap();
    /// let evaluation = monitor.evaluation("prog-17").pid(4242);
    /// monitor.supervision().evaluation_process_gone("prog-17");
    /// let text = monitor.render_metrics().unwrap();
    /// assert!(text.contains("loopwatch_evaluations_total{outcome=\"failed\"} 1"));
    /// assert!(text.contains("loopwatch_evaluations_in_flight 0"));
    /// drop(evaluation); // its own end comes too late and is turned away
    /// # monitor.shutdown();
    /// ```
    pub fn evaluation_process_gone(&self, id: &str) {
        self.hub.send(Event::EvaluationGone {
            id: id.into(),
            at: self.hub.clock.now(),
        });
    }

    /// The supervisor refused to end a hung evaluation for `why`, leaving `pid`
    /// unsignalled: counted in `loopwatch_rejected_observations_total{field="evaluation"}`
    /// with the reason `pid_outside_tree`, `loop_process` or `shared_process`, and
    /// logged (thinned as every rejection is).
    pub fn evaluation_kill_refused(&self, pid: u32, why: KillRefused) {
        let iteration = self
            .hub
            .next_iteration
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(1);
        let kind = match why {
            KillRefused::OutsideTree => Rejection::EvaluationPidOutsideTree,
            KillRefused::LoopProcess => Rejection::EvaluationLoopProcess,
            KillRefused::SharedProcess => Rejection::EvaluationSharedProcess,
        };
        self.hub.reject(kind, f64::from(pid), iteration);
    }

    /// Removes every container of this run (`loopwatch run` does it before it
    /// restarts a loop, whose containers are then nobody's); returns how many were
    /// removed. Docker down or the containers feature off: nothing is removed.
    pub fn clean_up_run_containers(&self) -> usize {
        if !self.hub.settings.containers {
            return 0;
        }
        self.hub.containers.remove_run_containers_now()
    }

    /// Marks a command with this run's identity (`LOOPWATCH_RUN_ID`,
    /// `LOOPWATCH_OWNER`) so that the process and its descendants are found by the
    /// process sweeps: if they outlive this process, the next monitor on the host (or
    /// `loopwatch cleanup`) terminates them.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let monitor = loopwatch::Monitor::builder()
    /// #     .listen("127.0.0.1:0".parse().unwrap()).output_dir(dir.path()).build().unwrap();
    /// let mut worker = std::process::Command::new("true");
    /// monitor.supervision().identify(&mut worker);
    /// assert!(worker.status().unwrap().success());
    /// # monitor.shutdown();
    /// ```
    pub fn identify<'c>(
        &self,
        command: &'c mut std::process::Command,
    ) -> &'c mut std::process::Command {
        let identity = &self.hub.identity;
        command
            .env(crate::processes::ENV_RUN_ID, &identity.run_id)
            .env(crate::processes::ENV_OWNER, identity.owner.env_value())
    }

    /// Terminates the processes of this run that are still alive (SIGTERM, `grace`,
    /// then SIGKILL): those marked with its identity, and every process below this
    /// one whatever its environment. What `loopwatch run` does once its loop has
    /// exited, since anything of the run left running then is an orphan. Each is
    /// logged and counted; any that survive are listed in the final export. Blocks
    /// until they are gone or given up on (`grace` and 2 s at most).
    pub fn clean_up_run_processes(&self, grace: std::time::Duration) -> ProcessSweepReport {
        let run_id = self.hub.identity.run_id.clone();
        self.hub.sweep_processes(Some(&run_id), grace)
    }
}

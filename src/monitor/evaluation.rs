//! [`Evaluation`]: one evaluation (a candidate's back-test, a program's run) in
//! flight, from the loop's thread or a worker's. Starting and ending one each send an
//! event; the id is the only allocation, shared by both (a worker's name and a
//! failure's reason, when given, are one more each). Once ended, dropping the guard
//! allocates nothing.

use std::sync::Arc;
use std::time::Duration;

use crate::records::Ended;

use super::event::Event;
use super::hub::Hub;

/// An evaluation in flight, started by [`Monitor::evaluation`](crate::Monitor::evaluation)
/// or [`Iteration::evaluation`](crate::Iteration::evaluation).
///
/// End it with [`ok`](Self::ok), [`failed`](Self::failed) or [`timeout`](Self::timeout).
/// Dropping it without an outcome (an early return, a `?`, a panic) ends it as failed,
/// with the reason `dropped`, so an evaluation is never left in flight by mistake. While
/// it runs longer than the limit, EvaluationHung fires, naming its id, worker and pid.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let monitor = loopwatch::Monitor::builder()
///     .listen("127.0.0.1:0".parse().unwrap())
///     .output_dir(dir.path())
///     .build()
///     .unwrap();
/// let evaluation = monitor.evaluation("prog-17").worker("pool-3").pid(std::process::id());
/// // … run the candidate …
/// evaluation.ok();
/// let failing = monitor.evaluation("prog-18");
/// failing.failed("SyntaxError");
/// let text = monitor.render_metrics().unwrap();
/// assert!(text.contains("loopwatch_evaluations_total{outcome=\"ok\"} 1"));
/// assert!(text.contains("loopwatch_evaluations_total{outcome=\"failed\"} 1"));
/// assert!(text.contains("loopwatch_evaluations_in_flight 0"));
/// # monitor.shutdown();
/// ```
#[must_use = "an evaluation is in flight until it is ended or dropped"]
pub struct Evaluation<'m> {
    hub: &'m Hub,
    /// Its id; taken when it ends.
    id: Option<Arc<str>>,
}

impl std::fmt::Debug for Evaluation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluation")
            .field("id", &self.id.as_deref())
            .finish_non_exhaustive()
    }
}

impl<'m> Evaluation<'m> {
    /// Starts evaluation `id` now.
    #[inline]
    pub(super) fn start(hub: &'m Hub, id: &str) -> Self {
        let id: Arc<str> = Arc::from(id);
        hub.send(Event::EvaluationStarted {
            id: Arc::clone(&id),
            pid: None,
            pid_start: None,
            worker: None,
            queued: None,
            reported: None,
            at: hub.clock.now(),
        });
        Evaluation { hub, id: Some(id) }
    }

    /// Its id.
    pub fn id(&self) -> &str {
        self.id.as_deref().unwrap_or_default()
    }

    /// Says which worker runs it (a pool worker's or a thread's name): workers make
    /// the occupancy, and EvaluationHung names it.
    pub fn worker(self, name: &str) -> Self {
        self.assign(None, Some(Arc::from(name)), None);
        self
    }

    /// Says which process runs it: the worker when no name was given, and what
    /// EvaluationHung names. The process's start time is read now, so that a
    /// supervisor ending hung evaluations never signals another process that reuses
    /// the pid later.
    pub fn pid(self, pid: u32) -> Self {
        self.assign(Some(pid), None, None);
        self
    }

    /// Says how long it waited in a queue before it started (once), for
    /// `loopwatch_evaluation_queue_wait_seconds`.
    pub fn queued_for(self, wait: Duration) -> Self {
        self.assign(None, None, Some(wait));
        self
    }

    fn assign(&self, pid: Option<u32>, worker: Option<Arc<str>>, queued: Option<Duration>) {
        let Some(id) = &self.id else {
            return;
        };
        self.hub.send(Event::EvaluationAssigned {
            id: Arc::clone(id),
            pid,
            pid_start: pid
                .and_then(crate::processes::ProcessId::running)
                .map(|p| p.start_ticks),
            worker,
            queued,
            at: self.hub.clock.now(),
        });
    }

    /// It completed, whatever the candidate scored.
    #[inline]
    pub fn ok(mut self) {
        self.end(Ended::Ok, None);
    }

    /// It failed (the evaluator raised, the candidate could not be run), for `reason`.
    pub fn failed(mut self, reason: &str) {
        self.end(Ended::Failed, Some(reason.into()));
    }

    /// The loop's own timeout ended it.
    pub fn timeout(mut self) {
        self.end(Ended::Timeout, None);
    }

    #[inline]
    fn end(&mut self, outcome: Ended, reason: Option<Box<str>>) {
        let Some(id) = self.id.take() else {
            return;
        };
        self.hub.send(Event::EvaluationEnded {
            id,
            outcome,
            reason,
            reported: None,
            at: self.hub.clock.now(),
        });
    }
}

impl Drop for Evaluation<'_> {
    fn drop(&mut self) {
        // Checked first: the reason is built (allocated) only for an evaluation that
        // did not end.
        if self.id.is_some() {
            self.end(Ended::Failed, Some("dropped".into()));
        }
    }
}

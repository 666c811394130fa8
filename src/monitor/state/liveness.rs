//! The loop's liveness, for LoopStalled: when the iteration in progress started, when
//! the last one ended, whether the loop said it is done, and whether it can report at
//! all. Part of the [`RunState`](super::RunState): set by events, read at the moment
//! an event carries, so the stall a tick sees is the one the events so far describe.

use std::time::Duration;

use crate::evaluate::Activity;

/// When iterations start and end (monotonic), and what the loop said.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Liveness {
    /// The iteration in progress, if one is, and when it started.
    running: Option<(u64, Duration)>,
    /// When the loop was last seen between iterations: the last iteration's end, or
    /// a supervised loop's (re)start.
    waiting_since: Option<Duration>,
    /// Whether the loop has said it is done (or its process ended and another is to
    /// be started): waiting is not a stall.
    done: bool,
    /// Whether the loop has no way to report (a supervised loop without a socket):
    /// its silence then says nothing, and no wait counts toward a stall.
    unreported: bool,
}

impl Liveness {
    /// Iteration `number` started `at`.
    pub(crate) fn iteration_started(&mut self, number: u64, at: Duration) {
        self.running = Some((number, at));
    }

    /// Iteration `number` (or a batch up to it) ended `at`: the loop is between
    /// iterations from then on, unless a later iteration was already seen running.
    pub(crate) fn iteration_ended(&mut self, number: u64, at: Duration) {
        if self.running.is_some_and(|(running, _)| running > number) {
            return;
        }
        self.running = None;
        self.waiting_since = Some(at);
    }

    /// A supervised loop's process started `at`: not done, and waiting from then on
    /// (for its first iteration) counts toward a stall.
    pub(crate) fn loop_started(&mut self, at: Duration) {
        self.running = None;
        self.waiting_since = Some(at);
        self.done = false;
    }

    /// A supervised loop's process ended and another will be started: no stall
    /// checks until it is (the wait in between is the supervisor's, not a stall).
    pub(crate) fn loop_down(&mut self) {
        self.done = true;
        self.running = None;
    }

    /// The loop has no way to report: no wait counts toward a stall from now on (a
    /// restarted process cannot report either).
    pub(crate) fn unreported(&mut self) {
        self.unreported = true;
    }

    /// The loop said it is done; true the first time.
    pub(crate) fn say_done(&mut self) -> bool {
        !std::mem::replace(&mut self.done, true)
    }

    /// Whether the loop has said it is done.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// What the loop is doing at `now`, for LoopStalled.
    pub(crate) fn activity(&self, now: Duration) -> Activity {
        if self.unreported {
            return Activity {
                running_for: None,
                idle_for: None,
                done: self.done,
            };
        }
        let running_for = self.running.map(|(_, since)| now.saturating_sub(since));
        Activity {
            running_for,
            idle_for: running_for
                .is_none()
                .then(|| self.waiting_since.map(|since| now.saturating_sub(since)))
                .flatten(),
            done: self.done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_loop_waits_between_iterations_and_runs_within_them() {
        let mut liveness = Liveness::default();
        assert_eq!(liveness.activity(secs(100)), Activity::default());
        liveness.iteration_started(1, secs(1));
        assert_eq!(liveness.activity(secs(4)).running_for, Some(secs(3)));
        liveness.iteration_ended(1, secs(5));
        let activity = liveness.activity(secs(65));
        assert_eq!(
            (activity.running_for, activity.idle_for),
            (None, Some(secs(60)))
        );
        liveness.loop_down();
        assert!(liveness.activity(secs(70)).done);
        liveness.loop_started(secs(80));
        let activity = liveness.activity(secs(90));
        assert_eq!((activity.idle_for, activity.done), (Some(secs(10)), false));
    }

    #[test]
    fn the_end_of_an_earlier_iteration_leaves_a_later_one_running() {
        let mut liveness = Liveness::default();
        liveness.iteration_started(8, secs(10));
        liveness.iteration_ended(7, secs(11));
        assert_eq!(liveness.activity(secs(20)).running_for, Some(secs(10)));
        liveness.iteration_ended(8, secs(21));
        assert_eq!(liveness.activity(secs(31)).idle_for, Some(secs(10)));
    }

    #[test]
    fn a_loop_that_cannot_report_never_waits_toward_a_stall() {
        let mut liveness = Liveness::default();
        liveness.loop_started(secs(1));
        assert_eq!(liveness.activity(secs(3601)).idle_for, Some(secs(3600)));
        liveness.iteration_started(1, secs(2));
        assert!(liveness.activity(secs(3601)).running_for.is_some());
        liveness.unreported();
        let activity = liveness.activity(secs(3601));
        assert_eq!((activity.running_for, activity.idle_for), (None, None));
        assert!(!activity.done, "not done: only silent");
        assert!(liveness.say_done());
        assert!(!liveness.say_done(), "done once");
    }
}

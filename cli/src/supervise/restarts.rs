//! Starting the loop again: when (`--restart`, `--on-stall restart`), how soon (a
//! backoff that doubles, reset after a long run) and how often (`max_restarts` within
//! `restart_window`, the thresholds LoopCrashLooping reads too).
//!
//! Between two starts, what the ended loop wrote is applied, its exit is recorded as a
//! restart, and its processes and then its containers are cleaned up; an operator's
//! signal during the wait ends the run instead. A loop is never started again once an
//! LLM budget under `action = "stop"` is spent.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use loopwatch::supervise::{ExitReason, LoopExit};

use super::signals::OperatorSignals;
use super::spawning::{ChildEnd, Launch};
use super::Session;

/// The longest wait between two starts of a loop that keeps failing.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(300);

/// When a loop that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Restart {
    /// Never (the default): the run ends with the loop.
    #[default]
    Never,
    /// After a non-zero or signalled exit without `done`.
    OnFailure,
    /// After any exit, except one the operator asked for and the end of a finished
    /// search (it said `done`, then exited 0).
    Always,
}

/// What to do with a loop once LoopStalled has fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OnStall {
    /// Nothing beyond the alert (the default).
    #[default]
    None,
    /// Terminate its process tree (SIGTERM, SIGKILL after the grace period).
    Kill,
    /// Terminate it and start it again, whatever the restart policy.
    Restart,
}

/// When and how fast a loop is restarted. How many restarts are allowed, and within
/// what window, are the thresholds `max_restarts` and `restart_window` (also read by
/// LoopCrashLooping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Which exits are followed by a restart.
    pub when: Restart,
    /// The first wait before a restart; it doubles with each restart in a row, up to
    /// [`MAX_RESTART_DELAY`].
    pub delay: Duration,
    /// A loop that ran this long before it ended is restarted after `delay` again.
    pub reset_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            when: Restart::Never,
            delay: Duration::from_secs(1),
            reset_after: Duration::from_secs(600),
        }
    }
}

/// Starts the loop, and again after each end that calls for a restart; returns the
/// end that finishes the run, or `None` when the command could not be started at all.
/// A command that cannot be started again ends the run with the previous end.
pub(super) fn until_the_last_end(
    session: &Session,
    launch: &Launch<'_>,
    signals: &mut OperatorSignals,
) -> Option<LoopExit> {
    let options = launch.options;
    let mut restarts = Restarts::new(options.restart, session.monitor.thresholds());
    let mut last: Option<LoopExit> = None;
    loop {
        let start = launch.supervise(signals, restarts.total);
        let Some(mut end) = session.runtime.block_on(start) else {
            return last;
        };
        session.apply_what_was_written(&mut end.exit);
        if restarts.wanted(&end.exit, options.on_stall) {
            if let Some(budget) = launch.budget_spent_stops() {
                tracing::warn!(
                    budget_usd = budget.usd,
                    "the LLM budget is spent (action = \"stop\"); not restarting the loop"
                );
                launch.budget_stopped.set(true);
                return Some(end.exit);
            }
        }
        let Some(delay) = restarts.after(&end, options.on_stall) else {
            return Some(end.exit);
        };
        session.supervision.loop_restarting(end.exit);
        session.clear_for_a_restart(options.grace);
        tracing::info!(delay = %humantime::format_duration(delay), restarts = restarts.total + 1, "restarting the loop");
        if session.runtime.block_on(signals.wait(delay)) {
            tracing::info!("stopped during the wait before a restart; not restarting");
            return Some(end.exit);
        }
        restarts.record();
        last = Some(end.exit);
    }
}

/// The restarts within the window and the next backoff.
struct Restarts {
    policy: RestartPolicy,
    max: u64,
    window: Duration,
    recent: VecDeque<Instant>,
    next_delay: Duration,
    total: u64,
}

impl Restarts {
    fn new(policy: RestartPolicy, thresholds: &loopwatch::Thresholds) -> Self {
        Restarts {
            policy,
            max: thresholds.max_restarts(),
            window: thresholds.restart_window(),
            recent: VecDeque::new(),
            next_delay: policy.delay,
            total: 0,
        }
    }

    /// The wait before restarting after `end`, or `None` when the run ends with it:
    /// no restart is wanted, or the restarts within the window have reached the limit
    /// (said).
    fn after(&mut self, end: &ChildEnd, on_stall: OnStall) -> Option<Duration> {
        if !self.wanted(&end.exit, on_stall) {
            if self.policy.when == Restart::Always && end.exit.said_done && end.exit.code == Some(0)
            {
                tracing::info!("the loop said it was done and exited 0: its search is finished; not restarting it");
            }
            return None;
        }
        let delay = self.next(end.ran_for);
        if delay.is_none() {
            tracing::error!(
                restarts = self.max,
                window = %humantime::format_duration(self.window),
                "the loop was restarted as often as allowed within the window; giving up"
            );
        }
        delay
    }

    /// Whether this end of the loop calls for a restart: an operator's stop never
    /// does, a stall does under `--on-stall restart`, a loop terminated after `done`
    /// never does, a finished search (`done`, then exit 0) never does, and any other
    /// exit as the policy says.
    fn wanted(&self, exit: &LoopExit, on_stall: OnStall) -> bool {
        match exit.reason {
            ExitReason::Stopped | ExitReason::ExitTimeout => false,
            ExitReason::Stalled => on_stall == OnStall::Restart,
            _ => match self.policy.when {
                Restart::Never => false,
                Restart::OnFailure => exit.unexpected(),
                Restart::Always => !(exit.said_done && exit.code == Some(0)),
            },
        }
    }

    /// The wait before the next restart, or `None` when the restarts within the
    /// window have reached the limit. `ran_for` is how long the loop ran this time.
    fn next(&mut self, ran_for: Duration) -> Option<Duration> {
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= self.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() as u64 >= self.max {
            return None;
        }
        if ran_for >= self.policy.reset_after {
            self.next_delay = self.policy.delay;
        }
        let delay = self.next_delay;
        self.next_delay = (self.next_delay * 2).min(MAX_RESTART_DELAY);
        Some(delay)
    }

    /// A restart happens now.
    fn record(&mut self) {
        self.recent.push_back(Instant::now());
        self.total += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restarts(when: Restart) -> Restarts {
        Restarts::new(
            RestartPolicy {
                when,
                ..RestartPolicy::default()
            },
            &loopwatch::Thresholds::default(),
        )
    }

    fn exit(code: Option<i32>, signal: Option<i32>, said_done: bool) -> LoopExit {
        let mut exit = LoopExit::new(code, signal);
        exit.said_done = said_done;
        exit
    }

    #[test]
    fn a_finished_search_is_not_restarted_even_under_always() {
        let always = restarts(Restart::Always);
        let on_failure = restarts(Restart::OnFailure);
        let never = restarts(Restart::Never);
        let cases = [
            // (exit, always, on-failure, never)
            (exit(Some(0), None, true), false, false, false),
            (exit(Some(0), None, false), true, false, false),
            (exit(Some(3), None, false), true, true, false),
            (exit(None, Some(9), false), true, true, false),
            // Done, then a failure on the way out: not a clean end.
            (exit(Some(1), None, true), true, false, false),
        ];
        for (exit, under_always, under_on_failure, under_never) in cases {
            assert_eq!(
                always.wanted(&exit, OnStall::None),
                under_always,
                "{exit:?}"
            );
            assert_eq!(
                on_failure.wanted(&exit, OnStall::None),
                under_on_failure,
                "{exit:?}"
            );
            assert_eq!(never.wanted(&exit, OnStall::None), under_never, "{exit:?}");
        }
        let stopped = exit(None, Some(15), false).with_reason(ExitReason::Stopped);
        assert!(!always.wanted(&stopped, OnStall::Restart));
        let stalled = exit(None, Some(15), false).with_reason(ExitReason::Stalled);
        assert!(never.wanted(&stalled, OnStall::Restart));
        assert!(!always.wanted(&stalled, OnStall::Kill));
    }

    #[test]
    fn the_backoff_doubles_up_to_the_cap_resets_after_a_long_run_and_stops_at_the_limit() {
        let thresholds = loopwatch::Thresholds::default()
            .with_max_restarts(3)
            .unwrap();
        let policy = RestartPolicy {
            when: Restart::Always,
            delay: Duration::from_secs(100),
            reset_after: Duration::from_secs(60),
        };
        let mut restarts = Restarts::new(policy, &thresholds);
        let short = Duration::from_secs(1);
        assert_eq!(restarts.next(short), Some(Duration::from_secs(100)));
        restarts.record();
        assert_eq!(restarts.next(short), Some(Duration::from_secs(200)));
        restarts.record();
        assert_eq!(restarts.next(short), Some(MAX_RESTART_DELAY), "capped");
        restarts.record();
        assert_eq!(restarts.next(short), None, "3 restarts within the window");
        let mut reset = Restarts::new(policy, &thresholds);
        assert_eq!(reset.next(short), Some(Duration::from_secs(100)));
        reset.record();
        assert_eq!(
            reset.next(Duration::from_secs(60)),
            Some(Duration::from_secs(100)),
            "a long run starts the backoff over"
        );
        assert_eq!(reset.total, 1);
    }
}

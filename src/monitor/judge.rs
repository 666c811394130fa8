//! The part of the monitor that judges: the evaluator with the thresholds it owns,
//! and the loop's liveness (when iterations start and end) for LoopStalled. Every
//! method takes the evaluator's lock (the run's [`Books`]) for one evaluation and
//! returns what it found, apart from [`Judge::iteration`], which is handed the books
//! its caller has locked; publishing and delivering are the caller's.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use enum_map::EnumMap;

use crate::alerts::{AlertName, AlertState, Watched};
use crate::config::Thresholds;
use crate::evaluate::{Activity, Evaluator, Findings, RollingValues};
use crate::export::Evaluation;
use crate::run::{IterationSummary, LoopExit};

use super::ledger::Books;

/// Locks a mutex, taking the data even if a panicking thread poisoned it: every value
/// behind the monitor's locks is valid after any single update.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The monitor's clock: monotonic instants as stamps (nanoseconds since the clock's
/// epoch), and their wall-clock time without reading the wall clock. The offset
/// between the two clocks is taken at start-up and again about once a second (by
/// [`Clock::resync`]), so a stepped system clock is followed within a second while
/// the loop's thread reads one monotonic clock per event.
#[derive(Debug)]
pub(super) struct Clock {
    epoch: Instant,
    /// Unix time of `epoch` in nanoseconds, as of the last resync.
    offset_ns: AtomicI64,
}

impl Clock {
    pub(super) fn new() -> Self {
        let clock = Clock {
            epoch: Instant::now(),
            offset_ns: AtomicI64::new(0),
        };
        clock.resync();
        clock
    }

    /// Takes the offset between the monotonic and the wall clock again.
    pub(super) fn resync(&self) {
        let mono = i64::try_from(self.now()).unwrap_or(i64::MAX);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        self.offset_ns
            .store(wall.saturating_sub(mono), Ordering::Relaxed);
    }

    /// The stamp of now: nanoseconds since the epoch.
    #[inline]
    pub(super) fn now(&self) -> u64 {
        self.stamp(Instant::now())
    }

    /// The stamp of `at`.
    #[inline]
    pub(super) fn stamp(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.epoch);
        since.as_secs() * 1_000_000_000 + u64::from(since.subsec_nanos())
    }

    /// Seconds since the Unix epoch at `stamp`.
    #[inline]
    pub(super) fn unix_seconds(&self, stamp: u64) -> f64 {
        let mono = i64::try_from(stamp).unwrap_or(i64::MAX);
        self.offset_ns.load(Ordering::Relaxed).saturating_add(mono) as f64 / 1e9
    }
}

/// When iterations start and end, for LoopStalled: clock stamps plus one, so that 0
/// means "never" (atomics, so the loop's thread takes no lock).
#[derive(Debug)]
struct Liveness {
    running_since: AtomicU64,
    last_end: AtomicU64,
    done: AtomicBool,
    /// Whether the loop has no way to report (a supervised loop without a socket):
    /// its silence then says nothing, and no wait counts toward a stall.
    unreported: AtomicBool,
    /// Whether LoopStalled fires, so that starting an iteration re-evaluates it only
    /// then (the loop's thread takes the evaluator's lock no more than it must).
    stalled: AtomicBool,
}

impl Liveness {
    fn since(stamp: u64, now: u64) -> Option<Duration> {
        (stamp != 0).then(|| Duration::from_nanos(now.saturating_sub(stamp - 1)))
    }

    fn activity(&self, now: u64) -> Activity {
        if self.unreported.load(Ordering::Relaxed) {
            return Activity {
                running_for: None,
                idle_for: None,
                done: self.done.load(Ordering::Relaxed),
            };
        }
        let running = Self::since(self.running_since.load(Ordering::Relaxed), now);
        Activity {
            running_for: running,
            idle_for: running
                .is_none()
                .then(|| Self::since(self.last_end.load(Ordering::Relaxed), now))
                .flatten(),
            done: self.done.load(Ordering::Relaxed),
        }
    }
}

/// The evaluator's published quantities after an iteration: rolling values,
/// baselines and the low-diversity streak.
#[derive(Debug, Clone, Copy)]
pub(super) struct Judged {
    pub(super) rolling: RollingValues,
    pub(super) baselines: EnumMap<Watched, Option<f64>>,
    /// Whether a baseline was captured in this iteration.
    pub(super) new_baseline: bool,
    pub(super) low_diversity_streak: u64,
    /// Alerts firing after the iteration.
    pub(super) firing: u8,
}

/// The evaluator, its thresholds and the loop's liveness.
#[derive(Debug)]
pub(super) struct Judge {
    thresholds: Thresholds,
    /// The evaluator, in the books it shares a lock with.
    books: Arc<Mutex<Books>>,
    liveness: Liveness,
    /// The clock of liveness, iterations and the history.
    pub(super) clock: Clock,
}

impl Judge {
    /// A judge of the evaluator in `books`.
    pub(super) fn new(thresholds: Thresholds, books: Arc<Mutex<Books>>) -> Self {
        Judge {
            books,
            thresholds,
            clock: Clock::new(),
            liveness: Liveness {
                running_since: AtomicU64::new(0),
                last_end: AtomicU64::new(0),
                done: AtomicBool::new(false),
                unreported: AtomicBool::new(false),
                stalled: AtomicBool::new(false),
            },
        }
    }

    /// Evaluates with the lock held, then keeps the stall flag in step.
    fn evaluate<R>(&self, judge: impl FnOnce(&mut Evaluator, &Thresholds) -> R) -> R {
        let mut books = lock(&self.books);
        let result = judge(&mut books.evaluator, &self.thresholds);
        self.keep_stall_flag(&books.evaluator);
        result
    }

    fn keep_stall_flag(&self, evaluator: &Evaluator) {
        let stalled = evaluator.state(AlertName::LoopStalled) == AlertState::Firing;
        self.liveness.stalled.store(stalled, Ordering::Relaxed);
    }

    /// An iteration starts at clock stamp `at`; returns whether LoopStalled fires and
    /// so needs a look now (a loop stuck between iterations is stuck no more).
    pub(super) fn iteration_started(&self, at: u64) -> bool {
        self.liveness
            .running_since
            .store(at.saturating_add(1), Ordering::Relaxed);
        self.liveness.stalled.load(Ordering::Relaxed)
    }

    /// An iteration ended at clock stamp `ended`: the loop is between iterations
    /// from then on.
    pub(super) fn iteration_ended(&self, ended: u64) {
        self.liveness
            .last_end
            .store(ended.saturating_add(1), Ordering::Relaxed);
        self.liveness.running_since.store(0, Ordering::Relaxed);
    }

    /// A completed iteration, judged with the evaluator of the `books` its caller
    /// holds: its rules and warnings, and LoopStalled again when it was raised (a
    /// loop whose iteration ended has not stalled).
    pub(super) fn iteration(
        &self,
        books: &mut Books,
        summary: &IterationSummary,
    ) -> (Findings, Judged) {
        let th = &self.thresholds;
        let evaluator = &mut books.evaluator;
        let mut findings = evaluator.on_iteration(summary, th);
        if evaluator.state(AlertName::LoopStalled) != AlertState::Inactive {
            let activity = self.liveness.activity(self.clock.now());
            findings
                .transitions
                .extend(evaluator.on_clock(activity, th).transitions);
            self.keep_stall_flag(evaluator);
        }
        let judged = Judged {
            rolling: evaluator.rolling(),
            baselines: evaluator.baselines(),
            new_baseline: evaluator.take_new_baseline(),
            low_diversity_streak: evaluator.low_diversity_streak(),
            firing: evaluator.firing(),
        };
        (findings, judged)
    }

    /// LoopStalled, now.
    pub(super) fn clock(&self) -> Findings {
        let activity = self.liveness.activity(self.clock.now());
        self.evaluate(|evaluator, th| evaluator.on_clock(activity, th))
    }

    /// HighMemoryUsage on a sample of memory in use against the limit that kills.
    pub(super) fn host_memory(&self, used: u64, limit: u64) -> Findings {
        self.evaluate(|evaluator, th| evaluator.on_host_memory(used, limit, th))
    }

    /// ContainerCleanupFailures on the orphans left.
    pub(super) fn orphans(&self, orphans: u64) -> Findings {
        self.evaluate(|evaluator, th| evaluator.on_orphans(orphans, th))
    }

    /// A supervised loop's process ended and another will be started: no stall checks
    /// until it is (the wait in between is the supervisor's, not a stall).
    pub(super) fn loop_down(&self) {
        self.liveness.done.store(true, Ordering::Relaxed);
        self.liveness.running_since.store(0, Ordering::Relaxed);
    }

    /// The supervised loop has no way to report: LoopStalled is not evaluated from
    /// now on (a restarted process cannot report either).
    pub(super) fn loop_unreported(&self) {
        self.liveness.unreported.store(true, Ordering::Relaxed);
    }

    /// A supervised loop's new process started: not done, and waiting from now on
    /// (for its first iteration) counts toward a stall.
    pub(super) fn loop_started(&self) {
        let now = self.clock.now().saturating_add(1);
        self.liveness.running_since.store(0, Ordering::Relaxed);
        self.liveness.last_end.store(now, Ordering::Relaxed);
        self.liveness.done.store(false, Ordering::Relaxed);
    }

    /// LoopCrashLooping on a restart; returns what it found and the restarts within
    /// the window.
    pub(super) fn restarted(&self) -> (Findings, u64) {
        self.evaluate(|evaluator, th| {
            let findings = evaluator.on_restart(Instant::now(), th);
            (findings, evaluator.recent_restarts())
        })
    }

    /// LoopCrashLooping as the restart window moves on; returns what it found and the
    /// restarts within the window.
    pub(super) fn restart_window(&self) -> (Findings, u64) {
        self.evaluate(|evaluator, th| {
            let findings = evaluator.on_restart_window(Instant::now(), th);
            (findings, evaluator.recent_restarts())
        })
    }

    /// LLMErrors, LLMSpendWithoutProgress and LLMBudget on the LLM calls' evidence.
    pub(super) fn llm(&self, evidence: &crate::llm::meter::LlmEvidence) -> Findings {
        self.evaluate(|evaluator, th| evaluator.on_llm(evidence, th))
    }

    /// LoopExited on a supervised loop's exit (`said_done` is filled in from `done`).
    pub(super) fn exit(&self, exit: &mut LoopExit) -> Findings {
        exit.said_done |= self.is_done();
        self.evaluate(|evaluator, th| evaluator.on_exit(exit, th))
    }

    /// The loop has said it is done; true the first time.
    pub(super) fn done(&self) -> bool {
        !self.liveness.done.swap(true, Ordering::Relaxed)
    }

    /// Whether the loop has said it is done.
    pub(super) fn is_done(&self) -> bool {
        self.liveness.done.load(Ordering::Relaxed)
    }

    /// The evaluator's whole state at this instant.
    pub(super) fn evaluation(&self) -> Evaluation {
        let books = lock(&self.books);
        let evaluator = &books.evaluator;
        Evaluation {
            rolling: evaluator.rolling(),
            alerts: evaluator.states(),
            baselines: evaluator.baselines(),
            warnings: evaluator.warnings_active(),
            low_diversity_streak: evaluator.low_diversity_streak(),
        }
    }

    /// Whether the alert is firing now.
    pub(super) fn is_firing(&self, alert: AlertName) -> bool {
        lock(&self.books).evaluator.state(alert) == AlertState::Firing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn liveness() -> Liveness {
        Liveness {
            running_since: AtomicU64::new(0),
            last_end: AtomicU64::new(0),
            done: AtomicBool::new(false),
            unreported: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
        }
    }

    #[test]
    fn a_loop_that_cannot_report_never_waits_toward_a_stall() {
        let liveness = liveness();
        // Started at stamp 1 s (stored plus one), looked at an hour later.
        liveness.last_end.store(1_000_000_001, Ordering::Relaxed);
        let hour_later = 3_601_000_000_000;
        assert_eq!(
            liveness.activity(hour_later).idle_for,
            Some(Duration::from_secs(3600))
        );
        liveness
            .running_since
            .store(2_000_000_001, Ordering::Relaxed);
        assert!(liveness.activity(hour_later).running_for.is_some());
        liveness.unreported.store(true, Ordering::Relaxed);
        let activity = liveness.activity(hour_later);
        assert_eq!((activity.running_for, activity.idle_for), (None, None));
        assert!(!activity.done, "not done: only silent");
    }
}

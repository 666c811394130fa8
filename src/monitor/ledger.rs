//! The part of the monitor that keeps the run's ledger: totals, champion tracking,
//! failure reasons, the bounded history and event log the page and the final export
//! read, the samplers' latest readings, and what the process sweeps did.
//!
//! The run's books and the evaluator share one lock ([`Books`]), so that a completed
//! iteration is booked, judged and kept as a history point under a single short lock.

#[cfg(feature = "docker")]
use std::collections::HashMap;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::evaluate::{Evaluator, Transition, WarningChange};
use crate::export::{LiveContainer, ProcessTally};
use crate::run::progress::{Progress, ProgressPoint};
use crate::run::{Event, EventKind, HistoryPoint, RunSummary, HISTORY_LEN, MAX_EVENTS};
use crate::sample::HostSample;

use super::findings::FindingSink;
use super::judge::lock;
use super::reasons::{ReasonCounts, ReasonNames, ReasonTotals};

/// The ledger's parts, each behind its own lock. No method holds two of them at once.
#[derive(Debug)]
pub(super) struct Ledger {
    books: Arc<Mutex<Books>>,
    housekeeping: Mutex<Housekeeping>,
    /// Failure reasons by number, shared with the run's books.
    pub(super) reasons: Arc<ReasonNames>,
}

/// What a completed iteration updates, behind one lock: the run's books, the
/// evaluator (the [`Judge`](super::judge::Judge) holds the same lock) and the
/// latest sampler readings its history point carries.
#[derive(Debug)]
pub(super) struct Books {
    pub(super) run: RunLedger,
    pub(super) evaluator: Evaluator,
    pub(super) latest: Latest,
}

/// The run's books, locked (with the evaluator beside them).
pub(super) struct RunGuard<'a>(MutexGuard<'a, Books>);

impl std::ops::Deref for RunGuard<'_> {
    type Target = RunLedger;
    fn deref(&self) -> &RunLedger {
        &self.0.run
    }
}

impl std::ops::DerefMut for RunGuard<'_> {
    fn deref_mut(&mut self) -> &mut RunLedger {
        &mut self.0.run
    }
}

/// The latest sampler readings, for the history points and the page.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Latest {
    pub(super) host: Option<HostSample>,
    pub(super) active_containers: u64,
    pub(super) container_memory_bytes: u64,
    pub(super) cleanup_failures: u64,
}

/// What the process sweeps found and did, the processes given up on, and this run's
/// running containers.
#[derive(Debug, Default)]
struct Housekeeping {
    tally: ProcessTally,
    /// Processes (pid, start ticks) that could not be terminated: not retried.
    given_up: HashSet<(u32, u64)>,
    /// This run's running containers, with when loopwatch first saw each.
    containers: Vec<LiveContainer>,
    #[cfg(feature = "docker")]
    first_seen: HashMap<String, SystemTime>,
}

impl Ledger {
    /// A ledger whose books share their lock with the evaluator in `books`.
    pub(super) fn new(books: Arc<Mutex<Books>>) -> Self {
        let reasons = Arc::clone(&lock(&books).run.reasons);
        Ledger {
            books,
            housekeeping: Mutex::default(),
            reasons,
        }
    }

    /// The run's bookkeeping, locked.
    pub(super) fn run(&self) -> RunGuard<'_> {
        RunGuard(lock(&self.books))
    }

    /// The books, the evaluator and the latest readings, locked at once.
    pub(super) fn books(&self) -> MutexGuard<'_, Books> {
        lock(&self.books)
    }

    /// Keeps an event of iteration `iteration`.
    pub(super) fn push_event(&self, iteration: u64, kind: EventKind) {
        self.run().push_event(Event {
            at: SystemTime::now(),
            iteration,
            kind,
        });
    }

    /// Changes the latest sampler readings.
    pub(super) fn update_latest(&self, update: impl FnOnce(&mut Latest)) {
        update(&mut lock(&self.books).latest);
    }

    /// The processes given up on so far.
    pub(super) fn processes_given_up(&self) -> HashSet<(u32, u64)> {
        lock(&self.housekeeping).given_up.clone()
    }

    /// Folds a process sweep into the tally.
    pub(super) fn process_sweep(
        &self,
        given_up: impl IntoIterator<Item = (u32, u64)>,
        cleaned: usize,
        failed: usize,
        remaining: usize,
    ) {
        let mut book = lock(&self.housekeeping);
        book.given_up.extend(given_up);
        book.tally.orphaned_now = remaining as u64;
        book.tally.cleaned_total += cleaned as u64;
        book.tally.failures_total += failed as u64;
    }

    /// What the process sweeps found and did.
    pub(super) fn process_tally(&self) -> ProcessTally {
        lock(&self.housekeeping).tally
    }

    /// Keeps this run's running containers, each with when it was first seen.
    #[cfg(feature = "docker")]
    pub(super) fn live_containers(&self, stats: &[crate::containers::stats::ContainerStat]) {
        let now = SystemTime::now();
        let mut book = lock(&self.housekeeping);
        book.first_seen
            .retain(|name, _| stats.iter().any(|s| &s.name == name));
        let mut live = Vec::with_capacity(stats.len());
        for stat in stats {
            let since = *book.first_seen.entry(stat.name.clone()).or_insert(now);
            live.push(LiveContainer {
                name: stat.name.clone(),
                memory_bytes: stat.memory_bytes,
                cpu_percent: stat.cpu_percent,
                age_seconds: now.duration_since(since).unwrap_or_default().as_secs_f64(),
            });
        }
        live.sort_by(|a, b| a.name.cmp(&b.name));
        book.containers = live;
    }

    /// This run's running containers at the last sample.
    pub(super) fn containers(&self) -> Vec<LiveContainer> {
        lock(&self.housekeeping).containers.clone()
    }
}

/// The event log: every alert that fired or resolved, every warning that started or
/// cleared.
impl FindingSink for Ledger {
    fn transition(&self, t: &Transition) {
        self.push_event(
            t.iteration,
            EventKind::Alert {
                alertname: t.alert,
                state: t.state,
                message: t.alert.message(),
                value: t.value.is_finite().then_some(t.value),
                threshold: t.threshold,
                note: t.note,
            },
        );
    }

    fn warning(&self, w: &WarningChange) {
        self.push_event(
            w.iteration,
            EventKind::Warning {
                metric: w.watched.metric(),
                message: w.watched.warning(),
                started: w.started,
                value: w.value,
                baseline: w.baseline,
            },
        );
    }
}

/// The run's bookkeeping, behind the ledger's lock.
#[derive(Debug)]
pub(crate) struct RunLedger {
    pub(crate) started_at: SystemTime,
    pub(crate) iterations: u64,
    pub(crate) successes: u64,
    pub(crate) failures: u64,
    pub(crate) total_execution: Duration,
    pub(crate) champion: Option<String>,
    pub(crate) champion_since: Option<u64>,
    pub(crate) champion_staleness: u64,
    pub(crate) champion_changes: u64,
    /// Failures by reason number; the names are in `reasons`.
    failure_reasons: ReasonTotals,
    reasons: Arc<ReasonNames>,
    /// The best Sharpe ratio of any strategy so far.
    pub(crate) best_sharpe: Option<f64>,
    /// Its improvements, for the final export's best-so-far curve.
    pub(crate) progress: Progress,
    /// How a supervised loop ended, once it has.
    pub(crate) loop_exit: Option<crate::run::LoopExit>,
    /// Every exit of a supervised loop (the last [`MAX_EXITS`]), oldest first.
    exits: VecDeque<crate::run::LoopExit>,
    /// Whether the last exit is to be followed by a restart not yet counted.
    restart_pending: bool,
    /// Processes of the run still alive after the cleanup at the loop's exit.
    pub(crate) processes_left_behind: Vec<crate::processes::MarkedProcess>,
    /// Failure reasons of the last completed iterations, one entry each.
    recent_reasons: VecDeque<ReasonCounts>,
    history: VecDeque<HistoryPoint>,
    events: VecDeque<Event>,
    events_dropped: u64,
}

/// Exits of a supervised loop kept for the summary; the oldest are dropped first.
pub(crate) const MAX_EXITS: usize = 256;

/// Completed iterations whose failure reasons the dashboard shows beside the run's.
pub(crate) const RECENT_ITERATIONS: usize = 10;

impl RunLedger {
    pub(crate) fn new(started_at: SystemTime) -> Self {
        RunLedger {
            started_at,
            iterations: 0,
            successes: 0,
            failures: 0,
            total_execution: Duration::ZERO,
            champion: None,
            champion_since: None,
            champion_staleness: 0,
            champion_changes: 0,
            failure_reasons: ReasonTotals::default(),
            reasons: Arc::default(),
            best_sharpe: None,
            progress: Progress::default(),
            loop_exit: None,
            exits: VecDeque::new(),
            restart_pending: false,
            processes_left_behind: Vec::new(),
            recent_reasons: VecDeque::with_capacity(RECENT_ITERATIONS),
            history: VecDeque::with_capacity(HISTORY_LEN),
            events: VecDeque::new(),
            events_dropped: 0,
        }
    }

    /// Records the champion reported in iteration `iteration`; true when it changed.
    pub(crate) fn observe_champion(&mut self, champion: &str, iteration: u64) -> bool {
        if self.champion.as_deref() == Some(champion) {
            return false;
        }
        self.champion = Some(champion.to_string());
        self.champion_since = Some(iteration);
        self.champion_changes += 1;
        true
    }

    /// The champion changed `changes` times within a batch, the last to `champion` in
    /// iteration `iteration`.
    pub(crate) fn champion_changed_within(&mut self, champion: &str, iteration: u64, changes: u64) {
        self.champion = Some(champion.to_string());
        self.champion_since = Some(iteration);
        self.champion_changes += changes;
    }

    /// Folds `count` completed iterations of `duration` in all (the last of them
    /// summarised by `summary`, which carries their outcomes and the staleness after
    /// them), with their failures by reason, into the totals.
    pub(crate) fn complete(
        &mut self,
        count: u64,
        duration: Duration,
        summary: &crate::run::IterationSummary,
        reasons: &ReasonCounts,
    ) {
        self.iterations += count;
        if self.recent_reasons.len() == RECENT_ITERATIONS {
            self.recent_reasons.pop_front();
        }
        self.recent_reasons.push_back(*reasons);
        self.failure_reasons.add_all(reasons);
        self.successes += summary.successes;
        self.failures += summary.failures;
        self.total_execution += duration;
        self.champion_staleness = summary.champion_staleness;
    }

    /// Failure reasons over the last completed iterations, summed.
    pub(crate) fn recent_failure_reasons(&self) -> BTreeMap<String, u64> {
        let mut sum = ReasonCounts::default();
        for reasons in &self.recent_reasons {
            sum.add_all(reasons);
        }
        sum.by_name(&self.reasons)
    }

    /// Failures over the run by reason.
    pub(crate) fn failure_reasons(&self) -> BTreeMap<String, u64> {
        self.failure_reasons.by_name(&self.reasons)
    }

    /// Folds the best Sharpe ratio of iteration `iteration`, which ended at `at`
    /// (seconds since the Unix epoch) with the run's LLM spend at `spend_usd`, into the
    /// best so far; an improvement is kept as a point of the best-so-far curve.
    pub(crate) fn observe_sharpe(&mut self, sharpe: f64, iteration: u64, at: f64, spend_usd: f64) {
        if self.best_sharpe.is_none_or(|best| sharpe > best) {
            self.best_sharpe = Some(sharpe);
            self.progress.push(ProgressPoint {
                iteration,
                elapsed_seconds: (at - crate::run::unix_seconds(self.started_at)).max(0.0),
                llm_cost_usd: spend_usd,
                best_sharpe: sharpe,
            });
        }
    }

    /// Keeps a completed iteration's point, dropping the oldest past [`HISTORY_LEN`].
    pub(crate) fn push_history(&mut self, point: HistoryPoint) {
        if self.history.len() == HISTORY_LEN {
            self.history.pop_front();
        }
        self.history.push_back(point);
    }

    /// The recent iterations, oldest first.
    pub(crate) fn history(&self) -> Vec<HistoryPoint> {
        self.history.iter().copied().collect()
    }

    /// Keeps an event, dropping (and counting) the oldest past [`MAX_EVENTS`].
    pub(crate) fn push_event(&mut self, event: Event) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    /// Records an exit of the supervised loop; an exit already recorded (the same
    /// instant: a restart that was then called off) is replaced, not repeated.
    pub(crate) fn record_exit(&mut self, exit: crate::run::LoopExit) {
        self.restart_pending = exit.restarted;
        if let Some(last) = self.exits.back_mut() {
            if last.at == exit.at {
                *last = exit;
                return;
            }
        }
        if self.exits.len() == MAX_EXITS {
            self.exits.pop_front();
        }
        self.exits.push_back(exit);
    }

    /// The last exit when a restart was to follow it and has not been counted yet;
    /// counts it (returns it once).
    pub(crate) fn exits_pending_restart(&mut self) -> Option<crate::run::LoopExit> {
        if self.restart_pending && self.exits.back().is_some_and(|e| e.restarted) {
            self.restart_pending = false;
            return self.exits.back().copied();
        }
        None
    }

    /// The recent events, oldest first, and how many were dropped for the bound.
    pub(crate) fn events(&self) -> (Vec<Event>, u64) {
        (self.events.iter().cloned().collect(), self.events_dropped)
    }

    pub(crate) fn summary(&self, run_id: &str) -> RunSummary {
        let outcomes = self.successes + self.failures;
        RunSummary {
            run_id: run_id.to_string(),
            started_at: humantime::format_rfc3339_millis(self.started_at).to_string(),
            elapsed_seconds: self.started_at.elapsed().unwrap_or_default().as_secs_f64(),
            iterations: self.iterations,
            strategy_successes: self.successes,
            strategy_failures: self.failures,
            success_rate: (outcomes > 0).then(|| self.successes as f64 / outcomes as f64),
            mean_execution_time_seconds: (self.iterations > 0)
                .then(|| self.total_execution.as_secs_f64() / self.iterations as f64),
            champion: self.champion.clone(),
            champion_since_iteration: self.champion_since,
            champion_staleness_iterations: self.champion_staleness,
            champion_changes: self.champion_changes,
            best_sharpe: self.best_sharpe,
            failure_reasons: self.failure_reasons(),
            loop_exit: self.loop_exit,
            exits: self.exits.iter().copied().collect(),
            llm: crate::llm::meter::LlmSummary::default(),
            processes_left_behind: self.processes_left_behind.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::IterationSummary;

    fn iteration(number: u64, successes: u64, failures: u64, staleness: u64) -> IterationSummary {
        IterationSummary {
            number,
            duration: Duration::from_millis(1),
            successes,
            failures,
            mean_sharpe: None,
            mean_max_drawdown: None,
            diversity: None,
            unique_strategies: None,
            champion_changed: false,
            champion_staleness: staleness,
        }
    }

    #[test]
    fn completed_iterations_and_champions_are_booked() {
        let mut state = RunLedger::new(SystemTime::now());
        let tick = Duration::from_millis(1);
        let none = ReasonCounts::default();
        state.complete(1, tick, &iteration(1, 3, 1, 0), &none);
        assert!(state.observe_champion("a", 2));
        assert!(!state.observe_champion("a", 3));
        state.complete(2, tick * 2, &iteration(3, 4, 0, 1), &none);
        assert!(state.observe_champion("b", 5));
        let summary = state.summary("run");
        assert_eq!(summary.champion.as_deref(), Some("b"));
        assert_eq!(summary.champion_since_iteration, Some(5));
        assert_eq!(summary.champion_changes, 2);
        assert_eq!(summary.iterations, 3);
        assert_eq!(
            (summary.strategy_successes, summary.strategy_failures),
            (7, 1)
        );
        assert_eq!(summary.champion_staleness_iterations, 1);
        assert_eq!(summary.mean_execution_time_seconds, Some(0.001));
    }

    #[test]
    fn recent_failure_reasons_cover_the_last_iterations() {
        let mut state = RunLedger::new(SystemTime::now());
        let tick = Duration::from_millis(1);
        for i in 0..(RECENT_ITERATIONS as u64 + 5) {
            let mut reasons = ReasonCounts::default();
            reasons.add(state.reasons.id(if i < 5 { "early" } else { "late" }), 2);
            state.complete(1, tick, &iteration(i + 1, 0, 2, 0), &reasons);
        }
        assert_eq!(state.failure_reasons()["early"], 10);
        let recent = state.recent_failure_reasons();
        assert_eq!(recent.get("early"), None);
        assert_eq!(recent["late"], 2 * RECENT_ITERATIONS as u64);
    }
}

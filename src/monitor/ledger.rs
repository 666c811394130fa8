//! The part of the monitor that keeps the run's ledger: totals, champion tracking,
//! failure reasons, the bounded history and event log the page and the final export
//! read, the samplers' latest readings, and what the process sweeps did.

#[cfg(feature = "docker")]
use std::collections::HashMap;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::evaluate::{Transition, WarningChange};
use crate::export::{LiveContainer, ProcessTally};
use crate::run::{
    Event, EventKind, HistoryPoint, RunSummary, HISTORY_LEN, MAX_EVENTS, MAX_FAILURE_REASONS,
};
use crate::sample::HostSample;

use super::findings::FindingSink;
use super::judge::lock;

/// The ledger's parts, each behind its own lock. No method holds two of them at once.
#[derive(Debug)]
pub(super) struct Ledger {
    run: Mutex<RunLedger>,
    latest: Mutex<Latest>,
    housekeeping: Mutex<Housekeeping>,
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
    pub(super) fn new(started_at: SystemTime) -> Self {
        Ledger {
            run: Mutex::new(RunLedger::new(started_at)),
            latest: Mutex::default(),
            housekeeping: Mutex::default(),
        }
    }

    /// The run's bookkeeping, locked.
    pub(super) fn run(&self) -> MutexGuard<'_, RunLedger> {
        lock(&self.run)
    }

    /// Keeps an event of iteration `iteration`.
    pub(super) fn push_event(&self, iteration: u64, kind: EventKind) {
        self.run().push_event(Event {
            at: SystemTime::now(),
            iteration,
            kind,
        });
    }

    /// The latest sampler readings.
    pub(super) fn latest(&self) -> Latest {
        *lock(&self.latest)
    }

    /// Changes the latest sampler readings.
    pub(super) fn update_latest(&self, update: impl FnOnce(&mut Latest)) {
        update(&mut lock(&self.latest));
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
    pub(crate) failure_reasons: BTreeMap<String, u64>,
    /// The best Sharpe ratio of any strategy so far.
    pub(crate) best_sharpe: Option<f64>,
    /// How a supervised loop ended, once it has.
    pub(crate) loop_exit: Option<crate::run::LoopExit>,
    /// Every exit of a supervised loop (the last [`MAX_EXITS`]), oldest first.
    exits: VecDeque<crate::run::LoopExit>,
    /// Whether the last exit is to be followed by a restart not yet counted.
    restart_pending: bool,
    /// Processes of the run still alive after the cleanup at the loop's exit.
    pub(crate) processes_left_behind: Vec<crate::processes::MarkedProcess>,
    /// Failure reasons of the iterations in progress, then of the last completed ones.
    current_reasons: BTreeMap<String, u64>,
    recent_reasons: VecDeque<BTreeMap<String, u64>>,
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
            failure_reasons: BTreeMap::new(),
            best_sharpe: None,
            loop_exit: None,
            exits: VecDeque::new(),
            restart_pending: false,
            processes_left_behind: Vec::new(),
            current_reasons: BTreeMap::new(),
            recent_reasons: VecDeque::with_capacity(RECENT_ITERATIONS),
            history: VecDeque::with_capacity(HISTORY_LEN),
            events: VecDeque::new(),
            events_dropped: 0,
        }
    }

    /// Tallies one failure reason, without allocating for a reason seen before.
    pub(crate) fn count_failure_reason(&mut self, reason: &str) {
        self.count_failure_reasons(reason, 1);
    }

    /// Tallies `n` failures with the same reason.
    pub(crate) fn count_failure_reasons(&mut self, reason: &str, n: u64) {
        for tally in [&mut self.current_reasons, &mut self.failure_reasons] {
            if let Some(count) = tally.get_mut(reason) {
                *count = count.saturating_add(n);
            } else if tally.len() < MAX_FAILURE_REASONS {
                tally.insert(reason.to_string(), n);
            } else {
                let other = tally.entry("other".to_string()).or_insert(0);
                *other = other.saturating_add(n);
            }
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

    /// Folds `count` completed iterations into the totals and returns the new
    /// staleness; `since_change` is how many of them came after the one in which the
    /// champion last changed, when it changed among them.
    ///
    /// Staleness counts completed iterations since the champion last changed; it stays
    /// 0 until a champion has been reported at all.
    pub(crate) fn complete(
        &mut self,
        count: u64,
        duration: Duration,
        successes: u64,
        failures: u64,
        since_change: Option<u64>,
    ) -> u64 {
        self.iterations += count;
        if self.recent_reasons.len() == RECENT_ITERATIONS {
            self.recent_reasons.pop_front();
        }
        self.recent_reasons
            .push_back(std::mem::take(&mut self.current_reasons));
        self.successes += successes;
        self.failures += failures;
        self.total_execution += duration;
        if let Some(since) = since_change {
            self.champion_staleness = since;
        } else if self.champion.is_some() {
            self.champion_staleness += count;
        }
        self.champion_staleness
    }

    /// Failure reasons over the last completed iterations, summed.
    pub(crate) fn recent_failure_reasons(&self) -> BTreeMap<String, u64> {
        let mut sum = BTreeMap::new();
        for reasons in &self.recent_reasons {
            for (reason, count) in reasons {
                *sum.entry(reason.clone()).or_insert(0) += count;
            }
        }
        sum
    }

    /// Folds a strategy's Sharpe ratio into the best so far.
    pub(crate) fn observe_sharpe(&mut self, sharpe: f64) {
        if self.best_sharpe.is_none_or(|best| sharpe > best) {
            self.best_sharpe = Some(sharpe);
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
            failure_reasons: self.failure_reasons.clone(),
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

    #[test]
    fn staleness_counts_iterations_since_the_champion_changed() {
        let mut state = RunLedger::new(SystemTime::now());
        let tick = Duration::from_millis(1);
        assert_eq!(state.complete(1, tick, 1, 0, None), 0, "no champion yet");
        assert!(state.observe_champion("a", 2));
        assert_eq!(state.complete(1, tick, 1, 0, Some(0)), 0);
        assert!(!state.observe_champion("a", 3));
        assert_eq!(state.complete(1, tick, 1, 0, None), 1);
        assert_eq!(state.complete(1, tick, 1, 0, None), 2);
        assert!(state.observe_champion("b", 5));
        assert_eq!(state.complete(1, tick, 1, 0, Some(0)), 0);
        let summary = state.summary("run");
        assert_eq!(summary.champion.as_deref(), Some("b"));
        assert_eq!(summary.champion_since_iteration, Some(5));
        assert_eq!(summary.champion_changes, 2);
        assert_eq!(summary.iterations, 5);
    }

    #[test]
    fn failure_reasons_are_bounded() {
        let mut state = RunLedger::new(SystemTime::now());
        for i in 0..100 {
            state.count_failure_reason(&format!("reason {i}"));
        }
        state.count_failure_reason("reason 0");
        assert_eq!(state.failure_reasons.len(), MAX_FAILURE_REASONS + 1);
        assert_eq!(state.failure_reasons["reason 0"], 2);
        assert_eq!(
            state.failure_reasons["other"],
            100 - MAX_FAILURE_REASONS as u64
        );
    }
}

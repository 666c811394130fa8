//! The run's bookkeeping: totals, champion tracking, failure reasons, and the bounded
//! history and event log the dashboard and the final export read.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

use crate::run::{Event, HistoryPoint, RunSummary, HISTORY_LEN, MAX_EVENTS, MAX_FAILURE_REASONS};

/// Mutable run bookkeeping, behind the monitor's mutex.
#[derive(Debug)]
pub(crate) struct RunState {
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
    /// Processes of the run still alive after the cleanup at the loop's exit.
    pub(crate) processes_left_behind: Vec<crate::processes::MarkedProcess>,
    /// Failure reasons of the iterations in progress, then of the last completed ones.
    current_reasons: BTreeMap<String, u64>,
    recent_reasons: VecDeque<BTreeMap<String, u64>>,
    history: VecDeque<HistoryPoint>,
    events: VecDeque<Event>,
    events_dropped: u64,
}

/// Completed iterations whose failure reasons the dashboard shows beside the run's.
pub(crate) const RECENT_ITERATIONS: usize = 10;

impl RunState {
    pub(crate) fn new(started_at: SystemTime) -> Self {
        RunState {
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

    /// Folds a completed iteration into the totals and returns the new staleness.
    ///
    /// Staleness counts completed iterations since the champion last changed; it stays
    /// 0 until a champion has been reported at all.
    pub(crate) fn complete(
        &mut self,
        duration: Duration,
        successes: u64,
        failures: u64,
        champion_changed: bool,
    ) -> u64 {
        self.iterations += 1;
        if self.recent_reasons.len() == RECENT_ITERATIONS {
            self.recent_reasons.pop_front();
        }
        self.recent_reasons
            .push_back(std::mem::take(&mut self.current_reasons));
        self.successes += successes;
        self.failures += failures;
        self.total_execution += duration;
        if champion_changed {
            self.champion_staleness = 0;
        } else if self.champion.is_some() {
            self.champion_staleness += 1;
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
            processes_left_behind: self.processes_left_behind.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_counts_iterations_since_the_champion_changed() {
        let mut state = RunState::new(SystemTime::now());
        let tick = Duration::from_millis(1);
        assert_eq!(state.complete(tick, 1, 0, false), 0, "no champion yet");
        assert!(state.observe_champion("a", 2));
        assert_eq!(state.complete(tick, 1, 0, true), 0);
        assert!(!state.observe_champion("a", 3));
        assert_eq!(state.complete(tick, 1, 0, false), 1);
        assert_eq!(state.complete(tick, 1, 0, false), 2);
        assert!(state.observe_champion("b", 5));
        assert_eq!(state.complete(tick, 1, 0, true), 0);
        let summary = state.summary("run");
        assert_eq!(summary.champion.as_deref(), Some("b"));
        assert_eq!(summary.champion_since_iteration, Some(5));
        assert_eq!(summary.champion_changes, 2);
        assert_eq!(summary.iterations, 5);
    }

    #[test]
    fn failure_reasons_are_bounded() {
        let mut state = RunState::new(SystemTime::now());
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

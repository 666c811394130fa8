//! The run's bookkeeping: totals, champion tracking and the summaries derived from them.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Distinct failure reasons tallied by name; further reasons are counted as `other`.
pub const MAX_FAILURE_REASONS: usize = 32;

/// What happened in one completed iteration, as handed to the evaluator.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct IterationSummary {
    /// The iteration's number (1-based).
    pub number: u64,
    /// Wall-clock time from start to finish.
    #[serde(serialize_with = "serialize_seconds")]
    pub duration: Duration,
    /// Strategies that succeeded.
    pub successes: u64,
    /// Strategies that failed.
    pub failures: u64,
    /// Mean Sharpe ratio of the successes with a valid Sharpe, if any.
    pub mean_sharpe: Option<f64>,
    /// Mean max drawdown of the successes with a valid drawdown, if any.
    pub mean_max_drawdown: Option<f64>,
    /// Population diversity reported during the iteration, if any.
    pub diversity: Option<f64>,
    /// Distinct strategies reported during the iteration, if any.
    pub unique_strategies: Option<u64>,
    /// Whether the champion changed during the iteration.
    pub champion_changed: bool,
    /// Completed iterations since the champion last changed, this one included.
    pub champion_staleness: u64,
}

fn serialize_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The whole run so far, summarised (written to `metrics_final.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// Unique id of this run.
    pub run_id: String,
    /// When the monitor started, RFC 3339.
    pub started_at: String,
    /// Seconds since the monitor started.
    pub elapsed_seconds: f64,
    /// Completed iterations.
    pub iterations: u64,
    /// Strategies that succeeded, over the whole run.
    pub strategy_successes: u64,
    /// Strategies that failed, over the whole run.
    pub strategy_failures: u64,
    /// successes / (successes + failures), if any strategy was reported.
    pub success_rate: Option<f64>,
    /// Mean wall-clock time of the completed iterations, in seconds.
    pub mean_execution_time_seconds: Option<f64>,
    /// The current champion's identity, if one was reported.
    pub champion: Option<String>,
    /// Iteration in which the current champion took over.
    pub champion_since_iteration: Option<u64>,
    /// Completed iterations since the champion last changed.
    pub champion_staleness_iterations: u64,
    /// Times the champion changed (the first report included).
    pub champion_changes: u64,
    /// Failures by reason (at most [`MAX_FAILURE_REASONS`] names, then `other`).
    pub failure_reasons: BTreeMap<String, u64>,
}

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
}

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
        }
    }

    /// Tallies one failure reason, without allocating for a reason seen before.
    pub(crate) fn count_failure_reason(&mut self, reason: &str) {
        if let Some(count) = self.failure_reasons.get_mut(reason) {
            *count += 1;
        } else if self.failure_reasons.len() < MAX_FAILURE_REASONS {
            self.failure_reasons.insert(reason.to_string(), 1);
        } else {
            *self.failure_reasons.entry("other".to_string()).or_insert(0) += 1;
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

//! A bounded in-memory history of recent iterations, for the embedded dashboard.

use std::collections::VecDeque;

use serde::Serialize;

/// Iterations kept for the embedded dashboard; older ones are dropped first.
pub const HISTORY_LEN: usize = 600;

/// What the dashboard draws for one completed iteration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HistoryPoint {
    /// The iteration's number.
    pub iteration: u64,
    /// Wall-clock time of the iteration, in seconds.
    pub execution_time_seconds: f64,
    /// Resident set size of the loop process at the end of the iteration, in bytes.
    pub memory_usage_bytes: f64,
    /// CPU of the loop process at the last sample, 100 = one core.
    pub cpu_usage_percent: f64,
    /// Success rate over the rolling window, if any outcome was reported.
    pub success_rate_10iter: Option<f64>,
    /// Mean Sharpe ratio of the iteration's successes.
    pub sharpe_ratio: Option<f64>,
    /// Mean max drawdown of the iteration's successes.
    pub max_drawdown: Option<f64>,
    /// Population diversity reported in the iteration.
    pub population_diversity: Option<f64>,
    /// Distinct strategies reported in the iteration.
    pub unique_strategy_count: Option<u64>,
    /// Iterations since the champion last changed.
    pub champion_staleness_iterations: u64,
    /// Whether the champion changed in this iteration.
    pub champion_changed: bool,
    /// Running loopwatch-managed containers at the last container sample.
    pub active_containers: f64,
    /// Memory of those containers, summed, in bytes.
    pub container_memory_bytes: f64,
    /// Cleanup failures so far.
    pub cleanup_failures: f64,
    /// Alerts firing at the end of the iteration.
    pub alerts_firing: u8,
}

/// The ring of recent points.
#[derive(Debug, Default)]
pub(crate) struct History {
    points: VecDeque<HistoryPoint>,
}

impl History {
    pub(crate) fn push(&mut self, point: HistoryPoint) {
        if self.points.len() == HISTORY_LEN {
            self.points.pop_front();
        }
        self.points.push_back(point);
    }

    pub(crate) fn points(&self) -> Vec<HistoryPoint> {
        self.points.iter().copied().collect()
    }
}

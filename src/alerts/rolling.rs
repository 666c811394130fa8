//! The rolling values of the window over the last iterations, and the quantities among
//! them watched against their baselines (the degradation and slowdown warnings). The
//! evaluator keeps the window; the verdicts and the exporters read its values.

use enum_map::Enum;
use serde::Serialize;

/// The rolling values of a window (each `None` when the window holds no data for it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct RollingValues {
    /// Iterations currently in the window (up to its size).
    pub(crate) iterations: usize,
    /// Outcomes (successes and failures) in the window: without any, the window has
    /// no success rate.
    pub(crate) outcomes: u64,
    /// successes / (successes + failures) over the window.
    pub(crate) success_rate: Option<f64>,
    /// Mean of the per-iteration mean Sharpe ratios in the window.
    pub(crate) avg_sharpe: Option<f64>,
    /// Mean of the per-iteration diversities in the window.
    pub(crate) avg_diversity: Option<f64>,
    /// Mean wall-clock iteration time in the window, in seconds.
    pub(crate) mean_seconds: Option<f64>,
}

impl RollingValues {
    /// The rolling value a warning watches.
    pub(crate) fn of(&self, watched: Watched) -> Option<f64> {
        match watched {
            Watched::SuccessRate => self.success_rate,
            Watched::AvgSharpe => self.avg_sharpe,
            Watched::AvgDiversity => self.avg_diversity,
            Watched::ExecutionTime => self.mean_seconds,
        }
    }
}

/// A rolling quantity compared against its baseline, and so the subject of a
/// degradation or slowdown warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Enum)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Watched {
    /// `success_rate_10iter`: lower is worse.
    SuccessRate,
    /// `avg_sharpe_10iter`: lower is worse.
    AvgSharpe,
    /// `avg_diversity_10iter`: lower is worse.
    AvgDiversity,
    /// Mean iteration time over the window: higher is worse (the slowdown warning).
    ExecutionTime,
}

impl Watched {
    /// Every watched quantity, in a fixed order.
    pub(crate) const ALL: [Watched; 4] = [
        Watched::SuccessRate,
        Watched::AvgSharpe,
        Watched::AvgDiversity,
        Watched::ExecutionTime,
    ];

    /// The `metric` label: the exported metric the quantity is published as.
    pub(crate) const fn metric(self) -> &'static str {
        use crate::catalog;
        match self {
            Watched::SuccessRate => catalog::SUCCESS_RATE_10ITER.name,
            Watched::AvgSharpe => catalog::AVG_SHARPE_10ITER.name,
            Watched::AvgDiversity => catalog::AVG_DIVERSITY_10ITER.name,
            Watched::ExecutionTime => catalog::EXECUTION_TIME_SECONDS.name,
        }
    }

    /// The fixed warning text.
    pub(crate) const fn warning(self) -> &'static str {
        match self {
            Watched::ExecutionTime => "Performance slowdown detected",
            _ => "Performance degradation detected",
        }
    }
}

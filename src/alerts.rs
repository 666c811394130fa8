//! The alerts and warnings loopwatch raises, with their fixed names, messages and
//! severities (Contract 2). Every layer speaks this vocabulary: the evaluator decides,
//! the exporters label and deliver, the generated rules mirror it.

use enum_map::Enum;
use serde::Serialize;

/// The alerts of requirement 3, with their fixed names and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Enum)]
pub enum AlertName {
    /// Memory in use above the threshold (default 80%) of the limit that kills: the
    /// loop's cgroup limit when below host memory, else host memory.
    HighMemoryUsage,
    /// Diversity below the floor for N consecutive iterations (default 0.1 for 5).
    DiversityCollapse,
    /// The champion unchanged for N iterations (default 20).
    ChampionStaleness,
    /// Success rate below the floor over a full window (default 20% over 10).
    LowSuccessRate,
    /// More orphaned containers than the limit (default 3).
    ContainerCleanupFailures,
    /// An iteration running, or no new one started after the last ended, far longer
    /// than usual (default: 10 × the rolling mean iteration time, at least 60 s).
    LoopStalled,
    /// A supervised loop (`loopwatch run`) exited non-zero or by a signal without
    /// having said it was done.
    LoopExited,
}

impl AlertName {
    /// Every alert, in a fixed order.
    pub const ALL: [AlertName; 7] = [
        AlertName::HighMemoryUsage,
        AlertName::DiversityCollapse,
        AlertName::ChampionStaleness,
        AlertName::LowSuccessRate,
        AlertName::ContainerCleanupFailures,
        AlertName::LoopStalled,
        AlertName::LoopExited,
    ];

    /// The `alertname` label.
    ///
    /// ```
    /// assert_eq!(loopwatch::AlertName::LowSuccessRate.as_str(), "LowSuccessRate");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertName::HighMemoryUsage => "HighMemoryUsage",
            AlertName::DiversityCollapse => "DiversityCollapse",
            AlertName::ChampionStaleness => "ChampionStaleness",
            AlertName::LowSuccessRate => "LowSuccessRate",
            AlertName::ContainerCleanupFailures => "ContainerCleanupFailures",
            AlertName::LoopStalled => "LoopStalled",
            AlertName::LoopExited => "LoopExited",
        }
    }

    /// The fixed message, used as log text and as the Alertmanager summary.
    ///
    /// ```
    /// assert_eq!(
    ///     loopwatch::AlertName::DiversityCollapse.message(),
    ///     "Diversity collapse detected"
    /// );
    /// ```
    pub const fn message(self) -> &'static str {
        match self {
            AlertName::HighMemoryUsage => "High memory usage detected",
            AlertName::DiversityCollapse => "Diversity collapse detected",
            AlertName::ChampionStaleness => "Champion staleness detected",
            AlertName::LowSuccessRate => "Low success rate detected",
            AlertName::ContainerCleanupFailures => "Container cleanup failures detected",
            AlertName::LoopStalled => "Loop stall detected",
            AlertName::LoopExited => "Unexpected loop exit detected",
        }
    }

    /// The `severity` label: `critical` where the process or host is at risk.
    ///
    /// ```
    /// assert_eq!(loopwatch::AlertName::HighMemoryUsage.severity(), "critical");
    /// ```
    pub const fn severity(self) -> &'static str {
        match self {
            AlertName::HighMemoryUsage
            | AlertName::ContainerCleanupFailures
            | AlertName::LoopStalled
            | AlertName::LoopExited => "critical",
            AlertName::DiversityCollapse
            | AlertName::ChampionStaleness
            | AlertName::LowSuccessRate => "warning",
        }
    }
}

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition does not hold.
    #[default]
    Inactive,
    /// The condition holds but not yet for long enough (a streak still short of its
    /// length, a success rate over a window not yet full).
    Pending,
    /// The condition holds: the alert has fired and stays firing until it clears.
    Firing,
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

    /// The fixed warning text (Contract 2).
    pub(crate) const fn warning(self) -> &'static str {
        match self {
            Watched::ExecutionTime => "Performance slowdown detected",
            _ => "Performance degradation detected",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_hold_every_variant_once() {
        let alerts: std::collections::HashSet<_> = AlertName::ALL.into_iter().collect();
        assert_eq!(
            alerts.len(),
            enum_map::EnumMap::<AlertName, ()>::default().len()
        );
        let watched: std::collections::HashSet<_> = Watched::ALL.into_iter().collect();
        assert_eq!(
            watched.len(),
            enum_map::EnumMap::<Watched, ()>::default().len()
        );
        for (i, alert) in AlertName::ALL.into_iter().enumerate() {
            assert_eq!(alert.into_usize(), i, "ALL is in declaration order");
        }
    }
}

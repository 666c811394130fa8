//! The five alerts and the thresholds they and the warnings use.

use std::time::Duration;

/// The alerts of requirement 3, with their fixed names and messages (Contract 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum AlertName {
    /// Host memory in use above the threshold (default 80%).
    HighMemoryUsage,
    /// Diversity below the floor for N consecutive iterations (default 0.1 for 5).
    DiversityCollapse,
    /// The champion unchanged for N iterations (default 20).
    ChampionStaleness,
    /// Success rate below the floor over a full window (default 20% over 10).
    LowSuccessRate,
    /// More orphaned containers than the limit (default 3).
    ContainerCleanupFailures,
}

impl AlertName {
    /// Every alert, in a fixed order.
    pub const ALL: [AlertName; 5] = [
        AlertName::HighMemoryUsage,
        AlertName::DiversityCollapse,
        AlertName::ChampionStaleness,
        AlertName::LowSuccessRate,
        AlertName::ContainerCleanupFailures,
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
        }
    }

    /// The `severity` label: `critical` where the process or host is at risk.
    pub const fn severity(self) -> &'static str {
        match self {
            AlertName::HighMemoryUsage => "critical",
            AlertName::ContainerCleanupFailures => "critical",
            AlertName::DiversityCollapse
            | AlertName::ChampionStaleness
            | AlertName::LowSuccessRate => "warning",
        }
    }

    /// Whether the rule runs on sampler ticks (host, containers) rather than at
    /// iteration ends.
    pub const fn is_sampled(self) -> bool {
        matches!(
            self,
            AlertName::HighMemoryUsage | AlertName::ContainerCleanupFailures
        )
    }
}

/// Thresholds, windows and intervals of the evaluator. The defaults are the numbers of
/// the requirements; the generated Prometheus rules and dashboard use the same values.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Iterations in the rolling windows (default 10).
    pub window: usize,
    /// HighMemoryUsage fires when host memory in use exceeds this fraction (0.80).
    pub memory_fraction: f64,
    /// …and resolves only once it falls below this fraction (0.78), so memory that
    /// hovers at the threshold does not flap.
    pub memory_clear_fraction: f64,
    /// Consecutive samples above the threshold before HighMemoryUsage fires (1).
    pub memory_samples: u32,
    /// DiversityCollapse: diversity below this (0.1) …
    pub diversity_floor: f64,
    /// … in each of this many consecutive iterations (5).
    pub diversity_iterations: u64,
    /// ChampionStaleness: iterations since the champion last changed (20).
    pub staleness_iterations: u64,
    /// LowSuccessRate: success rate over a full window below this (0.20).
    pub success_rate_floor: f64,
    /// ContainerCleanupFailures: orphaned containers above this (3).
    pub orphan_limit: u64,
    /// "Performance degradation detected": a rolling average worse than its baseline
    /// by more than this fraction (0.20) of the baseline's magnitude.
    pub degradation_fraction: f64,
    /// Smallest baseline magnitude degradation is measured against (0.1), so a
    /// baseline near zero (a Sharpe of 0.01, say) does not make noise a "degradation".
    pub baseline_floor: f64,
    /// "Performance slowdown detected": mean iteration time above this multiple of
    /// the baseline (1.5).
    pub slowdown_factor: f64,
    /// Period of the long-run statistics log line (6 h).
    pub stats_interval: Duration,
    /// Period at which firing alerts are re-sent to Alertmanager (15 s).
    pub alert_resend_interval: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            window: 10,
            memory_fraction: 0.80,
            memory_clear_fraction: 0.78,
            memory_samples: 1,
            diversity_floor: 0.1,
            diversity_iterations: 5,
            staleness_iterations: 20,
            success_rate_floor: 0.20,
            orphan_limit: 3,
            degradation_fraction: 0.20,
            baseline_floor: 0.1,
            slowdown_factor: 1.5,
            stats_interval: Duration::from_secs(6 * 3600),
            alert_resend_interval: Duration::from_secs(15),
        }
    }
}

impl Thresholds {
    /// The threshold an alert compares against, as shown with its value.
    pub fn threshold_of(&self, alert: AlertName) -> f64 {
        match alert {
            AlertName::HighMemoryUsage => self.memory_fraction,
            AlertName::DiversityCollapse => self.diversity_floor,
            AlertName::ChampionStaleness => self.staleness_iterations as f64,
            AlertName::LowSuccessRate => self.success_rate_floor,
            AlertName::ContainerCleanupFailures => self.orphan_limit as f64,
        }
    }

    /// Checks the values make sense together; the error names the field.
    pub(crate) fn validate(&self) -> Result<(), crate::Error> {
        let bad = |field: &'static str, value: String, reason: &str| {
            Err(crate::Error::InvalidSetting {
                variable: field,
                value,
                reason: reason.into(),
            })
        };
        if self.window == 0 {
            return bad(
                "Thresholds::window",
                "0".into(),
                "the window needs at least one iteration",
            );
        }
        if !(0.0 < self.memory_fraction && self.memory_fraction <= 1.0) {
            return bad(
                "Thresholds::memory_fraction",
                self.memory_fraction.to_string(),
                "expected a fraction in (0, 1]",
            );
        }
        if !(0.0 <= self.memory_clear_fraction
            && self.memory_clear_fraction <= self.memory_fraction)
        {
            return bad(
                "Thresholds::memory_clear_fraction",
                self.memory_clear_fraction.to_string(),
                "expected a fraction no higher than memory_fraction",
            );
        }
        if self.diversity_iterations == 0 || self.staleness_iterations == 0 {
            return bad(
                "Thresholds::diversity_iterations/staleness_iterations",
                "0".into(),
                "expected at least 1",
            );
        }
        let sane = self.slowdown_factor > 1.0
            && self.degradation_fraction > 0.0
            && self.baseline_floor >= 0.0;
        if !sane {
            return bad(
                "Thresholds::slowdown_factor/degradation_fraction/baseline_floor",
                format!(
                    "{}/{}/{}",
                    self.slowdown_factor, self.degradation_fraction, self.baseline_floor
                ),
                "expected a factor above 1, a positive fraction and a non-negative floor",
            );
        }
        if self.stats_interval.is_zero() || self.alert_resend_interval.is_zero() {
            return bad(
                "Thresholds::stats_interval/alert_resend_interval",
                "0s".into(),
                "expected a positive period",
            );
        }
        Ok(())
    }
}

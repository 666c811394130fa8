//! The in-process evaluator: rolling windows and baselines, the five alerts, and the
//! degradation and slowdown warnings. Pure logic: evidence in, transitions out; the
//! monitor logs, exports and delivers what comes out.

mod alerts;
mod events;
mod rules;
mod window;

use std::time::SystemTime;

pub use alerts::{AlertState, Transition};
pub use events::{Event, EventKind, MAX_EVENTS};
pub use rules::{AlertName, Thresholds};
pub use window::RollingValues;

pub(crate) use alerts::{AlertTracker, Verdict};
pub(crate) use events::EventLog;
pub(crate) use window::{Entry, RollingWindow};

use crate::monitor::IterationSummary;

pub(crate) fn serialize_time<S: serde::Serializer>(
    t: &SystemTime,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

pub(crate) fn serialize_optional_time<S: serde::Serializer>(
    t: &Option<SystemTime>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => serialize_time(t, s),
        None => s.serialize_none(),
    }
}

/// A rolling quantity compared against its baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Watched {
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
    pub const ALL: [Watched; 4] = [
        Watched::SuccessRate,
        Watched::AvgSharpe,
        Watched::AvgDiversity,
        Watched::ExecutionTime,
    ];

    /// The exported metric the quantity is published as.
    pub const fn metric(self) -> &'static str {
        match self {
            Watched::SuccessRate => "success_rate_10iter",
            Watched::AvgSharpe => "avg_sharpe_10iter",
            Watched::AvgDiversity => "avg_diversity_10iter",
            Watched::ExecutionTime => "execution_time_seconds",
        }
    }

    /// The fixed warning text (Contract 2).
    pub const fn warning(self) -> &'static str {
        match self {
            Watched::ExecutionTime => "Performance slowdown detected",
            _ => "Performance degradation detected",
        }
    }

    fn value(self, v: &RollingValues) -> Option<f64> {
        match self {
            Watched::SuccessRate => v.success_rate,
            Watched::AvgSharpe => v.avg_sharpe,
            Watched::AvgDiversity => v.avg_diversity,
            Watched::ExecutionTime => v.mean_seconds,
        }
    }
}

/// A degradation or slowdown warning that started or cleared.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct WarningChange {
    /// The quantity.
    pub watched: Watched,
    /// True when the warning started, false when it cleared.
    pub started: bool,
    /// Its rolling value now.
    pub value: f64,
    /// Its baseline.
    pub baseline: f64,
    /// The limit it crossed.
    pub limit: f64,
    /// The last completed iteration.
    pub iteration: u64,
}

/// What one evaluation produced.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub(crate) transitions: Vec<Transition>,
    pub(crate) warnings: Vec<WarningChange>,
}

/// The evaluator's state: windows, baselines, streaks and the alert trackers.
#[derive(Debug)]
pub(crate) struct Evaluator {
    pub(crate) thresholds: Thresholds,
    window: RollingWindow,
    baselines: [Option<f64>; 4],
    warned: [bool; 4],
    low_diversity_streak: u64,
    memory_streak: u32,
    trackers: [AlertTracker; 5],
    last_iteration: u64,
}

impl Evaluator {
    pub(crate) fn new(thresholds: Thresholds) -> Self {
        Evaluator {
            window: RollingWindow::new(thresholds.window),
            thresholds,
            baselines: [None; 4],
            warned: [false; 4],
            low_diversity_streak: 0,
            memory_streak: 0,
            trackers: AlertName::ALL.map(AlertTracker::new),
            last_iteration: 0,
        }
    }

    fn tracker(&mut self, alert: AlertName) -> &mut AlertTracker {
        &mut self.trackers[alert as usize]
    }

    fn judge(&mut self, alert: AlertName, verdict: Verdict, findings: &mut Findings) {
        let threshold = self.thresholds.threshold_of(alert);
        let iteration = self.last_iteration;
        if let Some(t) = self.tracker(alert).update(verdict, threshold, iteration) {
            findings.transitions.push(t);
        }
    }

    /// Rolling values of the current window.
    pub(crate) fn rolling(&self) -> RollingValues {
        self.window.values()
    }

    /// Baselines captured from the first full window, by [`Watched`] order.
    pub(crate) fn baselines(&self) -> [Option<f64>; 4] {
        self.baselines
    }

    /// Consecutive completed iterations whose diversity was below the floor.
    pub(crate) fn low_diversity_streak(&self) -> u64 {
        self.low_diversity_streak
    }

    /// Current state of every alert, in [`AlertName::ALL`] order.
    pub(crate) fn states(&self) -> [AlertState; 5] {
        self.trackers.clone().map(|t| t.state)
    }

    /// Whether each warning is active, in [`Watched::ALL`] order.
    pub(crate) fn warnings_active(&self) -> [bool; 4] {
        self.warned
    }

    /// Evaluates the iteration-based rules and warnings after an iteration ends.
    pub(crate) fn on_iteration(&mut self, summary: &IterationSummary) -> Findings {
        let mut findings = Findings::default();
        self.last_iteration = summary.number;
        self.window.push(Entry {
            successes: summary.successes,
            failures: summary.failures,
            sharpe: summary.mean_sharpe,
            diversity: summary.diversity,
            seconds: summary.duration.as_secs_f64(),
        });
        let th = self.thresholds.clone();

        // DiversityCollapse: below the floor in each of the last N iterations. An
        // iteration without a diversity report neither extends nor breaks the streak.
        if let Some(diversity) = summary.diversity {
            if diversity < th.diversity_floor {
                self.low_diversity_streak += 1;
            } else {
                self.low_diversity_streak = 0;
            }
            let verdict = match self.low_diversity_streak {
                0 => Verdict::Clear,
                n if n >= th.diversity_iterations => Verdict::Firing(diversity),
                _ => Verdict::Pending(diversity),
            };
            self.judge(AlertName::DiversityCollapse, verdict, &mut findings);
        }

        // ChampionStaleness: N iterations since the champion last changed.
        let staleness = summary.champion_staleness;
        let verdict = if staleness >= th.staleness_iterations {
            Verdict::Firing(staleness as f64)
        } else {
            Verdict::Clear
        };
        self.judge(AlertName::ChampionStaleness, verdict, &mut findings);

        // LowSuccessRate: below the floor over a full window; pending while filling.
        let rolling = self.window.values();
        let verdict = match rolling.success_rate {
            Some(rate) if rate < th.success_rate_floor && self.window.is_full() => {
                Verdict::Firing(rate)
            }
            Some(rate) if rate < th.success_rate_floor => Verdict::Pending(rate),
            _ => Verdict::Clear,
        };
        self.judge(AlertName::LowSuccessRate, verdict, &mut findings);

        self.compare_with_baselines(&rolling, &mut findings);
        findings
    }

    fn compare_with_baselines(&mut self, rolling: &RollingValues, findings: &mut Findings) {
        let th = &self.thresholds;
        for (i, watched) in Watched::ALL.into_iter().enumerate() {
            let Some(value) = watched.value(rolling) else {
                continue;
            };
            let Some(baseline) = self.baselines[i] else {
                // The baseline is the first full window that has this quantity.
                if self.window.is_full() {
                    self.baselines[i] = Some(value);
                }
                continue;
            };
            // A warning starts past the limit and clears only once the value is back
            // within half the margin, so a value hovering at the limit does not flap.
            let active = self.warned[i];
            let (worse, limit) = match watched {
                Watched::ExecutionTime => {
                    let limit = baseline * th.slowdown_factor;
                    let clear = baseline * (1.0 + (th.slowdown_factor - 1.0) / 2.0);
                    (if active { value > clear } else { value > limit }, limit)
                }
                _ => {
                    // Sign-safe: measured against the baseline's magnitude, floored.
                    let margin = th.degradation_fraction * baseline.abs().max(th.baseline_floor);
                    let limit = baseline - margin;
                    let clear = baseline - margin / 2.0;
                    (if active { value < clear } else { value < limit }, limit)
                }
            };
            if worse != self.warned[i] {
                self.warned[i] = worse;
                findings.warnings.push(WarningChange {
                    watched,
                    started: worse,
                    value,
                    baseline,
                    limit,
                    iteration: self.last_iteration,
                });
            }
        }
    }

    /// Evaluates HighMemoryUsage on a host sample, with hysteresis.
    pub(crate) fn on_host_memory(&mut self, used: u64, total: u64) -> Findings {
        let mut findings = Findings::default();
        if total == 0 {
            return findings;
        }
        let fraction = used as f64 / total as f64;
        let th = &self.thresholds;
        let firing = self.trackers[AlertName::HighMemoryUsage as usize].state == AlertState::Firing;
        let verdict = if fraction > th.memory_fraction {
            self.memory_streak = self.memory_streak.saturating_add(1);
            if self.memory_streak >= th.memory_samples {
                Verdict::Firing(fraction)
            } else {
                Verdict::Pending(fraction)
            }
        } else {
            self.memory_streak = 0;
            if firing && fraction >= th.memory_clear_fraction {
                Verdict::Firing(fraction)
            } else {
                Verdict::Clear
            }
        };
        self.judge(AlertName::HighMemoryUsage, verdict, &mut findings);
        findings
    }

    /// Evaluates ContainerCleanupFailures on the count of orphans left after a sweep.
    pub(crate) fn on_orphans(&mut self, orphans: u64) -> Findings {
        let mut findings = Findings::default();
        let verdict = if orphans > self.thresholds.orphan_limit {
            Verdict::Firing(orphans as f64)
        } else {
            Verdict::Clear
        };
        self.judge(AlertName::ContainerCleanupFailures, verdict, &mut findings);
        findings
    }
}

#[cfg(test)]
mod tests;

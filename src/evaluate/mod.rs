//! The in-process evaluator: rolling windows and baselines, the alerts of the table
//! raised in process (one pure function each, in `verdicts`), and the
//! degradation and slowdown warnings. Pure logic: evidence and thresholds in,
//! transitions out; no locks, no I/O. The monitor logs, exports and delivers what comes
//! out.

mod tracker;
mod verdicts;
mod window;

use std::collections::VecDeque;
use std::time::Duration;

use enum_map::EnumMap;

pub(crate) use window::RollingValues;

pub(crate) use tracker::Transition;

use crate::alerts::{AlertName, AlertState, Watched};
use crate::config::Thresholds;
use crate::records::{IterationSummary, Moment};
use tracker::{AlertTracker, Verdict};
use window::{Entry, RollingWindow};

/// A degradation or slowdown warning that started or cleared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WarningChange {
    /// The quantity.
    pub(crate) watched: Watched,
    /// True when the warning started, false when it cleared.
    pub(crate) started: bool,
    /// Its rolling value now.
    pub(crate) value: f64,
    /// Its baseline.
    pub(crate) baseline: f64,
    /// The limit it crossed.
    pub(crate) limit: f64,
    /// The last completed iteration.
    pub(crate) iteration: u64,
}

/// What the loop is doing right now, for LoopStalled.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Activity {
    /// How long the iteration in progress has been running, if one is.
    pub(crate) running_for: Option<Duration>,
    /// How long since the last iteration ended, when none runs now.
    pub(crate) idle_for: Option<Duration>,
    /// Whether the loop has said it is done.
    pub(crate) done: bool,
}

/// How long an evaluation may run before EvaluationHung: `evaluation_factor` times
/// the 95th percentile of the finished evaluations' durations (`None` until there are
/// enough of them), never less than `evaluation_floor`.
pub(crate) fn evaluation_limit(p95: Option<Duration>, th: &Thresholds) -> Duration {
    let typical = p95.map_or(Duration::ZERO, |p95| {
        Duration::from_secs_f64((p95.as_secs_f64() * th.evaluation_factor()).min(1e9))
    });
    typical.max(th.evaluation_floor())
}

/// What one evaluation produced.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub(crate) transitions: Vec<Transition>,
    pub(crate) warnings: Vec<WarningChange>,
}

impl Findings {
    /// Adds what another evaluation found (no allocation when it found nothing).
    pub(crate) fn extend(&mut self, other: Findings) {
        if self.transitions.is_empty() {
            self.transitions = other.transitions;
        } else {
            self.transitions.extend(other.transitions);
        }
        if self.warnings.is_empty() {
            self.warnings = other.warnings;
        } else {
            self.warnings.extend(other.warnings);
        }
    }

    /// Whether it found nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.transitions.is_empty() && self.warnings.is_empty()
    }
}

/// The evaluator's state: windows, baselines, streaks and the alert trackers.
#[derive(Debug)]
pub(crate) struct Evaluator {
    window: RollingWindow,
    baselines: EnumMap<Watched, Option<f64>>,
    warned: EnumMap<Watched, bool>,
    /// Whether a baseline was captured since [`Evaluator::take_new_baseline`].
    new_baseline: bool,
    low_diversity_streak: u64,
    memory_streak: u64,
    trackers: EnumMap<AlertName, AlertTracker>,
    last_iteration: u64,
    /// When the supervisor restarted the loop (monotonic), within the restart window,
    /// oldest first.
    restarts: VecDeque<Duration>,
}

impl Evaluator {
    /// A fresh evaluator whose windows hold `thresholds.window()` iterations.
    pub(crate) fn new(thresholds: &Thresholds) -> Self {
        Evaluator {
            window: RollingWindow::new(thresholds.window() as usize),
            baselines: EnumMap::default(),
            warned: EnumMap::default(),
            new_baseline: false,
            low_diversity_streak: 0,
            memory_streak: 0,
            trackers: EnumMap::from_fn(AlertTracker::new),
            last_iteration: 0,
            restarts: VecDeque::new(),
        }
    }

    /// Moves `alert` along its lifecycle by a rule's verdict, against the alert's
    /// threshold.
    fn settle_alert(
        &mut self,
        alert: AlertName,
        verdict: Verdict,
        thresholds: &Thresholds,
        at: Moment,
        findings: &mut Findings,
    ) {
        self.settle_alert_against(alert, verdict, alert.threshold(thresholds), at, findings);
    }

    fn settle_alert_against(
        &mut self,
        alert: AlertName,
        verdict: Verdict,
        threshold: f64,
        at: Moment,
        findings: &mut Findings,
    ) {
        let tracker = &mut self.trackers[alert];
        if let Some(t) = tracker.update(verdict, threshold, self.last_iteration, at.wall) {
            findings.transitions.push(t);
        }
    }

    /// How long an iteration may run, or the loop sit between iterations, before it is
    /// called stalled: the stall factor times the rolling mean iteration time, but
    /// never less than the floor (the floor alone until an iteration has completed).
    pub(crate) fn stall_limit(&self, th: &Thresholds) -> Duration {
        let typical = self
            .window
            .values()
            .mean_seconds
            .map_or(Duration::ZERO, |mean| {
                Duration::from_secs_f64((mean * th.stall_factor()).min(1e9))
            });
        typical.max(th.stall_floor())
    }

    /// Evaluates LoopStalled on the clock: the background task calls this about once a
    /// second, and the monitor at each iteration's start and end.
    pub(crate) fn on_clock(&mut self, activity: Activity, th: &Thresholds, at: Moment) -> Findings {
        let mut findings = Findings::default();
        let limit = self.stall_limit(th);
        let waited = if activity.done {
            None
        } else {
            activity.running_for.or(activity.idle_for)
        };
        let verdict = verdicts::loop_stalled(waited, limit);
        self.settle_alert_against(
            AlertName::LoopStalled,
            verdict,
            limit.as_secs_f64(),
            at,
            &mut findings,
        );
        findings
    }

    /// Evaluates EvaluationHung: the oldest evaluation in flight (its age, or `None`
    /// with none) against `limit` ([`evaluation_limit`]); a firing transition names
    /// the evaluation by `subject`.
    pub(crate) fn on_evaluations(
        &mut self,
        oldest: Option<Duration>,
        limit: Duration,
        subject: impl FnOnce() -> std::sync::Arc<str>,
        at: Moment,
    ) -> Findings {
        let mut findings = Findings::default();
        let verdict = verdicts::evaluation_hung(oldest, limit);
        self.settle_alert_against(
            AlertName::EvaluationHung,
            verdict,
            limit.as_secs_f64(),
            at,
            &mut findings,
        );
        if let Some(firing) = findings
            .transitions
            .iter_mut()
            .find(|t| t.state == AlertState::Firing)
        {
            firing.subject = Some(subject());
        }
        findings
    }

    /// Evaluates LoopExited when a supervised loop's process ends: firing for an
    /// unexpected exit (value: its shell status), else clear.
    pub(crate) fn on_exit(
        &mut self,
        exit: &crate::records::LoopExit,
        th: &Thresholds,
        at: Moment,
    ) -> Findings {
        let mut findings = Findings::default();
        let verdict = verdicts::loop_exited(exit);
        self.settle_alert(AlertName::LoopExited, verdict, th, at, &mut findings);
        findings
    }

    /// Evaluates LoopCrashLooping when the supervisor restarts the loop `at`.
    pub(crate) fn on_restart(&mut self, th: &Thresholds, at: Moment) -> Findings {
        self.restarts.push_back(at.mono);
        self.on_restart_window(th, at)
    }

    /// Evaluates LoopCrashLooping `at`: restarts older than the window no longer
    /// count (the background clock calls this about once a second).
    pub(crate) fn on_restart_window(&mut self, th: &Thresholds, at: Moment) -> Findings {
        let mut findings = Findings::default();
        while let Some(oldest) = self.restarts.front() {
            if at.since(*oldest) < th.restart_window() {
                break;
            }
            self.restarts.pop_front();
        }
        let verdict = verdicts::crash_looping(self.recent_restarts(), th);
        self.settle_alert(AlertName::LoopCrashLooping, verdict, th, at, &mut findings);
        findings
    }

    /// Evaluates LLMErrors, LLMSpendWithoutProgress and LLMBudget on the LLM calls'
    /// evidence (after a call, a champion change, or on the clock). The spend alerts
    /// say so when the spend is a lower bound (calls without usage, tokens without a
    /// price).
    pub(crate) fn on_llm(
        &mut self,
        evidence: &crate::llm::meter::LlmEvidence,
        th: &Thresholds,
        at: Moment,
    ) -> Findings {
        let mut findings = Findings::default();
        let errors = verdicts::llm_errors(evidence.recent_failures, evidence.recent_calls, th);
        self.settle_alert(AlertName::LLMErrors, errors, th, at, &mut findings);
        let spending = findings.transitions.len();
        let stuck = verdicts::llm_spend_without_progress(evidence.spend_since_champion_usd, th);
        self.settle_alert(
            AlertName::LLMSpendWithoutProgress,
            stuck,
            th,
            at,
            &mut findings,
        );
        let budget =
            verdicts::llm_budget(evidence.budget_spend_usd, evidence.spend_last_hour_usd, th);
        self.settle_alert(AlertName::LLMBudget, budget, th, at, &mut findings);
        if evidence.spend_is_lower_bound {
            for t in &mut findings.transitions[spending..] {
                t.note = Some(crate::llm::SPEND_LOWER_BOUND);
            }
        }
        findings
    }

    /// Restarts within the restart window, as of the last evaluation.
    pub(crate) fn recent_restarts(&self) -> u64 {
        self.restarts.len() as u64
    }

    /// Rolling values of the current window.
    pub(crate) fn rolling(&self) -> RollingValues {
        self.window.values()
    }

    /// Baselines captured from the first full window.
    pub(crate) fn baselines(&self) -> EnumMap<Watched, Option<f64>> {
        self.baselines
    }

    /// Whether a baseline was captured since the last call; clears the flag.
    pub(crate) fn take_new_baseline(&mut self) -> bool {
        std::mem::take(&mut self.new_baseline)
    }

    /// How many alerts are firing.
    pub(crate) fn firing(&self) -> u8 {
        let firing = self
            .trackers
            .values()
            .filter(|t| t.state == AlertState::Firing)
            .count();
        u8::try_from(firing).unwrap_or(u8::MAX)
    }

    /// Whether each warning is active.
    pub(crate) fn warnings_active(&self) -> EnumMap<Watched, bool> {
        self.warned
    }

    /// Consecutive completed iterations whose diversity was below the floor.
    pub(crate) fn low_diversity_streak(&self) -> u64 {
        self.low_diversity_streak
    }

    /// Current state of one alert.
    pub(crate) fn state(&self, alert: AlertName) -> AlertState {
        self.trackers[alert].state
    }

    /// Current state of every alert.
    pub(crate) fn states(&self) -> EnumMap<AlertName, AlertState> {
        EnumMap::from_fn(|alert| self.trackers[alert].state)
    }

    /// Evaluates the iteration-based rules and warnings after an iteration ends.
    pub(crate) fn on_iteration(
        &mut self,
        summary: &IterationSummary,
        th: &Thresholds,
        at: Moment,
    ) -> Findings {
        let mut findings = Findings::default();
        self.last_iteration = summary.number;
        self.window.push(Entry {
            successes: summary.successes,
            failures: summary.failures,
            sharpe: summary.mean_sharpe,
            diversity: summary.diversity,
            seconds: summary.duration.as_secs_f64(),
        });

        // DiversityCollapse: below the floor in each of the last N iterations. An
        // iteration without a diversity report neither extends nor breaks the streak.
        if let Some(diversity) = summary.diversity {
            if diversity < th.diversity_floor() {
                self.low_diversity_streak += 1;
            } else {
                self.low_diversity_streak = 0;
            }
            let verdict = verdicts::diversity_collapse(self.low_diversity_streak, diversity, th);
            self.settle_alert(AlertName::DiversityCollapse, verdict, th, at, &mut findings);
        }

        // ChampionStaleness: N iterations since the champion last changed.
        let verdict = verdicts::champion_staleness(summary.champion_staleness, th);
        self.settle_alert(AlertName::ChampionStaleness, verdict, th, at, &mut findings);

        // LowSuccessRate: below the floor over a full window; pending while filling.
        let rolling = self.window.values();
        let verdict = verdicts::low_success_rate(rolling.success_rate, self.window.is_full(), th);
        self.settle_alert(AlertName::LowSuccessRate, verdict, th, at, &mut findings);

        self.compare_with_baselines(&rolling, th, &mut findings);
        findings
    }

    fn compare_with_baselines(
        &mut self,
        rolling: &RollingValues,
        th: &Thresholds,
        findings: &mut Findings,
    ) {
        for watched in Watched::ALL {
            let Some(value) = rolling.of(watched) else {
                continue;
            };
            let Some(baseline) = self.baselines[watched] else {
                // The baseline is the first full window that has this quantity.
                if self.window.is_full() {
                    self.baselines[watched] = Some(value);
                    self.new_baseline = true;
                }
                continue;
            };
            // A warning starts past the limit and clears only once the value is back
            // within half the margin, so a value hovering at the limit does not flap.
            let active = self.warned[watched];
            let (worse, limit) = match watched {
                Watched::ExecutionTime => {
                    let limit = baseline * th.slowdown_factor();
                    let clear = baseline * (1.0 + (th.slowdown_factor() - 1.0) / 2.0);
                    (if active { value > clear } else { value > limit }, limit)
                }
                Watched::AvgSharpe => {
                    // A signed mean near zero: sign-safe, against the baseline's
                    // magnitude, floored so noise around zero is not a degradation.
                    let margin =
                        th.degradation_fraction() * baseline.abs().max(th.baseline_floor());
                    let limit = baseline - margin;
                    let clear = baseline - margin / 2.0;
                    (if active { value < clear } else { value < limit }, limit)
                }
                Watched::SuccessRate | Watched::AvgDiversity => {
                    // Non-negative ratios: 20% of the baseline itself, as written.
                    let margin = th.degradation_fraction() * baseline;
                    let limit = baseline - margin;
                    let clear = baseline - margin / 2.0;
                    (if active { value < clear } else { value < limit }, limit)
                }
            };
            if worse != active {
                self.warned[watched] = worse;
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
    pub(crate) fn on_host_memory(
        &mut self,
        used: u64,
        total: u64,
        th: &Thresholds,
        at: Moment,
    ) -> Findings {
        let mut findings = Findings::default();
        if total == 0 {
            return findings;
        }
        let fraction = used as f64 / total as f64;
        let firing = self.trackers[AlertName::HighMemoryUsage].state == AlertState::Firing;
        self.memory_streak = if fraction > th.memory_fraction() {
            self.memory_streak.saturating_add(1)
        } else {
            0
        };
        let verdict = verdicts::high_memory(fraction, self.memory_streak, firing, th);
        self.settle_alert(AlertName::HighMemoryUsage, verdict, th, at, &mut findings);
        findings
    }

    /// Evaluates ContainerCleanupFailures on the count of orphans left after a sweep.
    pub(crate) fn on_orphans(&mut self, orphans: u64, th: &Thresholds, at: Moment) -> Findings {
        let mut findings = Findings::default();
        let verdict = verdicts::cleanup_failures(orphans, th);
        self.settle_alert(
            AlertName::ContainerCleanupFailures,
            verdict,
            th,
            at,
            &mut findings,
        );
        findings
    }
}

#[cfg(test)]
mod tests;

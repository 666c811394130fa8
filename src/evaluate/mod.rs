//! The in-process evaluator: rolling windows and baselines, the [`Evidence`] the
//! alerts are judged on, each alert's lifecycle, and the degradation and slowdown
//! warnings. Pure logic: events and thresholds in, transitions out; no locks, no I/O.
//! The monitor logs, exports and delivers what comes out.
//!
//! Each hook (`on_iteration`, `on_host_memory`, `on_clock`...) brings its part of the
//! evidence up to date, then judges every alert whose row of the alert table names
//! that hook's [`Trigger`], by the row's verdict. An alert over evidence kept here
//! needs nothing in this file: its row is enough.

mod tracker;
mod window;

use std::collections::VecDeque;
use std::time::Duration;

use enum_map::EnumMap;

pub(crate) use tracker::Transition;

use crate::alerts::{AlertName, AlertState, Evidence, RollingValues, Trigger, Watched};
use crate::config::Thresholds;
use crate::records::{IterationSummary, Moment};
use tracker::AlertTracker;
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

/// The evaluator's state: windows, baselines, the evidence and the alert trackers.
#[derive(Debug)]
pub(crate) struct Evaluator {
    window: RollingWindow,
    baselines: EnumMap<Watched, Option<f64>>,
    warned: EnumMap<Watched, bool>,
    /// Whether a baseline was captured since [`Evaluator::take_new_baseline`].
    new_baseline: bool,
    /// What the alerts are judged on, as of each trigger's last event.
    evidence: Evidence,
    trackers: EnumMap<AlertName, AlertTracker>,
    last_iteration: u64,
    /// When the supervisor restarted the loop (monotonic), within the restart window,
    /// oldest first.
    restarts: VecDeque<Duration>,
    /// Since when (monotonic) the least rate-limit headroom has been below
    /// `llm_headroom_fraction`, without a break.
    headroom_low_since: Option<Duration>,
    /// Since when (monotonic) a GPU the loop uses has been above
    /// `gpu_memory_fraction`, without a break.
    gpu_high_since: Option<Duration>,
    /// When (monotonic) GPU errors came, and how many, within the error window,
    /// oldest first.
    gpu_errors: VecDeque<(Duration, u64)>,
}

impl Evaluator {
    /// A fresh evaluator whose windows hold `thresholds.window()` iterations.
    pub(crate) fn new(thresholds: &Thresholds) -> Self {
        Evaluator {
            window: RollingWindow::new(thresholds.window() as usize),
            baselines: EnumMap::default(),
            warned: EnumMap::default(),
            new_baseline: false,
            evidence: Evidence::default(),
            trackers: EnumMap::from_fn(AlertTracker::new),
            last_iteration: 0,
            restarts: VecDeque::new(),
            headroom_low_since: None,
            gpu_high_since: None,
            gpu_errors: VecDeque::new(),
        }
    }

    /// Judges every alert whose row names `trigger`, on the evidence as it now
    /// stands: its verdict moves it along its lifecycle, and a change of state is a
    /// transition, against the limit the evidence gives it or else its threshold.
    /// Allocates only to keep a transition.
    fn judge(&mut self, trigger: Trigger, th: &Thresholds, at: Moment, findings: &mut Findings) {
        for alert in AlertName::ALL {
            let judge = alert.judge();
            if judge.on != trigger {
                continue;
            }
            let evidence = &self.evidence;
            let verdict = (judge.verdict)(evidence, th);
            let threshold = match judge.against {
                Some(limit) => limit(evidence),
                None => alert.threshold(th),
            };
            let tracker = &mut self.trackers[alert];
            if let Some(mut t) = tracker.update(verdict, threshold, self.last_iteration, at.wall) {
                t.note = judge.note.and_then(|note| note(evidence));
                findings.transitions.push(t);
            }
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

    /// Judges the alerts on [`Trigger::Activity`] (a stall) by the loop's `activity`
    /// and the stall limit: the background task calls this about once a second, and
    /// the monitor at each iteration's start and end.
    pub(crate) fn on_clock(&mut self, activity: Activity, th: &Thresholds, at: Moment) -> Findings {
        let mut findings = Findings::default();
        self.evidence.stall_limit = self.stall_limit(th);
        self.evidence.waited = if activity.done {
            None
        } else {
            activity.running_for.or(activity.idle_for)
        };
        self.judge(Trigger::Activity, th, at, &mut findings);
        findings
    }

    /// Judges the alerts on [`Trigger::Evaluations`] (a hang) by the oldest evaluation
    /// in flight (its age, or `None` with none) and `limit` ([`evaluation_limit`]); a
    /// firing transition names that evaluation by `subject`.
    pub(crate) fn on_evaluations(
        &mut self,
        oldest: Option<Duration>,
        limit: Duration,
        subject: impl FnOnce() -> std::sync::Arc<str>,
        th: &Thresholds,
        at: Moment,
    ) -> Findings {
        let mut findings = Findings::default();
        self.evidence.oldest_evaluation = oldest;
        self.evidence.evaluation_limit = limit;
        self.judge(Trigger::Evaluations, th, at, &mut findings);
        if let Some(firing) = findings
            .transitions
            .iter_mut()
            .find(|t| t.state == AlertState::Firing)
        {
            firing.subject = Some(subject());
        }
        findings
    }

    /// Judges the alerts on [`Trigger::Exit`] when a supervised loop's process ends
    /// with `exit`.
    pub(crate) fn on_exit(
        &mut self,
        exit: &crate::records::LoopExit,
        th: &Thresholds,
        at: Moment,
    ) -> Findings {
        let mut findings = Findings::default();
        self.evidence.unexpected_exit = exit.unexpected().then(|| exit.shell_status());
        self.judge(Trigger::Exit, th, at, &mut findings);
        findings
    }

    /// Counts a restart of the supervised loop `at`, and judges the alerts on
    /// [`Trigger::Restarts`].
    pub(crate) fn on_restart(&mut self, th: &Thresholds, at: Moment) -> Findings {
        self.restarts.push_back(at.mono);
        self.on_restart_window(th, at)
    }

    /// Judges the alerts on [`Trigger::Restarts`] `at`: restarts older than the window
    /// no longer count (the background clock calls this about once a second).
    pub(crate) fn on_restart_window(&mut self, th: &Thresholds, at: Moment) -> Findings {
        let mut findings = Findings::default();
        while let Some(oldest) = self.restarts.front() {
            if at.since(*oldest) < th.restart_window() {
                break;
            }
            self.restarts.pop_front();
        }
        self.evidence.recent_restarts = self.restarts.len() as u64;
        self.judge(Trigger::Restarts, th, at, &mut findings);
        findings
    }

    /// Judges the alerts on [`Trigger::Llm`] by the LLM calls' evidence (after a
    /// call, an answer's rate limits, a champion change, or on the clock): how long
    /// the least headroom has been below its threshold is kept here.
    pub(crate) fn on_llm(
        &mut self,
        evidence: &crate::llm::meter::LlmEvidence,
        th: &Thresholds,
        at: Moment,
    ) -> Findings {
        let mut findings = Findings::default();
        self.evidence.llm = *evidence;
        let low = evidence
            .headroom
            .is_some_and(|headroom| headroom < th.llm_headroom_fraction());
        self.headroom_low_since = if low {
            Some(self.headroom_low_since.unwrap_or(at.mono))
        } else {
            None
        };
        self.evidence.headroom_low_for = self.headroom_low_since.map(|since| at.since(since));
        self.judge(Trigger::Llm, th, at, &mut findings);
        findings
    }

    /// Judges the alerts on [`Trigger::Gpu`] after a GPU sample or an Xid error: the
    /// highest fraction of video memory in use on the GPUs the loop uses (`None`
    /// when it uses none, or for an Xid error, which leaves it as it was), and the
    /// GPU errors it brought (Xid, uncorrected ECC).
    pub(crate) fn on_gpu(
        &mut self,
        memory_fraction: Option<Option<f64>>,
        new_errors: u64,
        th: &Thresholds,
        at: Moment,
    ) -> Findings {
        let mut findings = Findings::default();
        if let Some(fraction) = memory_fraction {
            let high = fraction.is_some_and(|f| f > th.gpu_memory_fraction());
            self.gpu_high_since = match (high, self.gpu_high_since) {
                (true, Some(since)) => Some(since),
                (true, None) => Some(at.mono),
                (false, _) => None,
            };
            self.evidence.gpu_memory_fraction = fraction;
            self.evidence.gpu_memory_high_for = self
                .gpu_high_since
                .map_or(Duration::ZERO, |since| at.since(since));
        }
        if new_errors > 0 {
            self.gpu_errors.push_back((at.mono, new_errors));
        }
        while let Some((when, _)) = self.gpu_errors.front() {
            if at.since(*when) < crate::alerts::GPU_ERRORS_WINDOW {
                break;
            }
            self.gpu_errors.pop_front();
        }
        self.evidence.gpu_errors = self
            .gpu_errors
            .iter()
            .fold(0u64, |sum, (_, n)| sum.saturating_add(*n));
        self.judge(Trigger::Gpu, th, at, &mut findings);
        findings
    }

    /// Judges the alerts on [`Trigger::ModelServers`] after a model server's read:
    /// `saturated` is how long the server saturated the longest has been so, and its
    /// KV-cache usage (`None` while no server is); a firing transition names that
    /// server by `subject`.
    pub(crate) fn on_model_servers(
        &mut self,
        saturated: Option<(Duration, f64)>,
        subject: impl FnOnce() -> std::sync::Arc<str>,
        th: &Thresholds,
        at: Moment,
    ) -> Findings {
        let mut findings = Findings::default();
        self.evidence.server_saturated_for = saturated.map(|(held, _)| held);
        self.evidence.server_kv_cache_usage = saturated.map_or(0.0, |(_, usage)| usage);
        self.judge(Trigger::ModelServers, th, at, &mut findings);
        if let Some(firing) = findings
            .transitions
            .iter_mut()
            .find(|t| t.state == AlertState::Firing)
        {
            firing.subject = Some(subject());
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
        self.evidence.low_diversity_streak
    }

    /// Current state of one alert.
    pub(crate) fn state(&self, alert: AlertName) -> AlertState {
        self.trackers[alert].state
    }

    /// Current state of every alert.
    pub(crate) fn states(&self) -> EnumMap<AlertName, AlertState> {
        EnumMap::from_fn(|alert| self.trackers[alert].state)
    }

    /// Judges the alerts on [`Trigger::Iteration`] and the warnings after an
    /// iteration ends.
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

        // The streak of low diversity: an iteration without a diversity report neither
        // extends nor breaks it.
        let evidence = &mut self.evidence;
        if let Some(diversity) = summary.diversity {
            if diversity < th.diversity_floor() {
                evidence.low_diversity_streak += 1;
            } else {
                evidence.low_diversity_streak = 0;
            }
        }
        evidence.diversity = summary.diversity;
        evidence.champion_staleness = summary.champion_staleness;
        evidence.rolling = self.window.values();
        evidence.window_full = self.window.is_full();
        let rolling = evidence.rolling;
        self.judge(Trigger::Iteration, th, at, &mut findings);

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

    /// Judges the alerts on [`Trigger::HostSample`] by a sample's memory in use and
    /// its limit (none without a limit).
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
        let evidence = &mut self.evidence;
        evidence.memory_fraction = fraction;
        evidence.memory_streak = if fraction > th.memory_fraction() {
            evidence.memory_streak.saturating_add(1)
        } else {
            0
        };
        self.judge(Trigger::HostSample, th, at, &mut findings);
        findings
    }

    /// Judges the alerts on [`Trigger::OrphanSweep`] by the count of orphans left
    /// after a sweep.
    pub(crate) fn on_orphans(&mut self, orphans: u64, th: &Thresholds, at: Moment) -> Findings {
        let mut findings = Findings::default();
        self.evidence.orphans = orphans;
        self.judge(Trigger::OrphanSweep, th, at, &mut findings);
        findings
    }
}

#[cfg(test)]
mod tests;

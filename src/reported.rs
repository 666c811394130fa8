//! What a loop reports during one iteration, checked as it arrives: outcomes, the
//! population and its champion. Invalid values are turned away here, one
//! [`Rejection`] each, so nothing past this point sees a NaN or an impossible count.

use std::sync::atomic::{AtomicU64, Ordering};

use enum_map::{Enum, EnumMap};
use opentelemetry::metrics::Counter;
use opentelemetry::KeyValue;

use crate::catalog;

/// A snapshot of the population, reported once per iteration.
///
/// ```
/// let population = loopwatch::Population::new(20, 17, 0.62).with_champion("ma-cross-12-40");
/// assert_eq!(population.champion, Some("ma-cross-12-40"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Population<'a> {
    /// Number of strategies in the population.
    pub size: u64,
    /// Distinct strategies among them (at most `size`).
    pub unique_strategies: u64,
    /// Diversity from 0.0 (clones) to 1.0 (all different); see [`crate::diversity`].
    pub diversity: f64,
    /// Identity of the current champion (any stable string: a hash, a name).
    pub champion: Option<&'a str>,
}

impl<'a> Population<'a> {
    /// A population of `size` strategies, `unique_strategies` of them distinct.
    pub fn new(size: u64, unique_strategies: u64, diversity: f64) -> Self {
        Population {
            size,
            unique_strategies,
            diversity,
            champion: None,
        }
    }

    /// Names the current champion; loopwatch derives staleness from its changes.
    pub fn with_champion(mut self, champion: &'a str) -> Self {
        self.champion = Some(champion);
        self
    }
}

/// A kind of invalid observation: which field, and what was wrong with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Enum)]
pub(crate) enum Rejection {
    /// A Sharpe ratio that is NaN or infinite.
    SharpeNotFinite,
    /// A max drawdown that is NaN or infinite.
    DrawdownNotFinite,
    /// A negative max drawdown.
    DrawdownNegative,
    /// A diversity that is NaN or infinite.
    DiversityNotFinite,
    /// A diversity outside 0–1.
    DiversityOutOfRange,
    /// More distinct strategies than the population holds.
    UniqueAboveSize,
    /// A protocol line that is not JSON of the shape its type needs.
    MessageMalformed,
    /// A protocol line of another protocol version.
    MessageVersion,
    /// A protocol line of an unknown type.
    MessageUnknownType,
    /// A protocol line over 64 KiB.
    MessageTooLong,
    /// An outcome, population or end with no iteration started.
    MessageOutsideIteration,
    /// A loop's own metric with a bad name, a kind that changed, or a bad value.
    MetricInvalid,
    /// A loop's own metric past the limit of series.
    MetricOverLimit,
    /// An evaluation's start while the most evaluations are in flight.
    EvaluationOverLimit,
    /// An evaluation's start with the id of one in flight.
    EvaluationDuplicate,
    /// An evaluation's end with an id not in flight.
    EvaluationUnknown,
    /// A hung evaluation's pid outside the loop's process tree: not signalled.
    EvaluationPidOutsideTree,
    /// A hung evaluation's pid is the loop's own process, or above a process that
    /// reports the loop's iterations: not signalled.
    EvaluationLoopProcess,
    /// A hung evaluation's pid runs other evaluations in flight too: not signalled.
    EvaluationSharedProcess,
}

impl Rejection {
    /// The `field` label: the metric the value was meant for.
    fn field(self) -> &'static str {
        match self {
            Rejection::SharpeNotFinite => catalog::SHARPE_RATIO.name,
            Rejection::DrawdownNotFinite | Rejection::DrawdownNegative => {
                catalog::MAX_DRAWDOWN.name
            }
            Rejection::DiversityNotFinite | Rejection::DiversityOutOfRange => {
                catalog::POPULATION_DIVERSITY.name
            }
            Rejection::UniqueAboveSize => catalog::UNIQUE_STRATEGY_COUNT.name,
            Rejection::MessageMalformed
            | Rejection::MessageVersion
            | Rejection::MessageUnknownType
            | Rejection::MessageTooLong
            | Rejection::MessageOutsideIteration => "message",
            Rejection::MetricInvalid | Rejection::MetricOverLimit => "metric",
            Rejection::EvaluationOverLimit
            | Rejection::EvaluationDuplicate
            | Rejection::EvaluationUnknown
            | Rejection::EvaluationPidOutsideTree
            | Rejection::EvaluationLoopProcess
            | Rejection::EvaluationSharedProcess => "evaluation",
        }
    }

    /// The `reason` label.
    fn reason(self) -> &'static str {
        match self {
            Rejection::SharpeNotFinite
            | Rejection::DrawdownNotFinite
            | Rejection::DiversityNotFinite => "not_finite",
            Rejection::DrawdownNegative
            | Rejection::DiversityOutOfRange
            | Rejection::UniqueAboveSize => "out_of_range",
            Rejection::MessageMalformed => "malformed",
            Rejection::MessageVersion => "unsupported_version",
            Rejection::MessageUnknownType => "unknown_type",
            Rejection::MessageTooLong => "too_long",
            Rejection::MessageOutsideIteration => "outside_iteration",
            Rejection::MetricInvalid => "invalid",
            Rejection::MetricOverLimit | Rejection::EvaluationOverLimit => "over_limit",
            Rejection::EvaluationDuplicate => "duplicate_id",
            Rejection::EvaluationUnknown => "unknown_id",
            Rejection::EvaluationPidOutsideTree => "pid_outside_tree",
            Rejection::EvaluationLoopProcess => "loop_process",
            Rejection::EvaluationSharedProcess => "shared_process",
        }
    }

    /// The labels of its series of `loopwatch_rejected_observations_total`.
    pub(crate) fn labels(self) -> Vec<KeyValue> {
        vec![
            KeyValue::new("field", self.field()),
            KeyValue::new("reason", self.reason()),
        ]
    }

    /// Every kind's labels: the series that exist from start-up.
    pub(crate) fn all_labels() -> Vec<Vec<KeyValue>> {
        EnumMap::from_fn(Rejection::labels).into_values().collect()
    }

    /// What a valid value looks like, for the warning.
    fn expectation(self) -> &'static str {
        match self {
            Rejection::SharpeNotFinite => "a finite number",
            Rejection::DrawdownNotFinite | Rejection::DrawdownNegative => {
                "a finite positive fraction of peak equity (0.25 for a 25% drawdown)"
            }
            Rejection::DiversityNotFinite | Rejection::DiversityOutOfRange => {
                "a number from 0.0 to 1.0"
            }
            Rejection::UniqueAboveSize => "at most the population size",
            Rejection::MessageMalformed => {
                "one JSON object per line with the fields of its type (docs/protocol.md)"
            }
            Rejection::MessageVersion => "\"v\": 1",
            Rejection::MessageUnknownType => "a type of docs/protocol.md",
            Rejection::MessageTooLong => "lines of at most 64 KiB",
            Rejection::MessageOutsideIteration => "an iteration_start before it",
            Rejection::MetricInvalid => {
                "a Prometheus name not loopwatch's own, one kind per name, a finite value (non-negative for a counter)"
            }
            Rejection::MetricOverLimit => "at most 100 series of the loop's own",
            Rejection::EvaluationOverLimit => "at most 10,000 evaluations in flight",
            Rejection::EvaluationDuplicate => "ids unique among the evaluations in flight",
            Rejection::EvaluationUnknown => {
                "an end for an evaluation in flight (its start accepted, not yet ended)"
            }
            Rejection::EvaluationPidOutsideTree => {
                "the pid of a process in the loop's own tree, for --on-hung-evaluation kill"
            }
            Rejection::EvaluationLoopProcess => {
                "the pid of a worker, not of the loop's own process or one above it, for --on-hung-evaluation kill"
            }
            Rejection::EvaluationSharedProcess => {
                "the pid of a process running no other evaluation in flight, for --on-hung-evaluation kill"
            }
        }
    }
}

/// Counts and logs rejected observations.
///
/// The log is thinned so a loop that sends NaN on every iteration cannot flood it: a
/// warning is written for the 1st, 2nd, 4th, 8th … rejection of each kind, each
/// carrying the running count. The counter always counts every one.
pub(crate) struct Rejections {
    counter: Counter<u64>,
    labels: EnumMap<Rejection, Vec<KeyValue>>,
    counts: EnumMap<Rejection, AtomicU64>,
}

impl Rejections {
    pub(crate) fn new(counter: Counter<u64>) -> Self {
        Rejections {
            counter,
            labels: EnumMap::from_fn(Rejection::labels),
            counts: EnumMap::default(),
        }
    }

    /// Counts one rejected observation, logging it when the count is a power of two.
    pub(crate) fn reject(&self, kind: Rejection, value: f64, iteration: u64) {
        self.counter.add(1, &self.labels[kind]);
        let count = self.counts[kind].fetch_add(1, Ordering::Relaxed) + 1;
        if count.is_power_of_two() {
            tracing::warn!(
                field = kind.field(),
                reason = kind.reason(),
                value,
                iteration,
                rejected_so_far = count,
                "rejected an invalid observation; expected {}",
                kind.expectation()
            );
        }
    }
}

/// The checked observations of one iteration so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Observations {
    pub(crate) successes: u64,
    pub(crate) failures: u64,
    sharpe_sum: f64,
    sharpe_count: u64,
    drawdown_sum: f64,
    drawdown_count: u64,
    pub(crate) diversity: Option<f64>,
    pub(crate) unique_strategies: Option<u64>,
}

impl Observations {
    /// A successful strategy. It counts as a success either way; an invalid Sharpe or
    /// drawdown is left out of the averages and handed to `reject`. A drawdown of
    /// `None` was not reported (a loop that measures none) and is no rejection.
    #[inline]
    pub(crate) fn success(
        &mut self,
        sharpe: f64,
        drawdown: Option<f64>,
        reject: &mut dyn FnMut(Rejection, f64),
    ) {
        self.successes = self.successes.saturating_add(1);
        if sharpe.is_finite() {
            self.sharpe_sum += sharpe;
            self.sharpe_count = self.sharpe_count.saturating_add(1);
        } else {
            reject(Rejection::SharpeNotFinite, sharpe);
        }
        let Some(drawdown) = drawdown else {
            return;
        };
        if !drawdown.is_finite() {
            reject(Rejection::DrawdownNotFinite, drawdown);
        } else if drawdown < 0.0 {
            reject(Rejection::DrawdownNegative, drawdown);
        } else {
            self.drawdown_sum += drawdown;
            self.drawdown_count = self.drawdown_count.saturating_add(1);
        }
    }

    /// A failed strategy.
    #[inline]
    pub(crate) fn failure(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }

    /// Successes summarised by a client (`summary` is consistent: see
    /// [`crate::protocol`]); the values it lists as invalid go to `reject`.
    pub(crate) fn summarised(
        &mut self,
        summary: &crate::protocol::OutcomeSummary,
        reject: &mut dyn FnMut(Rejection, f64),
    ) {
        self.successes = self.successes.saturating_add(summary.successes);
        let (n, sum, _) = summary.sharpe;
        self.sharpe_sum += sum;
        self.sharpe_count = self.sharpe_count.saturating_add(n);
        let (dn, dsum) = summary.drawdown;
        self.drawdown_sum += dsum;
        self.drawdown_count = self.drawdown_count.saturating_add(dn);
        for _ in 0..summary.rejected_sharpe.min(1_000_000) {
            reject(Rejection::SharpeNotFinite, f64::NAN);
        }
        for &drawdown in &summary.rejected_drawdown {
            if drawdown.is_finite() {
                reject(Rejection::DrawdownNegative, drawdown);
            } else {
                reject(Rejection::DrawdownNotFinite, drawdown);
            }
        }
    }

    /// `n` failed strategies.
    pub(crate) fn failures(&mut self, n: u64) {
        self.failures = self.failures.saturating_add(n);
    }

    /// The population's diversity and distinct count; invalid ones go to `reject`.
    pub(crate) fn population(
        &mut self,
        population: &Population<'_>,
        reject: &mut dyn FnMut(Rejection, f64),
    ) {
        let diversity = population.diversity;
        if !diversity.is_finite() {
            reject(Rejection::DiversityNotFinite, diversity);
        } else if !(0.0..=1.0).contains(&diversity) {
            reject(Rejection::DiversityOutOfRange, diversity);
        } else {
            self.diversity = Some(diversity);
        }
        if population.unique_strategies > population.size {
            reject(
                Rejection::UniqueAboveSize,
                population.unique_strategies as f64,
            );
        } else {
            self.unique_strategies = Some(population.unique_strategies);
        }
    }

    /// Mean Sharpe ratio of the valid ones, if any.
    pub(crate) fn mean_sharpe(&self) -> Option<f64> {
        (self.sharpe_count > 0).then(|| self.sharpe_sum / self.sharpe_count as f64)
    }

    /// Mean max drawdown of the valid ones, if any.
    pub(crate) fn mean_max_drawdown(&self) -> Option<f64> {
        (self.drawdown_count > 0).then(|| self.drawdown_sum / self.drawdown_count as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_values_are_rejected_and_left_out_of_the_means() {
        let mut seen = Vec::new();
        let mut reject = |kind, _value| seen.push(kind);
        let mut o = Observations::default();
        o.success(1.0, Some(0.1), &mut reject);
        o.success(f64::NAN, Some(-0.2), &mut reject);
        o.success(3.0, Some(f64::INFINITY), &mut reject);
        o.success(2.0, None, &mut reject);
        o.failure();
        o.population(&Population::new(3, 4, 1.5), &mut reject);
        assert_eq!(
            seen,
            [
                Rejection::SharpeNotFinite,
                Rejection::DrawdownNegative,
                Rejection::DrawdownNotFinite,
                Rejection::DiversityOutOfRange,
                Rejection::UniqueAboveSize
            ]
        );
        assert_eq!((o.successes, o.failures), (4, 1));
        assert_eq!(o.mean_sharpe(), Some(2.0));
        assert_eq!(o.mean_max_drawdown(), Some(0.1));
        assert_eq!((o.diversity, o.unique_strategies), (None, None));
    }
}

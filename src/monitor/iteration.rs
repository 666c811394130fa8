//! One iteration of the loop, as reported by the loop: outcomes, population, timing.

use std::time::Instant;

use crate::instruments::Rejection;
use crate::monitor::state::IterationSummary;
use crate::monitor::Inner;

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

/// An iteration in progress, started by [`Monitor::start_iteration`](crate::Monitor::start_iteration).
///
/// Report each strategy's outcome and the population, then call
/// [`finish`](Self::finish). Dropping it unfinished (an early return, a `?`) finishes it
/// too, so the iteration is never lost. Recording costs a few nanoseconds per call and
/// never blocks on the endpoint or the samplers.
#[must_use = "an iteration is timed until it is finished or dropped"]
pub struct Iteration<'m> {
    inner: &'m Inner,
    number: u64,
    started: Instant,
    successes: u64,
    failures: u64,
    sharpe_sum: f64,
    sharpe_count: u64,
    drawdown_sum: f64,
    drawdown_count: u64,
    diversity: Option<f64>,
    unique_strategies: Option<u64>,
    champion_changed: bool,
    finished: bool,
}

impl std::fmt::Debug for Iteration<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iteration")
            .field("number", &self.number)
            .field("successes", &self.successes)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl<'m> Iteration<'m> {
    pub(crate) fn start(inner: &'m Inner, number: u64) -> Self {
        inner
            .instruments
            .iteration_number
            .record(number as f64, &[]);
        Iteration {
            inner,
            number,
            started: Instant::now(),
            successes: 0,
            failures: 0,
            sharpe_sum: 0.0,
            sharpe_count: 0,
            drawdown_sum: 0.0,
            drawdown_count: 0,
            diversity: None,
            unique_strategies: None,
            champion_changed: false,
            finished: false,
        }
    }

    /// This iteration's number (1-based).
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Reports a strategy that completed, with its Sharpe ratio and its max drawdown
    /// as a positive fraction of peak equity (0.25 for a 25% drawdown).
    ///
    /// The strategy counts as a success either way; a Sharpe that is not finite, or a
    /// drawdown that is negative or not finite, is left out of the averages, counted in
    /// `loopwatch_rejected_observations_total` and logged.
    pub fn record_success(&mut self, sharpe_ratio: f64, max_drawdown: f64) {
        self.successes += 1;
        if sharpe_ratio.is_finite() {
            self.sharpe_sum += sharpe_ratio;
            self.sharpe_count += 1;
        } else {
            self.reject(Rejection::SharpeNotFinite, sharpe_ratio);
        }
        if !max_drawdown.is_finite() {
            self.reject(Rejection::DrawdownNotFinite, max_drawdown);
        } else if max_drawdown < 0.0 {
            self.reject(Rejection::DrawdownNegative, max_drawdown);
        } else {
            self.drawdown_sum += max_drawdown;
            self.drawdown_count += 1;
        }
    }

    /// Reports a strategy that failed, with a short reason ("too few trades").
    ///
    /// Reasons are tallied for the final export (the first 32 distinct ones by name);
    /// keep them to a small fixed vocabulary rather than embedding ids or numbers.
    pub fn record_failure(&mut self, reason: &str) {
        self.failures += 1;
        self.inner.lock_state().count_failure_reason(reason);
    }

    /// Reports the population: its diversity, distinct strategies and champion.
    ///
    /// A diversity that is not finite or outside 0–1, or more distinct strategies than
    /// the population holds, is rejected (counted and logged); the rest is kept.
    pub fn record_population(&mut self, population: Population<'_>) {
        let diversity = population.diversity;
        if !diversity.is_finite() {
            self.reject(Rejection::DiversityNotFinite, diversity);
        } else if !(0.0..=1.0).contains(&diversity) {
            self.reject(Rejection::DiversityOutOfRange, diversity);
        } else {
            self.diversity = Some(diversity);
        }
        if population.unique_strategies > population.size {
            self.reject(
                Rejection::UniqueAboveSize,
                population.unique_strategies as f64,
            );
        } else {
            self.unique_strategies = Some(population.unique_strategies);
        }
        if let Some(champion) = population.champion {
            if self
                .inner
                .lock_state()
                .observe_champion(champion, self.number)
            {
                self.champion_changed = true;
                self.inner.instruments.champion_changes.add(1, &[]);
                tracing::info!(iteration = self.number, champion, "champion changed");
                self.inner.push_event(
                    self.number,
                    crate::evaluate::EventKind::ChampionChanged {
                        champion: champion.to_string(),
                    },
                );
            }
        }
    }

    fn reject(&self, kind: Rejection, value: f64) {
        self.inner
            .instruments
            .rejections
            .reject(kind, value, self.number);
    }

    /// Ends the iteration: records its duration and averages, updates staleness and
    /// returns what happened.
    pub fn finish(mut self) -> IterationSummary {
        self.complete()
    }

    fn complete(&mut self) -> IterationSummary {
        self.finished = true;
        let duration = self.started.elapsed();
        let mean = |sum: f64, count: u64| (count > 0).then(|| sum / count as f64);
        let staleness = self.inner.lock_state().complete(
            duration,
            self.successes,
            self.failures,
            self.champion_changed,
        );
        let summary = IterationSummary {
            number: self.number,
            duration,
            successes: self.successes,
            failures: self.failures,
            mean_sharpe: mean(self.sharpe_sum, self.sharpe_count),
            mean_max_drawdown: mean(self.drawdown_sum, self.drawdown_count),
            diversity: self.diversity,
            unique_strategies: self.unique_strategies,
            champion_changed: self.champion_changed,
            champion_staleness: staleness,
        };
        self.inner.record_iteration(&summary);
        summary
    }
}

impl Drop for Iteration<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.complete();
        }
    }
}

//! One iteration of the loop, as the loop reports it: outcomes, population, timing.
//!
//! The loop's thread keeps the iteration's observations itself, notes the start in
//! the hub (two atomic stores) and sends events — the champion changed, the iteration
//! completed — with a clock reading each. Its only shared state is a few atomics (the iteration's
//! number, the champion's fingerprint, the staleness), so the loop is told its
//! iteration's summary at once; everything derived follows when the hub settles.

use std::sync::atomic::Ordering;

use crate::records::{IterationSummary, Moment};
use crate::reported::{Observations, Population, Rejection};

use super::evaluation::Evaluation;
use super::event::{ChampionChange, Completed, Event};
use super::hub::Hub;
use super::reasons::{ReasonChunk, ReasonCounts};

/// An iteration in progress, started by [`Monitor::start_iteration`](crate::Monitor::start_iteration).
///
/// Report each strategy's outcome and the population, then call
/// [`finish`](Self::finish). Dropping it unfinished (an early return, a `?`) finishes it
/// too, so the iteration is never lost. Recording costs a few nanoseconds per call:
/// atomics, and events pushed into the monitor's bounded queue. An event that finds the
/// queue full (512 events, about 512 iterations not yet settled) makes the calling
/// thread settle the queue itself, after waiting for a settle already in progress (the
/// background clock's, or a reader's such as a scrape's); it never waits for a
/// scrape's rendering or for a sampler.
#[must_use = "an iteration is timed until it is finished or dropped"]
pub struct Iteration<'m> {
    hub: &'m Hub,
    state: IterationState,
    /// Whether it has been finished (so that dropping it does not finish it again).
    finished: bool,
}

/// The state of an iteration in progress, apart from the monitor it reports to: the
/// supervisor's intake keeps one across the messages of several connections.
#[derive(Debug)]
pub(super) struct IterationState {
    number: u64,
    /// When it started.
    started: Moment,
    observations: Observations,
    /// The best Sharpe ratio reported in this iteration.
    best_sharpe: Option<f64>,
    champion_changed: bool,
    /// Its failures by reason number.
    reasons: ReasonCounts,
}

impl std::fmt::Debug for Iteration<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Iteration");
        d.field("number", &self.state.number)
            .field("successes", &self.state.observations.successes)
            .field("failures", &self.state.observations.failures);
        d.finish_non_exhaustive()
    }
}

impl IterationState {
    #[inline]
    pub(super) fn start(hub: &Hub, number: u64) -> Self {
        let started = hub.clock.now();
        hub.iteration_started(number, started);
        IterationState {
            number,
            started,
            observations: Observations::default(),
            best_sharpe: None,
            champion_changed: false,
            reasons: ReasonCounts::default(),
        }
    }

    /// The iteration's number.
    pub(super) fn number(&self) -> u64 {
        self.number
    }

    fn rejecter(hub: &Hub, number: u64) -> impl FnMut(Rejection, f64) + '_ {
        move |kind, value| hub.reject(kind, value, number)
    }

    #[inline]
    pub(super) fn success(&mut self, hub: &Hub, sharpe_ratio: f64, max_drawdown: Option<f64>) {
        let mut reject = Self::rejecter(hub, self.number);
        self.observations
            .success(sharpe_ratio, max_drawdown, &mut reject);
        if sharpe_ratio.is_finite() && self.best_sharpe.is_none_or(|best| sharpe_ratio > best) {
            self.best_sharpe = Some(sharpe_ratio);
        }
    }

    #[inline]
    pub(super) fn failure(&mut self, hub: &Hub, reason: &str) {
        self.observations.failure();
        self.reasons.add(hub.reasons.id(reason), 1);
    }

    /// A batch of outcomes summarised by a client: the same counts, sums and
    /// rejections as reporting each one.
    pub(super) fn outcomes(&mut self, hub: &Hub, summary: crate::protocol::OutcomeSummary) {
        let mut reject = Self::rejecter(hub, self.number);
        self.observations.summarised(&summary, &mut reject);
        if let Some(max) = summary.sharpe.2 {
            if self.best_sharpe.is_none_or(|best| max > best) {
                self.best_sharpe = Some(max);
            }
        }
        for (reason, n) in &summary.failures {
            self.failures(hub, reason, *n);
        }
    }

    /// `n` failures with the same reason, tallied at once.
    pub(super) fn failures(&mut self, hub: &Hub, reason: &str, n: u64) {
        self.observations.failures(n);
        self.reasons.add(hub.reasons.id(reason), n);
    }

    pub(super) fn population(&mut self, hub: &Hub, population: Population<'_>) {
        let mut reject = Self::rejecter(hub, self.number);
        self.observations.population(&population, &mut reject);
        let Some(champion) = population.champion else {
            return;
        };
        // The same champion as last time is recognised by its fingerprint.
        if hub.new_champion(champion) {
            self.champion_changed(hub, champion, self.number, 1);
        }
    }

    /// Applies a batch of merged iterations numbered from `first` (this state is the
    /// last of them) and ends it: totals, champions and staleness as if each had been
    /// reported, the evaluation on the batch as one iteration.
    pub(super) fn finish_batch(
        mut self,
        hub: &Hub,
        first: u64,
        batch: crate::protocol::IterationBatch,
    ) -> IterationSummary {
        self.outcomes(hub, batch.outcomes);
        if let Some(p) = batch.population {
            let population = Population::new(p.size, p.unique, p.diversity);
            let mut reject = Self::rejecter(hub, self.number);
            self.observations.population(&population, &mut reject);
        }
        let mut changed_at = None;
        if let Some(c) = batch.champions {
            let at = first.saturating_add(c.first_at);
            if hub.new_champion(&c.first) {
                self.champion_changed(hub, &c.first, at, 1);
                changed_at = Some(at);
            }
            if let Some(last_at) = c.last_change_at {
                let at = first.saturating_add(last_at);
                hub.new_champion(&c.last);
                self.champion_changed(hub, &c.last, at, c.changes);
                changed_at = Some(at);
            }
        }
        let duration = std::time::Duration::try_from_secs_f64(batch.seconds).unwrap_or_default();
        let since_change = changed_at.map(|at| self.number.saturating_sub(at));
        self.complete(hub, batch.count, duration, since_change, hub.clock.now())
    }

    /// Ends `count` completed iterations of `duration` in all (this one, or a batch
    /// whose last this is), ended at `ended`: `since_change` is how many of them came
    /// after the champion last changed, when it changed among them. The summary is
    /// the loop's at once; the books, rules and gauges follow when the monitor
    /// settles it.
    fn complete(
        &self,
        hub: &Hub,
        count: u64,
        duration: std::time::Duration,
        since_change: Option<u64>,
        ended: Moment,
    ) -> IterationSummary {
        let o = &self.observations;
        // Completed iterations since the champion last changed; 0 until there is one.
        let staleness = match since_change {
            Some(since) => {
                hub.staleness.store(since, Ordering::Relaxed);
                since
            }
            None if hub.has_champion() => hub
                .staleness
                .fetch_add(count, Ordering::Relaxed)
                .saturating_add(count),
            None => hub.staleness.load(Ordering::Relaxed),
        };
        let summary = IterationSummary {
            number: self.number,
            duration: duration / u32::try_from(count).unwrap_or(u32::MAX),
            successes: o.successes,
            failures: o.failures,
            mean_sharpe: o.mean_sharpe(),
            mean_max_drawdown: o.mean_max_drawdown(),
            diversity: o.diversity,
            unique_strategies: o.unique_strategies,
            champion_changed: since_change.is_some(),
            champion_staleness: staleness,
        };
        let (reasons, more) = ReasonChunk::split(&self.reasons);
        for chunk in more {
            hub.send(Event::Reasons(chunk));
        }
        hub.send(Event::Iteration(Completed {
            summary,
            count,
            duration,
            reasons,
            best_sharpe: self.best_sharpe,
            ended,
        }));
        summary
    }

    /// Sends `changes` champion changes, the last to `champion` at `iteration`.
    fn champion_changed(&mut self, hub: &Hub, champion: &str, iteration: u64, changes: u64) {
        self.champion_changed = true;
        hub.send(Event::ChampionChanged(ChampionChange {
            champion: champion.into(),
            iteration,
            changes,
            at: hub.clock.now(),
        }));
    }

    pub(super) fn finish(&self, hub: &Hub) -> IterationSummary {
        let ended = hub.clock.now();
        let duration = ended.since(self.started.mono);
        let since_change = self.champion_changed.then_some(0);
        self.complete(hub, 1, duration, since_change, ended)
    }

    /// Ends the iteration with a duration measured elsewhere (the loop's own clock).
    pub(super) fn finish_after(
        &self,
        hub: &Hub,
        duration: std::time::Duration,
    ) -> IterationSummary {
        let since_change = self.champion_changed.then_some(0);
        self.complete(hub, 1, duration, since_change, hub.clock.now())
    }
}

impl<'m> Iteration<'m> {
    #[inline]
    pub(super) fn start(hub: &'m Hub, number: u64) -> Self {
        Iteration {
            hub,
            state: IterationState::start(hub, number),
            finished: false,
        }
    }

    /// Reports a strategy that completed, with its Sharpe ratio and its max drawdown
    /// as a positive fraction of peak equity (0.25 for a 25% drawdown).
    ///
    /// The strategy counts as a success either way; a Sharpe that is not finite, or a
    /// drawdown that is negative or not finite, is left out of the averages, counted in
    /// `loopwatch_rejected_observations_total` and logged.
    #[inline]
    pub fn record_success(&mut self, sharpe_ratio: f64, max_drawdown: f64) {
        let hub = self.hub;
        self.state.success(hub, sharpe_ratio, Some(max_drawdown));
    }

    /// Starts evaluation `id` of this iteration's candidates now (see
    /// [`Monitor::evaluation`](crate::Monitor::evaluation)); the guard may outlive the
    /// iteration.
    #[inline]
    pub fn evaluation(&self, id: &str) -> Evaluation<'m> {
        Evaluation::start(self.hub, id)
    }

    /// Reports a strategy that failed, with a short reason ("too few trades").
    ///
    /// Reasons are tallied for the final export (the first 32 distinct ones by name);
    /// keep them to a small fixed vocabulary rather than embedding ids or numbers.
    #[inline]
    pub fn record_failure(&mut self, reason: &str) {
        let hub = self.hub;
        self.state.failure(hub, reason);
    }

    /// Reports the population: its diversity, distinct strategies and champion.
    ///
    /// A diversity that is not finite or outside 0–1, or more distinct strategies than
    /// the population holds, is rejected (counted and logged); the rest is kept.
    pub fn record_population(&mut self, population: Population<'_>) {
        let hub = self.hub;
        self.state.population(hub, population);
    }

    /// Ends the iteration: records its duration and averages, updates staleness and
    /// returns what happened.
    pub fn finish(mut self) -> IterationSummary {
        self.finished = true;
        self.state.finish(self.hub)
    }
}

impl Drop for Iteration<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.state.finish(self.hub);
        }
    }
}

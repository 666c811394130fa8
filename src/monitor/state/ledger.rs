//! The run's ledger: totals, champion tracking, failure reasons, the best-so-far
//! curve, the exits of a supervised loop, and the bounded history and event log the
//! page and the final export read. Part of the [`RunState`](super::RunState).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

use crate::evaluate::Findings;
use crate::records::progress::{ChampionMark, Progress, ProgressPoint};
use crate::records::{
    HistoryPoint, IterationSummary, LogEntry, LogEntryKind, LoopExit, RunSummary, HISTORY_LEN,
    MAX_EVENTS,
};

use super::super::reasons::{ReasonCounts, ReasonNames, ReasonTotals};

/// The run's bookkeeping.
#[derive(Debug)]
pub(crate) struct RunLedger {
    pub(crate) started_at: SystemTime,
    pub(crate) iterations: u64,
    pub(crate) successes: u64,
    pub(crate) failures: u64,
    pub(crate) total_execution: Duration,
    pub(crate) champion: Option<String>,
    pub(crate) champion_since: Option<u64>,
    pub(crate) champion_staleness: u64,
    pub(crate) champion_changes: u64,
    /// Failures by reason number; the names are the hub's ([`ReasonNames`]).
    failure_reasons: ReasonTotals,
    /// The best Sharpe ratio of any strategy so far.
    pub(crate) best_sharpe: Option<f64>,
    /// Its improvements, for the final export's best-so-far curve.
    pub(crate) progress: Progress,
    /// How a supervised loop ended, once it has.
    pub(crate) loop_exit: Option<LoopExit>,
    /// Every exit of a supervised loop (the last [`MAX_EXITS`]), oldest first.
    exits: VecDeque<LoopExit>,
    /// Whether the last exit is to be followed by a restart not yet counted.
    restart_pending: bool,
    /// Processes of the run still alive after the cleanup at the loop's exit.
    pub(crate) processes_left_behind: Vec<crate::processes::MarkedProcess>,
    /// Failure reasons of the last completed iterations, one entry each: a ring,
    /// `recent_next` the entry the next iteration overwrites (in place: an entry is
    /// large to copy).
    recent_reasons: [ReasonCounts; RECENT_ITERATIONS],
    recent_next: usize,
    history: VecDeque<HistoryPoint>,
    events: VecDeque<LogEntry>,
    events_dropped: u64,
    /// The number of the last iteration started or completed.
    pub(crate) last_iteration: u64,
}

/// Exits of a supervised loop kept for the summary; the oldest are dropped first.
pub(crate) const MAX_EXITS: usize = 256;

/// Completed iterations whose failure reasons the dashboard shows beside the run's.
pub(crate) const RECENT_ITERATIONS: usize = 10;

impl RunLedger {
    pub(crate) fn new(started_at: SystemTime) -> Self {
        RunLedger {
            started_at,
            iterations: 0,
            successes: 0,
            failures: 0,
            total_execution: Duration::ZERO,
            champion: None,
            champion_since: None,
            champion_staleness: 0,
            champion_changes: 0,
            failure_reasons: ReasonTotals::default(),
            best_sharpe: None,
            progress: Progress::default(),
            loop_exit: None,
            exits: VecDeque::new(),
            restart_pending: false,
            processes_left_behind: Vec::new(),
            recent_reasons: [ReasonCounts::default(); RECENT_ITERATIONS],
            recent_next: 0,
            history: VecDeque::with_capacity(HISTORY_LEN),
            events: VecDeque::new(),
            events_dropped: 0,
            last_iteration: 0,
        }
    }

    /// The champion changed `changes` times (more than once within a merged batch),
    /// the last to `champion` in iteration `iteration`, at `at`, with the run's LLM
    /// spend at `spend_usd`: booked, marked on the best-so-far record, and kept in the
    /// event log.
    pub(crate) fn champion_changed(
        &mut self,
        champion: &str,
        iteration: u64,
        changes: u64,
        at: SystemTime,
        spend_usd: f64,
    ) {
        self.champion = Some(champion.to_string());
        self.champion_since = Some(iteration);
        // A batch's changes are fewer than its iterations (protocol::IterationBatch);
        // the count never wraps all the same.
        self.champion_changes = self.champion_changes.saturating_add(changes);
        self.progress.push_champion(ChampionMark {
            iteration,
            elapsed_seconds: (crate::records::unix_seconds(at)
                - crate::records::unix_seconds(self.started_at))
            .max(0.0),
            llm_cost_usd: spend_usd,
        });
        self.push_event(LogEntry {
            at,
            iteration,
            kind: LogEntryKind::ChampionChanged {
                champion: champion.to_string(),
            },
        });
    }

    /// Folds `count` completed iterations of `duration` in all (the last of them
    /// summarised by `summary`, which carries their outcomes and the staleness after
    /// them), with their failures by reason, into the totals: `reasons` counts them
    /// into an empty tally.
    pub(crate) fn complete(
        &mut self,
        count: u64,
        duration: Duration,
        summary: &IterationSummary,
        reasons: impl FnOnce(&mut ReasonCounts),
    ) {
        // Saturating: the counts and durations come from the loop's lines.
        self.iterations = self.iterations.saturating_add(count);
        let entry = &mut self.recent_reasons[self.recent_next];
        self.recent_next = (self.recent_next + 1) % RECENT_ITERATIONS;
        *entry = ReasonCounts::default();
        reasons(entry);
        self.failure_reasons.add_all(entry);
        self.successes = self.successes.saturating_add(summary.successes);
        self.failures = self.failures.saturating_add(summary.failures);
        self.total_execution = self.total_execution.saturating_add(duration);
        self.champion_staleness = summary.champion_staleness;
    }

    /// Failure reasons over the last completed iterations, summed, named by `names`.
    pub(crate) fn recent_failure_reasons(&self, names: &ReasonNames) -> BTreeMap<String, u64> {
        let mut sum = ReasonCounts::default();
        for reasons in &self.recent_reasons {
            sum.add_all(reasons);
        }
        sum.by_name(names)
    }

    /// Failures over the run by reason, named by `names`.
    pub(crate) fn failure_reasons(&self, names: &ReasonNames) -> BTreeMap<String, u64> {
        self.failure_reasons.by_name(names)
    }

    /// Folds the best Sharpe ratio of iteration `iteration`, which ended at `at`
    /// (seconds since the Unix epoch) with the run's LLM spend at `spend_usd`, into the
    /// best so far; an improvement is kept as a point of the best-so-far curve.
    pub(crate) fn observe_sharpe(&mut self, sharpe: f64, iteration: u64, at: f64, spend_usd: f64) {
        if self.best_sharpe.is_none_or(|best| sharpe > best) {
            self.best_sharpe = Some(sharpe);
            self.progress.push(ProgressPoint {
                iteration,
                elapsed_seconds: (at - crate::records::unix_seconds(self.started_at)).max(0.0),
                llm_cost_usd: spend_usd,
                best_sharpe: sharpe,
            });
        }
    }

    /// Keeps a completed iteration's point, dropping the oldest past [`HISTORY_LEN`].
    pub(crate) fn push_history(&mut self, point: HistoryPoint) {
        if self.history.len() == HISTORY_LEN {
            self.history.pop_front();
        }
        self.history.push_back(point);
    }

    /// The recent iterations, oldest first.
    pub(crate) fn history(&self) -> Vec<HistoryPoint> {
        self.history.iter().copied().collect()
    }

    /// Keeps the alerts that fired or resolved and the warnings that started or
    /// cleared, found `at`, in the event log.
    pub(crate) fn log_findings(&mut self, findings: &Findings, at: SystemTime) {
        for t in findings
            .transitions
            .iter()
            .filter(|t| t.fires_or_resolves())
        {
            self.push_event(LogEntry {
                at: t.at,
                iteration: t.iteration,
                kind: LogEntryKind::Alert {
                    alertname: t.alert,
                    state: t.state,
                    message: t.alert.message(),
                    value: t.value.is_finite().then_some(t.value),
                    threshold: t.threshold,
                    note: t.note,
                    subject: t.subject.as_deref().map(str::to_string),
                },
            });
        }
        for w in &findings.warnings {
            self.push_event(LogEntry {
                at,
                iteration: w.iteration,
                kind: LogEntryKind::Warning {
                    metric: w.watched.metric(),
                    message: w.watched.warning(),
                    started: w.started,
                    value: w.value,
                    baseline: w.baseline,
                },
            });
        }
    }

    /// Keeps an entry of the event log, dropping (and counting) the oldest past
    /// [`MAX_EVENTS`].
    pub(crate) fn push_event(&mut self, event: LogEntry) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    /// Records an exit of the supervised loop; an exit already recorded (the same
    /// instant: a restart that was then called off) is replaced, not repeated.
    pub(crate) fn record_exit(&mut self, exit: LoopExit) {
        self.restart_pending = exit.restarted;
        if let Some(last) = self.exits.back_mut() {
            if last.at == exit.at {
                *last = exit;
                return;
            }
        }
        if self.exits.len() == MAX_EXITS {
            self.exits.pop_front();
        }
        self.exits.push_back(exit);
    }

    /// The last exit when a restart was to follow it and has not been counted yet;
    /// counts it (returns it once).
    pub(crate) fn exits_pending_restart(&mut self) -> Option<LoopExit> {
        if self.restart_pending && self.exits.back().is_some_and(|e| e.restarted) {
            self.restart_pending = false;
            return self.exits.back().copied();
        }
        None
    }

    /// The recent events, oldest first, and how many were dropped for the bound.
    pub(crate) fn events(&self) -> (Vec<LogEntry>, u64) {
        (self.events.iter().cloned().collect(), self.events_dropped)
    }

    /// The run so far, summarised as of `now` (wall clock), reasons named by `names`;
    /// `llm` is left empty for the caller.
    pub(crate) fn summary(&self, run_id: &str, names: &ReasonNames, now: SystemTime) -> RunSummary {
        let outcomes = self.successes + self.failures;
        RunSummary {
            run_id: run_id.to_string(),
            started_at: humantime::format_rfc3339_millis(self.started_at).to_string(),
            elapsed_seconds: now
                .duration_since(self.started_at)
                .unwrap_or_default()
                .as_secs_f64(),
            iterations: self.iterations,
            strategy_successes: self.successes,
            strategy_failures: self.failures,
            success_rate: (outcomes > 0).then(|| self.successes as f64 / outcomes as f64),
            mean_execution_time_seconds: (self.iterations > 0)
                .then(|| self.total_execution.as_secs_f64() / self.iterations as f64),
            champion: self.champion.clone(),
            champion_since_iteration: self.champion_since,
            champion_staleness_iterations: self.champion_staleness,
            champion_changes: self.champion_changes,
            best_sharpe: self.best_sharpe,
            failure_reasons: self.failure_reasons(names),
            loop_exit: self.loop_exit,
            exits: self.exits.iter().copied().collect(),
            llm: crate::llm::meter::LlmSummary::default(),
            processes_left_behind: self.processes_left_behind.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iteration(number: u64, successes: u64, failures: u64, staleness: u64) -> IterationSummary {
        IterationSummary {
            number,
            duration: Duration::from_millis(1),
            successes,
            failures,
            mean_sharpe: None,
            mean_max_drawdown: None,
            diversity: None,
            unique_strategies: None,
            champion_changed: false,
            champion_staleness: staleness,
        }
    }

    #[test]
    fn completed_iterations_and_champions_are_booked() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut state = RunLedger::new(start);
        let tick = Duration::from_millis(1);
        state.complete(1, tick, &iteration(1, 3, 1, 0), |_| {});
        state.champion_changed("a", 2, 1, start, 0.0);
        state.complete(2, tick * 2, &iteration(3, 4, 0, 1), |_| {});
        state.champion_changed("b", 5, 1, start, 0.5);
        let later = start + Duration::from_secs(90);
        let summary = state.summary("run", &ReasonNames::default(), later);
        assert_eq!(summary.elapsed_seconds, 90.0);
        assert_eq!(
            state.events().0.len(),
            2,
            "both changes are in the event log"
        );
        assert_eq!(summary.champion.as_deref(), Some("b"));
        assert_eq!(summary.champion_since_iteration, Some(5));
        assert_eq!(summary.champion_changes, 2);
        let marks = state.progress.champion_changes();
        assert_eq!(
            marks
                .iter()
                .map(|m| (m.iteration, m.llm_cost_usd))
                .collect::<Vec<_>>(),
            [(2, 0.0), (5, 0.5)],
            "each change is marked with the spend when it came"
        );
        assert_eq!(summary.iterations, 3);
        assert_eq!(
            (summary.strategy_successes, summary.strategy_failures),
            (7, 1)
        );
        assert_eq!(summary.champion_staleness_iterations, 1);
        assert_eq!(summary.mean_execution_time_seconds, Some(0.001));
    }

    #[test]
    fn champion_changes_saturate_instead_of_wrapping() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut state = RunLedger::new(start);
        state.champion_changed("a", 1, 2, start, 0.0);
        state.champion_changed("b", 2, u64::MAX - 1, start, 0.0);
        state.champion_changed("c", 3, u64::MAX, start, 0.0);
        let summary = state.summary("run", &ReasonNames::default(), start);
        assert_eq!(summary.champion_changes, u64::MAX);
        assert_eq!(summary.champion.as_deref(), Some("c"));
    }

    #[test]
    fn recent_failure_reasons_cover_the_last_iterations() {
        let mut state = RunLedger::new(SystemTime::now());
        let names = ReasonNames::default();
        let tick = Duration::from_millis(1);
        for i in 0..(RECENT_ITERATIONS as u64 + 5) {
            let mut reasons = ReasonCounts::default();
            reasons.add(names.id(if i < 5 { "early" } else { "late" }), 2);
            state.complete(1, tick, &iteration(i + 1, 0, 2, 0), |entry| {
                entry.add_all(&reasons)
            });
        }
        assert_eq!(state.failure_reasons(&names)["early"], 10);
        let recent = state.recent_failure_reasons(&names);
        assert_eq!(recent.get("early"), None);
        assert_eq!(recent["late"], 2 * RECENT_ITERATIONS as u64);
    }
}

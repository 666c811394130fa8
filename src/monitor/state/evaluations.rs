//! The evaluations in flight (a candidate's back-test, a program's run), the workers
//! that run them, and the durations of the finished ones, for EvaluationHung and the
//! evaluation metrics. Part of the [`RunState`](super::RunState).
//!
//! Everything here is bounded whatever the loop sends: at most [`MAX_IN_FLIGHT`]
//! evaluations in flight (an id is kept only while its evaluation runs), at most
//! [`MAX_WORKERS`] workers, the last [`FINISHED_WINDOW`] durations. A start past the
//! bound, a second start of an id in flight and an end of an id not in flight are
//! turned away, each as a [`Refused`] for the hub to count; none changes anything.
//! The ids of the last [`REFUSED_REMEMBERED`] starts refused past the bound are kept,
//! so that the end of such an evaluation is not counted a second time.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::export::EvaluationRow;
use crate::records::{Ended, HungEvaluation};

/// Evaluations in flight at most; starts past it are refused.
pub(crate) const MAX_IN_FLIGHT: usize = 10_000;

/// Workers tracked at most; evaluations on workers past it run untracked.
pub(crate) const MAX_WORKERS: usize = 1_024;

/// Finished evaluations whose durations make the 95th percentile.
pub(crate) const FINISHED_WINDOW: usize = 1_000;

/// Finished evaluations needed before the 95th percentile counts; before that only
/// `evaluation_floor` applies.
pub(crate) const MIN_FINISHED_FOR_P95: usize = 20;

/// How long a worker counts as seen after its last evaluation started or ended.
pub(crate) const WORKER_WINDOW: Duration = Duration::from_secs(60);

/// Evaluations each view keeps at most: the oldest in flight, the slowest ended, the
/// last killed.
pub(crate) const VIEW_LIMIT: usize = 10;

/// Ids of starts refused past [`MAX_IN_FLIGHT`] remembered at most (the latest), so
/// that their ends are not counted as ends of unknown ids.
pub(crate) const REFUSED_REMEMBERED: usize = 1_024;

/// Why an evaluation whose process is gone failed: the loop's process ended, or the
/// process it reported exited, without the evaluation's end.
pub(crate) const PROCESS_GONE: &str = "process gone";

/// Why an evaluation event changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A start while [`MAX_IN_FLIGHT`] evaluations are in flight.
    OverLimit,
    /// A start of an id already in flight.
    Duplicate,
    /// An end of an id not in flight (never started, already ended, or its start
    /// refused longer ago than the last [`REFUSED_REMEMBERED`] refusals).
    Unknown,
    /// The end of an evaluation whose start was refused past the bound: counted
    /// already, with its start.
    EndOfOverLimit,
}

/// A worker: its reported name, else its pid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum WorkerKey {
    Name(Arc<str>),
    Pid(u32),
}

impl WorkerKey {
    fn of(worker: Option<&Arc<str>>, pid: Option<u32>) -> Option<Self> {
        match (worker, pid) {
            (Some(name), _) => Some(WorkerKey::Name(Arc::clone(name))),
            (None, Some(pid)) => Some(WorkerKey::Pid(pid)),
            (None, None) => None,
        }
    }
}

/// One worker's evaluations in flight and when it was last seen (monotonic).
#[derive(Debug, Clone, Copy)]
struct Worker {
    busy: u32,
    last_seen: Duration,
}

/// One evaluation in flight.
#[derive(Debug)]
struct InFlight {
    /// Its place in the order of starts.
    seq: u64,
    /// When it started, by the monitor's clock.
    started: Duration,
    /// When it started by the loop's clock (Unix seconds), if the start said.
    reported: Option<f64>,
    pid: Option<u32>,
    /// The start time of the process under `pid` when it was reported, if one ran.
    pid_start: Option<u64>,
    worker: Option<Arc<str>>,
    /// The worker it is counted on, when tracked.
    counted_on: Option<WorkerKey>,
}

/// The process an evaluation reported: its pid, and the start time (clock ticks
/// after boot) of the process that ran under it then, when one did.
pub(crate) type Process = (u32, Option<u64>);

/// The oldest evaluation in flight: its id, age, worker and pid.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Oldest {
    pub(crate) id: Arc<str>,
    pub(crate) age: Duration,
    pub(crate) worker: Option<Arc<str>>,
    pub(crate) pid: Option<u32>,
}

impl Oldest {
    /// How an alert names it: `prog-17 (worker pool-3, pid 4242)`.
    pub(crate) fn subject(&self) -> Arc<str> {
        let mut text = format!("evaluation {}", self.id);
        match (&self.worker, self.pid) {
            (Some(worker), Some(pid)) => text.push_str(&format!(" (worker {worker}, pid {pid})")),
            (Some(worker), None) => text.push_str(&format!(" (worker {worker})")),
            (None, Some(pid)) => text.push_str(&format!(" (pid {pid})")),
            (None, None) => {}
        }
        text.into()
    }
}

/// What an evaluation that ended leaves for the instruments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Finished {
    pub(crate) outcome: Ended,
    pub(crate) duration: Duration,
}

/// The evaluations in flight, their workers, and the finished ones' durations.
#[derive(Debug)]
pub(crate) struct Evaluations {
    in_flight: HashMap<Arc<str>, InFlight>,
    /// Starts in order, oldest first; an entry whose evaluation has ended stays until
    /// it reaches the front or the queue is compacted.
    order: VecDeque<(u64, Arc<str>)>,
    next_seq: u64,
    workers: HashMap<WorkerKey, Worker>,
    /// Workers with an evaluation in flight.
    busy_workers: usize,
    /// The most workers busy at once since [`Evaluations::take_peak_occupancy`].
    peak_busy: usize,
    /// The last finished durations, in seconds, oldest first.
    finished: VecDeque<f64>,
    /// The 95th percentile of `finished`, when it changed since last computed: `None`.
    p95: Option<Option<Duration>>,
    scratch: Vec<f64>,
    ended: [u64; 4],
    /// The slowest ended evaluations, slowest first, at most [`VIEW_LIMIT`].
    slowest: Vec<EvaluationRow>,
    /// The last evaluations loopwatch killed, oldest first, at most [`VIEW_LIMIT`].
    killed: VecDeque<EvaluationRow>,
    /// Ended evaluations by duration, over [`crate::catalog::EVALUATION_SECONDS_BOUNDARIES`]
    /// (the last bucket: above the largest boundary).
    buckets: [u64; BUCKETS],
    /// Ids whose start was refused past the bound, each with the number of its last
    /// refusal; forgotten when their end arrives or past [`REFUSED_REMEMBERED`].
    refused: HashMap<Arc<str>, u64>,
    /// The refusals, oldest first, at most [`REFUSED_REMEMBERED`] (an id forgotten
    /// already, or refused again since, stays until it leaves the front).
    refusals: VecDeque<(u64, Arc<str>)>,
    /// The number of the next refusal.
    next_refusal: u64,
}

/// Buckets of the duration distribution.
pub(crate) const BUCKETS: usize = crate::catalog::EVALUATION_SECONDS_BOUNDARIES.len() + 1;

impl Default for Evaluations {
    fn default() -> Self {
        Evaluations {
            in_flight: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            workers: HashMap::new(),
            busy_workers: 0,
            peak_busy: 0,
            finished: VecDeque::with_capacity(FINISHED_WINDOW),
            p95: Some(None),
            scratch: Vec::new(),
            ended: [0; 4],
            slowest: Vec::with_capacity(VIEW_LIMIT + 1),
            killed: VecDeque::with_capacity(VIEW_LIMIT + 1),
            buckets: [0; BUCKETS],
            refused: HashMap::new(),
            refusals: VecDeque::new(),
            next_refusal: 0,
        }
    }
}

impl Evaluations {
    /// Evaluation `id` started at `now` (monotonic), on `worker` or `process` if said.
    pub(crate) fn start(
        &mut self,
        id: &Arc<str>,
        process: Option<Process>,
        worker: Option<Arc<str>>,
        reported: Option<f64>,
        now: Duration,
    ) -> Result<(), Refused> {
        if self.in_flight.contains_key(id) {
            return Err(Refused::Duplicate);
        }
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.remember_refused(id);
            return Err(Refused::OverLimit);
        }
        if !self.refused.is_empty() {
            // Started after all: its end is this start's.
            self.refused.remove(id);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let pid = process.map(|(pid, _)| pid);
        let counted_on = self.occupy(WorkerKey::of(worker.as_ref(), pid), now);
        self.in_flight.insert(
            Arc::clone(id),
            InFlight {
                seq,
                started: now,
                reported,
                pid,
                pid_start: process.and_then(|(_, start)| start),
                worker,
                counted_on,
            },
        );
        self.order.push_back((seq, Arc::clone(id)));
        self.compact();
        Ok(())
    }

    /// Evaluation `id` (in flight) runs on `worker` or `process` (each if said);
    /// unknown ids are ignored (their start was refused, and counted, already).
    pub(crate) fn assign(
        &mut self,
        id: &str,
        process: Option<Process>,
        worker: Option<Arc<str>>,
        now: Duration,
    ) {
        let Some(evaluation) = self.in_flight.get_mut(id) else {
            return;
        };
        if let Some((pid, start)) = process {
            evaluation.pid = Some(pid);
            evaluation.pid_start = start;
        }
        if worker.is_some() {
            evaluation.worker = worker;
        }
        let key = WorkerKey::of(evaluation.worker.as_ref(), evaluation.pid);
        if key == evaluation.counted_on {
            return;
        }
        let previous = evaluation.counted_on.take();
        self.release(previous, now);
        let counted_on = self.occupy(key, now);
        if let Some(evaluation) = self.in_flight.get_mut(id) {
            evaluation.counted_on = counted_on;
        }
    }

    /// Remembers that the start of `id` was refused past the bound, forgetting the
    /// oldest refusal past [`REFUSED_REMEMBERED`].
    fn remember_refused(&mut self, id: &Arc<str>) {
        if self.refusals.len() == REFUSED_REMEMBERED {
            if let Some((number, forgotten)) = self.refusals.pop_front() {
                if self.refused.get(&forgotten) == Some(&number) {
                    self.refused.remove(&forgotten);
                }
            }
        }
        let number = self.next_refusal;
        self.next_refusal += 1;
        self.refused.insert(Arc::clone(id), number);
        self.refusals.push_back((number, Arc::clone(id)));
    }

    /// Evaluation `id` ended at `now` (`reported`: by the loop's clock, if said).
    pub(crate) fn end(
        &mut self,
        id: &str,
        outcome: Ended,
        reported: Option<f64>,
        now: Duration,
    ) -> Result<Finished, Refused> {
        // loopwatch's own kills are cut short: they would only lift the limit.
        let ended = self.finish(id, outcome, reported, now, outcome != Ended::Killed);
        if ended == Err(Refused::Unknown) && self.refused.remove(id).is_some() {
            return Err(Refused::EndOfOverLimit);
        }
        ended
    }

    /// Evaluation `id`'s process is gone: it ends at `now` as failed ([`PROCESS_GONE`]).
    /// Its duration says when loopwatch found out, not how long it ran, so it is kept
    /// out of the 95th percentile, as a kill is.
    pub(crate) fn gone(&mut self, id: &str, now: Duration) -> Result<Finished, Refused> {
        self.finish(id, Ended::Failed, None, now, false)
    }

    /// The loop's process ended: every evaluation in flight ends at `now` as failed, its
    /// process gone (see [`Evaluations::gone`]). Their durations, oldest first.
    pub(crate) fn all_gone(&mut self, now: Duration) -> Vec<Duration> {
        let ids: Vec<Arc<str>> = self
            .order
            .iter()
            .filter(|(seq, id)| self.in_flight.get(id).is_some_and(|e| e.seq == *seq))
            .map(|(_, id)| Arc::clone(id))
            .collect();
        let gone = ids
            .iter()
            .filter_map(|id| self.gone(id, now).ok())
            .map(|finished| finished.duration)
            .collect();
        debug_assert!(self.in_flight.is_empty() && self.order.is_empty());
        gone
    }

    /// Ends evaluation `id` at `now`; its duration joins the 95th percentile's when
    /// `timed`.
    fn finish(
        &mut self,
        id: &str,
        outcome: Ended,
        reported: Option<f64>,
        now: Duration,
        timed: bool,
    ) -> Result<Finished, Refused> {
        let evaluation = self.in_flight.remove(id).ok_or(Refused::Unknown)?;
        self.release(evaluation.counted_on.clone(), now);
        let duration = match (evaluation.reported, reported) {
            (Some(start), Some(end)) if end >= start => {
                Duration::try_from_secs_f64(end - start).ok()
            }
            _ => None,
        }
        .unwrap_or_else(|| now.saturating_sub(evaluation.started));
        if timed {
            if self.finished.len() == FINISHED_WINDOW {
                self.finished.pop_front();
            }
            self.finished.push_back(duration.as_secs_f64());
            self.p95 = None;
        }
        self.ended[outcome as usize] += 1;
        self.keep_for_the_views(id, evaluation, outcome, duration);
        self.pop_ended();
        Ok(Finished { outcome, duration })
    }

    /// Books an ended evaluation in the duration distribution, and among the slowest
    /// and the killed when it is one of them.
    fn keep_for_the_views(
        &mut self,
        id: &str,
        evaluation: InFlight,
        outcome: Ended,
        duration: Duration,
    ) {
        let seconds = duration.as_secs_f64();
        let bucket = crate::catalog::EVALUATION_SECONDS_BOUNDARIES
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS - 1);
        self.buckets[bucket] += 1;
        let slow_enough = self.slowest.len() < VIEW_LIMIT
            || self.slowest.last().is_some_and(|s| s.seconds < seconds);
        if !slow_enough && outcome != Ended::Killed {
            return;
        }
        let row = EvaluationRow {
            id: id.to_string(),
            worker: evaluation.worker.as_deref().map(str::to_string),
            pid: evaluation.pid,
            seconds,
            outcome: Some(outcome.as_str()),
        };
        if outcome == Ended::Killed {
            if self.killed.len() == VIEW_LIMIT {
                self.killed.pop_front();
            }
            self.killed.push_back(row.clone());
        }
        if slow_enough {
            let at = self.slowest.partition_point(|s| s.seconds >= seconds);
            self.slowest.insert(at, row);
            self.slowest.truncate(VIEW_LIMIT);
        }
    }

    /// Counts `key` busy from `now`, when it is tracked or there is room; the key it
    /// is counted on.
    fn occupy(&mut self, key: Option<WorkerKey>, now: Duration) -> Option<WorkerKey> {
        let key = key?;
        let room = self.workers.len() < MAX_WORKERS;
        let worker = match self.workers.get_mut(&key) {
            Some(worker) => worker,
            None if room => self.workers.entry(key.clone()).or_insert(Worker {
                busy: 0,
                last_seen: now,
            }),
            None => return None,
        };
        if worker.busy == 0 {
            self.busy_workers += 1;
            self.peak_busy = self.peak_busy.max(self.busy_workers);
        }
        worker.busy += 1;
        worker.last_seen = now;
        Some(key)
    }

    /// One evaluation on `key` no longer runs, as of `now`.
    fn release(&mut self, key: Option<WorkerKey>, now: Duration) {
        let Some(worker) = key.and_then(|key| self.workers.get_mut(&key)) else {
            return;
        };
        worker.busy = worker.busy.saturating_sub(1);
        worker.last_seen = now;
        if worker.busy == 0 {
            self.busy_workers = self.busy_workers.saturating_sub(1);
        }
    }

    /// Drops the ended evaluations at the front of the order.
    fn pop_ended(&mut self) {
        while let Some((seq, id)) = self.order.front() {
            if self.in_flight.get(id).is_some_and(|e| e.seq == *seq) {
                break;
            }
            self.order.pop_front();
        }
    }

    /// Keeps the order within twice the evaluations in flight (and a little), so
    /// ended evaluations behind a long one do not pile up.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.in_flight.len() + 64 {
            let in_flight = &self.in_flight;
            self.order
                .retain(|(seq, id)| in_flight.get(id).is_some_and(|e| e.seq == *seq));
        }
    }

    /// Workers not seen within [`WORKER_WINDOW`] of `now`, and idle, are forgotten.
    pub(crate) fn forget_idle_workers(&mut self, now: Duration) {
        self.workers
            .retain(|_, w| w.busy > 0 || now.saturating_sub(w.last_seen) <= WORKER_WINDOW);
    }

    /// The oldest evaluation in flight at `now`, if any.
    pub(crate) fn oldest(&self, now: Duration) -> Option<Oldest> {
        let (_, id) = self.order.front()?;
        let evaluation = self.in_flight.get(id)?;
        Some(Oldest {
            id: Arc::clone(id),
            age: now.saturating_sub(evaluation.started),
            worker: evaluation.worker.clone(),
            pid: evaluation.pid,
        })
    }

    /// The evaluations in flight at `now` that have run longer than `limit`, oldest
    /// first, each with how many others in flight reported its pid.
    pub(crate) fn over(&self, limit: Duration, now: Duration) -> Vec<HungEvaluation> {
        let mut hung = self.past(limit, now);
        let mut pids: HashMap<u32, usize> = hung.iter().filter_map(|h| Some((h.pid?, 0))).collect();
        if pids.is_empty() {
            return hung;
        }
        for pid in self.in_flight.values().filter_map(|e| e.pid) {
            if let Some(count) = pids.get_mut(&pid) {
                *count += 1;
            }
        }
        for evaluation in &mut hung {
            if let Some(pid) = evaluation.pid {
                evaluation.sharing_pid = pids.get(&pid).map_or(0, |n| n.saturating_sub(1));
            }
        }
        hung
    }

    /// The evaluations in flight at `now` that have run longer than `limit`, oldest
    /// first.
    fn past(&self, limit: Duration, now: Duration) -> Vec<HungEvaluation> {
        let mut hung = Vec::new();
        for (seq, id) in &self.order {
            let Some(evaluation) = self.in_flight.get(id).filter(|e| e.seq == *seq) else {
                continue; // ended
            };
            let age = now.saturating_sub(evaluation.started);
            if age <= limit {
                break; // the rest started later
            }
            hung.push(HungEvaluation {
                id: id.to_string(),
                pid: evaluation.pid,
                pid_start_ticks: evaluation.pid_start,
                worker: evaluation.worker.as_deref().map(str::to_string),
                age,
                sharing_pid: 0,
            });
        }
        hung
    }

    /// The oldest evaluations in flight at `now`, oldest first, at most [`VIEW_LIMIT`].
    pub(crate) fn oldest_rows(&self, now: Duration) -> Vec<EvaluationRow> {
        self.order
            .iter()
            .filter_map(|(seq, id)| {
                let e = self.in_flight.get(id).filter(|e| e.seq == *seq)?;
                Some(EvaluationRow {
                    id: id.to_string(),
                    worker: e.worker.as_deref().map(str::to_string),
                    pid: e.pid,
                    seconds: now.saturating_sub(e.started).as_secs_f64(),
                    outcome: None,
                })
            })
            .take(VIEW_LIMIT)
            .collect()
    }

    /// The slowest ended evaluations, slowest first.
    pub(crate) fn slowest(&self) -> Vec<EvaluationRow> {
        self.slowest.clone()
    }

    /// The last evaluations loopwatch killed, oldest first, and how many it killed.
    pub(crate) fn killed(&self) -> (Vec<EvaluationRow>, u64) {
        (
            self.killed.iter().cloned().collect(),
            self.ended[Ended::Killed as usize],
        )
    }

    /// Ended evaluations by duration bucket.
    pub(crate) fn buckets(&self) -> [u64; BUCKETS] {
        self.buckets
    }

    /// The age of the oldest evaluation in flight at `now`, if any.
    pub(crate) fn oldest_age(&self, now: Duration) -> Option<Duration> {
        let (_, id) = self.order.front()?;
        Some(now.saturating_sub(self.in_flight.get(id)?.started))
    }

    /// The 95th percentile of the last finished evaluations' durations (nearest rank),
    /// once [`MIN_FINISHED_FOR_P95`] have finished.
    pub(crate) fn p95(&mut self) -> Option<Duration> {
        if let Some(p95) = self.p95 {
            return p95;
        }
        let n = self.finished.len();
        let p95 = (n >= MIN_FINISHED_FOR_P95).then(|| {
            self.scratch.clear();
            self.scratch.extend(self.finished.iter().copied());
            let rank = (n * 95).div_ceil(100) - 1;
            let (_, value, _) = self.scratch.select_nth_unstable_by(rank, f64::total_cmp);
            Duration::from_secs_f64(*value)
        });
        self.p95 = Some(p95);
        p95
    }

    /// Evaluations in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Workers seen (see [`Evaluations::forget_idle_workers`]) and how many of them are
    /// busy.
    pub(crate) fn workers(&self) -> (usize, usize) {
        (self.workers.len(), self.busy_workers)
    }

    /// The highest occupancy (busy workers over workers seen) since the last call,
    /// `None` while no worker is seen; the next period starts with the workers busy
    /// now.
    pub(crate) fn take_peak_occupancy(&mut self) -> Option<f64> {
        let seen = self.workers.len();
        let peak = self.peak_busy.max(self.busy_workers).min(seen);
        self.peak_busy = self.busy_workers;
        (seen > 0).then(|| peak as f64 / seen as f64)
    }

    /// Evaluations ended, by outcome.
    #[cfg(test)]
    pub(crate) fn ended(&self, outcome: Ended) -> u64 {
        self.ended[outcome as usize]
    }

    /// The sizes of what is kept: evaluations in flight, the order of starts, workers,
    /// finished durations and refused ids remembered.
    #[cfg(test)]
    pub(crate) fn sizes(&self) -> [usize; 5] {
        [
            self.in_flight.len(),
            self.order.len(),
            self.workers.len(),
            self.finished.len(),
            self.refused.len().max(self.refusals.len()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn id(text: &str) -> Arc<str> {
        text.into()
    }

    #[test]
    fn the_oldest_in_flight_ages_from_its_start_and_leaves_when_it_ends() {
        let mut e = Evaluations::default();
        e.start(&id("a"), Some((7, None)), None, None, secs(10))
            .unwrap();
        e.start(&id("b"), None, Some(id("w1")), None, secs(12))
            .unwrap();
        let oldest = e.oldest(secs(15)).unwrap();
        assert_eq!((&*oldest.id, oldest.age), ("a", secs(5)));
        assert_eq!(&*oldest.subject(), "evaluation a (pid 7)");
        let ended = e.end("a", Ended::Ok, None, secs(16)).unwrap();
        assert_eq!(ended.duration, secs(6));
        assert_eq!(e.oldest_age(secs(20)), Some(secs(8)));
        assert_eq!(e.end("a", Ended::Ok, None, secs(16)), Err(Refused::Unknown));
        e.end("b", Ended::Timeout, None, secs(21)).unwrap();
        assert_eq!(e.oldest(secs(30)), None);
        assert_eq!(e.sizes(), [0, 0, 2, 2, 0]);
    }

    #[test]
    fn the_loops_clock_times_an_evaluation_when_both_ends_carry_it() {
        let mut e = Evaluations::default();
        e.start(&id("a"), None, None, Some(100.0), secs(1)).unwrap();
        let ended = e.end("a", Ended::Ok, Some(100.25), secs(9)).unwrap();
        assert_eq!(ended.duration, Duration::from_millis(250));
        // An end before its start (a clock stepped back) falls back to receipt times.
        e.start(&id("b"), None, None, Some(100.0), secs(10))
            .unwrap();
        let ended = e.end("b", Ended::Ok, Some(99.0), secs(12)).unwrap();
        assert_eq!(ended.duration, secs(2));
    }

    #[test]
    fn duplicates_and_starts_past_the_bound_are_refused_and_change_nothing() {
        let mut e = Evaluations::default();
        e.start(&id("a"), None, None, None, secs(1)).unwrap();
        assert_eq!(
            e.start(&id("a"), None, None, None, secs(50)),
            Err(Refused::Duplicate)
        );
        assert_eq!(e.oldest_age(secs(60)), Some(secs(59)), "not restarted");
        for i in 1..MAX_IN_FLIGHT {
            e.start(&id(&format!("x{i}")), None, None, None, secs(2))
                .unwrap();
        }
        assert_eq!(
            e.start(&id("one-too-many"), None, None, None, secs(3)),
            Err(Refused::OverLimit)
        );
        assert_eq!(e.in_flight(), MAX_IN_FLIGHT);
        // Its end was counted with its start: not an unknown id besides.
        assert_eq!(
            e.end("one-too-many", Ended::Ok, None, secs(4)),
            Err(Refused::EndOfOverLimit)
        );
        assert_eq!(
            e.end("one-too-many", Ended::Ok, None, secs(4)),
            Err(Refused::Unknown),
            "once"
        );
    }

    #[test]
    fn the_ids_of_refused_starts_are_remembered_within_their_bound() {
        let mut e = Evaluations::default();
        for i in 0..MAX_IN_FLIGHT {
            e.start(&id(&format!("x{i}")), None, None, None, secs(0))
                .unwrap();
        }
        let refused = |i: usize| format!("refused-{i}");
        for i in 0..REFUSED_REMEMBERED + 10 {
            assert_eq!(
                e.start(&id(&refused(i)), None, None, None, secs(1)),
                Err(Refused::OverLimit)
            );
        }
        // Refused again: remembered from its latest refusal.
        e.start(&id(&refused(0)), None, None, None, secs(1))
            .unwrap_err();
        assert_eq!(e.sizes()[4], REFUSED_REMEMBERED);
        assert_eq!(
            e.end(&refused(5), Ended::Ok, None, secs(2)),
            Err(Refused::Unknown),
            "forgotten: over the bound"
        );
        assert_eq!(
            e.end(&refused(10), Ended::Ok, None, secs(2)),
            Err(Refused::Unknown),
            "forgotten for the second refusal of refused-0"
        );
        for i in [0, 11, REFUSED_REMEMBERED + 9] {
            assert_eq!(
                e.end(&refused(i), Ended::Ok, None, secs(2)),
                Err(Refused::EndOfOverLimit),
                "{i}"
            );
        }
        // An id refused, then started once there is room, ends as any other.
        e.start(&id("again"), None, None, None, secs(3))
            .unwrap_err();
        e.end("x0", Ended::Ok, None, secs(3)).unwrap();
        e.start(&id("again"), None, None, None, secs(3)).unwrap();
        assert!(e.end("again", Ended::Ok, None, secs(4)).is_ok());
        assert_eq!(
            e.end("again", Ended::Ok, None, secs(4)),
            Err(Refused::Unknown)
        );
    }

    #[test]
    fn the_p95_needs_twenty_finished_and_leaves_out_loopwatchs_kills() {
        let mut e = Evaluations::default();
        for i in 0..(MIN_FINISHED_FOR_P95 as u64 - 1) {
            e.start(&id(&format!("e{i}")), None, None, None, secs(0))
                .unwrap();
            e.end(&format!("e{i}"), Ended::Ok, None, secs(i + 1))
                .unwrap();
        }
        assert_eq!(e.p95(), None);
        e.start(&id("killed"), None, None, None, secs(0)).unwrap();
        e.end("killed", Ended::Killed, None, secs(5000)).unwrap();
        assert_eq!(e.p95(), None, "a kill is no finished evaluation");
        e.start(&id("last"), None, None, None, secs(0)).unwrap();
        e.end("last", Ended::Failed, None, secs(20)).unwrap();
        // Durations 1..=20 s: the nearest rank of the 95th percentile is the 19th.
        assert_eq!(e.p95(), Some(secs(19)));
    }

    #[test]
    fn occupancy_counts_busy_workers_among_those_seen_in_the_last_minute() {
        let mut e = Evaluations::default();
        e.start(&id("a"), Some((11, None)), Some(id("w1")), None, secs(0))
            .unwrap();
        e.start(&id("b"), Some((12, None)), None, None, secs(0))
            .unwrap();
        e.start(&id("c"), Some((13, None)), Some(id("w1")), None, secs(0))
            .unwrap();
        e.start(&id("d"), None, None, None, secs(0)).unwrap();
        assert_eq!(e.workers(), (2, 2), "w1 (by name) and pid 12");
        e.end("a", Ended::Ok, None, secs(1)).unwrap();
        assert_eq!(e.workers(), (2, 2), "w1 still runs c");
        e.end("c", Ended::Ok, None, secs(2)).unwrap();
        assert_eq!(e.workers(), (2, 1));
        e.forget_idle_workers(secs(62));
        assert_eq!(e.workers(), (2, 1), "w1 was seen a minute ago");
        e.forget_idle_workers(secs(63));
        assert_eq!(e.workers(), (1, 1), "w1 was last seen over a minute ago");
        // A worker assigned later moves the evaluation's count.
        e.assign("d", None, Some(id("w2")), secs(63));
        e.assign("b", None, Some(id("w2")), secs(63));
        assert_eq!(e.workers(), (2, 1), "pid 12 is idle now, w2 busy");
    }

    #[test]
    fn the_peak_occupancy_of_a_period_is_kept_until_taken() {
        let mut e = Evaluations::default();
        assert_eq!(e.take_peak_occupancy(), None, "no worker seen");
        for (i, w) in ["w1", "w2", "w3"].into_iter().enumerate() {
            e.start(&id(&format!("a{i}")), None, Some(id(w)), None, secs(0))
                .unwrap();
        }
        for i in 0..3 {
            e.end(&format!("a{i}"), Ended::Ok, None, secs(1)).unwrap();
        }
        e.start(&id("b"), None, Some(id("w1")), None, secs(2))
            .unwrap();
        assert_eq!(e.take_peak_occupancy(), Some(1.0), "all three were busy");
        assert_eq!(e.take_peak_occupancy(), Some(1.0 / 3.0), "w1 still busy");
        e.end("b", Ended::Ok, None, secs(3)).unwrap();
        assert_eq!(
            e.take_peak_occupancy(),
            Some(1.0 / 3.0),
            "w1 was busy in it"
        );
        assert_eq!(e.take_peak_occupancy(), Some(0.0));
    }

    #[test]
    fn the_views_keep_the_slowest_the_killed_and_the_distribution_bounded() {
        let mut e = Evaluations::default();
        for i in 0..100u64 {
            e.start(&id(&format!("e{i}")), Some((7, None)), None, None, secs(0))
                .unwrap();
            let outcome = if i % 10 == 0 {
                Ended::Killed
            } else {
                Ended::Ok
            };
            e.end(&format!("e{i}"), outcome, None, secs(i)).unwrap();
        }
        let slowest: Vec<_> = e.slowest().into_iter().map(|r| r.id).collect();
        assert_eq!(
            slowest,
            (90..100).rev().map(|i| format!("e{i}")).collect::<Vec<_>>()
        );
        let (killed, total) = e.killed();
        assert_eq!(total, 10);
        assert_eq!(killed.len(), VIEW_LIMIT);
        assert_eq!(killed[0].id, "e0");
        assert_eq!(killed[9].outcome, Some("killed"));
        assert_eq!(e.buckets().iter().sum::<u64>(), 100);
        // 0 s falls in the first bucket; 61..=99 s in (60, 120].
        assert_eq!(e.buckets()[0], 1);
        assert_eq!(e.buckets()[9], 39);
        e.start(&id("late"), Some((8, None)), Some(id("w")), None, secs(100))
            .unwrap();
        e.start(&id("later"), None, None, None, secs(105)).unwrap();
        let hung = e.over(secs(3), secs(107));
        assert_eq!(hung.len(), 1, "only the one past the limit: {hung:?}");
        assert_eq!(hung[0].sharing_pid, 0);
        assert_eq!((hung[0].id.as_str(), hung[0].pid), ("late", Some(8)));
        assert_eq!(hung[0].age, secs(7));
        let rows = e.oldest_rows(secs(107));
        assert_eq!(rows[0].worker.as_deref(), Some("w"));
        assert_eq!((rows[1].seconds, rows[1].outcome), (2.0, None));
    }

    #[test]
    fn a_hung_evaluation_says_how_many_others_in_flight_share_its_pid() {
        let mut e = Evaluations::default();
        e.start(&id("hung"), Some((7, None)), None, None, secs(0))
            .unwrap();
        e.start(&id("alone"), Some((8, None)), None, None, secs(0))
            .unwrap();
        e.start(&id("no-pid"), None, None, None, secs(0)).unwrap();
        e.start(&id("young"), Some((7, None)), None, None, secs(50))
            .unwrap();
        e.start(&id("ended"), Some((8, None)), None, None, secs(1))
            .unwrap();
        e.end("ended", Ended::Ok, None, secs(2)).unwrap();
        let hung = e.over(secs(10), secs(60));
        let sharing: Vec<(&str, usize)> = hung
            .iter()
            .map(|h| (h.id.as_str(), h.sharing_pid))
            .collect();
        assert_eq!(sharing, [("hung", 1), ("alone", 0), ("no-pid", 0)]);
        e.end("young", Ended::Ok, None, secs(61)).unwrap();
        assert_eq!(e.over(secs(10), secs(62))[0].sharing_pid, 0);
    }

    #[test]
    fn a_hundred_thousand_unique_ids_keep_every_map_bounded() {
        let mut e = Evaluations::default();
        // One evaluation hangs at the front while the others start and end behind it.
        e.start(&id("hung"), None, None, None, secs(0)).unwrap();
        for i in 0..100_000u64 {
            let name = format!("prog-{i}");
            let worker: Arc<str> = format!("w{}", i % 5_000).into();
            // Past the bound, starts are refused.
            let _ = e.start(
                &id(&name),
                Some((1 + (i % 7_000) as u32, None)),
                Some(worker),
                None,
                secs(i),
            );
            if i % 3 != 0 {
                let _ = e.end(&name, Ended::Ok, None, secs(i + 1));
            } else {
                // Ends that never started, and starts never ended past the bound.
                let _ = e.end(&format!("ghost-{i}"), Ended::Ok, None, secs(i));
            }
        }
        let [in_flight, order, workers, finished, refused] = e.sizes();
        assert_eq!(in_flight, MAX_IN_FLIGHT);
        assert!(refused <= REFUSED_REMEMBERED, "{refused}");
        assert!(order <= 2 * MAX_IN_FLIGHT + 64, "{order}");
        assert!(workers <= MAX_WORKERS, "{workers}");
        assert_eq!(finished, FINISHED_WINDOW);
        assert_eq!(e.oldest(secs(100_000)).unwrap().id.as_ref(), "hung");
    }
}

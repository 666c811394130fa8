//! [`Intake`]: reports from a loop in another process, one protocol line at a time.
//! `loopwatch run` feeds it what its child (and the child's workers) write to the
//! socket. Each message about the run becomes the event a Rust loop's calls would
//! have sent; the loop's own metrics, and what its client dropped, go straight to
//! their instruments (they are not the run's state).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::metrics::{Counter, Gauge};

use super::event::Event;
use super::hub::Hub;
use super::iteration::IterationState;
use super::sync::lock;
use crate::processes::ProcessId;
use crate::protocol::{self, EvaluationOutcome, LineError, Message, MetricKind};
use crate::records::{unix_seconds, Ended};
use crate::reported::{Population, Rejection};

/// Processes that reported the loop's iterations, remembered at most (the loop's
/// process and its restarts; the oldest is forgotten first).
pub(crate) const MAX_LOOP_PROCESSES: usize = 16;

/// The rejection counted for a line that did not parse.
fn rejection_of(error: LineError) -> Rejection {
    match error {
        LineError::Malformed => Rejection::MessageMalformed,
        LineError::UnsupportedVersion => Rejection::MessageVersion,
        LineError::UnknownType => Rejection::MessageUnknownType,
        LineError::TooLong => Rejection::MessageTooLong,
    }
}

/// An `evaluation_start` line, as the event a Rust guard's start sends: its queue
/// wait from the loop's clock (its start's time, else the time it arrived, less when
/// it was queued), and the start time of the process its pid names, read now (so
/// that a supervisor never signals another process that reuses the pid later).
fn evaluation_started(hub: &Hub, start: protocol::EvaluationStart) {
    let at = hub.clock.now();
    let queued = start.queued.map(|queued| {
        let began = start.at.unwrap_or_else(|| unix_seconds(at.wall));
        Duration::try_from_secs_f64(began - queued).unwrap_or_default()
    });
    hub.send(Event::EvaluationStarted {
        id: start.id.into(),
        pid: start.pid,
        pid_start: start
            .pid
            .and_then(ProcessId::running)
            .map(|p| p.start_ticks),
        worker: start.worker.map(Arc::from),
        queued,
        reported: start.at,
        interruptible: start.interruptible,
        at,
    });
}

/// An `evaluation_end` line, as the event a Rust guard's outcome sends.
fn evaluation_ended(hub: &Hub, end: protocol::EvaluationEnd) {
    let (outcome, reason) = match end.outcome {
        EvaluationOutcome::Ok => (Ended::Ok, None),
        EvaluationOutcome::Timeout => (Ended::Timeout, None),
        EvaluationOutcome::Failed { reason } => (Ended::Failed, reason.map(String::into_boxed_str)),
    };
    hub.send(Event::EvaluationEnded {
        id: end.id.into(),
        outcome,
        reason,
        reported: end.at,
        at: hub.clock.now(),
    });
}

/// One of the loop's own instruments, created on its first `metric` message.
enum UserInstrument {
    Gauge(Gauge<f64>),
    Counter(Counter<f64>),
}

impl UserInstrument {
    /// Creates the instrument. Every exported metric gets a HELP text, as Prometheus's
    /// linter expects.
    fn new(
        meter: &opentelemetry::metrics::Meter,
        name: String,
        kind: MetricKind,
        unit: String,
        description: String,
    ) -> Self {
        let description = if description.trim().is_empty() {
            "A metric of the loop's own, reported over the loopwatch socket.".to_string()
        } else {
            description
        };
        match kind {
            MetricKind::Gauge => UserInstrument::Gauge(
                meter
                    .f64_gauge(name)
                    .with_unit(unit)
                    .with_description(description)
                    .build(),
            ),
            MetricKind::Counter => UserInstrument::Counter(
                meter
                    .f64_counter(name)
                    .with_unit(unit)
                    .with_description(description)
                    .build(),
            ),
        }
    }

    fn record(&self, value: f64) {
        match self {
            UserInstrument::Gauge(gauge) => gauge.record(value, &[]),
            UserInstrument::Counter(counter) => counter.add(value, &[]),
        }
    }
}

#[derive(Default)]
struct IntakeState {
    /// The iteration in progress, shared by every connection, and when it began by
    /// the loop's clock, if its start said.
    current: Option<IterationState>,
    started_at: Option<f64>,
    /// The loop's own metrics by name, at most [`protocol::MAX_USER_SERIES`].
    metrics: HashMap<String, UserInstrument>,
    /// The processes that reported iterations, oldest first, at most
    /// [`MAX_LOOP_PROCESSES`].
    loop_processes: Vec<ProcessId>,
}

impl IntakeState {
    /// `sender`, when known, reported an iteration: it is the loop's process.
    fn reports_iterations(&mut self, sender: Option<ProcessId>) {
        let Some(sender) = sender else {
            return;
        };
        if self.loop_processes.contains(&sender) {
            return;
        }
        if self.loop_processes.len() == MAX_LOOP_PROCESSES {
            self.loop_processes.remove(0);
        }
        self.loop_processes.push(sender);
    }
}

/// Turns protocol lines into monitor calls; shared by every connection of a run.
///
/// Every line is either applied or rejected: a rejection is counted in
/// `loopwatch_rejected_observations_total` (field `message` or `metric`) and logged,
/// thinned, and the next line is read as if nothing happened.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let monitor = loopwatch::Monitor::builder()
///     .listen("127.0.0.1:0".parse().unwrap())
///     .output_dir(dir.path())
///     .build()
///     .unwrap();
/// let intake = monitor.supervision().intake();
/// intake.handle_line(br#"{"v":1,"type":"iteration_start","t":1764380000.0}"#);
/// intake.handle_line(br#"{"v":1,"type":"success","sharpe":1.5,"drawdown":0.1}"#);
/// intake.handle_line(br#"{"v":1,"type":"iteration_end","t":1764380000.25}"#);
/// intake.handle_line(b"not json"); // counted and logged, nothing else happens
/// let summary = monitor.summary();
/// assert_eq!(summary.iterations, 1);
/// assert_eq!(summary.mean_execution_time_seconds, Some(0.25));
/// # monitor.shutdown();
/// ```
pub struct Intake {
    hub: Arc<Hub>,
    state: Mutex<IntakeState>,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake").finish_non_exhaustive()
    }
}

impl Intake {
    pub(super) fn new(hub: Arc<Hub>) -> Self {
        Intake {
            hub,
            state: Mutex::new(IntakeState::default()),
        }
    }

    fn reject(&self, kind: Rejection, value: f64) {
        let iteration = self.hub.next_iteration.load(Ordering::Relaxed) - 1;
        self.hub.reject(kind, value, iteration);
    }

    /// Applies one line (without its newline), or rejects it.
    pub fn handle_line(&self, line: &[u8]) {
        self.handle_line_from(line, None);
    }

    /// Applies one line (without its newline) written by `sender`, the process at the
    /// other end of its connection when known (`SO_PEERCRED`), or rejects it. A
    /// sender that reports iterations is one of the [`Intake::loop_processes`].
    pub fn handle_line_from(&self, line: &[u8], sender: Option<ProcessId>) {
        match protocol::parse_line(line) {
            Ok(message) => self.handle_from(message, sender),
            Err(error) => self.reject(rejection_of(error), line.len() as f64),
        }
    }

    /// The processes that reported the loop's iterations (`iteration_start`,
    /// `iteration_end`, `iterations`) over a connection whose sender was known, oldest
    /// first, the last 16: a supervisor ending one evaluation
    /// never signals one of them, nor a process above one, which would end the loop.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let monitor = loopwatch::Monitor::builder()
    /// #     .listen("127.0.0.1:0".parse().unwrap()).output_dir(dir.path()).build().unwrap();
    /// use loopwatch::cleanup::ProcessId;
    ///
    /// let intake = monitor.supervision().intake();
    /// let me = ProcessId::running(std::process::id());
    /// intake.handle_line_from(br#"{"v":1,"type":"evaluation_start","id":"a"}"#, me);
    /// assert!(intake.loop_processes().is_empty(), "evaluations come from workers");
    /// intake.handle_line_from(br#"{"v":1,"type":"iteration_start"}"#, me);
    /// assert_eq!(intake.loop_processes(), Vec::from_iter(me));
    /// # monitor.shutdown();
    /// ```
    pub fn loop_processes(&self) -> Vec<ProcessId> {
        lock(&self.state).loop_processes.clone()
    }

    /// Rejects a line that was cut off for being longer than
    /// [`protocol::MAX_LINE_BYTES`] (the reader does not keep such a line).
    pub fn reject_too_long(&self, length: usize) {
        self.reject(Rejection::MessageTooLong, length as f64);
    }

    /// Applies one parsed message, or rejects it.
    pub fn handle(&self, message: Message) {
        self.handle_from(message, None);
    }

    /// Applies one parsed message written by `sender` (see
    /// [`Intake::handle_line_from`]), or rejects it.
    pub fn handle_from(&self, message: Message, sender: Option<ProcessId>) {
        // The intake's lock is held across the message's sends, which may settle the
        // hub's queue: the intake's lock comes first in the hub's lock order (hub.rs).
        let mut state = lock(&self.state);
        if matches!(
            message,
            Message::IterationStart { .. } | Message::IterationEnd { .. } | Message::Iterations(_)
        ) {
            state.reports_iterations(sender);
        }
        let message = match message {
            // Said by the process that runs it, or not taken: a signal meant for a
            // handler is never sent to a process that may not have one (a pid of
            // another pid namespace, a line passed on by another process).
            Message::EvaluationStart(mut start) => {
                if start.interruptible && sender.is_some_and(|sender| start.pid != Some(sender.pid))
                {
                    start.interruptible = false;
                }
                Message::EvaluationStart(start)
            }
            message => message,
        };
        let verdict = self.apply(&mut state, message);
        drop(state);
        // Rejections are counted and logged with the intake unlocked.
        if let Err((kind, value)) = verdict {
            self.reject(kind, value);
        }
    }

    fn apply(&self, state: &mut IntakeState, message: Message) -> Result<(), (Rejection, f64)> {
        let hub = &*self.hub;
        let outside = |value: f64| (Rejection::MessageOutsideIteration, value);
        match message {
            Message::IterationStart { at } => self.start_iteration(state, at),
            Message::IterationEnd { at } => self.end_iteration(state, at)?,
            Message::Success { sharpe, drawdown } => {
                let open = state.current.as_mut().ok_or(outside(sharpe))?;
                open.success(hub, sharpe, drawdown);
            }
            Message::Outcomes(summary) => {
                let open = state.current.as_mut().ok_or(outside(f64::NAN))?;
                open.outcomes(hub, summary);
            }
            Message::Failure { reason } => {
                let open = state.current.as_mut().ok_or(outside(f64::NAN))?;
                open.failure(hub, &reason);
            }
            Message::Population {
                size,
                unique,
                diversity,
                champion,
            } => {
                let open = state.current.as_mut().ok_or(outside(diversity))?;
                let mut population = Population::new(size, unique, diversity);
                population.champion = champion.as_deref();
                open.population(hub, population);
            }
            Message::Iterations(batch) => self.batch(state, batch),
            Message::Done => {
                if let Some(open) = state.current.take() {
                    open.finish(hub);
                }
                hub.done();
            }
            Message::LlmCall(call) => hub.send(Event::Llm {
                call,
                at: hub.clock.now(),
            }),
            Message::EvaluationStart(start) => evaluation_started(hub, start),
            Message::EvaluationEnd(end) => evaluation_ended(hub, end),
            Message::Dropped { count } => {
                let i = &hub.pipeline().instruments;
                i.loopwatch_client_dropped_events_total.add(count, &[]);
                tracing::warn!(
                    count,
                    "the loop's client dropped events (its buffer was full or the socket away)"
                );
            }
            Message::Metric {
                name,
                kind,
                value,
                unit,
                description,
            } => {
                self.user_metric(state, name, kind, value, unit, description)
                    .map_err(|rejection| (rejection, value))?;
            }
            // Kept by the state alone: applied there as said.
            message => hub.send(Event::Reported {
                message: Box::new(message),
                at: hub.clock.now(),
            }),
        }
        Ok(())
    }

    /// An iteration starts (ending one left open).
    fn start_iteration(&self, state: &mut IntakeState, at: Option<f64>) {
        let hub = &*self.hub;
        if let Some(open) = state.current.take() {
            tracing::warn!(
                iteration = open.number(),
                "a new iteration started before this one ended; ending it now"
            );
            open.finish(hub);
        }
        let number = hub.next_iteration.fetch_add(1, Ordering::Relaxed);
        state.current = Some(IterationState::start(hub, number));
        state.started_at = at.filter(|t| t.is_finite());
    }

    /// Complete iterations merged by the client: numbered, counted and timed exactly,
    /// judged as one (the last of them).
    fn batch(&self, state: &mut IntakeState, batch: protocol::IterationBatch) {
        let hub = &*self.hub;
        if let Some(open) = state.current.take() {
            tracing::warn!(
                iteration = open.number(),
                "merged iterations arrived before this one ended; ending it now"
            );
            open.finish(hub);
        }
        state.started_at = None;
        // A batch holds at most `IterationBatch::MAX_COUNT`: the numbers stay far
        // from wrapping (it would take over 10^10 such batches).
        let first = hub.next_iteration.fetch_add(batch.count, Ordering::Relaxed);
        let last = first.saturating_add(batch.count - 1);
        IterationState::start(hub, last).finish_batch(hub, first, batch);
    }

    /// The iteration in progress ends, timed by the loop's clock when both ends carry
    /// it, else by receipt times.
    fn end_iteration(
        &self,
        state: &mut IntakeState,
        at: Option<f64>,
    ) -> Result<(), (Rejection, f64)> {
        let open = state
            .current
            .take()
            .ok_or((Rejection::MessageOutsideIteration, f64::NAN))?;
        let measured = match (state.started_at.take(), at) {
            // At most 1e9 s (31 years), as the protocol bounds the durations it reads.
            (Some(start), Some(end)) if end.is_finite() && end >= start => {
                std::time::Duration::try_from_secs_f64((end - start).min(1e9)).ok()
            }
            _ => None,
        };
        match measured {
            Some(duration) => open.finish_after(&self.hub, duration),
            None => open.finish(&self.hub),
        };
        Ok(())
    }

    fn user_metric(
        &self,
        state: &mut IntakeState,
        name: String,
        kind: MetricKind,
        value: f64,
        unit: String,
        description: String,
    ) -> Result<(), Rejection> {
        let valid_value = value.is_finite() && (kind == MetricKind::Gauge || value >= 0.0);
        if !valid_value || !protocol::valid_metric_name(&name) {
            return Err(Rejection::MetricInvalid);
        }
        if let Some(instrument) = state.metrics.get(&name) {
            let same_kind = matches!(
                (instrument, kind),
                (UserInstrument::Gauge(_), MetricKind::Gauge)
                    | (UserInstrument::Counter(_), MetricKind::Counter)
            );
            if !same_kind {
                return Err(Rejection::MetricInvalid);
            }
            instrument.record(value);
            return Ok(());
        }
        // The SDK refuses units over 63 ASCII characters; so does the intake, loudly.
        if unit.len() > 63 || !unit.is_ascii() || description.len() > 1024 {
            return Err(Rejection::MetricInvalid);
        }
        if state.metrics.len() >= protocol::MAX_USER_SERIES {
            return Err(Rejection::MetricOverLimit);
        }
        let meter = self.hub.pipeline().user_meter();
        let instrument = UserInstrument::new(meter, name.clone(), kind, unit, description);
        instrument.record(value);
        state.metrics.insert(name, instrument);
        Ok(())
    }

    /// Ends the iteration in progress, if any, with what it has: the loop has exited.
    pub fn close(&self) {
        if let Some(open) = lock(&self.state).current.take() {
            open.finish(&self.hub);
        }
    }
}

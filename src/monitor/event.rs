//! [`Event`]: everything that happens to a run, as the producers report it. The
//! loop's thread, the intake, the samplers, the background clock, the supervisor and
//! the LLM recorder only send events; [`RunState::apply`](super::state::RunState::apply)
//! alone changes the run's state from them, one event at a time, in the order they
//! were sent. Time arrives in the events (a [`Moment`] each), so applying one never
//! reads a clock.
//!
//! Adding a kind of event is one variant here and one arm in
//! [`RunState::apply`](super::state::RunState::apply). When applying it changes what is
//! published (an instrument, a log line), it also needs a variant of
//! [`Publish`](super::state::Publish) (in `state/mod.rs`) and an arm in
//! `Publisher::publish` (`publish.rs`).

use std::sync::Arc;
use std::time::Duration;

use crate::llm::{CallRequest, LlmCall};
use crate::records::{Ended, IterationSummary, LoopExit, Moment};
use crate::sample::{GpuSample, GpuXid, HostSample};

use super::reasons::ReasonChunk;

/// Something that happened to the run.
#[derive(Debug)]
pub(crate) enum Event {
    /// Iteration `number` started (or is the latest started): not sent by the loop's
    /// thread, which only notes the start in the hub; the hub applies the latest one
    /// each time it settles, after the queue, and the state ignores it once that
    /// iteration has ended.
    IterationStarted {
        /// Its number.
        number: u64,
        /// When it started.
        at: Moment,
    },
    /// Failure reasons of the iteration the next [`Event::Iteration`] completes,
    /// beyond the [`ReasonChunk::CAPACITY`] it carries itself.
    Reasons(ReasonChunk),
    /// The loop completed an iteration (or a merged batch of them).
    Iteration(Completed),
    /// The champion changed (`changes` times within a merged batch).
    ChampionChanged(ChampionChange),
    /// A host and process sample.
    Host(HostReading),
    /// A GPU sample: every device found when NVML was opened.
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    Gpu {
        /// The sample.
        sample: GpuSample,
        /// When it was taken.
        at: Moment,
        /// How often the sampler reads: its readings are stale after five of these
        /// (at least 5 s) without a new one.
        period: std::time::Duration,
    },
    /// The GPU sampler's thread ended while the monitor runs (it panicked): its
    /// readings are gone.
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    GpuEnded {
        /// When.
        at: Moment,
    },
    /// A critical Xid error NVML reported.
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    GpuXid {
        /// The device and the code.
        xid: GpuXid,
        /// When it arrived.
        at: Moment,
    },
    /// A container sample, or Docker being down.
    Containers {
        /// What the containers feature read.
        reading: crate::containers::ContainerReading,
        /// When.
        at: Moment,
    },
    /// Orphaned containers left after a cleanup sweep.
    Orphans {
        /// How many.
        count: u64,
        /// When the sweep ended.
        at: Moment,
    },
    /// A sweep for orphaned processes ended.
    ProcessSweep(ProcessSweep),
    /// A supervised loop's process started (again, after a restart).
    LoopStarted {
        /// When.
        at: Moment,
    },
    /// A supervised loop's process ended, and the supervisor will start it again.
    LoopRestarting {
        /// How it ended.
        exit: LoopExit,
        /// When the supervisor said so.
        at: Moment,
    },
    /// A supervised loop's process ended for good.
    LoopExited {
        /// How it ended.
        exit: LoopExit,
        /// When the supervisor said so.
        at: Moment,
    },
    /// The supervised loop has no way to report: its silence says nothing.
    LoopCannotReport {
        /// When the supervisor said so.
        at: Moment,
    },
    /// The loop said it is done: no more iterations are coming.
    Done {
        /// When.
        at: Moment,
    },
    /// An LLM call ended (or was abandoned).
    Llm {
        /// The call, as the proxy or the loop reported it.
        call: Box<LlmCall>,
        /// When it was reported.
        at: Moment,
    },
    /// An LLM call the metering proxy started as `id` is over: it is booked, and its
    /// reservation gives way to its cost, or is charged against the budget when its
    /// usage is unknown. [`Event::LlmEnded`] follows.
    LlmFinished {
        /// The call's id.
        id: u64,
        /// The call.
        call: Box<LlmCall>,
        /// When it was booked.
        at: Moment,
    },
    /// An LLM call asks to start: admitted, it is in flight (its worst case reserved
    /// against the budget) until [`Event::LlmEnded`] with its id; refused by a budget
    /// that blocks, it is booked as `blocked`.
    LlmStarted {
        /// The call's id.
        id: u64,
        /// What it asks for.
        request: Box<CallRequest>,
        /// When it started.
        at: Moment,
    },
    /// An LLM call is no longer in flight.
    LlmEnded {
        /// The call's id.
        id: u64,
        /// When.
        at: Moment,
    },
    /// An evaluation (a candidate's back-test, a program's run) started: it is in
    /// flight until [`Event::EvaluationEnded`] with its id.
    EvaluationStarted {
        /// Its id, unique among the evaluations in flight.
        id: Arc<str>,
        /// The process that runs it, if said.
        pid: Option<u32>,
        /// The start time (clock ticks after boot) of the process that ran under
        /// `pid` when the start was received; `None` when none did (or no pid).
        pid_start: Option<u64>,
        /// The worker that runs it, if said.
        worker: Option<Arc<str>>,
        /// How long it waited in a queue before it started, if said.
        queued: Option<Duration>,
        /// When it started by the loop's clock (Unix seconds), if said.
        reported: Option<f64>,
        /// Whether the process `pid` ends it, as timed out, on `SIGUSR2` (the Python
        /// client's handler): a supervisor may interrupt it before ending the process.
        interruptible: bool,
        /// When it was reported.
        at: Moment,
    },
    /// An evaluation in flight runs on this worker or process (each if said), or
    /// waited this long in a queue.
    EvaluationAssigned {
        /// Its id.
        id: Arc<str>,
        /// The process that runs it, if said.
        pid: Option<u32>,
        /// The start time of the process that ran under `pid` when it was said.
        pid_start: Option<u64>,
        /// The worker that runs it, if said.
        worker: Option<Arc<str>>,
        /// How long it waited in a queue before it started, if said.
        queued: Option<Duration>,
        /// When it was reported.
        at: Moment,
    },
    /// An evaluation ended.
    EvaluationEnded {
        /// Its id.
        id: Arc<str>,
        /// How.
        outcome: Ended,
        /// Why it failed, if it did and the loop said.
        reason: Option<Box<str>>,
        /// When it ended by the loop's clock (Unix seconds), if said.
        reported: Option<f64>,
        /// When it was reported.
        at: Moment,
    },
    /// The supervisor interrupted an evaluation in flight (`SIGUSR2` to its process):
    /// however it ends from now on, it counts as killed by loopwatch.
    EvaluationInterrupted {
        /// Its id.
        id: Arc<str>,
        /// When the supervisor said so.
        at: Moment,
    },
    /// The supervisor found that the process an evaluation in flight reported is
    /// gone (it exited, or its pid now belongs to another process): the evaluation
    /// ends as failed, reason `process gone`.
    EvaluationGone {
        /// Its id.
        id: Arc<str>,
        /// When the supervisor said so.
        at: Moment,
    },
    /// A message from the loop that only the state keeps: the intake passes every
    /// message it keeps nothing of on as said (it keeps the iterations', the
    /// evaluations', the loop's own metrics, LLM calls, which go on as
    /// [`Event::Llm`], and the client's dropped-event counts), so a new such message
    /// is parsed in `protocol.rs` and applied in the state, and nothing between them
    /// changes.
    Reported {
        /// The message.
        message: Box<crate::protocol::Message>,
        /// When it was received.
        at: Moment,
    },
    /// A model server was read, or could not be.
    ModelServer(Box<ServerRead>),
    /// The background clock: what changes with time alone (a stall, windows that
    /// move on) is evaluated at `at`.
    Tick {
        /// Now.
        at: Moment,
    },
}

/// A completed iteration (or a merged batch of them), as the loop's thread sends it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completed {
    /// What the loop is told about it.
    pub(crate) summary: IterationSummary,
    /// Iterations it stands for (more than one for a merged batch).
    pub(crate) count: u64,
    /// Their wall-clock time in all.
    pub(crate) duration: Duration,
    /// Its failures by reason: the first [`ReasonChunk::CAPACITY`] reasons (the rest
    /// came before it, in [`Event::Reasons`]).
    pub(crate) reasons: ReasonChunk,
    /// The best Sharpe ratio reported in it.
    pub(crate) best_sharpe: Option<f64>,
    /// When it ended.
    pub(crate) ended: Moment,
}

/// The champion changed.
#[derive(Debug, Clone)]
pub(crate) struct ChampionChange {
    /// The new champion's identity.
    pub(crate) champion: Box<str>,
    /// The iteration it was reported in.
    pub(crate) iteration: u64,
    /// Changes it stands for (more than one within a merged batch; the last to
    /// `champion`).
    pub(crate) changes: u64,
    /// When it was reported.
    pub(crate) at: Moment,
}

/// One host and process sample, with the memory HighMemoryUsage compares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostReading {
    /// The sample.
    pub(crate) sample: HostSample,
    /// Memory in use against the limit that kills: the cgroup's working set, when
    /// the cgroup's limit is below host memory, else the host's.
    pub(crate) memory_used: u64,
    /// That limit.
    pub(crate) memory_limit: u64,
    /// This process's open and most file descriptors, when they can be read.
    pub(crate) file_descriptors: Option<(u64, u64)>,
    /// When it was taken.
    pub(crate) at: Moment,
}

/// What a sweep for orphaned processes found and did.
#[derive(Debug, Clone)]
pub(crate) struct ProcessSweep {
    /// Processes (pid, start ticks) it gave up on: not to be signalled again.
    pub(crate) given_up: Vec<(u32, u64)>,
    /// Processes terminated.
    pub(crate) cleaned: usize,
    /// Processes that could not be terminated.
    pub(crate) failed: usize,
    /// Orphans found and not removed.
    pub(crate) remaining: usize,
    /// For the sweep of this run's own processes once its loop has exited: those
    /// still alive, for the final export.
    pub(crate) left_behind: Option<Vec<crate::processes::MarkedProcess>>,
    /// When it ended.
    pub(crate) at: Moment,
}

/// One read of a model server.
#[derive(Debug)]
pub(crate) struct ServerRead {
    /// The server's position in `[[llm.servers]]`.
    pub(crate) index: usize,
    /// What it said, or why it could not be read.
    pub(crate) outcome: Result<crate::servers::Reading, crate::servers::ReadFailure>,
    /// When the read ended.
    pub(crate) at: Moment,
}

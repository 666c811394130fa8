//! [`Hub`]: what the loop's handle, the intake, the supervisor, the endpoint and the
//! background tasks share. It holds the settings and the identity, the few atomics
//! the loop's thread needs, the bounded queue of [`Event`]s, the run's state behind
//! one lock, and the sinks what the state decides goes to. It is the exporters'
//! [`Source`]: they read snapshots of it, never its fields.
//!
//! # The path of an event
//!
//! Producers only send events: the loop's thread (a champion changing, an iteration
//! ending; an iteration's start is only noted, in two atomics, and applied when the
//! hub settles), the intake, the samplers, the background clock,
//! the supervisor and the LLM recorder. Sending is a push into a bounded queue under
//! a short lock of its own (held for one push, or for the swap that hands the queue
//! to a settle), with no allocation, unless the queue is full (see the last caller
//! below).
//!
//! [`Hub::settle`] then takes what is queued in one swap of two buffers (so applying
//! takes nothing per event from the producers' side) and, for each event, applies it to
//! the [`RunState`] (`apply`: pure), publishes what changed ([`Publisher`]) and
//! dispatches what the rules found (the log, the alert gauges, Alertmanager). One
//! path settles, with four callers:
//!
//! - the background clock, every [`SETTLE_EVERY`];
//! - the background tick ([`Hub::tick`], at least once a second): it sends a
//!   [`Event::Tick`] and settles at once, so what only the clock drives (LoopStalled,
//!   an evaluation hung) is judged on time;
//! - every reader (a scrape, the page, a snapshot, the summary, the alert state),
//!   before it reads, so nothing anyone reads lags the loop;
//! - a producer whose event finds the queue full, so the queue stays bounded however
//!   fast the loop runs and nothing is dropped. That producer may be the loop's
//!   thread: recording then waits for the settle (its own, or one in progress).
//!
//! One producer must know what the state decided: the LLM recorder, when an LLM
//! budget blocks, for each call that asks to start (admitted, or refused).
//! [`Hub::apply_now`] settles what is queued and then applies that event at once,
//! under the same locks in the same order, and reads the decision before letting go of
//! the state.
//!
//! # Locks
//!
//! Taken in this order, never the other way round:
//!
//! 1. An [`Intake`](super::Intake)'s own lock, held while it handles one message,
//!    sends included (its events go out in the order of its messages, against the
//!    iteration in progress it keeps). A send may settle, so the next two locks may be
//!    taken inside it.
//! 2. The settle's buffer, held for a whole settle: every event taken is applied,
//!    published and delivered under it, so events are applied in the order they were
//!    sent and two settles never interleave. A producer that finds the queue full, or
//!    a reader, waits here for a settle in progress. The queue's own lock is a leaf:
//!    held for one push, or, under the settle's buffer, for one swap.
//! 3. Inside a settle: the state's lock, taken once for the events drained and held
//!    while each is applied and published (the publisher reads the large values,
//!    an iteration's summary and what the evaluator made of it, from the state by
//!    reference instead of copying them out); let go before what the rules found or
//!    an event rejected is delivered, and taken again after. Publishing and
//!    delivering take the sinks' own locks (the OpenTelemetry SDK's and the observed
//!    gauges', the Alertmanager table's), each held briefly and alone: no sink's
//!    lock is held while the state's is taken, and no SDK callback reads the state.
//!
//! A reader takes the state's lock once its settle has released the settle's buffer.
//! Nothing that holds the state's lock or a sink's lock sends an event or settles:
//! publishing and delivering send nothing, and a reader's look at the state calls
//! nothing of the hub. The host sampler's lock and the failure reasons' (interning a
//! new reason) are leaves, released before anything is sent.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::alerts::AlertName;
use crate::config::Settings;
use crate::containers::Containers;
use crate::error::CollectError;
use crate::evaluate::Findings;
use crate::export::alertmanager::AlertSink;
use crate::export::{Evaluation, Snapshot, Source};
use crate::pipeline::Pipeline;
use crate::records::{RunIdentity, RunSummary};
use crate::reported::{Rejection, Rejections};
use crate::sample::{CgroupMemory, HostSampler, TreeRoot};

use super::clock::Clock;
use super::deliver::{dispatch, FindingSink, Log};
use super::event::{Event, HostReading, ProcessSweep};
use super::publish::Publisher;
use super::reasons::ReasonNames;
use super::state::{RunState, RECENT_ITERATIONS};
use super::sync::lock;

/// How often the background clock settles the queue.
pub(super) const SETTLE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Events queued at most before the producer whose event finds the queue full
/// settles it itself (the loop's thread sends one per iteration, two when the champion
/// changes).
const QUEUE_CAPACITY: usize = 512;

/// Shared between the loop's handle, the intake, the supervisor, the endpoint and the
/// background tasks.
pub(super) struct Hub {
    pub(super) settings: Settings,
    pub(super) identity: RunIdentity,
    pub(super) local_addr: SocketAddr,
    pub(super) clock: Clock,

    // What the loop's thread needs at once, without a lock.
    /// The number the next iteration gets.
    pub(super) next_iteration: AtomicU64,
    /// The [`fingerprint`] of the last champion reported; 0 before any.
    champion_fingerprint: AtomicU64,
    /// Completed iterations since the champion last changed.
    pub(super) staleness: AtomicU64,
    /// Failure reasons by number, interned without a lock once seen.
    pub(super) reasons: ReasonNames,
    /// The id the next LLM call in flight gets.
    next_llm_call: AtomicU64,
    /// The iteration started last (0 before any), noted without an event: settling
    /// applies it after the queue, so an iteration that starts and ends between two
    /// settles costs the loop's thread one event, not two.
    started_number: AtomicU64,
    /// When it started: nanoseconds of the monitor's clock, stored before the number.
    started_at_ns: AtomicU64,
    pub(super) stop_requested: AtomicBool,
    pub(super) closed: AtomicBool,
    /// The root of the loop's process tree: a supervised loop's process, or `None`
    /// for this process (the GPU sampler sums the video memory of the tree below it).
    loop_root: Mutex<Option<TreeRoot>>,

    // The queue and the state.
    /// Events sent and not yet taken by a settle, in the order they were sent: at
    /// most [`QUEUE_CAPACITY`], in room reserved at the start.
    queue: Mutex<VecDeque<Event>>,
    /// The settle's buffer, held for a whole settle: the queue is swapped into it and
    /// its events applied in order, leaving it empty with its room for the next swap.
    settling: Mutex<VecDeque<Event>>,
    state: Mutex<RunState>,

    // Where what the state decides goes.
    publisher: Publisher,
    rejections: Rejections,
    alert_sink: Option<AlertSink>,

    // What the background tasks sample and sweep with.
    pub(super) containers: Arc<Containers>,
    host_sampler: Mutex<HostSampler>,
    /// The loop's memory cgroup, whose limit HighMemoryUsage uses when it is lower
    /// than host memory.
    cgroup: Option<CgroupMemory>,
    /// The model servers to read, and their client.
    pub(super) model_servers: crate::servers::fetch::Readers,
}

/// The parts a [`Hub`] is assembled from.
pub(super) struct Parts {
    pub(super) settings: Settings,
    pub(super) identity: RunIdentity,
    pub(super) pipeline: Pipeline,
    pub(super) local_addr: SocketAddr,
    pub(super) host_sampler: HostSampler,
    pub(super) started_at: SystemTime,
    pub(super) alert_sink: Option<AlertSink>,
    pub(super) containers: Arc<Containers>,
}

impl Hub {
    /// Assembles the hub and takes the first host sample.
    pub(super) fn new(parts: Parts) -> Self {
        let rejections = Rejections::new(
            parts
                .pipeline
                .instruments
                .loopwatch_rejected_observations_total
                .clone(),
        );
        let model_servers = crate::servers::fetch::Readers::new(
            &parts.settings.thresholds.llm().servers,
            parts.settings.sample_interval,
        );
        let hub = Hub {
            state: Mutex::new(RunState::new(parts.started_at, &parts.settings.thresholds)),
            settings: parts.settings,
            identity: parts.identity,
            local_addr: parts.local_addr,
            clock: Clock::new(),
            next_iteration: AtomicU64::new(1),
            champion_fingerprint: AtomicU64::new(0),
            staleness: AtomicU64::new(0),
            reasons: ReasonNames::default(),
            next_llm_call: AtomicU64::new(0),
            started_number: AtomicU64::new(0),
            started_at_ns: AtomicU64::new(0),
            stop_requested: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            loop_root: Mutex::new(None),
            queue: Mutex::new(VecDeque::with_capacity(QUEUE_CAPACITY)),
            settling: Mutex::new(VecDeque::with_capacity(QUEUE_CAPACITY)),
            publisher: Publisher {
                pipeline: parts.pipeline,
            },
            rejections,
            alert_sink: parts.alert_sink,
            containers: parts.containers,
            host_sampler: Mutex::new(parts.host_sampler),
            cgroup: CgroupMemory::of_current_process(),
            model_servers,
        };
        hub.publisher.loop_started(parts.started_at);
        hub.publisher
            .model_servers_configured(&lock(&hub.state).model_servers().servers);
        // The limit EvaluationHung compares with, from the start: the floor, until
        // enough evaluations have finished for their p95 to count.
        hub.publisher
            .evaluation_limit(crate::evaluate::evaluation_limit(
                None,
                &hub.settings.thresholds,
            ));
        hub.sample_host();
        hub
    }

    /// The pipeline serving loopwatch's and the user's instruments.
    pub(super) fn pipeline(&self) -> &Pipeline {
        &self.publisher.pipeline
    }

    /// Sends one event: one push under the queue's lock, without allocation; when the
    /// queue is full, the sender settles it first (so nothing is dropped and the
    /// queue stays bounded).
    #[inline]
    pub(super) fn send(&self, event: Event) {
        loop {
            {
                let mut queue = lock(&self.queue);
                if queue.len() < QUEUE_CAPACITY {
                    queue.push_back(event);
                    return;
                }
            }
            self.settle();
        }
    }

    /// Notes that iteration `number` started `at`: lock-free, no event. The state
    /// learns of it when the hub next settles (if it has not ended by then, it is the
    /// iteration in progress).
    #[inline]
    pub(super) fn iteration_started(&self, number: u64, at: crate::records::Moment) {
        let nanos = u64::try_from(at.mono.as_nanos()).unwrap_or(u64::MAX);
        self.started_at_ns.store(nanos, Ordering::Relaxed);
        // Release: whoever reads this number reads this start time, or a later one.
        self.started_number.store(number, Ordering::Release);
    }

    /// Applies the events queued so far, in order: each is applied to the state,
    /// then published, then what the rules found is dispatched. Then the iteration
    /// started last, which the state ignores once it has ended.
    pub(super) fn settle(&self) {
        let mut settling = lock(&self.settling);
        self.drain(&mut settling);
    }

    /// Applies what is queued, with the settle's buffer held: everything queued when
    /// settling began, without chasing a producer that keeps sending. The state's lock
    /// is taken once for all of it, and let go only to hand on what the rules found or
    /// an event rejected.
    fn drain(&self, settling: &mut VecDeque<Event>) {
        let th = &self.settings.thresholds;
        let mut state = lock(&self.state);
        // The buffer is empty, unless a settle panicked half-way: what it left goes
        // first.
        state = self.apply_all(state, settling);
        std::mem::swap(&mut *lock(&self.queue), settling);
        state = self.apply_all(state, settling);
        let number = self.started_number.load(Ordering::Acquire);
        if number != 0 {
            let since = std::time::Duration::from_nanos(self.started_at_ns.load(Ordering::Relaxed));
            let started = Event::IterationStarted {
                number,
                at: self.clock.moment_at(since),
            };
            let applied = state.apply(started, th);
            drop(self.publish(state, &applied));
        }
    }

    /// Applies the events of `settling` in order, emptying it.
    fn apply_all<'a>(
        &'a self,
        mut state: MutexGuard<'a, RunState>,
        settling: &mut VecDeque<Event>,
    ) -> MutexGuard<'a, RunState> {
        let th = &self.settings.thresholds;
        while let Some(event) = settling.pop_front() {
            let applied = match event {
                // The most frequent event, applied where it lies rather than moved
                // again (216 bytes) into `apply`.
                Event::Iteration(ref completed) => state.apply_iteration(completed, th),
                event => state.apply(event, th),
            };
            state = self.publish(state, &applied);
        }
        state
    }

    /// Publishes what applying an event changed, with the state held; when the rules
    /// found something or the event was turned away, lets go of the state to hand
    /// that on, and takes it again.
    fn publish<'a>(
        &'a self,
        state: MutexGuard<'a, RunState>,
        applied: &super::state::Applied,
    ) -> MutexGuard<'a, RunState> {
        self.publisher.publish(&applied.publish, state.published());
        if applied.findings.is_empty() && applied.rejected.is_none() {
            return state;
        }
        drop(state);
        self.hand_on(applied);
        lock(&self.state)
    }

    /// Dispatches what the rules found and counts what applying an event rejected
    /// (what it changed is published already, under the state's lock).
    fn hand_on(&self, applied: &super::state::Applied) {
        self.deliver(&applied.findings);
        if let Some(rejected) = &applied.rejected {
            self.reject(rejected.kind, rejected.value, rejected.iteration);
        }
    }

    /// Applies `event` now, after everything queued before it, and returns what
    /// `look` reads of the state just after it: for a producer that must know what
    /// the state decided (an LLM call a budget may refuse). Events are still applied
    /// in the order they were sent.
    pub(super) fn apply_now<R>(&self, event: Event, look: impl FnOnce(&RunState) -> R) -> R {
        let mut settling = lock(&self.settling);
        self.drain(&mut settling);
        let (applied, seen) = {
            let mut state = lock(&self.state);
            let applied = state.apply(event, &self.settings.thresholds);
            self.publisher.publish(&applied.publish, state.published());
            (applied, look(&state))
        };
        self.hand_on(&applied);
        seen
    }

    /// Hands what the rules found to the log, the alert gauges and Alertmanager.
    fn deliver(&self, findings: &Findings) {
        if findings.is_empty() {
            return;
        }
        let log = Log {
            run_id: &self.identity.run_id,
        };
        let alertmanager = self
            .alert_sink
            .as_ref()
            .map(|sink| sink as &dyn FindingSink);
        dispatch(findings, &log, &[Some(&self.publisher), alertmanager]);
    }

    /// Reads the state, settled: what the reader sees includes every event sent
    /// before it asked.
    fn read<R>(&self, look: impl FnOnce(&RunState) -> R) -> R {
        self.settle();
        look(&lock(&self.state))
    }

    /// Counts and logs a rejected observation of iteration `iteration`.
    #[inline]
    pub(super) fn reject(&self, kind: Rejection, value: f64, iteration: u64) {
        self.rejections.reject(kind, value, iteration);
    }

    /// Whether `champion` differs from the last champion reported (by fingerprint,
    /// without a lock); it is the last one from now on.
    #[inline]
    pub(super) fn new_champion(&self, champion: &str) -> bool {
        let print = fingerprint(champion);
        self.champion_fingerprint.swap(print, Ordering::Relaxed) != print
    }

    /// Whether a champion has been reported.
    #[inline]
    pub(super) fn has_champion(&self) -> bool {
        self.champion_fingerprint.load(Ordering::Relaxed) != 0
    }

    /// The id of an LLM call that starts now.
    pub(super) fn next_llm_call(&self) -> u64 {
        self.next_llm_call.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn request_stop(&self) -> bool {
        self.stop_requested.swap(true, Ordering::SeqCst)
    }

    /// The run so far, summarised.
    pub(super) fn summary(&self) -> RunSummary {
        let now = self.clock.now();
        self.read(|state| state.summary(&self.identity.run_id, &self.reasons, now))
    }

    /// The evaluator's whole state.
    pub(super) fn evaluation(&self) -> Evaluation {
        self.read(RunState::evaluation)
    }

    /// Whether the alert is firing now.
    pub(super) fn is_firing(&self, alert: AlertName) -> bool {
        self.read(|state| state.is_firing(alert))
    }

    /// While EvaluationHung fires: the evaluations in flight past its limit.
    pub(super) fn hung_evaluations(&self) -> Vec<crate::records::HungEvaluation> {
        let now = self.clock.now();
        self.read(|state| state.hung_evaluations(now))
    }

    /// Whether the loop has said it is done.
    pub(super) fn said_done(&self) -> bool {
        self.read(RunState::is_done)
    }

    /// The loop says it is done.
    pub(super) fn done(&self) {
        self.send(Event::Done {
            at: self.clock.now(),
        });
    }

    /// The background clock's tick: the clock resynced, and a [`Event::Tick`] sent
    /// and settled.
    pub(super) fn tick(&self) {
        self.clock.resync();
        self.send(Event::Tick {
            at: self.clock.now(),
        });
        self.settle();
    }

    /// Takes one host and process sample and sends it.
    pub(super) fn sample_host(&self) {
        let sample = catch_unwind(AssertUnwindSafe(|| lock(&self.host_sampler).tick()));
        let Ok(sample) = sample else {
            tracing::error!("the host sampler panicked; its gauges keep their last values");
            return;
        };
        // The limit that kills: the cgroup's, when it is below host memory.
        let host = (
            sample.host_memory_used_bytes,
            sample.host_memory_total_bytes,
        );
        let (memory_used, memory_limit) = match self.cgroup.as_ref().and_then(CgroupMemory::read) {
            Some(reading) => match reading.limit_bytes {
                Some(limit) if limit < sample.host_memory_total_bytes => {
                    (reading.working_set_bytes, limit)
                }
                _ => host,
            },
            None => host,
        };
        self.send(Event::Host(HostReading {
            sample,
            memory_used,
            memory_limit,
            file_descriptors: crate::sample::file_descriptors(),
            at: self.clock.now(),
        }));
    }

    /// Watches a supervised loop's process tree instead of this process.
    pub(super) fn watch_process_tree(&self, root_pid: u32) {
        *lock(&self.host_sampler) = HostSampler::for_process_tree(root_pid);
        *lock(&self.loop_root) = Some(TreeRoot::of(root_pid));
    }

    /// The root of the loop's process tree: the supervised loop's process, else this
    /// one; `None` while the supervised loop's process has ended (between an exit and
    /// a restart), when its pid may already be another process's.
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    pub(super) fn loop_root(&self) -> Option<u32> {
        match *lock(&self.loop_root) {
            None => Some(std::process::id()),
            Some(root) => root.current(),
        }
    }

    /// Runs a process sweep (blocking: it waits out the grace period of any process it
    /// terminates) and sends what it found: `run` is this run's id once its loop has
    /// exited, `None` for a sweep for dead owners only.
    pub(super) fn sweep_processes(
        &self,
        run: Option<&str>,
        grace: std::time::Duration,
    ) -> crate::processes::ProcessSweepReport {
        let skip = self.read(RunState::processes_given_up);
        let report = crate::processes::sweep_processes(run, false, &skip, grace);
        self.send(Event::ProcessSweep(ProcessSweep {
            given_up: crate::processes::given_up(&report).collect(),
            cleaned: report.cleaned.len(),
            failed: report.failed.len(),
            remaining: report.remaining(),
            left_behind: run
                .is_some()
                .then(|| report.failed.iter().map(|(p, _)| p.clone()).collect()),
            at: self.clock.now(),
        }));
        report
    }

    /// The Alertmanager delivery, when URLs are configured.
    pub(super) fn alert_sink(&self) -> Option<&AlertSink> {
        self.alert_sink.as_ref()
    }

    /// The containers feature's state, as written to `metrics_final.json`.
    fn containers_json(&self) -> serde_json::Value {
        if self.settings.containers {
            return self.containers.state_json();
        }
        serde_json::json!({ "enabled": false })
    }
}

impl Source for Hub {
    fn identity(&self) -> &RunIdentity {
        &self.identity
    }

    fn exposition(&self) -> Result<String, CollectError> {
        self.settle();
        let families = self.pipeline().gather()?;
        Ok(self.pipeline().text.encode(&families))
    }

    fn snapshot(&self) -> Snapshot {
        let now = self.clock.now();
        let (
            summary,
            evaluation,
            started_at,
            history,
            (samples, samples_dropped),
            progress,
            (events, events_dropped),
            recent_failure_reasons,
            live_containers,
            processes,
            evaluations,
            instrumentation,
            gpus,
            model_servers,
        ) = self.read(|state| {
            (
                state.summary(&self.identity.run_id, &self.reasons, now),
                state.evaluation(),
                state.started_at(),
                state.history(),
                state.samples(),
                state.progress(),
                state.events(),
                state.recent_failure_reasons(&self.reasons),
                state.live_containers(),
                state.process_tally(),
                state.evaluations_view(now),
                state.instrumentation(),
                state.gpus(),
                state.model_servers(),
            )
        });
        Snapshot {
            identity: self.identity.clone(),
            summary,
            thresholds: self.settings.thresholds.clone(),
            evaluation,
            started_at: crate::records::unix_seconds(started_at),
            history,
            samples,
            samples_dropped,
            progress,
            events,
            events_dropped,
            containers: self.containers_json(),
            live_containers,
            processes,
            recent_failure_reasons,
            recent_iterations: RECENT_ITERATIONS,
            evaluations,
            instrumentation,
            gpus,
            model_servers,
        }
    }
}

/// A champion's fingerprint: a 64-bit hash of its name (eight bytes at a time, then
/// mixed as MurmurHash3's finaliser does), never 0. The loop's thread compares it
/// with the last champion's without a lock; a change is missed only if two names
/// share all 64 bits.
pub(super) fn fingerprint(champion: &str) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes = champion.as_bytes();
    let mut hash = (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        hash = (hash ^ word).wrapping_mul(K).rotate_left(31);
    }
    let mut last = [0u8; 8];
    last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    hash = (hash ^ u64::from_le_bytes(last)).wrapping_mul(K);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    hash | 1
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn fingerprints_tell_similar_names_apart() {
        let names: Vec<String> = (0..20_000)
            .map(|i| format!("ma-cross-{}-{}", i % 200, i / 200))
            .chain((0..64).map(|n| "x".repeat(n)))
            .collect();
        let mut prints: Vec<u64> = names.iter().map(|n| fingerprint(n)).collect();
        assert!(prints.iter().all(|p| p & 1 == 1));
        prints.sort_unstable();
        prints.dedup();
        assert_eq!(
            prints.len(),
            names.len(),
            "no two names share a fingerprint"
        );
    }
}

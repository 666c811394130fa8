//! [`Hub`]: what the loop's handle, the intake, the supervisor, the endpoint and the
//! background tasks share. It holds the settings and the identity, the few atomics
//! the loop's thread needs, the bounded queue of [`Event`]s, the run's state behind
//! one lock, and the sinks what the state decides goes to. It is the exporters'
//! [`Source`]: they read snapshots of it, never its fields.
//!
//! # The path of an event
//!
//! Producers only send events: the loop's thread (an iteration starting, a champion
//! changing, an iteration ending), the intake, the samplers, the background clock,
//! the supervisor and the LLM recorder. Sending is a lock-free push into a bounded
//! queue, with no allocation.
//!
//! [`Hub::settle`] then drains the queue in order and, for each event, applies it to
//! the [`RunState`] (`apply`: pure), publishes what changed ([`Publisher`]) and
//! dispatches what the rules found (the log, the alert gauges, Alertmanager). One
//! path settles, with three callers: the background clock every [`SETTLE_EVERY`],
//! every reader (a scrape, the page, a snapshot, the summary, the alert state) before
//! it reads, so nothing anyone reads lags the loop, and a producer whose event finds
//! the queue full, so the queue stays bounded however fast the loop runs and nothing
//! is dropped.
//!
//! # Locks
//!
//! The queue's receiving end is held for a whole settle (so events are applied in
//! the order they were sent); the state's lock for one event's `apply`, or for one
//! reader's look. Publishing and dispatching happen with the state unlocked, and
//! neither sends an event, so there is no lock order to keep.

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
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
use crate::sample::{CgroupMemory, HostSampler};

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
/// settles it itself (the loop's thread sends two per iteration).
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
    pub(super) stop_requested: AtomicBool,
    pub(super) closed: AtomicBool,

    // The queue and the state.
    sender: SyncSender<Event>,
    /// The queue's receiving end, held for a whole settle: events are applied in the
    /// order they were sent.
    receiver: Mutex<Receiver<Event>>,
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
        let (sender, receiver) = sync_channel(QUEUE_CAPACITY);
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
            stop_requested: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            sender,
            receiver: Mutex::new(receiver),
            publisher: Publisher {
                pipeline: parts.pipeline,
            },
            rejections,
            alert_sink: parts.alert_sink,
            containers: parts.containers,
            host_sampler: Mutex::new(parts.host_sampler),
            cgroup: CgroupMemory::of_current_process(),
        };
        hub.publisher.loop_started(parts.started_at);
        hub.sample_host();
        hub
    }

    /// The pipeline serving loopwatch's and the user's instruments.
    pub(super) fn pipeline(&self) -> &Pipeline {
        &self.publisher.pipeline
    }

    /// Sends one event. Lock-free and allocation-free; when the queue is full, the
    /// sender settles it first (so nothing is dropped and the queue stays bounded).
    #[inline]
    pub(super) fn send(&self, event: Event) {
        let mut event = event;
        loop {
            match self.sender.try_send(event) {
                Ok(()) => return,
                Err(TrySendError::Full(again)) => {
                    event = again;
                    self.settle();
                }
                // The hub holds the receiving end for as long as anyone can send.
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }

    /// Applies the events queued so far, in order: each is applied to the state,
    /// then published, then what the rules found is dispatched.
    pub(super) fn settle(&self) {
        let receiver = lock(&self.receiver);
        self.drain(&receiver);
    }

    /// Applies what is queued, with the receiving end held.
    fn drain(&self, receiver: &Receiver<Event>) {
        // At most one queue's worth: everything queued when settling began, without
        // chasing a producer that keeps sending.
        for _ in 0..QUEUE_CAPACITY {
            let Ok(event) = receiver.try_recv() else {
                break;
            };
            let applied = lock(&self.state).apply(event, &self.settings.thresholds);
            self.publisher.publish(&applied.publish);
            self.deliver(&applied.findings);
        }
    }

    /// Applies `event` now, after everything queued before it, and returns what
    /// `look` reads of the state just after it: for a producer that must know what
    /// the state decided (an LLM call a budget may refuse). Events are still applied
    /// in the order they were sent.
    pub(super) fn apply_now<R>(&self, event: Event, look: impl FnOnce(&RunState) -> R) -> R {
        let receiver = lock(&self.receiver);
        self.drain(&receiver);
        let (applied, seen) = {
            let mut state = lock(&self.state);
            let applied = state.apply(event, &self.settings.thresholds);
            (applied, look(&state))
        };
        self.publisher.publish(&applied.publish);
        self.deliver(&applied.findings);
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
            history,
            progress,
            (events, events_dropped),
            recent_failure_reasons,
            live_containers,
            processes,
        ) = self.read(|state| {
            (
                state.summary(&self.identity.run_id, &self.reasons, now),
                state.evaluation(),
                state.history(),
                state.progress(),
                state.events(),
                state.recent_failure_reasons(&self.reasons),
                state.live_containers(),
                state.process_tally(),
            )
        });
        Snapshot {
            identity: self.identity.clone(),
            summary,
            thresholds: self.settings.thresholds.clone(),
            evaluation,
            history,
            progress,
            events,
            events_dropped,
            containers: self.containers_json(),
            live_containers,
            processes,
            recent_failure_reasons,
            recent_iterations: RECENT_ITERATIONS,
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

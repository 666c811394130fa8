//! Where the run leaves the process: the HTTP endpoint (`/metrics`, the embedded page,
//! `/healthz`), Alertmanager delivery and the final export files.
//!
//! Exporters never reach into the monitor. They read a [`Snapshot`], taken once per
//! page render or final export, and the exposition text, both through [`Source`],
//! which the monitor implements.

pub(crate) mod alertmanager;
pub(crate) mod compare;
pub(crate) mod files;
pub(crate) mod http;
pub(crate) mod register;
pub(crate) mod view;

use enum_map::EnumMap;

use crate::alerts::{AlertName, AlertState, RollingValues, Watched};
use crate::config::Thresholds;
use crate::error::CollectError;
use crate::records::{HistoryPoint, LogEntry, RunIdentity, RunSummary, TimePoint};

/// The evaluator's state at one instant.
#[derive(Debug, Clone, Default)]
pub(crate) struct Evaluation {
    pub(crate) rolling: RollingValues,
    pub(crate) alerts: EnumMap<AlertName, AlertState>,
    pub(crate) baselines: EnumMap<Watched, Option<f64>>,
    pub(crate) warnings: EnumMap<Watched, bool>,
    pub(crate) low_diversity_streak: u64,
}

impl Evaluation {
    /// The alerts firing now, in [`AlertName::ALL`] order.
    pub(crate) fn firing(&self) -> Vec<AlertName> {
        AlertName::ALL
            .into_iter()
            .filter(|alert| self.alerts[*alert] == AlertState::Firing)
            .collect()
    }
}

/// A running container of this run, as the page's table shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct LiveContainer {
    pub(crate) name: String,
    pub(crate) memory_bytes: u64,
    pub(crate) cpu_percent: Option<f64>,
    /// Seconds since loopwatch first saw it running.
    pub(crate) age_seconds: f64,
}

/// Whether a GPU's readings are current: the GPU sampler's state, the same for
/// every device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GpuReadings {
    /// Samples come.
    Current,
    /// No sample came for five sampling periods, at least 5 s (the sampler blocked
    /// inside NVML): the readings are the last taken, until samples come again.
    Stale,
    /// The sampler ended while the monitor ran: the readings are the last taken,
    /// for good.
    Ended,
}

impl GpuReadings {
    /// Its name in the JSON and on the page.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            GpuReadings::Current => "current",
            GpuReadings::Stale => "stale",
            GpuReadings::Ended => "ended",
        }
    }
}

impl serde::Serialize for GpuReadings {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A GPU as the page's panel, `/api/v1/snapshot` and the final JSON show it: its
/// latest reading and its errors over the run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct LiveGpu {
    pub(crate) index: u32,
    pub(crate) uuid: String,
    /// It stopped answering; the readings are the last it gave.
    pub(crate) lost: bool,
    /// Whether the readings below are current.
    pub(crate) readings: GpuReadings,
    /// Fraction of the last sample period a kernel ran (0–1).
    pub(crate) utilization: Option<f64>,
    pub(crate) memory_used_bytes: Option<u64>,
    pub(crate) memory_total_bytes: Option<u64>,
    pub(crate) power_watts: Option<f64>,
    pub(crate) temperature_celsius: Option<f64>,
    /// Video memory of the loop's own processes on it; `None` when NVML could not
    /// list its processes.
    pub(crate) loop_memory_bytes: Option<u64>,
    pub(crate) loop_processes: u32,
    /// Critical Xid errors reported over the run, and the code of the last.
    pub(crate) xid_errors: u64,
    pub(crate) last_xid: Option<u64>,
    /// ECC errors counted since the first sample.
    pub(crate) ecc_corrected: u64,
    pub(crate) ecc_uncorrected: u64,
}

/// Orphaned processes: what the sweeps found and did (see `loopwatch run`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct ProcessTally {
    /// Orphans found by the last sweep and not removed.
    pub(crate) orphaned_now: u64,
    /// Orphaned processes terminated over the run.
    pub(crate) cleaned_total: u64,
    /// Orphaned processes that could not be terminated, over the run.
    pub(crate) failures_total: u64,
}

/// An evaluation as the page, `/api/v1/snapshot` and the final JSON show it: in
/// flight (its age so far, no outcome) or ended (its duration and outcome).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct EvaluationRow {
    pub(crate) id: String,
    pub(crate) worker: Option<String>,
    pub(crate) pid: Option<u32>,
    /// Its age (in flight) or duration (ended), in seconds.
    pub(crate) seconds: f64,
    /// `ok`, `failed`, `timeout` or `killed`; `None` in flight.
    pub(crate) outcome: Option<&'static str>,
}

/// One bucket of the evaluations' duration distribution: ended evaluations that
/// took more than the previous bucket's `le` and at most this one's (`None`: above
/// the largest boundary).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub(crate) struct DurationBucket {
    pub(crate) le: Option<f64>,
    pub(crate) count: u64,
}

/// The evaluations: those in flight (the oldest few), the limit EvaluationHung
/// judges them against, the workers, the slowest and the killed ones, and the
/// duration distribution. Every list is bounded.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub(crate) struct EvaluationsView {
    pub(crate) in_flight: usize,
    /// The oldest in flight, oldest first.
    pub(crate) oldest: Vec<EvaluationRow>,
    /// How long an evaluation may run before EvaluationHung, as last judged.
    pub(crate) hung_limit_seconds: f64,
    /// Workers seen in the last minute, and those busy now.
    pub(crate) workers: usize,
    pub(crate) busy_workers: usize,
    /// The slowest ended evaluations, slowest first.
    pub(crate) slowest: Vec<EvaluationRow>,
    /// The last evaluations loopwatch killed, oldest first.
    pub(crate) killed: Vec<EvaluationRow>,
    /// Evaluations loopwatch killed over the run.
    pub(crate) killed_total: u64,
    /// Ended evaluations by duration.
    pub(crate) durations: Vec<DurationBucket>,
}

/// A framework the zero-code instrumentation (`loopwatch run --instrument`) reported
/// on, as the page's header and `metrics_final.json` show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct InstrumentedFramework {
    /// Its name (`optuna`, or `other`).
    pub(crate) framework: &'static str,
    /// Its version, as last reported (empty when unknown); `None` when only errors
    /// were reported.
    pub(crate) version: Option<String>,
    /// Whether it was instrumented (`active`), left alone (`skipped`) or not selected
    /// (`off`), as last reported.
    pub(crate) state: Option<crate::protocol::InstrumentationState>,
    /// Why it was left alone.
    pub(crate) reason: Option<String>,
    /// Errors its instrumentation caught.
    pub(crate) errors: u64,
}

/// The model servers read (`[[llm.servers]]`): each as it stands, and each one's
/// history of reads (thinned, oldest first), in the configuration's order.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub(crate) struct ModelServersView {
    pub(crate) servers: Vec<crate::servers::book::ServerView>,
    pub(crate) points: Vec<Vec<crate::servers::book::ServerPoint>>,
}

/// Everything the exporters show of a run, taken at one instant.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) identity: RunIdentity,
    pub(crate) summary: RunSummary,
    pub(crate) thresholds: Thresholds,
    pub(crate) evaluation: Evaluation,
    /// When the run started, Unix seconds.
    pub(crate) started_at: f64,
    /// Recent iterations, oldest first.
    pub(crate) history: Vec<HistoryPoint>,
    /// One point per host sample over the whole run, thinned evenly to a bound,
    /// oldest first: what the page draws on its time axis.
    pub(crate) samples: Vec<TimePoint>,
    /// Host samples left out of `samples` to keep the bound.
    pub(crate) samples_dropped: u64,
    /// The best-so-far curve over the whole run, bounded.
    pub(crate) progress: crate::records::progress::Progress,
    /// Recent events, oldest first, and how many older ones were dropped.
    pub(crate) events: Vec<LogEntry>,
    pub(crate) events_dropped: u64,
    /// The containers feature's state (enabled, Docker reachable, last sweep,
    /// shutdown verification), as written to `metrics_final.json`.
    pub(crate) containers: serde_json::Value,
    /// This run's running containers at the last sample.
    pub(crate) live_containers: Vec<LiveContainer>,
    /// Orphaned processes found and terminated.
    pub(crate) processes: ProcessTally,
    /// Failure reasons over the last completed iterations.
    pub(crate) recent_failure_reasons: std::collections::BTreeMap<String, u64>,
    /// How many completed iterations `recent_failure_reasons` covers, at most.
    pub(crate) recent_iterations: usize,
    /// The evaluations in flight, the slowest and the killed.
    pub(crate) evaluations: EvaluationsView,
    /// The frameworks the zero-code instrumentation reported on.
    pub(crate) instrumentation: Vec<InstrumentedFramework>,
    /// Every GPU the sampler read, in NVML's order; empty when none was.
    pub(crate) gpus: Vec<LiveGpu>,
    /// The model servers read, and their histories.
    pub(crate) model_servers: ModelServersView,
}

/// What the exporters read a run through.
pub(crate) trait Source: Send + Sync + 'static {
    /// The run's identity.
    fn identity(&self) -> &RunIdentity;
    /// The Prometheus text exposition, as `GET /metrics` serves it.
    fn exposition(&self) -> Result<String, CollectError>;
    /// Everything else, at this instant.
    fn snapshot(&self) -> Snapshot;
}

//! What the alerts are judged on: one [`Evidence`] the evaluator keeps up to date, and
//! the [`Trigger`]s that bring its parts up to date. An event (an iteration, a sample,
//! a sweep, the clock...) updates its part of the evidence, then the evaluator asks
//! every alert whose row names that trigger for its verdict. An alert over evidence
//! that is already here needs no code in the evaluator: its row names the trigger and
//! a verdict that reads these fields.

use std::time::Duration;

use super::rolling::RollingValues;
use crate::llm::meter::LlmEvidence;

/// What brings a part of the [`Evidence`] up to date, and so when the alerts that read
/// it are judged. Each alert's row names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// An iteration (or a batch) completed: `diversity`, `low_diversity_streak`,
    /// `champion_staleness`, `rolling` and `window_full`.
    Iteration,
    /// A host sample (each sampler tick, 1 s by default): `memory_fraction` and
    /// `memory_streak`.
    HostSample,
    /// A container sweep ended: `orphans`.
    OrphanSweep,
    /// The clock (about once a second), and an iteration's start or end while the
    /// loop is judged stalled: `waited` and `stall_limit`.
    Activity,
    /// The clock, and evaluations ending while one is judged hung:
    /// `oldest_evaluation` and `evaluation_limit`.
    Evaluations,
    /// The supervised loop's process ended: `unexpected_exit`.
    Exit,
    /// The supervisor restarted the loop, and the clock (restarts leave the window):
    /// `recent_restarts`.
    Restarts,
    /// An LLM call, an answer's rate limits, a champion change, and the clock: `llm`
    /// and `headroom_low_for`.
    Llm,
    /// A GPU sample (each sampler tick) and a GPU's Xid error: `gpu_memory_fraction`,
    /// `gpu_memory_high_for` and `gpu_errors`.
    Gpu,
    /// A model server read (or one that failed): `server_saturated_for` and
    /// `server_kv_cache_usage`.
    ModelServers,
}

/// Preemptions within this window before a read count as preemptions rising: the
/// range of its rule's `increase`.
pub(crate) const LLM_SERVER_PREEMPTION_WINDOW: Duration = Duration::from_secs(60);

/// Everything the verdicts read, as of the last event of each [`Trigger`]. Plain
/// values, copied in: judging reads them and allocates nothing.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Evidence {
    /// The diversity the last completed iteration reported, if it reported one
    /// ([`Trigger::Iteration`]).
    pub(crate) diversity: Option<f64>,
    /// Consecutive reported diversities below `diversity_floor`; an iteration without
    /// a report neither extends nor breaks it ([`Trigger::Iteration`]).
    pub(crate) low_diversity_streak: u64,
    /// Iterations since the champion last changed ([`Trigger::Iteration`]).
    pub(crate) champion_staleness: u64,
    /// The rolling values over the window of the last iterations
    /// ([`Trigger::Iteration`]).
    pub(crate) rolling: RollingValues,
    /// Whether the window holds `window` iterations ([`Trigger::Iteration`]).
    pub(crate) window_full: bool,
    /// Memory in use as a fraction of the limit that kills the loop
    /// ([`Trigger::HostSample`]).
    pub(crate) memory_fraction: f64,
    /// Consecutive samples above `memory_fraction`, this one included
    /// ([`Trigger::HostSample`]).
    pub(crate) memory_streak: u64,
    /// Orphaned containers the last sweep left ([`Trigger::OrphanSweep`]).
    pub(crate) orphans: u64,
    /// How long the loop has waited: running one iteration, or between two; `None`
    /// when it is done or has not started ([`Trigger::Activity`]).
    pub(crate) waited: Option<Duration>,
    /// How long it may wait before it is called stalled: `stall_factor` times the
    /// rolling mean iteration time, at least `stall_floor` ([`Trigger::Activity`]).
    pub(crate) stall_limit: Duration,
    /// The age of the oldest evaluation in flight, `None` with none
    /// ([`Trigger::Evaluations`]).
    pub(crate) oldest_evaluation: Option<Duration>,
    /// How long an evaluation may run: `evaluation_factor` times the p95 of the
    /// finished ones, at least `evaluation_floor` ([`Trigger::Evaluations`]).
    pub(crate) evaluation_limit: Duration,
    /// The shell status of the supervised loop's last exit when it was unexpected (a
    /// failure before the loop said it was done), else `None` ([`Trigger::Exit`]).
    pub(crate) unexpected_exit: Option<i32>,
    /// Restarts of the supervised loop within `restart_window`
    /// ([`Trigger::Restarts`]).
    pub(crate) recent_restarts: u64,
    /// The LLM calls' counts and spends, and the least rate-limit headroom
    /// ([`Trigger::Llm`]).
    pub(crate) llm: LlmEvidence,
    /// How long the least rate-limit headroom has been below `llm_headroom_fraction`
    /// without a break, `None` while it is not ([`Trigger::Llm`]).
    pub(crate) headroom_low_for: Option<Duration>,
    /// The highest fraction of its video memory in use on a GPU the loop's processes
    /// use; `None` while they use none ([`Trigger::Gpu`]).
    pub(crate) gpu_memory_fraction: Option<f64>,
    /// How long that fraction has been above `gpu_memory_fraction`, without a break
    /// ([`Trigger::Gpu`]).
    pub(crate) gpu_memory_high_for: Duration,
    /// The GPU errors GPUErrors counts (fatal Xid and uncorrected ECC errors on the
    /// loop's GPUs) within the last [`GPU_ERRORS_WINDOW`] ([`Trigger::Gpu`]).
    pub(crate) gpu_errors: u64,
    /// How long the model server saturated the longest has been saturated: requests
    /// waiting while its KV cache is at least `llm_server_kv_cache_fraction` full, or
    /// preemptions within [`LLM_SERVER_PREEMPTION_WINDOW`], at each read since; `None`
    /// while no server is ([`Trigger::ModelServers`]).
    pub(crate) server_saturated_for: Option<Duration>,
    /// That server's KV-cache usage at its last read, 0 to 1
    /// ([`Trigger::ModelServers`]).
    pub(crate) server_kv_cache_usage: f64,
}

/// How long a GPU's error keeps GPUErrors firing: 5 minutes, as the rule's window.
pub(crate) const GPU_ERRORS_WINDOW: Duration = Duration::from_secs(300);

//! The records every layer shares: who the run is, what one iteration did, the run so
//! far, the points the dashboard draws and the events it annotates.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::alerts::{AlertName, AlertState};
use crate::owner::Owner;

pub(crate) mod progress;
pub(crate) mod thinned;

/// An instant as the monitor's clock read it: monotonic (time since the clock
/// started) for durations and windows, and the wall clock for what is shown, kept
/// and sent. Events carry it, so that what applies them never reads a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Moment {
    /// Time since the monitor's clock started: never steps back.
    pub(crate) mono: Duration,
    /// The wall-clock time.
    pub(crate) wall: SystemTime,
}

impl Moment {
    /// The moment `mono` after a clock's start, at wall-clock time `wall`.
    pub(crate) const fn new(mono: Duration, wall: SystemTime) -> Self {
        Moment { mono, wall }
    }

    /// Time from `earlier` to this moment (zero if `earlier` is later).
    pub(crate) fn since(self, earlier: Duration) -> Duration {
        self.mono.saturating_sub(earlier)
    }
}

/// How an evaluation ended: the `outcome` label of `loopwatch_evaluations_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Ended {
    /// It completed, whatever the candidate scored.
    Ok,
    /// It failed: the evaluator raised, or the candidate could not be run (a guard
    /// dropped without an outcome included).
    Failed,
    /// The loop's own timeout ended it.
    Timeout,
    /// loopwatch ended it because it hung.
    Killed,
}

impl Ended {
    /// Every outcome, in a fixed order.
    pub(crate) const ALL: [Ended; 4] = [Ended::Ok, Ended::Failed, Ended::Timeout, Ended::Killed];

    /// The `outcome` label.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Ended::Ok => "ok",
            Ended::Failed => "failed",
            Ended::Timeout => "timeout",
            Ended::Killed => "killed",
        }
    }
}

/// An evaluation in flight past the EvaluationHung limit, from
/// `Supervision::hung_evaluations`, for `loopwatch run --on-hung-evaluation kill`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HungEvaluation {
    /// Its id.
    pub id: String,
    /// The process that runs it, when reported.
    pub pid: Option<u32>,
    /// The start time (clock ticks after boot, as `/proc/<pid>/stat` says) of the
    /// process that ran under `pid` when the evaluation reported it; `None` when none
    /// did. A process under `pid` with another start time is another process that
    /// reuses the pid, never to be signalled for this evaluation.
    pub pid_start_ticks: Option<u64>,
    /// The worker that runs it, when reported.
    pub worker: Option<String>,
    /// How long it has run.
    pub age: std::time::Duration,
    /// How many other evaluations in flight reported the same pid: ending its
    /// process would end them too.
    pub sharing_pid: usize,
    /// Whether its process said it ends the evaluation on `SIGUSR2` (as timed out,
    /// the process going on): a supervisor interrupts it so before it ends the process.
    pub interruptible: bool,
}

/// Why a supervisor did not signal the pid a hung evaluation reported
/// (`Supervision::evaluation_kill_refused`): the `reason` of
/// `loopwatch_rejected_observations_total{field="evaluation"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KillRefused {
    /// The pid is not a process of the loop's own tree (`pid_outside_tree`).
    OutsideTree,
    /// The pid is the loop's own process: its direct child, a process that reported
    /// the loop's iterations, or one above such a process (`loop_process`).
    LoopProcess,
    /// Other evaluations in flight reported the same pid, and would end with it
    /// (`shared_process`).
    SharedProcess,
}

/// Who this run is: the identity carried by its labels, alerts and exports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RunIdentity {
    /// Unique id of this run: `<hostname>-<pid>-<start in Unix milliseconds>`.
    pub run_id: String,
    /// The process that owns the run (host name, pid, start time).
    #[serde(flatten)]
    pub owner: Owner,
    /// The experiment the loop belongs to, if named.
    pub experiment: Option<String>,
    /// The loop's name within its experiment, if named.
    #[serde(rename = "loop")]
    pub loop_name: Option<String>,
}

impl RunIdentity {
    /// The identity of a run owned by the current process, starting now.
    pub(crate) fn of_this_process() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let owner = Owner::of_this_process();
        RunIdentity {
            run_id: format!("{}-{}-{}", owner.host, owner.pid, since_epoch.as_millis()),
            owner,
            experiment: None,
            loop_name: None,
        }
    }

    /// The ownership labels every container of this run carries (docs/containers.md,
    /// "Orphan cleanup"): `loopwatch.managed`, `loopwatch.run_id` and the owner's
    /// identity.
    pub(crate) fn container_labels(&self) -> std::collections::HashMap<String, String> {
        let mut labels = std::collections::HashMap::from([
            (crate::owner::LABEL_MANAGED.to_string(), "true".to_string()),
            (crate::owner::LABEL_RUN_ID.to_string(), self.run_id.clone()),
        ]);
        labels.extend(
            self.owner
                .labels()
                .map(|(key, value)| (key.to_string(), value)),
        );
        labels
    }

    /// The loop labels (`experiment`, `loop`) that are set, as label pairs.
    pub fn loop_labels(&self) -> Vec<(&'static str, &str)> {
        [
            ("experiment", self.experiment.as_deref()),
            ("loop", self.loop_name.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect()
    }

    /// A run id with its owner.
    #[cfg(all(test, feature = "docker"))]
    pub(crate) fn new(run_id: impl Into<String>, owner: Owner) -> Self {
        RunIdentity {
            run_id: run_id.into(),
            owner,
            experiment: None,
            loop_name: None,
        }
    }
}

/// What happened in one completed iteration, as handed to the evaluator.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct IterationSummary {
    /// The iteration's number (1-based).
    pub number: u64,
    /// Wall-clock time from start to finish.
    #[serde(serialize_with = "serialize_seconds")]
    pub duration: Duration,
    /// Strategies that succeeded.
    pub successes: u64,
    /// Strategies that failed.
    pub failures: u64,
    /// Mean Sharpe ratio of the successes with a valid Sharpe, if any.
    pub mean_sharpe: Option<f64>,
    /// Mean max drawdown of the successes with a valid drawdown, if any.
    pub mean_max_drawdown: Option<f64>,
    /// Population diversity reported during the iteration, if any.
    pub diversity: Option<f64>,
    /// Distinct strategies reported during the iteration, if any.
    pub unique_strategies: Option<u64>,
    /// Whether the champion changed during the iteration.
    pub champion_changed: bool,
    /// Completed iterations since the champion last changed, this one included.
    pub champion_staleness: u64,
}

fn serialize_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Distinct failure reasons tallied by name; further reasons are counted as `other`.
pub(crate) const MAX_FAILURE_REASONS: usize = 32;

/// Why a supervised loop's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExitReason {
    /// It exited by itself (or something outside loopwatch ended it).
    Exited,
    /// loopwatch terminated it after LoopStalled fired (`loopwatch run --on-stall`).
    Stalled,
    /// loopwatch terminated it because it was still running `--exit-timeout` after
    /// it said it was done; the run counts as completed.
    ExitTimeout,
    /// The operator stopped loopwatch, which passed the signal on.
    Stopped,
}

impl ExitReason {
    /// The `reason` label of `loopwatch_loop_restarts_total` when a restart follows:
    /// `stall` for a stalled loop, else `exit`.
    pub const fn restart_label(self) -> &'static str {
        match self {
            ExitReason::Stalled => "stall",
            _ => "exit",
        }
    }
}

/// How a supervised loop's process ended (see `loopwatch run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoopExit {
    /// Its exit code, when it exited by itself.
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// Whether it had said it was done (the protocol's `done`) before it ended.
    pub said_done: bool,
    /// When it ended.
    pub at: SystemTime,
    /// Why it ended.
    pub reason: ExitReason,
    /// Whether loopwatch started the loop again after this exit.
    pub restarted: bool,
}

impl LoopExit {
    /// An exit as the operating system reported it, now: its code when it exited by
    /// itself, the signal when one ended it (neither: a failure whose status is
    /// unknown).
    pub fn new(code: Option<i32>, signal: Option<i32>) -> Self {
        LoopExit {
            code,
            signal,
            said_done: false,
            at: SystemTime::now(),
            reason: ExitReason::Exited,
            restarted: false,
        }
    }

    /// The same exit, with why it ended.
    ///
    /// ```
    /// use loopwatch::supervise::{ExitReason, LoopExit};
    /// let exit = LoopExit::new(None, Some(15)).with_reason(ExitReason::Stalled);
    /// assert_eq!(exit.reason.restart_label(), "stall");
    /// ```
    pub fn with_reason(mut self, reason: ExitReason) -> Self {
        self.reason = reason;
        self
    }

    /// The status a shell reports for it: the code, or 128 + the signal.
    ///
    /// ```
    /// let killed = loopwatch::supervise::LoopExit::new(None, Some(9));
    /// assert_eq!(killed.shell_status(), 137);
    /// assert!(killed.unexpected());
    /// ```
    pub fn shell_status(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => 1,
        }
    }

    /// Whether the exit was a failure (non-zero, or by a signal) that the loop had
    /// not announced with `done`: what LoopExited fires on.
    pub fn unexpected(&self) -> bool {
        self.shell_status() != 0 && !self.said_done
    }
}

impl Serialize for LoopExit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut exit = s.serialize_struct("LoopExit", 7)?;
        exit.serialize_field("at", &humantime::format_rfc3339_millis(self.at).to_string())?;
        exit.serialize_field("status", &self.shell_status())?;
        exit.serialize_field("code", &self.code)?;
        exit.serialize_field("signal", &self.signal)?;
        exit.serialize_field("said_done", &self.said_done)?;
        exit.serialize_field("reason", &self.reason)?;
        exit.serialize_field("restarted", &self.restarted)?;
        exit.end()
    }
}

/// The whole run so far, summarised (written to `metrics_final.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RunSummary {
    /// Unique id of this run.
    pub run_id: String,
    /// When the monitor started, RFC 3339.
    pub started_at: String,
    /// Seconds since the monitor started.
    pub elapsed_seconds: f64,
    /// Completed iterations.
    pub iterations: u64,
    /// Strategies that succeeded, over the whole run.
    pub strategy_successes: u64,
    /// Strategies that failed, over the whole run.
    pub strategy_failures: u64,
    /// successes / (successes + failures), if any strategy was reported.
    pub success_rate: Option<f64>,
    /// Mean wall-clock time of the completed iterations, in seconds.
    pub mean_execution_time_seconds: Option<f64>,
    /// The current champion's identity, if one was reported.
    pub champion: Option<String>,
    /// Iteration in which the current champion took over.
    pub champion_since_iteration: Option<u64>,
    /// Completed iterations since the champion last changed.
    pub champion_staleness_iterations: u64,
    /// Times the champion changed (the first report included).
    pub champion_changes: u64,
    /// The best Sharpe ratio of any strategy so far, if one was reported.
    pub best_sharpe: Option<f64>,
    /// Failures by reason (at most 32 names, then `other`).
    pub failure_reasons: BTreeMap<String, u64>,
    /// How the supervised loop ended; `None` for a loop that links loopwatch, or one
    /// still running.
    pub loop_exit: Option<LoopExit>,
    /// Every exit of the supervised loop, oldest first: more than one when
    /// `loopwatch run` restarted it.
    pub exits: Vec<LoopExit>,
    /// The run's LLM calls: calls, tokens, cost and errors, by model.
    pub llm: crate::llm::meter::LlmSummary,
    /// Processes of the run that could not be terminated after its loop exited.
    pub processes_left_behind: Vec<crate::processes::MarkedProcess>,
}

/// Iterations kept for the embedded dashboard; older ones are dropped first.
pub(crate) const HISTORY_LEN: usize = 600;

/// What the dashboard draws for one completed iteration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct HistoryPoint {
    /// The iteration's number.
    pub(crate) iteration: u64,
    /// When it ended, seconds since the Unix epoch.
    pub(crate) at: f64,
    /// The best Sharpe ratio of any strategy up to this iteration.
    pub(crate) best_sharpe: Option<f64>,
    /// Wall-clock time of the iteration, in seconds.
    pub(crate) execution_time_seconds: f64,
    /// Resident set size of the loop process at the end of the iteration, in bytes.
    pub(crate) memory_usage_bytes: f64,
    /// CPU of the loop process at the last sample, 100 = one core.
    pub(crate) cpu_usage_percent: f64,
    /// Success rate over the rolling window, if any outcome was reported.
    pub(crate) success_rate_10iter: Option<f64>,
    /// Mean Sharpe ratio of the iteration's successes.
    pub(crate) sharpe_ratio: Option<f64>,
    /// Mean max drawdown of the iteration's successes.
    pub(crate) max_drawdown: Option<f64>,
    /// Population diversity reported in the iteration.
    pub(crate) population_diversity: Option<f64>,
    /// Distinct strategies reported in the iteration.
    pub(crate) unique_strategy_count: Option<u64>,
    /// Iterations since the champion last changed.
    pub(crate) champion_staleness_iterations: u64,
    /// Whether the champion changed in this iteration.
    pub(crate) champion_changed: bool,
    /// Running loopwatch-managed containers at the last container sample.
    pub(crate) active_containers: f64,
    /// Memory of those containers, summed, in bytes.
    pub(crate) container_memory_bytes: f64,
    /// Cleanup failures so far.
    pub(crate) cleanup_failures: f64,
    /// Alerts firing at the end of the iteration.
    pub(crate) alerts_firing: u8,
    /// The highest evaluation worker occupancy during the iteration (workers busy at
    /// once over those seen in the last minute); `None` while no worker has been seen.
    pub(crate) evaluation_occupancy: Option<f64>,
}

/// Samples kept for the dashboard's time axis, at most: thinned evenly over the
/// whole run once there are more (see [`thinned::Thinned`]), and the latest besides.
pub(crate) const MAX_TIME_POINTS: usize = 600;

/// What the dashboard draws on its time axis for one host sample: the loop's
/// resources, the containers and the LLM calls as they stood at that moment. A run
/// has them from its first second, iterations or not.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct TimePoint {
    /// Seconds since the run started.
    pub(crate) elapsed_seconds: f64,
    /// When the sample was taken, seconds since the Unix epoch.
    pub(crate) at: f64,
    /// Resident memory of the loop (a supervised loop's whole process tree), in bytes.
    pub(crate) memory_usage_bytes: f64,
    /// CPU of the loop since the previous sample, 100 = one core.
    pub(crate) cpu_usage_percent: f64,
    /// Running loopwatch-managed containers at the last container sample.
    pub(crate) active_containers: u64,
    /// Memory of those containers, summed, in bytes.
    pub(crate) container_memory_bytes: u64,
    /// CPU of those containers, summed, 100 = one core; `None` before any reading
    /// of it.
    pub(crate) container_cpu_percent: Option<f64>,
    /// Containers whose removal failed, so far.
    pub(crate) cleanup_failures: u64,
    /// LLM calls that ended, so far.
    pub(crate) llm_calls: u64,
    /// Their cost so far, in US dollars.
    pub(crate) llm_cost_usd: f64,
    /// Iterations completed so far.
    pub(crate) iterations: u64,
    /// Alerts firing.
    pub(crate) alerts_firing: u8,
    /// Video memory of the loop's processes over every GPU still answering whose
    /// processes NVML could list, in bytes; `None` (left out) before the GPU sampler
    /// read such a device and while its readings are stale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) gpu_loop_memory_bytes: Option<f64>,
}

/// Entries of the event log kept in memory; the oldest are dropped first (and
/// counted).
pub(crate) const MAX_EVENTS: usize = 1024;

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum LogEntryKind {
    /// The champion changed.
    ChampionChanged {
        /// The new champion's identity.
        champion: String,
    },
    /// An alert changed state.
    Alert {
        /// Which alert.
        alertname: AlertName,
        /// The state it entered.
        state: AlertState,
        /// The fixed message.
        message: &'static str,
        /// The value the rule looked at (absent when it resolved).
        value: Option<f64>,
        /// Its threshold.
        threshold: f64,
        /// What qualifies the value (the LLM spend alerts': a lower bound).
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<&'static str>,
        /// What the alert is about, when it is one thing among many (EvaluationHung:
        /// the evaluation).
        #[serde(skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
    },
    /// `loopwatch run` started the loop again after it ended.
    Restarted {
        /// Why the previous process ended (`exited`, `stalled`).
        reason: ExitReason,
        /// The previous process's exit status (128 + signal for a signal).
        status: i32,
        /// Restarts within the restart window, this one included.
        recent_restarts: u64,
    },
    /// The LLM budget: a warning at a share of it, or the first call it refused.
    LlmBudget(crate::llm::budget::BudgetMark),
    /// Errors on a GPU: a critical Xid error, or uncorrected ECC errors the driver
    /// counted since the previous sample.
    GpuError {
        /// NVML's index of the device; `null` for an Xid error of a device NVML no
        /// longer names.
        gpu: Option<u32>,
        /// Its UUID; `null` likewise.
        uuid: Option<String>,
        /// `xid` or `uncorrected`.
        error: &'static str,
        /// How many.
        count: u64,
        /// How many of them GPUErrors counts: a fatal Xid (`[gpu] fatal_xids`) or
        /// uncorrected ECC errors, on a GPU the loop uses when it uses any, an ECC
        /// Xid and the count's rise for the same fault once.
        alerting: u64,
        /// The Xid code, for an Xid error NVML could name.
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<u64>,
    },
    /// A GPU stopped answering (NVML: "GPU is lost").
    GpuLost {
        /// NVML's index of the device.
        gpu: u32,
        /// Its UUID.
        uuid: String,
    },
    /// A degradation or slowdown warning started or cleared.
    Warning {
        /// The quantity.
        metric: &'static str,
        /// The fixed warning text.
        message: &'static str,
        /// True when it started, false when it cleared.
        started: bool,
        /// The rolling value.
        value: f64,
        /// The baseline.
        baseline: f64,
    },
}

/// One entry of the run's event log, for dashboard annotations and
/// `metrics_final.json` (its `events`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct LogEntry {
    /// When it happened.
    #[serde(serialize_with = "serialize_time")]
    pub(crate) at: SystemTime,
    /// The iteration it belongs to.
    pub(crate) iteration: u64,
    /// What happened.
    #[serde(flatten)]
    pub(crate) kind: LogEntryKind,
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Serialises a time as RFC 3339 with milliseconds.
pub(crate) fn serialize_time<S: serde::Serializer>(
    t: &SystemTime,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

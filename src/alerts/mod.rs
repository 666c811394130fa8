//! The alert table ([`ALERTS`]): every alert loopwatch or its Prometheus rules raise,
//! one row ([`AlertSpec`]) each with all there is to know about it: its name,
//! severity, message, threshold keys and runbook; how loopwatch's own evaluator judges
//! it (the `Trigger` that brings its `Evidence` up to date, and its `Verdict` over that
//! evidence); its Prometheus rule ([`RuleSpec`]); and the boundary cases promtool
//! checks the rule against ([`BoundaryCase`], its [`BoundarySeries`] and
//! [`BoundaryCheck`]s, which `loopwatch rules` writes as the promtool tests). Every
//! layer speaks this vocabulary: the evaluator judges each row on its trigger, the
//! exporters label and deliver, the generated rules and their tests come from the
//! rows. Also here: the alert states and the watched rolling values. docs/alerts.md
//! lists the alerts for readers in a table of its own, written by hand and checked
//! against these rows (`tests/readme.rs`).
//!
//! The crate root re-exports what a loop meets (the rows, names, states and
//! severities); the boundary cases are only here.

mod boundary;
mod evidence;
mod promql;
mod rolling;
mod verdicts;

use enum_map::Enum;
use serde::Serialize;

use crate::catalog;
use crate::config::Thresholds;
pub use boundary::{BoundaryCase, BoundaryCheck, BoundarySeries};
pub(crate) use evidence::{Evidence, Trigger, GPU_ERRORS_WINDOW, LLM_SERVER_PREEMPTION_WINDOW};
pub(crate) use rolling::{RollingValues, Watched};
pub(crate) use verdicts::Verdict;

/// How urgent an alert is: its `severity` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Severity {
    /// The process or the host is at risk: someone should look now.
    Critical,
    /// The search is going wrong: someone should look soon.
    Warning,
}

impl Severity {
    /// The `severity` label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
        }
    }
}

/// The Prometheus rule of an alert, or why it has none.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum RuleSpec {
    /// A generated alerting rule.
    Rule {
        /// The PromQL expression, with the alert's labels.
        expr: fn(&Thresholds) -> String,
        /// The `description` annotation (may use `{{ $value }}`).
        description: fn(&Thresholds) -> String,
        /// The rule's `for`, a Prometheus duration (`30s`, `2m`): fixed, or from the
        /// thresholds.
        pending_for: fn(&Thresholds) -> String,
    },
    /// Only loopwatch's own evaluator raises it, for this reason.
    InProcessOnly(&'static str),
}

/// Whether loopwatch's own evaluator raises an alert, or why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Evaluated {
    /// In process: this [`AlertName`].
    InProcess(AlertName),
    /// Only Prometheus raises it, for this reason.
    PrometheusOnly(&'static str),
}

/// One row of the alert table: everything about one alert that every layer uses.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct AlertSpec {
    /// The `alertname` label.
    pub name: &'static str,
    /// Its `severity` label.
    pub severity: Severity,
    /// The fixed message: log text and the Alertmanager summary, the same everywhere.
    pub message: &'static str,
    /// The [`Thresholds`] keys it reads.
    pub threshold_keys: &'static [&'static str],
    /// Its runbook: a section of docs/runbooks.md (`docs/runbooks.md#<anchor>`, the
    /// alert's name in lower case), relative to the repository's root.
    pub runbook: &'static str,
    /// Its Prometheus rule, or why it has none.
    pub rule: RuleSpec,
    /// Its rule's boundary cases: the promtool unit tests `loopwatch rules` writes
    /// (none for an alert without a rule).
    pub boundary: fn(&Thresholds) -> Vec<BoundaryCase>,
    /// Whether the in-process evaluator raises it.
    pub evaluated: Evaluated,
    /// The threshold shown beside its value.
    pub threshold: fn(&Thresholds) -> f64,
}

/// How the evaluator judges an alert raised in process: from its row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Judge {
    /// What brings its evidence up to date, and so when it is judged.
    pub(crate) on: Trigger,
    /// What its condition concludes from the evidence.
    pub(crate) verdict: fn(&Evidence, &Thresholds) -> Verdict,
    /// The limit a transition shows when the evidence moves it (a stall limit that
    /// follows the mean iteration time); else the row's threshold.
    pub(crate) against: Option<fn(&Evidence) -> f64>,
    /// A qualification of the value said beside the fixed message, when the evidence
    /// calls for one.
    pub(crate) note: Option<fn(&Evidence) -> Option<&'static str>>,
}

/// The alert table: one row per alert. A row with a variant name becomes an
/// [`AlertName`] (raised in process) and its [`Judge`]; a row under
/// `@prometheus_only` is a rule alone. Each row also becomes an entry of [`ALERTS`].
///
/// A row raised in process says `on:` which [`Trigger`] judges it and gives its
/// `verdict:` over the [`Evidence`] (a closure for one comparison, else a function of
/// `verdicts`), optionally `against:` (a limit the evidence moves) and `note:`. Every
/// row gives its `rule:` and the `boundary:` cases that test it.
macro_rules! alert_table {
    (
        $(
            $(#[doc = $doc:literal])*
            $variant:ident {
                severity: $severity:ident,
                message: $message:literal,
                $(pending_message: $pending:literal,)?
                runbook: $runbook:literal,
                thresholds: [$($key:literal),*],
                threshold: $threshold:expr,
                on: $trigger:ident,
                verdict: $verdict:expr,
                $(against: $against:expr,)?
                $(note: $note:expr,)?
                rule: $rule:expr,
                boundary: $boundary:expr,
            }
        )*
        @prometheus_only {
            $(
                $(#[doc = $pdoc:literal])*
                $pname:ident {
                    severity: $pseverity:ident,
                    message: $pmessage:literal,
                    runbook: $prunbook:literal,
                    thresholds: [$($pkey:literal),*],
                    rule: $prule:expr,
                    boundary: $pboundary:expr,
                    why: $why:literal,
                }
            )*
        }
    ) => {
        /// The alerts loopwatch's evaluator raises, with their fixed names and
        /// messages. New alerts may be added: match with a wildcard arm.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Enum)]
        #[non_exhaustive]
        pub enum AlertName {
            $($(#[doc = $doc])* $variant,)*
        }

        impl AlertName {
            /// Every alert raised in process, in a fixed order.
            pub const ALL: [AlertName; [$(stringify!($variant)),*].len()] =
                [$(AlertName::$variant,)*];

            /// Its row of the alert table.
            pub const fn spec(self) -> &'static AlertSpec {
                match self {
                    $(AlertName::$variant => &ALERTS[AlertName::$variant as usize],)*
                }
            }

            /// How the evaluator judges it.
            pub(crate) const fn judge(self) -> &'static Judge {
                &JUDGES[self as usize]
            }

            /// What the log warns when the alert becomes pending, for an alert whose
            /// pending state is news of its own (a budget about to be passed); the
            /// others' pending states are logged at debug level.
            pub(crate) const fn pending_message(self) -> Option<&'static str> {
                match self {
                    $(AlertName::$variant => optional!($($pending)?),)*
                }
            }
        }

        /// How the evaluator judges each alert raised in process, in [`AlertName`]
        /// order.
        const JUDGES: [Judge; AlertName::ALL.len()] = [
            $(Judge {
                on: Trigger::$trigger,
                verdict: $verdict,
                against: optional!($($against)?),
                note: optional!($($note)?),
            },)*
        ];

        /// Every alert, raised in process or by Prometheus alone, in a fixed order:
        /// the in-process ones first, in [`AlertName`] order.
        pub const ALERTS: &[AlertSpec] = &[
            $(AlertSpec {
                name: stringify!($variant),
                severity: Severity::$severity,
                message: $message,
                threshold_keys: &[$($key),*],
                runbook: $runbook,
                rule: $rule,
                boundary: $boundary,
                evaluated: Evaluated::InProcess(AlertName::$variant),
                threshold: $threshold,
            },)*
            $(AlertSpec {
                name: stringify!($pname),
                severity: Severity::$pseverity,
                message: $pmessage,
                threshold_keys: &[$($pkey),*],
                runbook: $prunbook,
                rule: $prule,
                boundary: $pboundary,
                evaluated: Evaluated::PrometheusOnly($why),
                threshold: |_| 0.0,
            },)*
        ];
    };
}

/// `Some` of the value given, else `None`.
macro_rules! optional {
    () => {
        None
    };
    ($value:expr) => {
        Some($value)
    };
}

/// A generated rule from its condition and description: functions of [`promql`], or
/// closures in the row (`|t| promql::as_loop_alert(format!(..))`) for a short one; and
/// its `for`, `0s` unless given: a literal (`"30s"`) or a function of the thresholds.
macro_rules! rule {
    ($expr:expr, $description:expr) => {
        rule!($expr, $description, "0s")
    };
    ($expr:expr, $description:expr, $for:literal) => {
        rule!($expr, $description, |_| $for.to_string())
    };
    ($expr:expr, $description:expr, $for:expr) => {
        RuleSpec::Rule {
            expr: $expr,
            description: $description,
            pending_for: $for,
        }
    };
}

alert_table! {
    /// Memory in use above the threshold (default 80%) of the limit that kills: the
    /// loop's cgroup limit when below host memory, else host memory.
    HighMemoryUsage {
        severity: Critical,
        message: "High memory usage detected",
        runbook: "docs/runbooks.md#highmemoryusage",
        thresholds: ["memory_fraction", "memory_clear_fraction", "memory_samples"],
        threshold: Thresholds::memory_fraction,
        on: HostSample,
        verdict: verdicts::high_memory,
        rule: rule!(promql::high_memory, promql::high_memory_description),
        boundary: boundary::high_memory,
    }
    /// Diversity below the floor for N consecutive iterations (default 0.1 for 5).
    DiversityCollapse {
        severity: Warning,
        message: "Diversity collapse detected",
        runbook: "docs/runbooks.md#diversitycollapse",
        thresholds: ["diversity_floor", "diversity_iterations"],
        threshold: Thresholds::diversity_floor,
        on: Iteration,
        verdict: verdicts::diversity_collapse,
        rule: rule!(promql::diversity_collapse, promql::diversity_collapse_description),
        boundary: |t| {
            let n = t.diversity_iterations();
            vec![BoundaryCase::at_threshold()
                .series(catalog::LOW_DIVERSITY_STREAK_ITERATIONS.name, format!("{} {n}", n - 1))
                .quiet_at("0m")
                .fires_at("1m", n as f64)]
        },
    }
    /// The champion unchanged for N iterations (default 20).
    ChampionStaleness {
        severity: Warning,
        message: "Champion staleness detected",
        runbook: "docs/runbooks.md#championstaleness",
        thresholds: ["staleness_iterations"],
        threshold: |t| t.staleness_iterations() as f64,
        on: Iteration,
        verdict: |e, t| Verdict::firing_if(
            e.champion_staleness >= t.staleness_iterations(),
            e.champion_staleness as f64,
        ),
        rule: rule!(promql::champion_staleness, promql::champion_staleness_description),
        boundary: |t| {
            let s = t.staleness_iterations();
            vec![BoundaryCase::at_threshold()
                .series(catalog::CHAMPION_STALENESS_ITERATIONS.name, format!("{} {s}", s - 1))
                .quiet_at("0m")
                .fires_at("1m", s as f64)]
        },
    }
    /// Success rate below the floor over a full window (default 20% over 10).
    LowSuccessRate {
        severity: Warning,
        message: "Low success rate detected",
        runbook: "docs/runbooks.md#lowsuccessrate",
        thresholds: ["success_rate_floor", "window"],
        threshold: Thresholds::success_rate_floor,
        on: Iteration,
        verdict: verdicts::low_success_rate,
        rule: rule!(promql::low_success_rate, promql::low_success_rate_description),
        boundary: boundary::low_success_rate,
    }
    /// More orphaned containers than the limit (default 3).
    ContainerCleanupFailures {
        severity: Critical,
        message: "Container cleanup failures detected",
        runbook: "docs/runbooks.md#containercleanupfailures",
        thresholds: ["orphan_limit"],
        threshold: |t| t.orphan_limit() as f64,
        on: OrphanSweep,
        verdict: |e, t| Verdict::firing_if(e.orphans > t.orphan_limit(), e.orphans as f64),
        rule: rule!(promql::cleanup_failures, promql::cleanup_failures_description),
        boundary: |t| {
            let limit = t.orphan_limit();
            vec![BoundaryCase::at_threshold()
                .series(catalog::ORPHANED_CONTAINERS.name, format!("{limit} {}", limit + 1))
                .quiet_at("0m")
                .fires_at("1m", (limit + 1) as f64)]
        },
    }
    /// An iteration running, or no new one started after the last ended, far longer
    /// than usual (default: 10 × the rolling mean iteration time, at least 60 s).
    LoopStalled {
        severity: Critical,
        message: "Loop stall detected",
        runbook: "docs/runbooks.md#loopstalled",
        thresholds: ["stall_factor", "stall_floor"],
        threshold: |t| t.stall_floor().as_secs_f64(),
        on: Activity,
        verdict: verdicts::loop_stalled,
        against: |e| e.stall_limit.as_secs_f64(),
        rule: rule!(promql::loop_stalled, promql::loop_stalled_description),
        boundary: boundary::loop_stalled,
    }
    /// A supervised loop (`loopwatch run`) exited non-zero or by a signal without
    /// having said it was done.
    LoopExited {
        severity: Critical,
        message: "Unexpected loop exit detected",
        runbook: "docs/runbooks.md#loopexited",
        thresholds: [],
        // Any failing exit status.
        threshold: |_| 0.0,
        on: Exit,
        // Its value is the shell status.
        verdict: |e, _| match e.unexpected_exit {
            Some(status) => Verdict::Firing(f64::from(status)),
            None => Verdict::Clear,
        },
        rule: rule!(promql::loop_exited, promql::loop_exited_description),
        // The supervisor's own verdict, exported while it lingers.
        boundary: |_| vec![BoundaryCase::at_threshold()
            .series_selector(
                format!(
                    "{}{{alertname=\"LoopExited\", instance=\"loop:8000\", job=\"loopwatch\"}}",
                    catalog::ALERT_FIRING.name
                ),
                "0 1",
            )
            .quiet_at("0m")
            .fires_at("1m", 1.0)],
    }
    /// `loopwatch run --restart` restarted the loop one time fewer than
    /// `max_restarts` within `restart_window` (default 4 within 1 h): one more crash
    /// and it gives up.
    LoopCrashLooping {
        severity: Critical,
        message: "Loop restarting repeatedly",
        runbook: "docs/runbooks.md#loopcrashlooping",
        thresholds: ["max_restarts", "restart_window"],
        threshold: |t| t.crash_loop_restarts() as f64,
        on: Restarts,
        verdict: |e, t| Verdict::firing_if(
            e.recent_restarts >= t.crash_loop_restarts(),
            e.recent_restarts as f64,
        ),
        rule: rule!(promql::crash_looping, promql::crash_looping_description),
        boundary: |t| {
            let n = t.crash_loop_restarts();
            vec![BoundaryCase::at_threshold()
                .series(catalog::LOOP_RESTARTS_RECENT.name, format!("{} {n}", n - 1))
                .quiet_at("0m")
                .fires_at("1m", n as f64)]
        },
    }
    /// At least half of the last 20 LLM calls failed (HTTP 5xx, 429, timeouts,
    /// connection errors, cut-off streams), three at least.
    LLMErrors {
        severity: Critical,
        message: "LLM error rate high",
        runbook: "docs/runbooks.md#llmerrors",
        thresholds: ["llm_error_rate", "llm_error_calls"],
        threshold: Thresholds::llm_error_rate,
        on: Llm,
        verdict: verdicts::llm_errors,
        rule: rule!(promql::llm_errors, promql::llm_errors_description),
        boundary: boundary::llm_errors,
    }
    /// LLM spend since the champion last changed reached
    /// `llm_spend_without_progress_usd` (off until set).
    LLMSpendWithoutProgress {
        severity: Warning,
        message: "LLM spend without progress",
        runbook: "docs/runbooks.md#llmspendwithoutprogress",
        thresholds: ["llm_spend_without_progress_usd"],
        threshold: |t| t.llm_spend_without_progress_usd().unwrap_or(f64::INFINITY),
        on: Llm,
        verdict: verdicts::llm_spend_without_progress,
        note: verdicts::spend_note,
        rule: rule!(promql::llm_spend_without_progress, promql::llm_spend_without_progress_description),
        boundary: |t| boundary::spend(
            catalog::LLM_SPEND_SINCE_CHAMPION_USD.name,
            t.llm_spend_without_progress_usd(),
        ),
    }
    /// LLM spend reached `llm_budget_usd` (off until set); pending while the last
    /// hour's rate would reach it within `llm_budget_horizon`.
    LLMBudget {
        severity: Critical,
        message: "LLM budget exceeded",
        pending_message: "LLM budget will be exceeded within the horizon at the last hour's rate",
        runbook: "docs/runbooks.md#llmbudget",
        thresholds: ["llm_budget_usd", "llm_budget_horizon"],
        threshold: |t| t.llm_budget_usd().unwrap_or(f64::INFINITY),
        on: Llm,
        verdict: verdicts::llm_budget,
        note: verdicts::spend_note,
        rule: rule!(promql::llm_budget, promql::llm_budget_description),
        boundary: |t| boundary::spend(catalog::LLM_SPEND_USD.name, t.llm_budget_usd()),
    }
    /// The least rate-limit headroom the providers' answers state (remaining over
    /// limit, of any limit not yet reset) below `llm_headroom_fraction` (0.1) for
    /// `llm_headroom_for` (30 s): the 429s are near.
    LLMRateLimitNear {
        severity: Warning,
        message: "LLM rate limit near",
        runbook: "docs/runbooks.md#llmratelimitnear",
        thresholds: ["llm_headroom_fraction", "llm_headroom_for"],
        threshold: Thresholds::llm_headroom_fraction,
        on: Llm,
        verdict: verdicts::llm_rate_limit_near,
        rule: rule!(
            promql::llm_rate_limit_near,
            promql::llm_rate_limit_near_description,
            |t| promql::duration(t.llm_headroom_for())
        ),
        boundary: boundary::llm_rate_limit_near,
    }
    /// An evaluation (a candidate's back-test, a program's run) running longer than
    /// `evaluation_factor` (5) times the 95th percentile of the finished evaluations'
    /// durations, at least `evaluation_floor` (10 min, twice OpenEvolve's default
    /// evaluator timeout), while the loop may go on. Resolves once no evaluation is
    /// over the limit.
    EvaluationHung {
        severity: Warning,
        message: "Evaluation hang detected",
        runbook: "docs/runbooks.md#evaluationhung",
        thresholds: ["evaluation_factor", "evaluation_floor"],
        threshold: |t| t.evaluation_floor().as_secs_f64(),
        on: Evaluations,
        verdict: verdicts::evaluation_hung,
        against: |e| e.evaluation_limit.as_secs_f64(),
        rule: rule!(promql::evaluation_hung, promql::evaluation_hung_description),
        boundary: boundary::evaluation_hung,
    }
    /// Video memory in use above `gpu_memory_fraction` (0.95) of a GPU's own, on a
    /// GPU the loop's processes use, for `gpu_memory_for` (1 min) (feature `gpu`).
    GPUMemoryHigh {
        severity: Warning,
        message: "GPU memory nearly full",
        runbook: "docs/runbooks.md#gpumemoryhigh",
        thresholds: ["gpu_memory_fraction", "gpu_memory_for"],
        threshold: Thresholds::gpu_memory_fraction,
        on: Gpu,
        verdict: verdicts::gpu_memory_high,
        rule: rule!(promql::gpu_memory_high, promql::gpu_memory_high_description, "1m"),
        boundary: boundary::gpu_memory_high,
    }
    /// A fatal Xid error (`[gpu] fatal_xids`) or an uncorrected ECC error within the
    /// last 5 minutes, on a GPU the loop's processes use (on any GPU while they use
    /// none), a fault once (feature `gpu`); resolves 5 minutes after the last.
    GPUErrors {
        severity: Critical,
        message: "GPU errors detected",
        runbook: "docs/runbooks.md#gpuerrors",
        thresholds: [],
        // Any new error.
        threshold: |_| 0.0,
        on: Gpu,
        verdict: |e, _| Verdict::firing_if(e.gpu_errors > 0, e.gpu_errors as f64),
        rule: rule!(promql::gpu_errors, promql::gpu_errors_description),
        boundary: boundary::gpu_errors,
    }
    /// A local model server (`[[llm.servers]]`) saturated at every read for
    /// `llm_server_saturated_for` (2 min): requests waiting while its KV cache is at
    /// least `llm_server_kv_cache_fraction` (0.9) full, or requests preempted (SGLang:
    /// retracted) within the minute before. Its value is that server's KV-cache usage;
    /// the server is named beside it.
    LLMServerSaturated {
        severity: Warning,
        message: "LLM model server saturated",
        runbook: "docs/runbooks.md#llmserversaturated",
        thresholds: ["llm_server_kv_cache_fraction", "llm_server_saturated_for"],
        threshold: Thresholds::llm_server_kv_cache_fraction,
        on: ModelServers,
        verdict: verdicts::llm_server_saturated,
        rule: rule!(
            promql::llm_server_saturated,
            promql::llm_server_saturated_description,
            |t| promql::duration(t.llm_server_saturated_for())
        ),
        boundary: boundary::llm_server_saturated,
    }
    @prometheus_only {
        /// Prometheus cannot scrape a loop that was running and never said it was done.
        LoopDown {
            severity: Critical,
            message: "Loop target down",
            runbook: "docs/runbooks.md#loopdown",
            thresholds: [],
            rule: rule!(promql::loop_down, promql::loop_down_description, "30s"),
            boundary: boundary::loop_down,
            why: "a loop that died cannot report its own death; only its scraper can",
        }
        /// The dead-man of a fleet: a loop's series stopped arriving (its host, or the
        /// agent scraping it, is gone) without its having said it was done.
        LoopVanished {
            severity: Critical,
            message: "Loop vanished",
            runbook: "docs/runbooks.md#loopvanished",
            thresholds: [],
            rule: rule!(promql::loop_vanished, promql::loop_vanished_description, "30s"),
            boundary: boundary::loop_vanished,
            why: "a loop whose host is gone cannot report anything; only the store its series went to can",
        }
    }
}

impl AlertName {
    /// The `alertname` label.
    ///
    /// ```
    /// assert_eq!(loopwatch::AlertName::LowSuccessRate.as_str(), "LowSuccessRate");
    /// ```
    pub const fn as_str(self) -> &'static str {
        self.spec().name
    }

    /// The fixed message, used as log text and as the Alertmanager summary.
    ///
    /// ```
    /// assert_eq!(
    ///     loopwatch::AlertName::DiversityCollapse.message(),
    ///     "Diversity collapse detected"
    /// );
    /// ```
    pub const fn message(self) -> &'static str {
        self.spec().message
    }

    /// The `severity` label: `critical` where the process or host is at risk.
    ///
    /// ```
    /// assert_eq!(loopwatch::AlertName::HighMemoryUsage.severity(), "critical");
    /// ```
    pub const fn severity(self) -> &'static str {
        self.spec().severity.as_str()
    }

    /// The threshold its value is compared against, as shown beside the value.
    pub fn threshold(self, thresholds: &Thresholds) -> f64 {
        (self.spec().threshold)(thresholds)
    }
}

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition does not hold.
    #[default]
    Inactive,
    /// The condition holds but not yet for long enough (a streak still short of its
    /// length, a success rate over a window not yet full).
    Pending,
    /// The condition holds: the alert has fired and stays firing until it clears.
    Firing,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_hold_every_variant_once() {
        let alerts: std::collections::HashSet<_> = AlertName::ALL.into_iter().collect();
        assert_eq!(
            alerts.len(),
            enum_map::EnumMap::<AlertName, ()>::default().len()
        );
        let watched: std::collections::HashSet<_> = Watched::ALL.into_iter().collect();
        assert_eq!(
            watched.len(),
            enum_map::EnumMap::<Watched, ()>::default().len()
        );
        for (i, alert) in AlertName::ALL.iter().enumerate() {
            assert_eq!(alert.into_usize(), i, "ALL is in declaration order");
            assert_eq!(ALERTS[i].evaluated, Evaluated::InProcess(*alert));
            assert_eq!(alert.spec().name, format!("{alert:?}"));
        }
        let names: std::collections::HashSet<_> = ALERTS.iter().map(|a| a.name).collect();
        assert_eq!(names.len(), ALERTS.len(), "alert names are unique");
        for spec in ALERTS {
            for key in spec.threshold_keys {
                assert!(
                    Thresholds::KEYS.contains(key),
                    "{}: unknown key {key}",
                    spec.name
                );
            }
            if let RuleSpec::InProcessOnly(why) = spec.rule {
                assert!(!why.is_empty(), "{} says why it has no rule", spec.name);
            }
            if let Evaluated::PrometheusOnly(why) = spec.evaluated {
                assert!(
                    !why.is_empty(),
                    "{} says why it is not raised in process",
                    spec.name
                );
            }
        }
    }
}

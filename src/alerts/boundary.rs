//! Boundary cases: the promtool unit tests of an alert's Prometheus rule, declared as
//! data in its row of the alert table. A case feeds the rule series sampled once per
//! interval, from one scraped test loop, and checks the rule at given times: quiet, or
//! firing with a value (which its description renders). `loopwatch rules` writes every
//! row's cases to `prometheus/tests/loopwatch.rules_test.yml`, which promtool runs.
//!
//! Most alerts need one case, the threshold crossed between two samples, written in
//! their row:
//!
//! ```
//! # let limit = 3;
//! use loopwatch::{alerts::BoundaryCase, catalog};
//! let case = BoundaryCase::at_threshold()
//!     .series(catalog::ORPHANED_CONTAINERS.name, format!("{limit} {}", limit + 1))
//!     .quiet_at("0m")
//!     .fires_at("1m", (limit + 1) as f64);
//! assert_eq!(case.checks.len(), 2);
//! ```
//!
//! The cases of the alerts that need more (a stall over time, hysteresis, a limit
//! that may be off, a loop that vanishes) are the functions of this module.

use crate::catalog;
use crate::config::Thresholds;
use crate::llm::LLM_ERRORS_MIN_FAILURES;

/// The run id of the test loop: a loop alert carries it as `run_id`.
const TEST_RUN_ID: &str = "run-1";
/// The host name of the test loop: a loop alert carries it as `instance`.
const TEST_HOST: &str = "host-a";
/// The labels a scrape gives the test loop's series.
const SCRAPED: &str = "instance=\"loop:8000\", job=\"loopwatch\"";
/// The samples of the test loop's `loopwatch_run_info` unless a case says otherwise.
const RUN_INFO_SAMPLES: &str = "1+0x10";

/// One promtool unit test of an alert's rule: series in, the rule checked at given
/// times. Built with [`BoundaryCase::at_threshold`] or [`BoundaryCase::new`] and the
/// methods that follow them.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BoundaryCase {
    /// What the case shows: the test's name, after the alert's own
    /// (`fires at its threshold, not before`).
    pub shows: String,
    /// The time between two samples of a series (`1m`).
    pub interval: &'static str,
    /// The series the case feeds the rule.
    pub series: Vec<BoundarySeries>,
    /// The samples of the test loop's `loopwatch_run_info`, fed after the other
    /// series: the loop alerts' rules join it for `run_id` and `instance`. `None` for
    /// a case that feeds its own, or none.
    pub run_info: Option<String>,
    /// The checks, in time order.
    pub checks: Vec<BoundaryCheck>,
}

/// A series a boundary case feeds the rule.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BoundarySeries {
    /// The metric's name and labels: `orphaned_containers{instance="loop:8000", job="loopwatch"}`.
    pub series: String,
    /// Its samples, one per interval, in promtool's expanding notation (`3 4`,
    /// `60+0x70`).
    pub values: String,
}

/// A check of the rule at one time.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BoundaryCheck {
    /// When, from the first sample (`1m`, `75s`).
    pub at: String,
    /// The value the alert fires with then (what its description shows), or `None`
    /// when it must be quiet.
    pub fires_with: Option<f64>,
    /// The labels the firing alert carries besides `severity`: those of a loop alert
    /// (`instance` the host name, `job`, `run_id`) unless the case says otherwise.
    pub labels: Vec<(&'static str, &'static str)>,
}

impl BoundaryCase {
    /// A case that shows `shows`, sampled once a minute from the test loop (its
    /// `loopwatch_run_info` included), with no series and no checks yet.
    pub fn new(shows: impl Into<String>) -> Self {
        BoundaryCase {
            shows: shows.into(),
            interval: "1m",
            series: Vec::new(),
            run_info: Some(RUN_INFO_SAMPLES.to_string()),
            checks: Vec::new(),
        }
    }

    /// The usual case: the alert fires at its threshold, not one step before.
    pub fn at_threshold() -> Self {
        BoundaryCase::new("fires at its threshold, not before")
    }

    /// Samples every `interval` instead of every minute.
    pub fn every(mut self, interval: &'static str) -> Self {
        self.interval = interval;
        self
    }

    /// Feeds the test loop's series of `metric` with `values` (expanding notation).
    pub fn series(self, metric: &str, values: impl Into<String>) -> Self {
        self.series_selector(format!("{metric}{{{SCRAPED}}}"), values)
    }

    /// Feeds the series `selector` (a metric's name and all its labels) with `values`.
    pub fn series_selector(
        mut self,
        selector: impl Into<String>,
        values: impl Into<String>,
    ) -> Self {
        self.series.push(BoundarySeries {
            series: selector.into(),
            values: values.into(),
        });
        self
    }

    /// Feeds the test loop's `loopwatch_run_info` with `values` instead of `1+0x10`
    /// (a case longer than ten samples).
    pub fn run_info(mut self, values: impl Into<String>) -> Self {
        self.run_info = Some(values.into());
        self
    }

    /// Feeds no `loopwatch_run_info` of the test loop: for a rule that does not join
    /// it, or a case that feeds its own.
    pub fn without_run_info(mut self) -> Self {
        self.run_info = None;
        self
    }

    /// Checks that the alert is quiet `at`.
    pub fn quiet_at(mut self, at: impl Into<String>) -> Self {
        self.checks.push(BoundaryCheck {
            at: at.into(),
            fires_with: None,
            labels: Vec::new(),
        });
        self
    }

    /// Checks that the alert fires `at` with `value`, labelled as a loop alert is.
    pub fn fires_at(self, at: impl Into<String>, value: f64) -> Self {
        self.fires_with_labels(
            at,
            value,
            &[
                ("instance", TEST_HOST),
                ("job", "loopwatch"),
                ("run_id", TEST_RUN_ID),
            ],
        )
    }

    /// Checks that the alert fires `at` with `value` and `labels` besides `severity`.
    pub fn fires_with_labels(
        mut self,
        at: impl Into<String>,
        value: f64,
        labels: &[(&'static str, &'static str)],
    ) -> Self {
        self.checks.push(BoundaryCheck {
            at: at.into(),
            fires_with: Some(value),
            labels: labels.to_vec(),
        });
        self
    }

    /// Every series the case feeds: its own, then the test loop's
    /// `loopwatch_run_info` when it has one.
    pub fn input_series(&self) -> Vec<BoundarySeries> {
        let mut series = self.series.clone();
        if let Some(values) = &self.run_info {
            series.push(BoundarySeries {
                series: format!(
                    "{}{{{SCRAPED}, run_id=\"{TEST_RUN_ID}\", hostname=\"{TEST_HOST}\"}}",
                    catalog::RUN_INFO.name
                ),
                values: values.clone(),
            });
        }
        series
    }
}

/// Memory as a limit of 1e9 bytes shows `fraction` of it: the used bytes.
fn bytes(fraction: f64) -> String {
    ((fraction * 1e9) as u64).to_string()
}

/// HighMemoryUsage: just below, then just above the fraction; and, once firing, held
/// between the clear fraction and the threshold, resolved below, as in process.
pub(super) fn high_memory(t: &Thresholds) -> Vec<BoundaryCase> {
    let (fire, clear) = (t.memory_fraction(), t.memory_clear_fraction());
    let above = fire + 0.001;
    let crossing = BoundaryCase::at_threshold()
        .series(
            catalog::MEMORY_USED_BYTES.name,
            format!("{} {}", bytes(fire - 0.001), bytes(above)),
        )
        .series(catalog::MEMORY_LIMIT_BYTES.name, "1000000000 1000000000")
        .quiet_at("0m")
        .fires_at("1m", above);
    let between = (fire + clear) / 2.0;
    let hysteresis =
        BoundaryCase::new("holds between the clear fraction and the threshold, and resolves below")
            .series(
                catalog::MEMORY_USED_BYTES.name,
                [between, above, between, clear - 0.001]
                    .map(bytes)
                    .join(" "),
            )
            .series(
                catalog::MEMORY_LIMIT_BYTES.name,
                "1000000000 1000000000 1000000000 1000000000",
            )
            .quiet_at("0m")
            .fires_at("1m", above)
            .fires_at("2m", between)
            .quiet_at("3m");
    vec![crossing, hysteresis]
}

/// LowSuccessRate: exactly at the floor is quiet; below it fires only with a full
/// window. A full window without outcomes has no rate, and raises nothing, whatever
/// the gauge kept from before.
pub(super) fn low_success_rate(t: &Thresholds) -> Vec<BoundaryCase> {
    let w = t.window();
    let low = t.success_rate_floor() - 0.01;
    let crossing = BoundaryCase::at_threshold()
        .series(
            catalog::SUCCESS_RATE_10ITER.name,
            format!("{} {low} {low}", t.success_rate_floor()),
        )
        .series(
            catalog::ROLLING_WINDOW_ITERATIONS.name,
            format!("{w} {} {w}", w - 1),
        )
        .series(catalog::ROLLING_WINDOW_OUTCOMES.name, "10 10 10")
        .quiet_at("0m")
        .quiet_at("1m")
        .fires_at("2m", low);
    let half = t.success_rate_floor() / 2.0;
    let no_outcomes = BoundaryCase::new("stays quiet over a window without outcomes")
        .series(catalog::SUCCESS_RATE_10ITER.name, format!("{half} {half}"))
        .series(catalog::ROLLING_WINDOW_ITERATIONS.name, format!("{w} {w}"))
        .series(catalog::ROLLING_WINDOW_OUTCOMES.name, "0 0")
        .quiet_at("1m");
    vec![crossing, no_outcomes]
}

/// LoopStalled: an iteration that started at t = 60 s and never ends, after
/// iterations of 1 s. The limit is the larger of the factor times 1 s and the floor;
/// quiet at the limit, firing at the next evaluation (rules run every 2 s).
pub(super) fn loop_stalled(t: &Thresholds) -> Vec<BoundaryCase> {
    let limit = (t.stall_factor() * 1.0)
        .max(t.stall_floor().as_secs_f64())
        .ceil() as u64;
    let started = 60u64;
    let past_by = 2;
    let samples = started + limit + past_by + 1;
    vec![BoundaryCase::at_threshold()
        .every("1s")
        .series(
            catalog::ITERATION_START_TIMESTAMP_SECONDS.name,
            format!("{started}+0x{samples}"),
        )
        .series(
            catalog::ITERATION_END_TIMESTAMP_SECONDS.name,
            format!("{}+0x{samples}", started - 1),
        )
        .series(
            catalog::ROLLING_EXECUTION_TIME_SECONDS.name,
            format!("1+0x{samples}"),
        )
        .series(catalog::LOOP_DONE.name, format!("0+0x{samples}"))
        .run_info(format!("1+0x{samples}"))
        .quiet_at(format!("{}s", started + limit))
        .fires_at(
            format!("{}s", started + limit + past_by),
            (limit + past_by) as f64,
        )]
}

/// EvaluationHung: the oldest evaluation's age against the limit the loop exports,
/// never below the floor. With the limit at the floor: quiet at it, firing a second
/// past it; with a limit the p95 lifted above the floor: quiet past the floor, firing
/// past the limit; and quiet again once the evaluation has ended.
pub(super) fn evaluation_hung(t: &Thresholds) -> Vec<BoundaryCase> {
    let floor = t.evaluation_floor().as_secs_f64() as u64;
    let lifted = floor * 2;
    let case = |shows: &str, limit: u64, exported: u64| {
        BoundaryCase::new(shows)
            .series(
                catalog::EVALUATION_OLDEST_SECONDS.name,
                format!("{limit} {} 0", limit + 1),
            )
            .series(
                catalog::EVALUATION_HUNG_LIMIT_SECONDS.name,
                format!("{exported} {exported} {exported}"),
            )
            .quiet_at("0m")
            .fires_at("1m", (limit + 1) as f64)
            .quiet_at("2m")
    };
    vec![
        case(
            "fires past the floor (the limit not yet exported), and resolves when the evaluation ends",
            floor,
            0,
        ),
        case(
            "fires past a limit the p95 lifted above the floor, not before",
            lifted,
            lifted,
        ),
    ]
}

/// LLMErrors at its share: the calls and failures in the window, one failure short,
/// then enough.
pub(super) fn llm_errors(t: &Thresholds) -> Vec<BoundaryCase> {
    let calls = t.llm_error_calls().max(LLM_ERRORS_MIN_FAILURES * 2);
    let failures = ((t.llm_error_rate() * calls as f64).ceil() as u64).max(LLM_ERRORS_MIN_FAILURES);
    vec![BoundaryCase::at_threshold()
        .series(catalog::LLM_RECENT_CALLS.name, format!("{calls} {calls}"))
        .series(
            catalog::LLM_RECENT_FAILURES.name,
            format!("{} {failures}", failures - 1),
        )
        .quiet_at("0m")
        .fires_at("1m", failures as f64 / calls as f64)]
}

/// LLMRateLimitNear, sampled every second (rules run every 2 s): the least headroom
/// at the fraction, then below it from 1 s on, then whole again. Pending while below
/// for less than `llm_headroom_for` (the rule's `for`), firing with the headroom once
/// it has been, quiet again once it is back.
pub(super) fn llm_rate_limit_near(t: &Thresholds) -> Vec<BoundaryCase> {
    let fraction = t.llm_headroom_fraction();
    let held = t.llm_headroom_for().as_secs().max(1);
    let low = fraction / 2.0;
    vec![BoundaryCase::at_threshold()
        .every("1s")
        .series(
            catalog::LLM_RATELIMIT_HEADROOM_RATIO.name,
            format!("{fraction} {low}+0x{} 1+0x5", held + 10),
        )
        .run_info(format!("1+0x{}", held + 20))
        // Low from 1 s, first seen by the evaluation at 2 s: held from there, and
        // fired by the first evaluation (every 2 s) once held.
        .quiet_at(format!("{}s", held.div_ceil(2) * 2))
        .fires_at(format!("{}s", held.div_ceil(2) * 2 + 2), low)
        .quiet_at(format!("{}s", held + 14))]
}

/// An LLM spend alert over `metric`: at its limit when set (just under it is quiet),
/// and quiet however much is spent while it is off.
pub(super) fn spend(metric: &str, limit: Option<f64>) -> Vec<BoundaryCase> {
    vec![match limit {
        Some(limit) => BoundaryCase::at_threshold()
            .series(metric, format!("{} {limit}", limit * 0.99))
            .quiet_at("0m")
            .fires_at("1m", limit),
        None => BoundaryCase::new("stays quiet while its limit is not set")
            .series(metric, "1e12 1e12")
            .quiet_at("1m"),
    }]
}

/// A GPU's series of the test loop: its labels and the scrape's.
fn gpu_series(metric: &str, extra: &str) -> String {
    format!("{metric}{{{SCRAPED}, hw_id=\"GPU-0\", gpu_index=\"0\"{extra}}}")
}

/// GPUMemoryHigh: above the fraction on a GPU the loop uses fires after its `for`
/// (1 min), not before; as full a GPU the loop does not use raises nothing.
pub(super) fn gpu_memory_high(t: &Thresholds) -> Vec<BoundaryCase> {
    let limit = 1_000_000_000u64;
    let used = |fraction: f64| ((fraction * limit as f64) as u64).to_string();
    let (below, above) = (
        t.gpu_memory_fraction() - 0.001,
        t.gpu_memory_fraction() + 0.001,
    );
    let case = |shows: &str, ours: &str| {
        BoundaryCase::new(shows)
            .series_selector(
                gpu_series(catalog::HW_GPU_MEMORY_USAGE_BYTES.name, ""),
                format!(
                    "{} {} {} {}",
                    used(below),
                    used(above),
                    used(above),
                    used(above)
                ),
            )
            .series_selector(
                gpu_series(catalog::HW_GPU_MEMORY_LIMIT_BYTES.name, ""),
                format!("{limit} {limit} {limit} {limit}"),
            )
            .series_selector(gpu_series(catalog::GPU_LOOP_PROCESSES.name, ""), ours)
    };
    let above_value = used(above).parse::<f64>().unwrap_or(0.0) / limit as f64;
    vec![
        case(
            "fires at its threshold held for a minute, not before",
            "1 1 1 1",
        )
        .quiet_at("0m")
        .quiet_at("1m")
        .fires_at("2m", above_value),
        case("stays quiet on a GPU the loop does not use", "0 0 0 0").quiet_at("3m"),
    ]
}

/// GPUErrors: an error it counts fires at once, with the count; five minutes without
/// a new one resolve it; errors it does not count (an application's Xid, corrected
/// ECC errors, a GPU the loop does not use) raise nothing, however many.
pub(super) fn gpu_errors(_: &Thresholds) -> Vec<BoundaryCase> {
    let alerting = gpu_series(catalog::GPU_ALERTING_ERRORS_TOTAL.name, "");
    let errors = |kind: &str| {
        gpu_series(
            catalog::HW_ERRORS_TOTAL.name,
            &format!(", hw_type=\"gpu\", error_type=\"{kind}\""),
        )
    };
    vec![
        BoundaryCase::new("fires at a new error it counts, and resolves five minutes after it")
            .series_selector(alerting.clone(), "0 0 1 1 1 1 1 1 1 1")
            .series_selector(errors("xid"), "0 0 1 1 1 1 1 1 1 1")
            .run_info("1+0x10")
            .quiet_at("1m")
            .fires_at("2m", 1.0)
            .quiet_at("8m"),
        BoundaryCase::new("counts what loopwatch counts for it, not every error")
            .series_selector(alerting, "0 0 0 2 2")
            .series_selector(errors("xid"), "0 4 9 9 9")
            .series_selector(errors("uncorrected"), "0 0 0 2 2")
            .series_selector(errors("corrected"), "0 5 9 9 9")
            .quiet_at("2m")
            .fires_at("3m", 2.0),
    ]
}

/// LoopDown: a loop killed mid-run fires once down for 30 s (its `for`), not a
/// sample before; one that said it was done, and a target where no loop ever ran,
/// never do; nor does a first run that ended cleanly, while a second that died does.
pub(super) fn loop_down(_: &Thresholds) -> Vec<BoundaryCase> {
    let target = [("instance", "loop:8000"), ("job", "loopwatch")];
    let done = catalog::LOOP_DONE.name;
    let case = |shows: &str| BoundaryCase::new(shows).every("15s").without_run_info();
    vec![
        // Up for a minute, not done, then gone: down from 60 s, firing at 90 s.
        case("fires for a loop killed mid-run")
            .series("up", "1 1 1 1 0 0 0 0 0")
            .series(done, "0 0 0 0")
            .quiet_at("1m")
            .quiet_at("75s")
            .fires_with_labels("90s", 0.0, &target),
        case("stays quiet for a loop that said it was done")
            .series("up", "1 1 1 1 0 0 0 0 0 0 0 0")
            .series(done, "0 0 0 1")
            .quiet_at("2m")
            .quiet_at("3m"),
        case("stays quiet where no loop ever ran")
            .series("up", "0 0 0 0 0 0 0 0 0 0 0 0")
            .quiet_at("1m")
            .quiet_at("3m"),
        // A first run that ended cleanly, a second that died: down from 75 s, seen
        // by the evaluation at 76 s (the rules run every 2 s), firing from 106 s.
        case("fires for a restarted loop that crashed")
            .series("up", "1 1 0 1 1 0 0 0 0")
            .series(done, "0 1 _ 0 0")
            .quiet_at("105s")
            .fires_with_labels("2m", 0.0, &target),
    ]
}

/// LoopVanished: a loop's series stop arriving (no failed scrape: none at all) without
/// its saying it was done; a loop that said so, and one whose scrapes fail (LoopDown's
/// case), raise nothing. The loop is a registered one, with its experiment and loop
/// labels.
pub(super) fn loop_vanished(_: &Thresholds) -> Vec<BoundaryCase> {
    const DISCOVERED: &str = "instance=\"loop:8000\", job=\"loopwatch-discovered\"";
    let case = |shows: &str, done: &str, up: &str| {
        BoundaryCase::new(shows)
            .without_run_info()
            .series_selector(
                format!(
                    "{}{{{DISCOVERED}, run_id=\"{TEST_RUN_ID}\", hostname=\"{TEST_HOST}\", experiment=\"e1\", loop=\"l1\"}}",
                    catalog::RUN_INFO.name
                ),
                "1 1 1",
            )
            .series_selector(format!("{}{{{DISCOVERED}}}", catalog::LOOP_DONE.name), done)
            .series_selector(format!("up{{{DISCOVERED}}}"), up)
    };
    vec![
        // Samples for three minutes, then none: stale after the 5 min lookback (at
        // 7 m), firing 30 s later (its `for`), by the next sample's time.
        case("fires when a loop's series stop arriving", "0 0 0", "1 1 1")
            .quiet_at("6m")
            .quiet_at("7m")
            .fires_with_labels(
                "8m",
                1.0,
                &[
                    ("instance", TEST_HOST),
                    ("job", "loopwatch"),
                    ("run_id", TEST_RUN_ID),
                    ("experiment", "e1"),
                    ("loop", "l1"),
                ],
            ),
        case(
            "stays quiet for a loop that said it was done",
            "0 0 1",
            "1 1 1",
        )
        .quiet_at("9m"),
        case(
            "leaves a failed scrape to LoopDown",
            "0 0 0",
            "1 1 1 0 0 0 0 0 0 0 0 0",
        )
        .quiet_at("9m"),
    ]
}

/// LLMServerSaturated: a server's series, labelled as loopwatch publishes them.
fn server_series(metric: &str) -> String {
    format!("{metric}{{{SCRAPED}, server=\"qwen\", kind=\"vllm\"}}")
}

/// LLMServerSaturated, sampled every 30 s: requests waiting at an engine whose cache
/// is at the fraction fire once held for `llm_server_saturated_for`, not 30 s before;
/// just below the fraction, with none waiting, or with requests waiting at one engine
/// beside another's full cache, nothing; preemptions rising alone (from the second
/// sample), or an older SGLang's retraction gauge above 0, fire too, with the cache's
/// usage as the value.
pub(super) fn llm_server_saturated(t: &Thresholds) -> Vec<BoundaryCase> {
    let fraction = t.llm_server_kv_cache_fraction();
    let held = t.llm_server_saturated_for().as_secs().div_ceil(30) * 30;
    // Samples enough to go a minute past the firing of the last check.
    let samples = held / 30 + 4;
    // The server's fullest cache, the requests waiting, the cache of the fullest
    // engine with requests waiting (absent while none waits), and the preemptions'
    // step.
    let series = |kv: f64, waiting: u64, waiting_kv: Option<f64>, preemptions_step: u64| {
        let mut series = vec![
            (
                catalog::LLM_SERVER_KV_CACHE_USAGE_RATIO.name,
                format!("{kv}+0x{samples}"),
            ),
            (
                catalog::LLM_SERVER_REQUESTS_WAITING.name,
                format!("{waiting}+0x{samples}"),
            ),
            (
                catalog::LLM_SERVER_PREEMPTIONS_TOTAL.name,
                format!("0+{preemptions_step}x{samples}"),
            ),
        ];
        if let Some(waiting_kv) = waiting_kv {
            series.push((
                catalog::LLM_SERVER_WAITING_KV_CACHE_USAGE_RATIO.name,
                format!("{waiting_kv}+0x{samples}"),
            ));
        }
        series
    };
    let with = |shows: &str, series: Vec<(&str, String)>| {
        series.into_iter().fold(
            BoundaryCase::new(shows)
                .every("30s")
                .run_info(format!("1+0x{samples}")),
            |case, (metric, values)| case.series_selector(server_series(metric), values),
        )
    };
    let at_fraction = with(
        "fires once held at the fraction, not before",
        series(fraction, 3, Some(fraction), 0),
    )
    .quiet_at(format!("{}s", held.saturating_sub(30)))
    .fires_at(format!("{held}s"), fraction);
    let below = with(
        "stays quiet just below the fraction",
        series(fraction - 0.001, 3, Some(fraction - 0.001), 0),
    )
    .quiet_at(format!("{}s", held + 60));
    let idle = with(
        "stays quiet with a full cache and no request waiting",
        series(1.0, 0, None, 0),
    )
    .quiet_at(format!("{}s", held + 60));
    let other_engine = with(
        "stays quiet with requests waiting at one engine and another's cache full",
        series(1.0, 3, Some(0.5), 0),
    )
    .quiet_at(format!("{}s", held + 60));
    // The first rise is seen at the second sample: held from there.
    let preempting = with("fires on preemptions rising alone", series(0.5, 0, None, 5))
        .quiet_at(format!("{held}s"))
        .fires_at(format!("{}s", held + 30), 0.5);
    let retracted = |values: String| (catalog::LLM_SERVER_RETRACTED_REQUESTS.name, values);
    let mut retracting_series = series(0.5, 0, None, 0);
    retracting_series.push(retracted(format!("2+0x{samples}")));
    let retracting = with(
        "fires on an older SGLang's retraction gauge above 0 alone",
        retracting_series,
    )
    .quiet_at(format!("{}s", held.saturating_sub(30)))
    .fires_at(format!("{held}s"), 0.5);
    let mut not_retracting_series = series(0.5, 0, None, 0);
    not_retracting_series.push(retracted(format!("0+0x{samples}")));
    let not_retracting = with(
        "stays quiet with the retraction gauge at 0",
        not_retracting_series,
    )
    .quiet_at(format!("{}s", held + 60));
    vec![
        at_fraction,
        below,
        idle,
        other_engine,
        preempting,
        retracting,
        not_retracting,
    ]
}

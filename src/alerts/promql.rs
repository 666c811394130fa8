//! The Prometheus side of each alert: its condition in PromQL over the metrics
//! loopwatch exports, written in the evaluator's own terms, and its description.
//! `loopwatch rules` turns them into the rules file.

use crate::catalog;
use crate::config::Thresholds;

/// The labels a scrape adds that loopwatch's own alerts do not carry: the run info's
/// host name (made `instance`), and a registration's target labels (`host`,
/// `loopwatch_run_id`).
const SCRAPE_ONLY_LABELS: &str = "hostname, host, loopwatch_run_id";

/// An alert over one loop's own gauges, labelled like loopwatch's own alert for the
/// same condition: `loopwatch_run_info` is joined in for `run_id`, `experiment` and
/// `loop`, `instance` becomes the loop's host name and `job` is `loopwatch` whichever
/// job scraped it, so with both paths pointed at one Alertmanager the two are one alert
/// there and notify once.
pub(super) fn as_loop_alert(condition: String) -> String {
    format!(
        "max without ({SCRAPE_ONLY_LABELS}) (label_replace(label_replace(({condition}) * on(instance, job) group_left(run_id, hostname, experiment, loop) {}, \"instance\", \"$1\", \"hostname\", \"(.*)\"), \"job\", \"loopwatch\", \"job\", \".*\"))",
        catalog::RUN_INFO.name
    )
}

/// How long a loop may wait, in PromQL: the stall factor times the rolling mean
/// iteration time, at least the floor, as the evaluator computes it.
fn stall_limit(t: &Thresholds) -> String {
    format!(
        "clamp_min({} * {}, {})",
        t.stall_factor(),
        catalog::ROLLING_EXECUTION_TIME_SECONDS.name,
        t.stall_floor().as_secs_f64()
    )
}

/// The memory fraction, labelled as a loop alert is (see [`as_loop_alert`]).
fn memory_fraction_of_loop() -> String {
    format!(
        "label_replace(label_replace({} / {} * on(instance, job) group_left(run_id, hostname, experiment, loop) {}, \"instance\", \"$1\", \"hostname\", \"(.*)\"), \"job\", \"loopwatch\", \"job\", \".*\")",
        catalog::MEMORY_USED_BYTES.name,
        catalog::MEMORY_LIMIT_BYTES.name,
        catalog::RUN_INFO.name
    )
}

/// Above the fraction fires; once firing, it holds until below the clear fraction,
/// with the evaluator's hysteresis (the rule's own firing state, from `ALERTS`).
/// The evaluator also asks for `memory_samples` consecutive samples (1 by default);
/// the rule fires on the first evaluation above, which with the default is the same.
pub(super) fn high_memory(t: &Thresholds) -> String {
    let fraction = memory_fraction_of_loop();
    format!(
        "max without ({SCRAPE_ONLY_LABELS}) (({fraction} > {}) or (({fraction} >= {}) and on(instance, job, run_id) ALERTS{{alertname=\"HighMemoryUsage\", alertstate=\"firing\"}}))",
        t.memory_fraction(),
        t.memory_clear_fraction()
    )
}

pub(super) fn high_memory_description(t: &Thresholds) -> String {
    format!(
        "Memory in use is {{{{ $value | humanizePercentage }}}} of the limit that kills the loop, its cgroup's or the host's (threshold {}%).",
        t.memory_fraction() * 100.0
    )
}

pub(super) fn diversity_collapse(t: &Thresholds) -> String {
    as_loop_alert(format!(
        "{} >= {}",
        catalog::LOW_DIVERSITY_STREAK_ITERATIONS.name,
        t.diversity_iterations()
    ))
}

pub(super) fn diversity_collapse_description(t: &Thresholds) -> String {
    format!(
        "Population diversity has been below {} for {{{{ $value }}}} consecutive iterations (threshold {}).",
        t.diversity_floor(),
        t.diversity_iterations()
    )
}

pub(super) fn champion_staleness(t: &Thresholds) -> String {
    as_loop_alert(format!(
        "{} >= {}",
        catalog::CHAMPION_STALENESS_ITERATIONS.name,
        t.staleness_iterations()
    ))
}

pub(super) fn champion_staleness_description(t: &Thresholds) -> String {
    format!(
        "The champion has not changed for {{{{ $value }}}} iterations (threshold {}).",
        t.staleness_iterations()
    )
}

/// Below the floor over a full window that holds outcomes: a window without any has
/// no rate (the gauge keeps its last value, or 0 before the first), as in process.
pub(super) fn low_success_rate(t: &Thresholds) -> String {
    as_loop_alert(format!(
        "{} < {} and on(instance, job) {} >= {} and on(instance, job) {} > 0",
        catalog::SUCCESS_RATE_10ITER.name,
        t.success_rate_floor(),
        catalog::ROLLING_WINDOW_ITERATIONS.name,
        t.window(),
        catalog::ROLLING_WINDOW_OUTCOMES.name,
    ))
}

pub(super) fn low_success_rate_description(t: &Thresholds) -> String {
    format!(
        "Strategy success rate over the last {} iterations is {{{{ $value | humanizePercentage }}}} (threshold {}%).",
        t.window(),
        t.success_rate_floor() * 100.0
    )
}

pub(super) fn cleanup_failures(t: &Thresholds) -> String {
    as_loop_alert(format!(
        "{} > {}",
        catalog::ORPHANED_CONTAINERS.name,
        t.orphan_limit()
    ))
}

pub(super) fn cleanup_failures_description(t: &Thresholds) -> String {
    format!(
        "{{{{ $value }}}} orphaned containers could not be removed (threshold {}).",
        t.orphan_limit()
    )
}

/// The least rate-limit headroom below the fraction, held for the rule's `for`
/// (`llm_headroom_for`), as the evaluator asks; its value is the headroom.
pub(super) fn llm_rate_limit_near(t: &Thresholds) -> String {
    as_loop_alert(format!(
        "{} < {}",
        catalog::LLM_RATELIMIT_HEADROOM_RATIO.name,
        t.llm_headroom_fraction()
    ))
}

pub(super) fn llm_rate_limit_near_description(t: &Thresholds) -> String {
    format!(
        "A provider's rate limit has had at most {{{{ $value | humanizePercentage }}}} of it left for {}: 429s are near (threshold {}%).",
        humantime::format_duration(t.llm_headroom_for()),
        t.llm_headroom_fraction() * 100.0
    )
}

pub(super) fn loop_stalled(t: &Thresholds) -> String {
    let start = catalog::ITERATION_START_TIMESTAMP_SECONDS.name;
    let end = catalog::ITERATION_END_TIMESTAMP_SECONDS.name;
    let limit = stall_limit(t);
    as_loop_alert(format!(
        "((time() - {start} > on(instance, job) {limit} \
         and on(instance, job) {start} > {end}) \
         or (time() - {end} > on(instance, job) {limit} \
         and on(instance, job) {end} >= {start} and on(instance, job) {end} > 0)) \
         and on(instance, job) {} == 0",
        catalog::LOOP_DONE.name
    ))
}

pub(super) fn loop_stalled_description(t: &Thresholds) -> String {
    format!(
        "The loop has waited {{{{ $value }}}} s without an iteration starting or ending (limit: {} times the mean iteration time, at least {} s).",
        t.stall_factor(),
        t.stall_floor().as_secs_f64()
    )
}

/// Only the supervisor sees a child's exit status; the rule carries its verdict for
/// the seconds `loopwatch run` lingers (LoopDown covers the time after).
pub(super) fn loop_exited(_: &Thresholds) -> String {
    as_loop_alert(format!(
        "{}{{alertname=\"LoopExited\"}} == 1",
        catalog::ALERT_FIRING.name
    ))
}

pub(super) fn loop_exited_description(_: &Thresholds) -> String {
    "The loop under loopwatch run exited non-zero or by a signal before it said it was done; its exit status is in metrics_final.json.".to_string()
}

/// Restarts within the window, as the supervisor counts them (an exact gauge rather
/// than `increase()` over the counter, which extrapolates a handful of restarts into
/// fractions).
pub(super) fn crash_looping(t: &Thresholds) -> String {
    as_loop_alert(format!(
        "{} >= {}",
        catalog::LOOP_RESTARTS_RECENT.name,
        t.crash_loop_restarts()
    ))
}

pub(super) fn crash_looping_description(t: &Thresholds) -> String {
    format!(
        "loopwatch run restarted the loop {{{{ $value }}}} times within {} (it gives up after {}); its exits are in metrics_final.json (summary.exits).",
        humantime::format_duration(t.restart_window()),
        t.max_restarts()
    )
}

/// The oldest evaluation in flight has run longer than the limit the loop exports (the
/// factor times the p95 of its finished evaluations, which only the loop knows), never
/// less than the floor configured here.
pub(super) fn evaluation_hung(t: &Thresholds) -> String {
    as_loop_alert(format!(
        "{} > on(instance, job) clamp_min({}, {})",
        catalog::EVALUATION_OLDEST_SECONDS.name,
        catalog::EVALUATION_HUNG_LIMIT_SECONDS.name,
        t.evaluation_floor().as_secs_f64()
    ))
}

pub(super) fn evaluation_hung_description(t: &Thresholds) -> String {
    format!(
        "The oldest evaluation in flight has run {{{{ $value }}}} s (limit: {} times the 95th percentile of the finished evaluations' durations, at least {} s); loopwatch's log and its own alert name its id, worker and pid.",
        t.evaluation_factor(),
        t.evaluation_floor().as_secs_f64()
    )
}

/// A limit that may be off: the number, or `+Inf` (a comparison that never holds).
fn limit_or_off(limit: Option<f64>) -> String {
    limit.map_or_else(|| "+Inf".to_string(), |v| v.to_string())
}

/// The failed share of the calls in the window, at least three failures, as the
/// evaluator counts them (exact gauges: the window is the last N calls, which no range
/// over a counter expresses).
pub(super) fn llm_errors(t: &Thresholds) -> String {
    as_loop_alert(format!(
        "({failures} / {calls} >= {}) and ({failures} >= {})",
        t.llm_error_rate(),
        crate::llm::LLM_ERRORS_MIN_FAILURES,
        failures = catalog::LLM_RECENT_FAILURES.name,
        calls = catalog::LLM_RECENT_CALLS.name,
    ))
}

pub(super) fn llm_errors_description(t: &Thresholds) -> String {
    format!(
        "{{{{ $value | humanizePercentage }}}} of the last LLM calls failed (HTTP 5xx, 429, timeouts, connection errors, the provider's server errors; abandoned calls are not counted; threshold {}% of the last {} calls of 15 minutes, three at least).",
        t.llm_error_rate() * 100.0,
        t.llm_error_calls()
    )
}

pub(super) fn llm_spend_without_progress(t: &Thresholds) -> String {
    as_loop_alert(format!(
        "{} >= {}",
        catalog::LLM_SPEND_SINCE_CHAMPION_USD.name,
        limit_or_off(t.llm_spend_without_progress_usd())
    ))
}

pub(super) fn llm_spend_without_progress_description(t: &Thresholds) -> String {
    match t.llm_spend_without_progress_usd() {
        Some(limit) => format!(
            "US${{{{ $value | printf \"%.2f\" }}}} spent on LLM calls since the champion last changed (limit US${limit}); a lower bound while {} or {} is above zero.",
            catalog::LLM_USAGE_MISSING_TOTAL.name,
            catalog::LLM_UNPRICED_TOKENS_TOTAL.name,
        ),
        None => "Off: llm_spend_without_progress_usd is not set in loopwatch.toml.".to_string(),
    }
}

pub(super) fn llm_budget(t: &Thresholds) -> String {
    as_loop_alert(format!(
        "{} >= {}",
        catalog::LLM_SPEND_USD.name,
        limit_or_off(t.llm_budget_usd())
    ))
}

pub(super) fn llm_budget_description(t: &Thresholds) -> String {
    match t.llm_budget_usd() {
        Some(budget) => format!(
            "US${{{{ $value | printf \"%.2f\" }}}} spent on LLM calls (budget US${budget}); a lower bound while {} or {} is above zero.",
            catalog::LLM_USAGE_MISSING_TOTAL.name,
            catalog::LLM_UNPRICED_TOKENS_TOTAL.name,
        ),
        None => "Off: llm_budget_usd is not set in loopwatch.toml.".to_string(),
    }
}

/// A duration as Prometheus writes one (`90s`, `2m`, `1500ms`): no spaces.
pub(super) fn duration(d: std::time::Duration) -> String {
    let millis = d.as_millis();
    match millis {
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m % 1000 == 0 => format!("{}s", m / 1000),
        m => format!("{m}ms"),
    }
}

/// A model server saturated, as the evaluator judges it at each read: requests waiting
/// at an engine whose KV cache is at least `llm_server_kv_cache_fraction` full (the
/// republished `…_waiting_kv_cache_usage_ratio`, paired engine by engine), or preemptions
/// within the last minute (an older SGLang's retraction gauge above 0 within it); held for the rule's `for` (`llm_server_saturated_for`). Its value is the
/// KV-cache usage of the fullest server so saturated; the servers' labels are
/// aggregated away, so that the alert is labelled as loopwatch's own is (which names
/// the server beside its value).
pub(super) fn llm_server_saturated(t: &Thresholds) -> String {
    as_loop_alert(format!(
        "max without (server, kind) ({kv} and ({waiting_kv} >= {fraction} or increase({preemptions}[{window}s]) > 0 or max_over_time({retracted}[{window}s]) > 0))",
        kv = catalog::LLM_SERVER_KV_CACHE_USAGE_RATIO.name,
        waiting_kv = catalog::LLM_SERVER_WAITING_KV_CACHE_USAGE_RATIO.name,
        retracted = catalog::LLM_SERVER_RETRACTED_REQUESTS.name,
        preemptions = catalog::LLM_SERVER_PREEMPTIONS_TOTAL.name,
        fraction = t.llm_server_kv_cache_fraction(),
        window = super::LLM_SERVER_PREEMPTION_WINDOW.as_secs(),
    ))
}

pub(super) fn llm_server_saturated_description(t: &Thresholds) -> String {
    format!(
        "A local model server has been saturated for {}: requests waiting while its KV cache is {{{{ $value | humanizePercentage }}}} full (threshold {}%), or preempting requests; loopwatch's own alert names the server.",
        humantime::format_duration(t.llm_server_saturated_for()),
        t.llm_server_kv_cache_fraction() * 100.0
    )
}

/// The jobs whose targets are loops: the one on the default port, and the registered.
const LOOP_JOBS: &str = "job=~\"loopwatch|loopwatch-discovered\"";

/// A loop that vanished without saying it was done: its target down now, up at some
/// point in the last day (a port where no loop ever ran raises nothing), and its last
/// scraped `loopwatch_loop_done` not 1 (a loop that ended after `done`, which a
/// monitor shutting down lets its scraper see, raises nothing). A registered loop
/// that ends cleanly removes its target file, so its target goes rather than down.
/// The highest fraction of video memory in use on the GPUs the loop's processes use
/// (those where `loopwatch_gpu_loop_processes` is above 0, as the evaluator decides);
/// the rule's `for` (1 min) is the default `gpu_memory_for`.
pub(super) fn gpu_memory_high(t: &Thresholds) -> String {
    as_loop_alert(format!(
        "max by (instance, job) ({used} / {limit} and on(instance, job, hw_id, gpu_index) {ours} > 0) > {}",
        t.gpu_memory_fraction(),
        used = catalog::HW_GPU_MEMORY_USAGE_BYTES.name,
        limit = catalog::HW_GPU_MEMORY_LIMIT_BYTES.name,
        ours = catalog::GPU_LOOP_PROCESSES.name,
    ))
}

pub(super) fn gpu_memory_high_description(t: &Thresholds) -> String {
    format!(
        "A GPU the loop uses has {{{{ $value | humanizePercentage }}}} of its video memory in use (threshold {}%, for 1 minute).",
        t.gpu_memory_fraction() * 100.0
    )
}

/// The GPU errors GPUErrors counts within the last 5 minutes, counted exactly (the
/// counter's rise over the window, not `increase`'s extrapolation): loopwatch counts
/// them (fatal Xids and uncorrected ECC errors, on the loop's GPUs, a fault once) in
/// `loopwatch_gpu_alerting_errors_total`, so the rule and the evaluator count alike. A
/// series whose counter started again (loopwatch restarted) is left out for that
/// window.
pub(super) fn gpu_errors(_: &Thresholds) -> String {
    let errors = catalog::GPU_ALERTING_ERRORS_TOTAL.name;
    as_loop_alert(format!(
        "sum by (instance, job) ((max_over_time({errors}[5m]) - min_over_time({errors}[5m])) unless resets({errors}[5m]) > 0) > 0"
    ))
}

pub(super) fn gpu_errors_description(_: &Thresholds) -> String {
    "{{ $value }} fatal Xid or uncorrected ECC errors on the GPUs the loop uses within the last 5 minutes.".to_string()
}

pub(super) fn loop_down(_: &Thresholds) -> String {
    format!(
        "(up{{{LOOP_JOBS}}} == 0) \
         and on(instance, job) (max_over_time(up{{{LOOP_JOBS}}}[1d]) == 1) \
         unless on(instance, job) (last_over_time({}[1d]) == 1)",
        catalog::LOOP_DONE.name
    )
}

pub(super) fn loop_down_description(_: &Thresholds) -> String {
    "Prometheus cannot scrape a loop that was running and never said it was done: it crashed, was killed, hangs outside loopwatch, or its host is unreachable.".to_string()
}

/// A loop whose series stopped arriving: its `loopwatch_run_info` seen in the last day
/// but not now, its last `loopwatch_loop_done` not 1 (a loop that ended cleanly said
/// so), and no `up` series saying its target is down (LoopDown's case, one alert per
/// problem). What a central Prometheus fed by agents sees when a host or its agent is
/// gone: no sample at all, not a failed scrape.
pub(super) fn loop_vanished(_: &Thresholds) -> String {
    format!(
        "max without (hostname, host, loopwatch_run_id) (label_replace(label_replace(\
         max_over_time({info}{{{LOOP_JOBS}}}[1d]) \
         unless on(instance, job) {info}{{{LOOP_JOBS}}} \
         unless on(instance, job) (last_over_time({done}[1d]) == 1) \
         unless on(instance, job) (up{{{LOOP_JOBS}}} == 0), \
         \"instance\", \"$1\", \"hostname\", \"(.*)\"), \"job\", \"loopwatch\", \"job\", \".*\"))",
        info = catalog::RUN_INFO.name,
        done = catalog::LOOP_DONE.name,
    )
}

pub(super) fn loop_vanished_description(_: &Thresholds) -> String {
    "No series of this loop has arrived for the store's lookback (5 min by default) and it never said it was done: its host, or the agent scraping it, is gone.".to_string()
}

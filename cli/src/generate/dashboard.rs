//! The Grafana dashboard (Grafana 9+): resource usage, strategy performance, diversity
//! and container stats, three of LLM calls (the last, progress per dollar, an XY
//! chart repeated for each loop), the evaluations, the local model servers beside
//! the LLM rate limits, and a collapsed row of GPU panels, with units, threshold lines
//! at the alert thresholds, a 5 s refresh, a Prometheus datasource variable, and
//! annotations for champion changes and alerts.

use serde_json::{json, Value};

use loopwatch::catalog;
use loopwatch::Thresholds;

/// The title of the panel of the local model servers, which reads only loops that
/// have some.
pub const MODEL_SERVERS_PANEL: &str = "Model Servers";

/// Path of the dashboard, relative to the repository.
pub const DASHBOARD_FILE: &str = "grafana/dashboards/loopwatch.json";

/// One query of a panel: PromQL, legend, unit, and an optional threshold line.
struct Query {
    expr: String,
    legend: &'static str,
    unit: &'static str,
    threshold: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
}

fn q(expr: impl Into<String>, legend: &'static str, unit: &'static str) -> Query {
    Query {
        expr: expr.into(),
        legend,
        unit,
        threshold: None,
        min: None,
        max: None,
    }
}

impl Query {
    fn threshold(mut self, value: f64) -> Self {
        self.threshold = Some(value);
        self
    }

    fn range(mut self, min: f64, max: f64) -> Self {
        self.min = Some(min);
        self.max = Some(max);
        self
    }
}

const DATASOURCE: &str = "${datasource}";

/// The loop selectors every panel query carries: the dashboard's `job` and `instance`
/// variables.
const LOOP: &str = "job=~\"$job\", instance=~\"$instance\"";

/// A metric of the loops the variables select.
fn metric(spec: &catalog::MetricSpec) -> String {
    format!("{}{{{LOOP}}}", spec.name)
}

/// The run info's selectors of the dashboard's `experiment`, `loop`, `host` and
/// `run_id` variables (labels of `loopwatch_run_info`).
const RUN: &str =
    "experiment=~\"$experiment\", loop=~\"$loop\", hostname=~\"$host\", run_id=~\"$run_id\"";

/// An expression narrowed to the runs the `experiment`, `loop`, `host` and `run_id`
/// variables select (labels of `loopwatch_run_info`, so the rest are joined to it).
fn of_runs(expr: String) -> String {
    format!(
        "({expr}) and on(instance, job) {}{{{LOOP}, {RUN}}}",
        catalog::RUN_INFO.name
    )
}

/// The `datasource` variable every panel's queries name: a Prometheus to choose.
fn datasource_variable() -> Value {
    json!({
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
    })
}

/// A template variable over the values of one label of `loopwatch_run_info`, all
/// selected by default.
fn variable(name: &str, label: &str, matchers: &str) -> Value {
    labelled_variable(name, name, label, matchers)
}

/// A template variable `name` over the values of the run info's label `source`.
fn labelled_variable(name: &str, source: &str, label: &str, matchers: &str) -> Value {
    json!({
        "name": name,
        "label": label,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": DATASOURCE},
        "query": {"query": format!("label_values({}{{{matchers}}}, {source})", catalog::RUN_INFO.name), "refId": name},
        "definition": format!("label_values({}{{{matchers}}}, {source})", catalog::RUN_INFO.name),
        "refresh": 2,
        "multi": true,
        "includeAll": true,
        "allValue": ".*",
        "current": {"selected": true, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "hide": 0,
    })
}

/// An expression with the dashboard's variables set to `values` (`(name, regex)`),
/// the rest to `.*`: what Grafana sends, for running the queries elsewhere.
pub fn with_variables(expr: &str, values: &[(&str, &str)]) -> String {
    let mut out = expr.to_string();
    for name in ["run_id", "instance", "job", "experiment", "loop", "host"] {
        let value = values
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(".*", |(_, v)| *v);
        out = out.replace(&format!("${name}"), value);
    }
    out
}

/// The queries' `refId`s, in order: a panel holds at most this many queries.
const REF_IDS: [&str; 8] = ["A", "B", "C", "D", "E", "F", "G", "H"];

/// A panel's targets: each query's expression as `expr` makes it, its legend and its
/// `refId`.
fn targets(title: &str, queries: &[Query], expr: impl Fn(&Query) -> String) -> Vec<Value> {
    assert!(queries.len() <= REF_IDS.len(), "{title}: too many queries");
    queries
        .iter()
        .zip(REF_IDS)
        .map(|(query, ref_id)| {
            json!({
                "datasource": {"type": "prometheus", "uid": DATASOURCE},
                "expr": expr(query),
                "legendFormat": query.legend,
                "refId": ref_id,
            })
        })
        .collect()
}

fn panel(id: u64, title: &str, description: &str, x: u64, y: u64, queries: Vec<Query>) -> Value {
    let targets = targets(title, &queries, |query| query.expr.clone());
    // Each query keeps its own unit (and axis), and its own threshold line.
    let overrides: Vec<Value> = queries
        .iter()
        .zip(REF_IDS)
        .map(|(query, ref_id)| {
            let mut properties = vec![json!({"id": "unit", "value": query.unit})];
            if let Some(min) = query.min {
                properties.push(json!({"id": "min", "value": min}));
            }
            if let Some(max) = query.max {
                properties.push(json!({"id": "max", "value": max}));
            }
            if let Some(threshold) = query.threshold {
                properties
                    .push(json!({"id": "custom.thresholdsStyle", "value": {"mode": "dashed"}}));
                properties.push(
                    json!({"id": "thresholds", "value": {"mode": "absolute", "steps": [
                        {"color": "green", "value": null},
                        {"color": "red", "value": threshold},
                    ]}}),
                );
            }
            json!({"matcher": {"id": "byFrameRefID", "options": ref_id}, "properties": properties})
        })
        .collect();
    json!({
        "id": id,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": DATASOURCE},
        "gridPos": {"h": 10, "w": 12, "x": x, "y": y},
        "fieldConfig": {
            "defaults": {
                "custom": {"drawStyle": "line", "lineWidth": 1, "showPoints": "never", "spanNulls": true,
                           "thresholdsStyle": {"mode": "off"}},
                "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": null}]},
            },
            "overrides": overrides,
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": true},
            "tooltip": {"mode": "multi", "sort": "none"},
        },
        "targets": targets,
    })
}

/// The legends of the progress-per-dollar chart's x field and its y fields.
const SPEND_FIELD: &str = "spend (USD)";
const BEST_FIELD: &str = "best Sharpe so far";
const PER_CHANGE_FIELD: &str = "spend per champion change (USD)";

/// The variable an XY chart repeats over: the `instance` (Target) of each loop.
pub const XY_REPEAT: &str = "instance";

/// An expression of one series per loop the panel shows: in a panel repeated over
/// [`XY_REPEAT`], one series (the same loop scraped by two jobs gives the same values).
fn one_per_loop(expr: String) -> String {
    format!("max by ({XY_REPEAT}) ({expr})")
}

/// An XY chart (Grafana's `xychart`, 9+): the queries joined on their time into one
/// frame, the field named `x` on the x axis and every other one on y, each with its
/// unit. Grafana 10.4 and later migrate these options to their own.
///
/// The join pairs the fields of a row by time alone: with two loops in one frame it
/// would hold two x fields, and one loop's y against the other's x. So the chart is
/// repeated for each value of the [`XY_REPEAT`] variable, its copies side by side, two
/// to a row of the dashboard's full width (Grafana lays repeated panels out across
/// the whole width from `x` 0): each copy queries one loop, one series a query.
fn xy_panel(
    id: u64,
    title: &str,
    description: &str,
    y: u64,
    x_field: &'static str,
    queries: Vec<Query>,
) -> Value {
    let targets = targets(title, &queries, |query| one_per_loop(query.expr.clone()));
    let overrides: Vec<Value> = queries
        .iter()
        .map(|query| {
            json!({
                "matcher": {"id": "byName", "options": query.legend},
                "properties": [{"id": "unit", "value": query.unit}],
            })
        })
        .collect();
    json!({
        "id": id,
        "type": "xychart",
        "title": format!("{title} (${XY_REPEAT})"),
        "description": description,
        "datasource": {"type": "prometheus", "uid": DATASOURCE},
        "gridPos": {"h": 10, "w": 24, "x": 0, "y": y},
        "repeat": XY_REPEAT,
        "repeatDirection": "h",
        "maxPerRow": 2,
        "transformations": [
            // One frame, a row per scrape: what an XY chart reads.
            {"id": "seriesToColumns", "options": {"byField": "Time"}},
        ],
        "fieldConfig": {
            "defaults": {
                "custom": {"show": "points+lines", "lineWidth": 1, "pointSize": {"fixed": 3}},
            },
            "overrides": overrides,
        },
        "options": {
            "seriesMapping": "auto",
            "dims": {"frame": 0, "x": x_field, "exclude": []},
            "series": [],
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": true},
            "tooltip": {"mode": "single", "sort": "none"},
        },
        "targets": targets,
    })
}

/// `panel` across the dashboard's whole width.
fn full_width(mut panel: Value) -> Value {
    panel["gridPos"]["w"] = json!(24);
    panel
}

/// A row, collapsed, holding `panels`: Grafana queries them only once it is opened.
fn collapsed_row(id: u64, title: &str, y: u64, panels: Vec<Value>) -> Value {
    json!({
        "id": id,
        "type": "row",
        "title": title,
        "collapsed": true,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
        "panels": panels,
    })
}

/// The panels of a dashboard, those inside collapsed rows included (the rows not).
pub fn dashboard_panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        if panel["type"] == "row" {
            out.extend(panel["panels"].as_array().into_iter().flatten());
        } else {
            out.push(panel);
        }
    }
    out
}

/// Every PromQL expression of the dashboard's panels (those in rows included) and
/// annotations, panel by panel, then the annotations.
pub fn dashboard_expressions(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dashboard_panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push(expr.to_string());
            }
        }
    }
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = annotation["expr"].as_str() {
            out.push(expr.to_string());
        }
    }
    out
}

/// The rate over `window` of the tokens of the LLM calls, by `gen_ai_token_type`
/// (input, output), under either GenAI conventions (`OTEL_SEMCONV_STABILITY_OPT_IN`):
/// the default histogram's sum, or the newest ones' counters of inference calls and
/// embeddings' input histogram, which carry no token type (`label_replace` gives it).
/// A loop exports one of the two; rates drop the metric's name, so `or` joins them.
fn token_rates(window: &str) -> String {
    let typed = |name: &str, kind: &str| {
        format!("label_replace(rate({name}{{{LOOP}}}[{window}]), \"gen_ai_token_type\", \"{kind}\", \"\", \"\")")
    };
    format!(
        "rate({}_sum{{{LOOP}}}[{window}]) or {} or {} or {}",
        catalog::GEN_AI_CLIENT_TOKEN_USAGE.name,
        typed(
            catalog::GEN_AI_CLIENT_INFERENCE_USAGE_INPUT_TOKENS_TOTAL.name,
            "input"
        ),
        typed(
            catalog::GEN_AI_CLIENT_INFERENCE_USAGE_OUTPUT_TOKENS_TOTAL.name,
            "output"
        ),
        typed(
            &format!(
                "{}_sum",
                catalog::GEN_AI_CLIENT_EMBEDDINGS_OPERATION_INPUT_TOKENS.name
            ),
            "input"
        ),
    )
}

/// The rate over `window` of the buckets of the LLM calls' durations under either
/// GenAI conventions: the default histogram, or the newest ones' of inference calls
/// and of embeddings.
fn duration_bucket_rates(window: &str) -> String {
    [
        &catalog::GEN_AI_CLIENT_OPERATION_DURATION_SECONDS,
        &catalog::GEN_AI_CLIENT_INFERENCE_DURATION_SECONDS,
        &catalog::GEN_AI_CLIENT_EMBEDDINGS_DURATION_SECONDS,
    ]
    .map(|spec| format!("rate({}_bucket{{{LOOP}}}[{window}])", spec.name))
    .join(" or ")
}

/// The dashboard, as Grafana's JSON model.
pub fn grafana_dashboard(t: &Thresholds) -> Value {
    let c = |spec: &catalog::MetricSpec| of_runs(metric(spec));
    // The spend over the champion's changes (as summary.llm.spend_per_champion_change_usd
    // has it, the spend alone before the first change).
    let spend_per_change = || {
        q(
            of_runs(format!(
                "{} / clamp_min({}, 1)",
                metric(&catalog::LLM_SPEND_USD),
                metric(&catalog::CHAMPION_CHANGES_TOTAL)
            )),
            PER_CHANGE_FIELD,
            "currencyUSD",
        )
    };
    // A quantile of the LLM calls' durations over the last 5 minutes.
    let call_duration = |quantile: &str, legend: &'static str| {
        q(
            of_runs(format!(
                "histogram_quantile({quantile}, sum by (instance, job, le) ({}))",
                duration_bucket_rates("5m")
            )),
            legend,
            "s",
        )
    };
    // What is left of a rate limit: remaining over limit, for a limit above 0.
    let left_of_limit =
        |remaining: &catalog::MetricSpec, limit: &catalog::MetricSpec, legend: &'static str| {
            q(
                of_runs(format!("{} / ({} > 0)", metric(remaining), metric(limit))),
                legend,
                "percentunit",
            )
        };
    let panels = vec![
        panel(
            1,
            "Resource Usage",
            "Loop process memory (GB) and CPU (%, 100 = one core), and wall-clock time per iteration (s).",
            0,
            0,
            vec![
                q(of_runs(format!("{} / 1e9", metric(&catalog::MEMORY_USAGE_BYTES))), "memory (GB)", "decgbytes"),
                q(c(&catalog::CPU_USAGE_PERCENT), "CPU (%)", "percent"),
                q(c(&catalog::EXECUTION_TIME_SECONDS), "execution time per iteration", "s"),
                q(of_runs(format!("100 * {}{{{LOOP}}}", super::MEMORY_RATIO_RECORD)), "memory in use of its limit (%)", "percent")
                    .threshold(t.memory_fraction() * 100.0),
            ],
        ),
        panel(
            2,
            "Strategy Performance",
            "Success rate over the last 10 iterations (%), mean Sharpe ratio and max drawdown of each iteration.",
            12,
            0,
            vec![
                q(of_runs(format!("100 * {}", metric(&catalog::SUCCESS_RATE_10ITER))), "success rate (%)", "percent")
                    .threshold(t.success_rate_floor() * 100.0)
                    .range(0.0, 100.0),
                q(c(&catalog::SHARPE_RATIO), "Sharpe ratio", "none"),
                q(c(&catalog::MAX_DRAWDOWN), "max drawdown", "percentunit"),
            ],
        ),
        panel(
            3,
            "Diversity Metrics",
            "Population diversity (0-1), distinct strategies, and champion age in iterations.",
            0,
            10,
            vec![
                q(c(&catalog::POPULATION_DIVERSITY), "diversity", "none")
                    .threshold(t.diversity_floor())
                    .range(0.0, 1.0),
                q(c(&catalog::UNIQUE_STRATEGY_COUNT), "unique strategies", "short"),
                q(c(&catalog::CHAMPION_STALENESS_ITERATIONS), "champion age (iterations)", "short")
                    .threshold(t.staleness_iterations() as f64),
            ],
        ),
        panel(
            4,
            "Container Stats",
            "Running sandbox containers, working-set memory per container (MB), cleanup failures, orphaned containers and orphaned processes left.",
            12,
            10,
            vec![
                q(c(&catalog::ACTIVE_CONTAINERS), "active containers", "short"),
                q(
                    format!(
                        "{} or on() vector(0)",
                        of_runs(format!("{} / 1e6", metric(&catalog::CONTAINER_MEMORY_USAGE)))
                    ),
                    "{{name}} memory (MB)",
                    "decmbytes",
                ),
                q(c(&catalog::CONTAINER_CLEANUP_FAILURES_TOTAL), "cleanup failures", "short"),
                q(c(&catalog::ORPHANED_CONTAINERS), "orphaned containers", "short").threshold(t.orphan_limit() as f64),
                q(c(&catalog::ORPHANED_PROCESSES), "orphaned processes", "short"),
            ],
        ),
        panel(
            5,
            "LLM Calls",
            "LLM calls per minute by outcome (ok, abandoned, or the error type), tokens per minute by type (from the default GenAI names or the newest, whichever the loop exports), and the failed share of the recent calls against LLMErrors' threshold. Empty for a loop that makes no metered LLM call.",
            0,
            20,
            vec![
                q(
                    of_runs(format!(
                        "60 * sum by (instance, job, outcome) (rate({}{{{LOOP}}}[2m]))",
                        catalog::LLM_CALLS_TOTAL.name
                    )),
                    "calls/min {{outcome}}",
                    "short",
                ),
                q(
                    of_runs(format!(
                        "60 * sum by (instance, job, gen_ai_token_type) ({})",
                        token_rates("2m")
                    )),
                    "{{gen_ai_token_type}} tokens/min",
                    "short",
                ),
                q(
                    of_runs(format!(
                        "{} / {}",
                        metric(&catalog::LLM_RECENT_FAILURES),
                        metric(&catalog::LLM_RECENT_CALLS)
                    )),
                    "failed share of recent calls",
                    "percentunit",
                )
                .threshold(t.llm_error_rate())
                .range(0.0, 1.0),
            ],
        ),
        panel(
            6,
            "LLM Spend and Latency",
            "Spend on LLM calls (US dollars), spend per champion improvement, and the p50 and p95 duration of the calls (s; from the default GenAI names or the newest, whichever the loop exports). Empty for a loop that makes no metered LLM call.",
            12,
            20,
            vec![
                {
                    let spend = q(c(&catalog::LLM_SPEND_USD), "spend (USD)", "currencyUSD");
                    match t.llm_budget_usd() {
                        Some(budget) => spend.threshold(budget),
                        None => spend,
                    }
                },
                spend_per_change(),
                call_duration("0.5", "p50 call duration"),
                call_duration("0.95", "p95 call duration"),
            ],
        ),
        full_width(panel(
            7,
            "Evaluations",
            "Evaluations in flight, the age of the oldest against the limit past which EvaluationHung fires (s), worker occupancy (busy workers over those seen in the last minute) and the hung evaluations loopwatch ended (--on-hung-evaluation kill). Empty for a loop that reports no evaluation.",
            0,
            30,
            vec![
                q(c(&catalog::EVALUATIONS_IN_FLIGHT), "in flight", "short"),
                q(c(&catalog::EVALUATION_OLDEST_SECONDS), "oldest in flight (s)", "s"),
                q(c(&catalog::EVALUATION_HUNG_LIMIT_SECONDS), "EvaluationHung past (s)", "s"),
                q(c(&catalog::EVALUATION_WORKER_OCCUPANCY), "worker occupancy", "percentunit")
                    .range(0.0, 1.0),
                q(c(&catalog::EVALUATIONS_KILLED_TOTAL), "killed by loopwatch", "short"),
            ],
        )),
        xy_panel(
            8,
            "LLM Progress per Dollar",
            "Progress per dollar, one chart per loop (the panel repeats for each Target the variables select): the best Sharpe ratio of any strategy so far and the spend per champion change (US dollars) against the loop's own cumulative LLM spend (US dollars), one point per scrape. A flat best while the spend grows is money that bought no progress. Grafana's XY chart cannot mark the champion's changes (annotations belong to time axes): the embedded page draws the same curve exactly, with them marked. Empty for a loop that makes no metered LLM call, or before its first strategy succeeded.",
            40,
            SPEND_FIELD,
            vec![
                q(c(&catalog::LLM_SPEND_USD), SPEND_FIELD, "currencyUSD"),
                q(c(&catalog::BEST_SHARPE), BEST_FIELD, "none"),
                spend_per_change(),
            ],
        ),
        panel(
            12,
            MODEL_SERVERS_PANEL,
            "Each local model server's mean queue time beside the metering proxy's mean time to first chunk (s), both over the requests of the last 5 minutes: a slow first chunk with a long queue is a busy server, with a short queue a slow model; requests waiting at each server, and the fraction of its KV cache in use against LLMServerSaturated's threshold. Empty for a loop without model servers ([[llm.servers]], loopwatch run --llm-server).",
            0,
            50,
            vec![
                q(
                    of_runs(format!(
                        "sum by (instance, job, server) (rate({seconds}{{{LOOP}}}[5m])) / sum by (instance, job, server) (rate({requests}{{{LOOP}}}[5m]))",
                        seconds = catalog::LLM_SERVER_QUEUE_SECONDS_TOTAL.name,
                        requests = catalog::LLM_SERVER_QUEUED_REQUESTS_TOTAL.name,
                    )),
                    "{{server}} queue time",
                    "s",
                ),
                q(
                    of_runs(format!(
                        "sum by (instance, job) (rate({name}_sum{{{LOOP}}}[5m])) / sum by (instance, job) (rate({name}_count{{{LOOP}}}[5m]))",
                        name = catalog::LLM_TIME_TO_FIRST_CHUNK_SECONDS.name
                    )),
                    "proxy: first chunk",
                    "s",
                ),
                q(c(&catalog::LLM_SERVER_REQUESTS_WAITING), "{{server}} waiting", "short"),
                q(c(&catalog::LLM_SERVER_KV_CACHE_USAGE_RATIO), "{{server}} KV cache", "percentunit")
                    .threshold(t.llm_server_kv_cache_fraction())
                    .range(0.0, 1.0),
            ],
        ),
        panel(
            13,
            "LLM Rate Limits",
            "Rate-limit headroom, beside the 429s: the least headroom (remaining over limit) of the limits the providers' answers stated that have not reset, against LLMRateLimitNear's threshold, each provider's and model's requests and tokens left over its limit, and the calls answered 429 per minute. Empty for a loop whose providers state no limits.",
            12,
            50,
            vec![
                q(c(&catalog::LLM_RATELIMIT_HEADROOM_RATIO), "least headroom", "percentunit")
                    .threshold(t.llm_headroom_fraction())
                    .range(0.0, 1.0),
                left_of_limit(
                    &catalog::LLM_RATELIMIT_REMAINING_REQUESTS,
                    &catalog::LLM_RATELIMIT_LIMIT_REQUESTS,
                    "{{provider}} {{model}} requests left",
                ),
                left_of_limit(
                    &catalog::LLM_RATELIMIT_REMAINING_TOKENS,
                    &catalog::LLM_RATELIMIT_LIMIT_TOKENS,
                    "{{provider}} {{model}} {{limit}} left",
                ),
                q(
                    format!(
                        "{} or on() vector(0)",
                        of_runs(format!(
                            "60 * sum by (instance, job) (rate({}{{{LOOP}}}[2m]))",
                            catalog::LLM_RATE_LIMITED_TOTAL.name
                        ))
                    ),
                    "429 answers/min",
                    "short",
                ),
            ],
        ),
        collapsed_row(11, "GPUs", 60, gpu_panels(t)),
    ];
    json!({
        "title": "loopwatch",
        "uid": "loopwatch",
        "description": "Resource usage, strategy performance, diversity and containers of an iteration loop watched by loopwatch.",
        "tags": ["loopwatch"],
        "schemaVersion": 37,
        "version": 1,
        "editable": true,
        "graphTooltip": 1,
        "refresh": "5s",
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {"refresh_intervals": ["5s", "10s", "30s", "1m", "5m"]},
        "templating": {"list": [
            datasource_variable(),
            variable("job", "Job", ""),
            variable("experiment", "Experiment", "job=~\"$job\""),
            labelled_variable("host", "hostname", "Host", "job=~\"$job\", experiment=~\"$experiment\""),
            variable("loop", "Loop", "job=~\"$job\", experiment=~\"$experiment\", hostname=~\"$host\""),
            variable("instance", "Target", "job=~\"$job\", experiment=~\"$experiment\", hostname=~\"$host\", loop=~\"$loop\""),
            variable("run_id", "Run", &format!("{LOOP}, experiment=~\"$experiment\", hostname=~\"$host\", loop=~\"$loop\"")),
        ]},
        "annotations": {"list": [
            {
                // One mark per change, at its moment: the series' value is the time of
                // the last change, and Grafana uses it as the annotation's time.
                "name": "Champion updates",
                "datasource": {"type": "prometheus", "uid": DATASOURCE},
                "enable": true,
                "iconColor": "green",
                "expr": of_runs(format!("{} * 1000 > 0", metric(&catalog::CHAMPION_CHANGED_TIMESTAMP_SECONDS))),
                "step": "5s",
                "useValueForTime": true,
                "titleFormat": "Champion changed",
                "textFormat": "new champion on {{instance}}",
            },
            {
                "name": "Alerts",
                "datasource": {"type": "prometheus", "uid": DATASOURCE},
                "enable": true,
                "iconColor": "red",
                // Every loopwatch job's alerts (their `instance` is the loop's host name,
                // so the run selects them); LoopDown, which has no run, shows for all.
                "expr": "ALERTS{alertstate=\"firing\", job=~\"loopwatch|loopwatch-discovered\", run_id=~\"$run_id|\", experiment=~\"$experiment\", loop=~\"$loop\"}",
                "step": "5s",
                "titleFormat": "{{alertname}}",
                "tagKeys": "severity",
            },
        ]},
        "panels": panels,
    })
}

/// The GPU panels, in the collapsed row "GPUs" (open it for a loop on a GPU machine;
/// without a GPU, the feature `gpu` or a driver they are empty): each device's memory
/// in use against its size and the loop's own share, and its load, power,
/// temperature and errors.
fn gpu_panels(_t: &Thresholds) -> Vec<Value> {
    let c = |spec: &catalog::MetricSpec| of_runs(metric(spec));
    vec![
        panel(
            9,
            "GPU Memory",
            "Per GPU (index): video memory in use of its size (%), the video memory of the loop's own processes (GB) and the size (GB). The loop's share is 0 in a pid namespace other than the host's (see docs/gpu.md).",
            0,
            61,
            vec![
                q(
                    of_runs(format!(
                        "100 * {} / {}",
                        metric(&catalog::HW_GPU_MEMORY_USAGE_BYTES),
                        metric(&catalog::HW_GPU_MEMORY_LIMIT_BYTES)
                    )),
                    "GPU {{gpu_index}} in use (%)",
                    "percent",
                )
                .range(0.0, 100.0),
                q(
                    of_runs(format!("{} / 1e9", metric(&catalog::GPU_LOOP_MEMORY_BYTES))),
                    "GPU {{gpu_index}} the loop's (GB)",
                    "decgbytes",
                ),
                q(
                    of_runs(format!("{} / 1e9", metric(&catalog::HW_GPU_MEMORY_LIMIT_BYTES))),
                    "GPU {{gpu_index}} size (GB)",
                    "decgbytes",
                ),
            ],
        ),
        panel(
            10,
            "GPU Load and Errors",
            "Per GPU (index): the share of time a kernel ran (%), power (W), temperature (°C), and errors over the last 5 minutes by type: xid (critical Xid errors), uncorrected and corrected ECC errors.",
            12,
            61,
            vec![
                q(
                    of_runs(format!("100 * {}", metric(&catalog::HW_GPU_UTILIZATION_RATIO))),
                    "GPU {{gpu_index}} busy (%)",
                    "percent",
                )
                .range(0.0, 100.0),
                q(c(&catalog::HW_POWER_WATTS), "GPU {{gpu_index}} power (W)", "watt"),
                q(c(&catalog::HW_TEMPERATURE_CELSIUS), "GPU {{gpu_index}} temperature", "celsius"),
                q(
                    of_runs(format!(
                        "sum by (instance, job, gpu_index, error_type) (increase({}{{{LOOP}}}[5m]))",
                        catalog::HW_ERRORS_TOTAL.name
                    )),
                    "GPU {{gpu_index}} {{error_type}} errors (5 min)",
                    "short",
                ),
            ],
        ),
    ]
}

/// Path of the fleet overview dashboard, relative to the repository.
pub const FLEET_DASHBOARD_FILE: &str = "grafana/dashboards/loopwatch-fleet.json";

/// One column of the fleet table: an instant query per loop, and its unit.
struct Column {
    title: &'static str,
    expr: String,
    unit: &'static str,
}

/// A per-loop value, keyed by the labels that name a loop.
fn per_loop(expr: String) -> String {
    format!(
        "max by (experiment, loop, hostname, instance) (({expr}) * on(instance, job) group_left(experiment, loop, hostname) {}{{{FLEET}}})",
        catalog::RUN_INFO.name
    )
}

/// The fleet dashboard's selectors: its `experiment`, `host` and `loop` variables.
const FLEET: &str = "job=~\"loopwatch|loopwatch-discovered\", experiment=~\"$experiment\", hostname=~\"$host\", loop=~\"$loop\"";

/// The columns of the fleet table.
fn fleet_columns() -> Vec<Column> {
    let m = |spec: &catalog::MetricSpec| {
        format!("{}{{job=~\"loopwatch|loopwatch-discovered\"}}", spec.name)
    };
    vec![
        Column {
            title: "iterations/s",
            expr: per_loop(format!("deriv({}[2m])", m(&catalog::ITERATION_NUMBER))),
            unit: "short",
        },
        Column {
            title: "success rate",
            expr: per_loop(m(&catalog::SUCCESS_RATE_10ITER)),
            unit: "percentunit",
        },
        Column {
            title: "diversity",
            expr: per_loop(m(&catalog::POPULATION_DIVERSITY)),
            unit: "none",
        },
        Column {
            title: "champion age",
            expr: per_loop(m(&catalog::CHAMPION_STALENESS_ITERATIONS)),
            unit: "short",
        },
        Column {
            title: "alerts firing",
            expr: per_loop(format!(
                "sum by (instance, job) ({})",
                m(&catalog::ALERT_FIRING)
            )),
            unit: "short",
        },
        Column {
            title: "LLM spend",
            expr: per_loop(m(&catalog::LLM_SPEND_USD)),
            unit: "currencyUSD",
        },
        Column {
            title: "last seen",
            expr: per_loop(format!("time() - timestamp({})", m(&catalog::RUN_INFO))),
            unit: "s",
        },
    ]
}

/// The fleet overview: one row per loop of the selected experiments and hosts, with
/// its rate, success, diversity, champion age, alerts, LLM spend and when it was last
/// seen; for a central Prometheus fed by the hosts' agents (prometheus/central.yml)
/// as for one host's.
pub fn grafana_fleet_dashboard(_t: &Thresholds) -> Value {
    let columns = fleet_columns();
    let ref_ids = ["A", "B", "C", "D", "E", "F", "G"];
    let targets: Vec<Value> = columns
        .iter()
        .zip(ref_ids)
        .map(|(column, ref_id)| {
            json!({
                "datasource": {"type": "prometheus", "uid": DATASOURCE},
                "expr": column.expr,
                "format": "table",
                "instant": true,
                "refId": ref_id,
            })
        })
        .collect();
    let overrides: Vec<Value> = columns
        .iter()
        .zip(ref_ids)
        .map(|(column, ref_id)| {
            json!({
                "matcher": {"id": "byName", "options": format!("Value #{ref_id}")},
                "properties": [
                    {"id": "displayName", "value": column.title},
                    {"id": "unit", "value": column.unit},
                ],
            })
        })
        .collect();
    let loops = json!({
        "id": 1,
        "type": "table",
        "title": "Loops",
        "description": "One row per loop (experiment, loop, host, target): iterations per second over 2 minutes, success rate over the last 10 iterations, diversity, champion age in iterations, alerts firing, LLM spend, and seconds since its last sample reached this Prometheus.",
        "datasource": {"type": "prometheus", "uid": DATASOURCE},
        "gridPos": {"h": 20, "w": 24, "x": 0, "y": 0},
        "targets": targets,
        "transformations": [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": true}, "renameByName": {"hostname": "host"}}},
        ],
        "fieldConfig": {"defaults": {}, "overrides": overrides},
        "options": {"showHeader": true, "sortBy": [{"displayName": "alerts firing", "desc": true}]},
    });
    json!({
        "title": "loopwatch fleet",
        "uid": "loopwatch-fleet",
        "description": "Every loop of a fleet on one table: rate, success, diversity, champion age, alerts, LLM spend and when each was last seen.",
        "tags": ["loopwatch"],
        "schemaVersion": 37,
        "version": 1,
        "editable": true,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            datasource_variable(),
            variable("experiment", "Experiment", "job=~\"loopwatch|loopwatch-discovered\""),
            labelled_variable("host", "hostname", "Host", "experiment=~\"$experiment\""),
            variable("loop", "Loop", "experiment=~\"$experiment\", hostname=~\"$host\""),
        ]},
        "panels": [loops],
    })
}

//! OTLP export (feature `otlp`) to a real OTLP/HTTP receiver run by the test: the
//! request is decoded with the official protobuf types, and names, units and values
//! must arrive as recorded; the instruments of LLM calls under loopwatch's GenAI names,
//! or the newest conventions' with `OTEL_SEMCONV_STABILITY_OPT_IN`.
#![cfg(feature = "otlp")]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use loopwatch::Population;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};
use prost::Message as _;
use support::quiet_monitor;
use support::wait_until;

type Received = Arc<Mutex<Vec<ExportMetricsServiceRequest>>>;

/// The exporter reads process-wide environment variables: one test at a time.
static ENV: Mutex<()> = Mutex::new(());

/// An OTLP/HTTP receiver on a free loopback port, decoding every request.
fn receiver() -> (SocketAddr, Received) {
    let received: Received = Arc::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let state = received.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            async fn export(State(received): State<Received>, body: Bytes) -> Vec<u8> {
                let request = ExportMetricsServiceRequest::decode(body)
                    .expect("a valid OTLP protobuf request");
                received.lock().unwrap().push(request);
                ExportMetricsServiceResponse::default().encode_to_vec()
            }
            let app = axum::Router::new()
                .route("/v1/metrics", post(export))
                .with_state(state);
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (addr, received)
}

/// The last value seen for a metric, with its unit.
fn last_value(received: &Received, name: &str) -> Option<(String, f64)> {
    let requests = received.lock().unwrap();
    let mut found = None;
    for request in requests.iter() {
        for resource in &request.resource_metrics {
            for scope in &resource.scope_metrics {
                for metric in scope.metrics.iter().filter(|m| m.name == name) {
                    let points = match &metric.data {
                        Some(Data::Gauge(g)) => &g.data_points,
                        Some(Data::Sum(s)) => &s.data_points,
                        _ => continue,
                    };
                    if let Some(point) = points.last() {
                        let value = match point.value {
                            Some(Value::AsDouble(v)) => v,
                            Some(Value::AsInt(v)) => v as f64,
                            None => continue,
                        };
                        found = Some((metric.unit.clone(), value));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn metrics_arrive_over_otlp_with_names_units_and_values() {
    let _env = ENV
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (addr, received) = receiver();
    // The standard variables configure the exporter; the endpoint switches it on.
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
    std::env::set_var("OTEL_METRIC_EXPORT_INTERVAL", "300");
    let monitor = quiet_monitor().build().unwrap();
    let user = monitor
        .meter()
        .u64_counter("backtests_run_total")
        .with_unit("{backtest}")
        .build();
    user.add(7, &[]);
    for i in 0..3 {
        let mut it = monitor.start_iteration();
        it.record_success(1.5, 0.25);
        it.record_success(0.5, 0.15);
        it.record_failure("too few trades");
        it.record_population(Population::new(10, 6, 0.4).with_champion(if i == 0 {
            "a"
        } else {
            "b"
        }));
    }
    // The two providers (loopwatch's and the user's) export on readers of their own:
    // wait for both.
    wait_until(
        Duration::from_secs(20),
        "an OTLP export with the third iteration and the user's counter",
        || {
            last_value(&received, "iteration_number").is_some_and(|(_, v)| v == 3.0)
                && last_value(&received, "backtests_run_total").is_some()
        },
    );
    let expect = |name: &str, unit: &str, value: f64| {
        let (got_unit, got) =
            last_value(&received, name).unwrap_or_else(|| panic!("{name} never arrived"));
        assert_eq!(got_unit, unit, "{name}");
        assert!((got - value).abs() < 1e-9, "{name}: {got} != {value}");
    };
    expect("strategy_success_total", "{strategy}", 6.0);
    expect("strategy_failure_total", "{strategy}", 3.0);
    expect("sharpe_ratio", "1", 1.0);
    expect("max_drawdown", "1", 0.2);
    expect("population_diversity", "1", 0.4);
    expect("champion_staleness_iterations", "{iteration}", 1.0);
    expect("backtests_run_total", "{backtest}", 7.0);
    let (unit, rss) = last_value(&received, "memory_usage_bytes").unwrap();
    assert_eq!(unit, "By");
    assert!(rss > 1e6);
    assert_eq!(
        last_value(&received, "execution_time_seconds").unwrap().0,
        "s"
    );
    monitor.shutdown();
}

#[test]
fn a_collector_that_is_down_never_holds_the_loop() {
    let _env = ENV
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // A port nothing listens on, exported to often.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{closed}"));
    std::env::set_var("OTEL_METRIC_EXPORT_INTERVAL", "50");
    let monitor = quiet_monitor().otlp(true).build().unwrap();
    let started = Instant::now();
    for _ in 0..2000 {
        let mut it = monitor.start_iteration();
        it.record_success(1.0, 0.1);
        drop(it);
        std::thread::sleep(Duration::from_micros(100));
    }
    let recording = started.elapsed();
    let started = Instant::now();
    monitor.shutdown();
    let shutdown = started.elapsed();
    println!("2000 iterations with the collector down: {recording:?}; shutdown {shutdown:?}");
    assert!(
        shutdown < Duration::from_secs(15),
        "shutdown gave up on the collector: {shutdown:?}"
    );
}

/// A data point's attributes, by key.
type Attributes = std::collections::BTreeMap<String, String>;

/// Metrics by name, each with its unit, kind (`sum` or `histogram`) and points.
type Metrics = std::collections::BTreeMap<String, (String, &'static str, Vec<Point>)>;

/// One data point of a metric as it arrived: its attributes, and its value (a sum's)
/// or its count and sum (a histogram's).
#[derive(Debug, Clone, PartialEq)]
struct Point {
    attributes: Attributes,
    value: f64,
    sum: f64,
}

/// Every metric exported, by name, as its latest export had it (the two providers
/// export apart): its unit, kind and points.
fn exported(received: &Received) -> Metrics {
    let requests = received.lock().unwrap();
    let mut found = std::collections::BTreeMap::new();
    for request in requests.iter() {
        let attributes = |kv: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
            kv.iter()
                .map(|kv| {
                    let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(any_value::Value::StringValue(s)) => s.clone(),
                        other => format!("{other:?}"),
                    };
                    (kv.key.clone(), value)
                })
                .collect()
        };
        for resource in &request.resource_metrics {
            for scope in &resource.scope_metrics {
                for metric in &scope.metrics {
                    let (kind, points) = match &metric.data {
                        Some(Data::Sum(sum)) => (
                            "sum",
                            sum.data_points
                                .iter()
                                .map(|p| Point {
                                    attributes: attributes(&p.attributes),
                                    value: match p.value {
                                        Some(Value::AsDouble(v)) => v,
                                        Some(Value::AsInt(v)) => v as f64,
                                        None => f64::NAN,
                                    },
                                    sum: 0.0,
                                })
                                .collect(),
                        ),
                        Some(Data::Histogram(h)) => (
                            "histogram",
                            h.data_points
                                .iter()
                                .map(|p| Point {
                                    attributes: attributes(&p.attributes),
                                    value: p.count as f64,
                                    sum: p.sum.unwrap_or(f64::NAN),
                                })
                                .collect(),
                        ),
                        _ => continue,
                    };
                    found.insert(metric.name.clone(), (metric.unit.clone(), kind, points));
                }
            }
        }
    }
    found
}

/// A streamed chat call of 1.5 s (first chunk at 0.25 s) that used 1000 tokens in (200
/// read from the cache, 300 written to it) and 120 out (80 of them reasoning), and
/// an embeddings call of 64 tokens that failed with a 503.
fn two_calls(monitor: &loopwatch::Monitor) {
    use loopwatch::llm::{LlmCall, LlmError, Operation};
    let mut chat = LlmCall::new("claude-x", Duration::from_millis(1500))
        .with_provider("anthropic")
        .with_tokens(1000, 120);
    chat.response_model = Some("claude-x-2025".into());
    chat.cached_input_tokens = Some(200);
    chat.cache_write_input_tokens = Some(300);
    chat.reasoning_tokens = Some(80);
    chat.time_to_first_chunk = Some(Duration::from_millis(250));
    monitor.llm_call(&chat);
    let mut embeddings = LlmCall::new("embed-x", Duration::from_millis(100))
        .with_provider("openai")
        .with_operation(Operation::Embeddings);
    embeddings.input_tokens = Some(64);
    embeddings.error = Some(LlmError::Status(503));
    monitor.llm_call(&embeddings);
}

fn attributes(pairs: &[(&str, &str)]) -> Attributes {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const CHAT: [(&str, &str); 4] = [
    ("gen_ai.operation.name", "chat"),
    ("gen_ai.provider.name", "anthropic"),
    ("gen_ai.request.model", "claude-x"),
    ("gen_ai.response.model", "claude-x-2025"),
];

const EMBEDDINGS: [(&str, &str); 5] = [
    ("gen_ai.operation.name", "embeddings"),
    ("gen_ai.provider.name", "openai"),
    ("gen_ai.request.model", "embed-x"),
    ("gen_ai.response.model", "embed-x"),
    ("error.type", "503"),
];

fn with(base: &[(&str, &str)], more: &[(&str, &str)]) -> Attributes {
    let mut all = attributes(base);
    all.extend(attributes(more));
    all
}

/// Exports LLM calls from a monitor started with `opt_in` in
/// `OTEL_SEMCONV_STABILITY_OPT_IN` (unset when `None`): the GenAI metrics of the
/// export that carries both calls, and the exposition at that moment.
fn exported_genai(opt_in: Option<&str>) -> (Metrics, String) {
    let (addr, received) = receiver();
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
    std::env::set_var("OTEL_METRIC_EXPORT_INTERVAL", "200");
    match opt_in {
        Some(value) => std::env::set_var("OTEL_SEMCONV_STABILITY_OPT_IN", value),
        None => std::env::remove_var("OTEL_SEMCONV_STABILITY_OPT_IN"),
    }
    let monitor = quiet_monitor().build().unwrap();
    std::env::remove_var("OTEL_SEMCONV_STABILITY_OPT_IN");
    two_calls(&monitor);
    // Both calls are applied once the LLM call counter has them.
    wait_until(
        Duration::from_secs(20),
        "an OTLP export with both LLM calls",
        || {
            exported(&received)
                .get("loopwatch_llm_calls_total")
                .is_some_and(|(_, _, points)| points.iter().map(|p| p.value).sum::<f64>() == 2.0)
        },
    );
    let exposition = support::http_get(monitor.local_addr(), "/metrics").body;
    let genai = exported(&received)
        .into_iter()
        .filter(|(name, _)| name.starts_with("gen_ai."))
        .collect();
    monitor.shutdown();
    std::env::remove_var("OTEL_EXPORTER_OTLP_ENDPOINT");
    (genai, exposition)
}

/// Without the opt-in, LLM calls arrive as they always have: the two histograms
/// `gen_ai.client.token.usage` (by `gen_ai.token.type`) and
/// `gen_ai.client.operation.duration`; nothing of the newest conventions.
#[test]
fn llm_calls_arrive_under_loopwatchs_genai_names_by_default() {
    let _env = ENV
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (genai, exposition) = exported_genai(Some("http,database/dup"));
    assert_eq!(
        genai.keys().collect::<Vec<_>>(),
        [
            "gen_ai.client.operation.duration",
            "gen_ai.client.token.usage"
        ]
    );
    let (unit, kind, points) = &genai["gen_ai.client.token.usage"];
    assert_eq!((unit.as_str(), *kind), ("{token}", "histogram"));
    let tokens = |base: &[(&str, &str)], kind: &str| {
        // The token histogram carries no error.type.
        let base: Vec<(&str, &str)> = base
            .iter()
            .copied()
            .filter(|(k, _)| *k != "error.type")
            .collect();
        with(&base, &[("gen_ai.token.type", kind)])
    };
    for (attributes, sum) in [
        (tokens(&CHAT, "input"), 1000.0),
        (tokens(&CHAT, "output"), 120.0),
        (tokens(&EMBEDDINGS, "input"), 64.0),
    ] {
        assert!(
            points.contains(&Point {
                attributes: attributes.clone(),
                value: 1.0,
                sum
            }),
            "{attributes:?} in {points:?}"
        );
    }
    assert_eq!(points.len(), 3, "{points:?}");
    let (unit, kind, points) = &genai["gen_ai.client.operation.duration"];
    assert_eq!((unit.as_str(), *kind), ("s", "histogram"));
    assert_eq!(points.len(), 2, "{points:?}");
    assert!(points.contains(&Point {
        attributes: attributes(&CHAT),
        value: 1.0,
        sum: 1.5
    }));
    assert!(points.contains(&Point {
        attributes: attributes(&EMBEDDINGS),
        value: 1.0,
        sum: 0.1
    }));
    // The exposition has the default names only.
    assert!(exposition.contains("\ngen_ai_client_token_usage_count{"));
    assert!(exposition.contains("\ngen_ai_client_operation_duration_seconds_count{"));
    assert!(
        !exposition.contains("gen_ai_client_inference"),
        "{exposition}"
    );
}

/// With `gen_ai_latest_experimental` in `OTEL_SEMCONV_STABILITY_OPT_IN`, LLM calls
/// arrive under the newest GenAI conventions' names and attributes only: inference
/// and embeddings apart, tokens per call as histograms (with `error.type`), the usage
/// of input, output, cache-read, cache-write and reasoning tokens as counters (with
/// `gen_ai.token.modality`), each value the call's; the exposition names them as the
/// OpenTelemetry to Prometheus translation does.
#[test]
fn llm_calls_arrive_under_the_newest_genai_names_when_opted_in() {
    let _env = ENV
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (genai, exposition) = exported_genai(Some("http, gen_ai_latest_experimental"));
    let usage = with(&CHAT, &[("gen_ai.token.modality", "unknown")]);
    let chat = attributes(&CHAT);
    let embeddings = attributes(&EMBEDDINGS);
    let expected = [
        (
            "gen_ai.client.inference.duration",
            "s",
            "histogram",
            &chat,
            1.0,
            1.5,
        ),
        (
            "gen_ai.client.inference.time_to_first_chunk",
            "s",
            "histogram",
            &chat,
            1.0,
            0.25,
        ),
        (
            "gen_ai.client.inference.operation.input_tokens",
            "{token}",
            "histogram",
            &chat,
            1.0,
            1000.0,
        ),
        (
            "gen_ai.client.inference.operation.output_tokens",
            "{token}",
            "histogram",
            &chat,
            1.0,
            120.0,
        ),
        (
            "gen_ai.client.inference.usage.input_tokens",
            "{token}",
            "sum",
            &usage,
            1000.0,
            0.0,
        ),
        (
            "gen_ai.client.inference.usage.output_tokens",
            "{token}",
            "sum",
            &usage,
            120.0,
            0.0,
        ),
        (
            "gen_ai.client.inference.usage.cache_read.input_tokens",
            "{token}",
            "sum",
            &usage,
            200.0,
            0.0,
        ),
        (
            "gen_ai.client.inference.usage.cache_write.input_tokens",
            "{token}",
            "sum",
            &usage,
            300.0,
            0.0,
        ),
        (
            "gen_ai.client.inference.usage.reasoning.output_tokens",
            "{token}",
            "sum",
            &usage,
            80.0,
            0.0,
        ),
        (
            "gen_ai.client.embeddings.duration",
            "s",
            "histogram",
            &embeddings,
            1.0,
            0.1,
        ),
        (
            "gen_ai.client.embeddings.operation.input_tokens",
            "{token}",
            "histogram",
            &embeddings,
            1.0,
            64.0,
        ),
    ];
    let mut names: Vec<&str> = expected.iter().map(|e| e.0).collect();
    names.sort_unstable();
    assert_eq!(
        genai.keys().collect::<Vec<_>>(),
        names,
        "nothing else, the default names included"
    );
    for (name, unit, kind, attributes, value, sum) in expected {
        let (got_unit, got_kind, points) = &genai[name];
        assert_eq!((got_unit.as_str(), *got_kind), (unit, kind), "{name}");
        assert_eq!(
            points,
            &[Point {
                attributes: attributes.clone(),
                value,
                sum
            }],
            "{name}"
        );
    }
    // On /metrics: `_seconds` after a duration, `_total` after a counter, the labels
    // with underscores.
    let exposition = support::assert_well_formed(&exposition);
    for name in [
        "gen_ai_client_inference_duration_seconds",
        "gen_ai_client_inference_usage_cache_read_input_tokens_total",
        "gen_ai_client_inference_usage_reasoning_output_tokens_total",
        "gen_ai_client_embeddings_operation_input_tokens",
    ] {
        assert!(
            exposition.contains_key(name),
            "{name}: {:?}",
            exposition.keys().collect::<Vec<_>>()
        );
    }
    assert!(!exposition.contains_key("gen_ai_client_token_usage"));
    assert!(!exposition.contains_key("gen_ai_client_operation_duration_seconds"));
}

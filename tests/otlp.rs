//! OTLP export (feature `otlp`) to a real OTLP/HTTP receiver run by the test: the
//! request is decoded with the official protobuf types, and names, units and values
//! must arrive as recorded.
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
    wait_until(
        Duration::from_secs(20),
        "an OTLP export with the third iteration",
        || last_value(&received, "iteration_number").is_some_and(|(_, v)| v == 3.0),
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

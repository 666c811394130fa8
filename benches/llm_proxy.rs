//! The metering proxy's cost on one LLM call over loopback, against the same call made
//! directly to the stand-in upstream (`benches/support/llm_upstream.rs`): a plain chat
//! completion (request to last byte) and a stream's first chunk (request to first
//! event). The difference is what `loopwatch run --llm-proxy` adds to a call: parsing
//! the request's model, forwarding, reading the usage, and recording into a monitor.
//!
//! Results and the machine are in docs/performance.md. Percentiles, CPU per call
//! and memory at 200 concurrent streams come from the load run,
//! `cargo run --release --example llm_proxy_load`. Reproduce with
//! `cargo bench --bench llm_proxy`.

#[path = "support/llm_upstream.rs"]
mod llm_upstream;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::BodyExt;

fn proxy_cost(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let upstream = llm_upstream::start(&runtime, Arc::new(tokio::sync::Notify::new()));
    let dir = tempfile::tempdir().unwrap();
    let (monitor, proxy) = llm_upstream::metered_proxy(upstream, dir.path());
    let client = llm_upstream::client();
    let direct = format!("http://{upstream}");
    let proxied = proxy.base_url();

    let mut group = c.benchmark_group("llm_proxy/plain_call");
    for (name, base) in [("direct", &direct), ("proxied", &proxied)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let response = client
                        .request(llm_upstream::request(base, false, "bench"))
                        .await
                        .unwrap();
                    response.into_body().collect().await.unwrap().to_bytes()
                })
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("llm_proxy/stream_first_chunk");
    for (name, base) in [("direct", &direct), ("proxied", &proxied)] {
        // Timed to the first event only; the rest is read untimed, so the connection
        // returns to the pool.
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let mut timed = std::time::Duration::ZERO;
                for _ in 0..iterations {
                    runtime.block_on(async {
                        let started = std::time::Instant::now();
                        let response = client
                            .request(llm_upstream::request(base, true, "bench"))
                            .await
                            .unwrap();
                        let mut body = response.into_body();
                        black_box(body.frame().await);
                        timed += started.elapsed();
                        while body.frame().await.is_some() {}
                    });
                }
                timed
            })
        });
    }
    group.finish();
    drop(proxy);
    monitor.shutdown();
}

/// The routing of one request: which upstream its headers send it to (an Anthropic
/// SDK's request, its bearer key beside `anthropic-version` and a dozen other headers,
/// as the SDK sends them).
fn routing(c: &mut Criterion) {
    use hyper::header::{HeaderMap, HeaderValue};
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("host", "127.0.0.1:4001"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate"),
        ("connection", "keep-alive"),
        ("content-type", "application/json"),
        ("user-agent", "Anthropic/Python 2.17.0"),
        ("x-stainless-lang", "python"),
        ("x-stainless-package-version", "2.17.0"),
        ("x-stainless-os", "Linux"),
        ("x-stainless-arch", "x64"),
        ("x-stainless-runtime", "CPython"),
        ("x-stainless-retry-count", "0"),
        ("anthropic-version", "2023-06-01"),
        ("authorization", "Bearer sk-ant-bench"),
        ("content-length", "120"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    c.bench_function("llm_proxy/route", |b| {
        b.iter(|| loopwatch::llm::route::place(black_box("/v1/messages"), black_box(&headers)))
    });
}

criterion_group!(benches, proxy_cost, routing);
criterion_main!(benches);

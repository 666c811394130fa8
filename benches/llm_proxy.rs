//! The metering proxy's cost on one LLM call over loopback, against the same call made
//! directly to the stand-in upstream (`benches/support/llm_upstream.rs`): a plain chat
//! completion (request to last byte) and a stream's first chunk (request to first
//! event). The difference is what `loopwatch run --llm-proxy` adds to a call: parsing
//! the request's model, forwarding, reading the usage, and recording into a monitor.
//!
//! `llm_proxy/usage` times reading an answer's usage as it passes (the scan every
//! answer gets). Results and the machine are in docs/performance.md and
//! docs/llm-proxy.md. Percentiles, CPU per call
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
        b.iter(|| {
            loopwatch::llm::route::place(
                black_box(&hyper::Method::POST),
                black_box("/v1/messages"),
                black_box(&headers),
            )
        })
    });
}

/// Reading an answer's usage as it passes (the scan the proxy runs on every answer,
/// in the frames hyper hands it): a plain chat answer of 1 KiB, a streamed chat answer
/// of 40 events, and 700 embeddings of 1536 dimensions (10 MiB, usage at the end).
fn usage(c: &mut Criterion) {
    use loopwatch::llm::usage::UsageReader;
    let read = |streaming: bool, frames: &[Vec<u8>]| {
        let mut reader = UsageReader::new(streaming);
        for frame in frames {
            reader.feed(black_box(frame));
        }
        reader.finish().input_tokens
    };
    let chat = format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-2024-08-06","choices":[{{"index":0,"message":{{"role":"assistant","content":"{}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18,"prompt_tokens_details":{{"cached_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0}}}}}}"#,
        "def f(x):\n    return x * 2\n".repeat(32)
    );
    let chat = vec![chat.into_bytes()];
    let mut events: Vec<Vec<u8>> = (0..40)
        .map(|i| format!("data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"token {i} \"}},\"finish_reason\":null}}]}}\n\n").into_bytes())
        .collect();
    events.push(b"data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":40}}\n\ndata: [DONE]\n\n".to_vec());
    let vector = vec!["-0.012345678"; 1536].join(",");
    let mut embeddings = br#"{"object":"list","data":["#.to_vec();
    for i in 0..700 {
        if i > 0 {
            embeddings.push(b',');
        }
        embeddings.extend_from_slice(
            format!(r#"{{"object":"embedding","index":{i},"embedding":[{vector}]}}"#).as_bytes(),
        );
    }
    embeddings.extend_from_slice(
        br#"],"model":"text-embedding-3-small","usage":{"prompt_tokens":700,"total_tokens":700}}"#,
    );
    // As hyper hands a body over: frames of 16 KiB.
    let embeddings: Vec<Vec<u8>> = embeddings.chunks(16 * 1024).map(<[u8]>::to_vec).collect();
    let mut group = c.benchmark_group("llm_proxy/usage");
    group.bench_function("plain_chat_1k", |b| b.iter(|| read(false, &chat)));
    group.bench_function("stream_41_events", |b| b.iter(|| read(true, &events)));
    group.sample_size(20);
    group.bench_function("embeddings_10mib", |b| b.iter(|| read(false, &embeddings)));
    group.finish();
}

criterion_group!(benches, proxy_cost, routing, usage);
criterion_main!(benches);

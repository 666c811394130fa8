//! The metering proxy's cost on one LLM call over loopback, against the same call made
//! directly to the stand-in upstream (`benches/support/llm_upstream.rs`): a plain chat
//! completion (request to last byte) and a stream's first chunk (request to first
//! event). The difference is what `loopwatch run --llm-proxy` adds to a call: parsing
//! the request's model, forwarding, reading the usage, and recording into a monitor.
//!
//! `llm_proxy/usage` times reading an answer's usage as it passes (the scan every
//! answer gets). `llm_proxy/spend_control` sets spend by role and rate-limit headroom
//! side by side through one proxy: the same plain call direct, proxied with both off
//! (no `X-Loopwatch-Role`, an answer without rate-limit headers: what every call cost
//! before them, the check for the headers aside) and proxied with both on (the request
//! names its role, the answer's six `x-ratelimit-*` headers are read and booked), in
//! criterion's groups and then as p50, p90 and p99 over calls made in turn
//! (`SPEND_CONTROL_CALLS` each); `llm_proxy/headroom` times reading the headers
//! alone. Results and the machine are in docs/performance.md and
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

/// The stand-in upstream and a metering proxy in front of it (recording into a
/// monitor), on a runtime of two workers, and a keep-alive client: what the timed
/// calls go through.
struct Rig {
    runtime: tokio::runtime::Runtime,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
    /// The upstream's base URL, for calls made directly.
    direct: String,
    proxy: loopwatch::llm::proxy::LlmProxy,
    monitor: loopwatch::Monitor,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let upstream = llm_upstream::start(&runtime, Arc::new(tokio::sync::Notify::new()));
        let dir = tempfile::tempdir().unwrap();
        let (monitor, proxy) = llm_upstream::metered_proxy(upstream, dir.path());
        Rig {
            runtime,
            client: llm_upstream::client(),
            direct: format!("http://{upstream}"),
            proxy,
            monitor,
            _dir: dir,
        }
    }

    /// Makes `request` and reads its answer to the end.
    fn call(&self, request: hyper::Request<http_body_util::Full<bytes::Bytes>>) -> bytes::Bytes {
        self.runtime.block_on(async {
            let response = self.client.request(request).await.unwrap();
            response.into_body().collect().await.unwrap().to_bytes()
        })
    }

    /// The proxy stopped, then the monitor.
    fn stop(self) {
        drop(self.proxy);
        self.monitor.shutdown();
    }
}

fn proxy_cost(c: &mut Criterion) {
    let rig = Rig::start();
    let proxied = rig.proxy.base_url();

    let mut group = c.benchmark_group("llm_proxy/plain_call");
    for (name, base) in [("direct", &rig.direct), ("proxied", &proxied)] {
        group.bench_function(name, |b| {
            b.iter(|| rig.call(llm_upstream::request(base, false, "bench")))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("llm_proxy/stream_first_chunk");
    for (name, base) in [("direct", &rig.direct), ("proxied", &proxied)] {
        // Timed to the first event only; the rest is read untimed, so the connection
        // returns to the pool.
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let mut timed = std::time::Duration::ZERO;
                for _ in 0..iterations {
                    rig.runtime.block_on(async {
                        let started = std::time::Instant::now();
                        let response = rig
                            .client
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
    rig.stop();
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

/// Calls each way of the percentile run, made in turn.
const SPEND_CONTROL_CALLS: usize = 5_000;

/// Spend by role and rate-limit headroom, off against on, side by side: criterion's
/// mean for each way, then the latency each adds to a direct call at p50 and p99,
/// over [`SPEND_CONTROL_CALLS`] calls made in turn (direct, off, on, direct …) so
/// that the machine's drift touches the three alike.
fn spend_control(c: &mut Criterion) {
    use std::time::{Duration, Instant};
    let rig = Rig::start();
    // The way, its base URL, and its role (`None`: off, and the answer states no
    // rate limits; a role: on, and the answer states them).
    let ways = [
        ("direct", rig.direct.clone(), None),
        ("off", rig.proxy.base_url(), None),
        ("on", rig.proxy.base_url(), Some("mutation")),
    ];
    let call = |base: &str, role: Option<&'static str>| {
        let model = if role.is_some() {
            "bench-limits"
        } else {
            "bench"
        };
        let mut request = llm_upstream::request(base, false, model);
        if let Some(role) = role {
            request.headers_mut().insert(
                "x-loopwatch-role",
                hyper::header::HeaderValue::from_static(role),
            );
        }
        rig.call(request)
    };
    let mut group = c.benchmark_group("llm_proxy/spend_control");
    for (name, base, role) in &ways {
        group.bench_function(*name, |b| b.iter(|| call(base, *role)));
    }
    group.finish();

    // The percentiles, unless a filter leaves this group out.
    let wanted = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .all(|filter| "llm_proxy/spend_control".contains(filter.as_str()));
    if wanted {
        for (_, base, role) in &ways {
            for _ in 0..200 {
                call(base, *role);
            }
        }
        let mut times: Vec<Vec<Duration>> = (0..3)
            .map(|_| Vec::with_capacity(SPEND_CONTROL_CALLS))
            .collect();
        for _ in 0..SPEND_CONTROL_CALLS {
            for (i, (_, base, role)) in ways.iter().enumerate() {
                let started = Instant::now();
                black_box(call(base, *role));
                times[i].push(started.elapsed());
            }
        }
        let at = |i: usize, q: f64| {
            let mut sorted = times[i].clone();
            sorted.sort_unstable();
            sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6
        };
        println!(
            "llm_proxy/spend_control over {SPEND_CONTROL_CALLS} calls each, in turn: direct p50 {:.1} µs, p99 {:.1} µs",
            at(0, 0.5),
            at(0, 0.99)
        );
        for (i, (name, _, _)) in ways.iter().enumerate().skip(1) {
            println!(
                "llm_proxy/spend_control {name:>3}: added p50 {:+.1} µs, p90 {:+.1} µs, p99 {:+.1} µs (p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs)",
                at(i, 0.5) - at(0, 0.5),
                at(i, 0.9) - at(0, 0.9),
                at(i, 0.99) - at(0, 0.99),
                at(i, 0.5),
                at(i, 0.9),
                at(i, 0.99)
            );
        }
        // On against off call by call: each round's two calls came moments apart.
        let mut paired: Vec<f64> = times[2]
            .iter()
            .zip(&times[1])
            .map(|(on, off)| (on.as_secs_f64() - off.as_secs_f64()) * 1e6)
            .collect();
        paired.sort_by(f64::total_cmp);
        println!(
            "llm_proxy/spend_control on - off, call by call: median {:+.1} µs",
            paired[paired.len() / 2]
        );
    }
    rig.stop();
}

/// Reading an answer's rate-limit headroom (the proxy does it on every answer of a
/// metered call): OpenAI's six headers and Anthropic's twelve with its `Date`, each
/// among a dozen others, and an answer that states none (the early way out).
fn headroom(c: &mut Criterion) {
    use hyper::header::{HeaderMap, HeaderName, HeaderValue};
    use loopwatch::llm::headroom::Headroom;
    let headers = |pairs: &[(&str, &str)]| {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("date", "Thu, 01 May 2025 12:00:00 GMT"),
            ("content-type", "application/json"),
            ("transfer-encoding", "chunked"),
            ("connection", "keep-alive"),
            ("openai-organization", "org-bench"),
            ("openai-processing-ms", "812"),
            ("openai-version", "2020-10-01"),
            ("x-request-id", "req_0123456789abcdef"),
            ("strict-transport-security", "max-age=31536000"),
            ("cf-cache-status", "DYNAMIC"),
            ("server", "cloudflare"),
            ("cf-ray", "0123456789abcdef-AMS"),
        ]
        .iter()
        .chain(pairs)
        {
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    };
    let openai = headers(&llm_upstream::RATE_LIMITS);
    let anthropic = headers(&[
        ("anthropic-ratelimit-requests-limit", "4000"),
        ("anthropic-ratelimit-requests-remaining", "3999"),
        ("anthropic-ratelimit-requests-reset", "2025-05-01T12:00:01Z"),
        ("anthropic-ratelimit-tokens-limit", "480000"),
        ("anthropic-ratelimit-tokens-remaining", "479000"),
        ("anthropic-ratelimit-tokens-reset", "2025-05-01T12:00:01Z"),
        ("anthropic-ratelimit-input-tokens-limit", "400000"),
        ("anthropic-ratelimit-input-tokens-remaining", "399000"),
        (
            "anthropic-ratelimit-input-tokens-reset",
            "2025-05-01T12:00:01Z",
        ),
        ("anthropic-ratelimit-output-tokens-limit", "80000"),
        ("anthropic-ratelimit-output-tokens-remaining", "79000"),
        (
            "anthropic-ratelimit-output-tokens-reset",
            "2025-05-01T12:00:01Z",
        ),
    ]);
    let none = headers(&[]);
    let now = std::time::SystemTime::now();
    let mut group = c.benchmark_group("llm_proxy/headroom");
    for (name, headers) in [
        ("openai", &openai),
        ("anthropic", &anthropic),
        ("none", &none),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| Headroom::read(black_box(headers), black_box(now)))
        });
    }
    group.finish();
}

criterion_group!(benches, proxy_cost, routing, usage, spend_control, headroom);
criterion_main!(benches);

//! A stand-in LLM upstream on loopback for the proxy's benchmarks and load run: an
//! OpenAI-style chat completion, plain (JSON with usage; with OpenAI's six rate-limit
//! headers for a model whose name has `limits` in it) or streamed (four events and
//! `[DONE]`); a stream of model `hold` stays open until `release` is notified.

#[path = "../../tests/support/quiet.rs"]
mod quiet;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

pub const PLAIN: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"def f():\n    return 1"},"finish_reason":"stop"}],"usage":{"prompt_tokens":120,"completion_tokens":40,"total_tokens":160}}"#;

pub const EVENTS: [&str; 5] = [
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"bench-model\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"def\"}}]}\n\n",
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"bench-model\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" f\"}}]}\n\n",
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"bench-model\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"()\"}}]}\n\n",
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"bench-model\",\"choices\":[],\"usage\":{\"prompt_tokens\":120,\"completion_tokens\":3}}\n\n",
    "data: [DONE]\n\n",
];

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Starts the upstream on `runtime`; `release` ends the held streams.
pub fn start(runtime: &tokio::runtime::Runtime, release: Arc<tokio::sync::Notify>) -> SocketAddr {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let release = Arc::clone(&release);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let release = Arc::clone(&release);
                        async move {
                            let body = request
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let text = String::from_utf8_lossy(&body);
                            Ok::<_, Infallible>(answer(&text, release))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The rate-limit headers of a plain answer, as OpenAI sends them.
pub const RATE_LIMITS: [(&str, &str); 6] = [
    ("x-ratelimit-limit-requests", "10000"),
    ("x-ratelimit-remaining-requests", "9999"),
    ("x-ratelimit-reset-requests", "6ms"),
    ("x-ratelimit-limit-tokens", "30000000"),
    ("x-ratelimit-remaining-tokens", "29999840"),
    ("x-ratelimit-reset-tokens", "0s"),
];

fn answer(request: &str, release: Arc<tokio::sync::Notify>) -> Response<Body> {
    if !request.contains("\"stream\":true") {
        let mut response = Response::builder().header("content-type", "application/json");
        if request.contains("limits") {
            for (name, value) in RATE_LIMITS {
                response = response.header(name, value);
            }
        }
        return response
            .body(Full::new(Bytes::from_static(PLAIN.as_bytes())).boxed())
            .unwrap();
    }
    let hold = request.contains("\"model\":\"hold\"");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(8);
    tokio::spawn(async move {
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(EVENTS[0].as_bytes()))))
            .await;
        if hold {
            release.notified().await;
        }
        for event in &EVENTS[1..] {
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(event.as_bytes()))))
                .await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|frame| (frame, rx))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(StreamBody::new(stream).boxed())
        .unwrap()
}

/// A keep-alive HTTP/1 client.
pub fn client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// A chat completion request to `base` (`http://host:port`).
pub fn request(base: &str, stream: bool, model: &str) -> Request<Full<Bytes>> {
    let body = format!(
        r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"write f"}}]}}"#
    );
    Request::post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// A monitor (no containers, no final files) and a metering proxy recording into it,
/// forwarding to `upstream`.
pub fn metered_proxy(
    upstream: SocketAddr,
    output_dir: &std::path::Path,
) -> (loopwatch::Monitor, loopwatch::llm::proxy::LlmProxy) {
    let monitor = quiet::quiet_monitor()
        .output_dir(output_dir)
        .build()
        .unwrap();
    let proxy = loopwatch::llm::proxy::LlmProxy::start(
        monitor.llm_recorder(),
        loopwatch::llm::proxy::ProxyConfig::default()
            .upstreams(Some(&format!("http://{upstream}")), |_| None),
    )
    .unwrap();
    (monitor, proxy)
}

//! One read of a model server over plain HTTP: `GET` its endpoint, with a time limit
//! on the whole answer and a bound on its size, and read what it says.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{exposition, ollama, ModelServer, ReadFailure, Reading, ServerKind};

/// The longest answer read: a vLLM page with many engines and LoRA adapters is a few
/// hundred kilobytes.
pub(crate) const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// The HTTP client the reads share.
pub(crate) type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// A client for model server reads: plain HTTP, connections kept between reads.
pub(crate) fn client(timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1)
        .build(connector)
}

/// Reads `server` once: its answer within `timeout`, read as its kind's format.
pub(crate) async fn read(
    client: &HttpClient,
    server: &ModelServer,
    timeout: Duration,
) -> Result<Reading, ReadFailure> {
    let body = match tokio::time::timeout(timeout, answer(client, server)).await {
        Ok(answer) => answer?,
        Err(_) => return Err(ReadFailure::Timeout),
    };
    let text = std::str::from_utf8(&body)
        .map_err(|_| ReadFailure::Garbage("an answer that is not UTF-8 text".to_string()))?;
    match server.kind() {
        ServerKind::Vllm | ServerKind::Sglang => exposition::read(server.kind(), text),
        ServerKind::Ollama => ollama::read(text),
    }
}

/// The body of a 200 answer to `GET` the server's endpoint.
async fn answer(client: &HttpClient, server: &ModelServer) -> Result<Bytes, ReadFailure> {
    let accept = match server.kind() {
        ServerKind::Ollama => "application/json",
        _ => "text/plain;version=0.0.4",
    };
    let request = hyper::Request::get(server.endpoint())
        .header(hyper::header::ACCEPT, accept)
        .header(hyper::header::USER_AGENT, "loopwatch")
        .body(Empty::new())
        .map_err(|e| ReadFailure::Connection(e.to_string()))?;
    let response = client.request(request).await.map_err(|e| {
        // An answer that is not HTTP is garbage; anything else, a connection that
        // failed, named by its innermost cause ("Connection refused (os error
        // 111)", not the client's wrapper).
        let mut cause: &dyn std::error::Error = &e;
        let mut not_http = false;
        while let Some(source) = cause.source() {
            not_http |= source
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_parse);
            cause = source;
        }
        if not_http {
            ReadFailure::Garbage(format!("not HTTP ({cause})"))
        } else {
            ReadFailure::Connection(cause.to_string())
        }
    })?;
    if response.status() != hyper::StatusCode::OK {
        return Err(ReadFailure::Status(response.status().as_u16()));
    }
    Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                ReadFailure::TooLarge
            } else {
                ReadFailure::Connection(format!("the answer was cut short: {e}"))
            }
        })
}

/// The shortest and longest time a read may take: twice the sampling interval,
/// within these bounds (a busy server can be slow to render its page).
const READ_TIMEOUT_BOUNDS: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(10));

/// The servers to read and the client the reads share.
pub(crate) struct Readers {
    pub(crate) servers: Vec<ModelServer>,
    /// One per server: held from a read's request until its event is sent.
    pub(crate) turns: Vec<std::sync::Arc<tokio::sync::Mutex<()>>>,
    client: HttpClient,
    pub(crate) timeout: Duration,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers")
            .field("servers", &self.servers)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Readers {
    /// Readers of `servers`, each read allowed twice `sample_interval` (2 to 10 s).
    pub(crate) fn new(servers: &[ModelServer], sample_interval: Duration) -> Self {
        let timeout = (sample_interval * 2).clamp(READ_TIMEOUT_BOUNDS.0, READ_TIMEOUT_BOUNDS.1);
        Readers {
            servers: servers.to_vec(),
            turns: servers
                .iter()
                .map(|_| std::sync::Arc::new(tokio::sync::Mutex::new(())))
                .collect(),
            client: client(timeout),
            timeout,
        }
    }

    /// Reads server `index` once.
    pub(crate) async fn read(&self, index: usize) -> Result<Reading, ReadFailure> {
        read(&self.client, &self.servers[index], self.timeout).await
    }
}

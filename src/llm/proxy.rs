//! The metering proxy: a local HTTP server that forwards a loop's LLM requests to
//! their provider and meters the answers on their way back.
//!
//! `loopwatch run --llm-proxy` starts one on 127.0.0.1 and points the loop at it
//! (`OPENAI_BASE_URL`, `ANTHROPIC_BASE_URL`), so the openai and anthropic SDKs, and
//! anything that takes an `api_base`, are metered with no change to the loop.
//!
//! - **Routes.** By the API a request speaks, read from its headers, never guessed
//!   from its path ([`super::route`]): `anthropic-version` or `x-api-key` to the
//!   Anthropic upstream, any other bearer token to the OpenAI-compatible one, a
//!   request without a credential by its path; a request that cannot be placed is
//!   refused with a 4xx naming the reason and never forwarded. Chat completions,
//!   completions, the Responses API, embeddings and Anthropic's messages are
//!   metered; other paths (`/v1/models` …) are forwarded unmetered.
//! - **Forwarding.** Method, path, query, headers and body go on as they came (the
//!   hop-by-hop headers aside), over TLS with connections pooled, through the
//!   network's proxy where it has one ([`super::upstream`]). `Authorization` and
//!   `x-api-key` pass through and are never logged or kept; neither are bodies. The
//!   one change: `Accept-Encoding: identity` replaces the loop's, so that answers
//!   come uncompressed and their usage can be read; and, only when asked
//!   ([`ProxyConfig::request_usage`], `--llm-request-usage`), or always when the run
//!   has an LLM budget ([`CallRecorder::asks_for_usage`]), a streamed chat or
//!   completion request to the OpenAI-compatible API without
//!   `stream_options.include_usage` gets `"stream_options": {"include_usage": true}`,
//!   so that its stream ends with its usage. Answers go back frame by frame as they
//!   arrive: a stream is never held back.
//! - **Start.** Each upstream URL is checked ([`super::upstream`]): one that does not
//!   parse, or is the proxy's own address, is an error, and the proxy does not
//!   start.
//! - **Metering.** The request's `model` is read from the first 1 MiB of its body;
//!   the answer's model and usage as [`super::usage`] reads them, scanning answers of
//!   any size without keeping them; the answer's rate-limit headers as
//!   [`super::headroom`] reads them, booked with the call. Each call is recorded once,
//!   when its answer ends, fails, or is left:
//!   - a call whose whole answer came from the upstream is `ok`, with its usage,
//!     whether or not the loop read it all; an answer that is not JSON, or is
//!     compressed, is `ok` with its usage missing;
//!   - when the loop hangs up on a plain (not streamed) answer, the rest of it is
//!     still read from the upstream, for at most [`DRAIN_TIMEOUT`] and
//!     [`DRAIN_MAX_BYTES`], to learn its usage: the provider bills it;
//!   - a call the loop gave up on before the provider answered at all (no status
//!     line yet: its client's timeout ran out) is a `timeout`, an outage's sign,
//!     unless loopwatch was ending the loop then ([`LlmProxy::loop_ending`]);
//!   - any other call left before its answer ended — the loop hung up mid-answer, or
//!     loopwatch stopped the loop or the proxy — is `abandoned`: not a failure.
//! - **Faults.** An upstream that cannot be reached closes the loop's connection, as
//!   the upstream itself would have: the loop sees a connection error, and the call is
//!   counted as one. An error status passes through unchanged and is counted by its
//!   code, with a 429's `Retry-After`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::headroom::Headroom;
use super::route::{place, Api, Refusal};
use super::upstream::{chain, Network, Upstream, UpstreamClient};
use super::usage::UsageReader;
use super::{Admission, BudgetRefusal, CallRecorder, CallRequest, LlmCall, LlmError, Operation};
use crate::error::Error;

/// The public OpenAI endpoint, when neither `--llm-upstream` nor `OPENAI_BASE_URL`
/// names another.
pub const OPENAI_DEFAULT_BASE: &str = "https://api.openai.com/v1";
/// The public Anthropic endpoint, when neither `--llm-upstream` nor
/// `ANTHROPIC_BASE_URL` names another.
pub const ANTHROPIC_DEFAULT_BASE: &str = "https://api.anthropic.com";

/// How much of a request body is read for its `model` before it is forwarded.
pub const MODEL_SCAN_BYTES: usize = 1024 * 1024;

/// Most connections from the loop served at once; past it, new ones are closed.
pub const MAX_CONNECTIONS: usize = 4096;

/// How long the rest of a plain answer the loop hung up on is still read for its
/// usage.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The most bytes of a plain answer the loop hung up on that are still read for its
/// usage (they are scanned, not kept).
pub const DRAIN_MAX_BYTES: usize = 256 * 1024 * 1024;

/// How long a stopping proxy waits for its connections to close and the answers
/// being read for their usage to end; calls still open then are abandoned.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// How long a call the loop hung up on without its answer waits to be booked: if the
/// loop ends within it (its process exited: a crash, a Ctrl-C at the terminal, an
/// `asyncio.run` cancelling its tasks at exit; or loopwatch ended it), the call was
/// cut by that end and is `abandoned`; otherwise the loop gave up on the provider and
/// the call is a `timeout`.
pub const SETTLE_WAIT: Duration = Duration::from_secs(2);

/// Silence of the upstream, after its status line, past which a loop that hangs up
/// gave up on a stalled provider (a `timeout`) rather than leaving an answer that was
/// still coming (`abandoned`).
pub const STALLED_ANSWER: Duration = Duration::from_secs(30);

/// When the loop was ended: set by the supervisor before it signals the loop and when
/// the loop's process exits, so that calls the loop leaves then are not taken for a
/// provider's outage.
#[derive(Debug)]
struct LoopEnds {
    /// The instant the times below count from.
    base: Instant,
    /// Whether the loop is being ended, or has ended, and not started again.
    ending: AtomicBool,
    /// The last end, in nanoseconds after `base` plus one; 0 before any.
    last_end: AtomicU64,
}

impl Default for LoopEnds {
    fn default() -> Self {
        LoopEnds {
            base: Instant::now(),
            ending: AtomicBool::new(false),
            last_end: AtomicU64::new(0),
        }
    }
}

impl LoopEnds {
    fn set(&self, ending: bool) {
        if ending {
            let nanos = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.last_end
                .store(nanos.saturating_add(1), Ordering::Release);
        }
        self.ending.store(ending, Ordering::Release);
    }

    /// Whether the loop was ended at any time after `start`, or is being ended now.
    fn ended_since(&self, start: Instant) -> bool {
        if self.ending.load(Ordering::Acquire) {
            return true;
        }
        let since = u64::try_from(start.saturating_duration_since(self.base).as_nanos())
            .unwrap_or(u64::MAX);
        self.last_end.load(Ordering::Acquire) > since
    }
}

/// Where the proxy listens and forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyConfig {
    /// The address to listen on (default 127.0.0.1 on a free port).
    pub listen: SocketAddr,
    /// The OpenAI-compatible base URL, ending where the SDK's `base_url` ends
    /// (`https://api.openai.com/v1`): a request for `/v1/chat/completions` goes to
    /// `<base>/chat/completions`.
    pub openai_base: String,
    /// The Anthropic base URL (`https://api.anthropic.com`): a request for
    /// `/v1/messages` goes to `<base>/v1/messages`.
    pub anthropic_base: String,
    /// Where `openai_base` came from (`--llm-upstream`, `OPENAI_BASE_URL`,
    /// `OPENAI_API_BASE`, `the default`), named when it cannot be used.
    pub openai_from: &'static str,
    /// Where `anthropic_base` came from (`--llm-upstream`, `ANTHROPIC_BASE_URL`,
    /// `the default`), named when it cannot be used.
    pub anthropic_from: &'static str,
    /// Whether a streamed chat or completion request to the OpenAI-compatible API
    /// that lacks `stream_options.include_usage` gets
    /// `"stream_options": {"include_usage": true}` (`--llm-request-usage`; off by
    /// default: it adds a last chunk, with no choices, to the loop's stream). A
    /// recorder whose run has an LLM budget turns it on whatever this says
    /// ([`CallRecorder::asks_for_usage`]).
    pub request_usage: bool,
}

/// How [`ProxyConfig::openai_from`] and [`ProxyConfig::anthropic_from`] name a public
/// endpoint that nothing chose.
pub const DEFAULT_UPSTREAM: &str = "the default";

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            openai_base: OPENAI_DEFAULT_BASE.to_string(),
            anthropic_base: ANTHROPIC_DEFAULT_BASE.to_string(),
            openai_from: DEFAULT_UPSTREAM,
            anthropic_from: DEFAULT_UPSTREAM,
            request_usage: false,
        }
    }
}

impl ProxyConfig {
    /// The upstreams as the loop would have reached them without the proxy: its
    /// `OPENAI_BASE_URL` and `ANTHROPIC_BASE_URL`, else the public endpoints; or one
    /// upstream serving both (`--llm-upstream URL`: OpenAI under `URL/v1`, Anthropic
    /// under `URL`).
    pub fn upstreams(
        mut self,
        upstream: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let trimmed = |url: String| url.trim().trim_end_matches('/').to_string();
        let first = |names: &[&'static str], default: &str| {
            names
                .iter()
                .find_map(|name| {
                    env(name)
                        .filter(|u| !u.trim().is_empty())
                        .map(|u| (trimmed(u), *name))
                })
                .unwrap_or_else(|| (default.to_string(), DEFAULT_UPSTREAM))
        };
        match upstream {
            Some(url) => {
                let url = trimmed(url.to_string());
                self.openai_base = format!("{url}/v1");
                self.anthropic_base = url;
                self.openai_from = "--llm-upstream";
                self.anthropic_from = "--llm-upstream";
            }
            None => {
                (self.openai_base, self.openai_from) =
                    first(&["OPENAI_BASE_URL", "OPENAI_API_BASE"], OPENAI_DEFAULT_BASE);
                (self.anthropic_base, self.anthropic_from) =
                    first(&["ANTHROPIC_BASE_URL"], ANTHROPIC_DEFAULT_BASE);
            }
        }
        self
    }

    /// With the address to listen on.
    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    /// Asking streamed chat and completion requests for their usage (see
    /// [`ProxyConfig::request_usage`]).
    pub fn with_request_usage(mut self, request_usage: bool) -> Self {
        self.request_usage = request_usage;
        self
    }
}

/// A running proxy; stops when dropped or shut down.
#[derive(Debug)]
pub struct LlmProxy {
    local_addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    stop: tokio_util::sync::CancellationToken,
    tasks: Arc<Tasks>,
    ending: Arc<LoopEnds>,
}

impl LlmProxy {
    /// Starts the proxy on a runtime of its own (two worker threads), recording into
    /// `recorder` (a run's [`crate::LlmRecorder`]), reaching its upstreams through the
    /// proxy of the process's `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` and trusting
    /// the system's roots (or `SSL_CERT_FILE`) beside the bundled ones
    /// ([`super::upstream`]).
    ///
    /// A port in use is [`Error::ProxyBind`]; an upstream URL that does not parse, is
    /// the proxy's own address or sits behind a proxy loopwatch cannot speak to is
    /// [`Error::ProxyUpstream`]; a proxy variable or `SSL_CERT_FILE` that cannot be
    /// used is [`Error::InvalidSetting`]. Nothing is started then.
    pub fn start(recorder: impl CallRecorder, config: ProxyConfig) -> Result<LlmProxy, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("loopwatch-llm-proxy")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(config.listen))
            .map_err(|source| Error::ProxyBind {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::ProxyBind {
            addr: config.listen,
            source,
        })?;
        let env = |name: &str| std::env::var(name).ok();
        let network = Network::from_env(env)?;
        let openai = Upstream::check(
            "OpenAI",
            config.openai_from,
            &config.openai_base,
            local_addr,
            &network,
        )?;
        let anthropic = Upstream::check(
            "Anthropic",
            config.anthropic_from,
            &config.anthropic_base,
            local_addr,
            &network,
        )?;
        let (tls, trusted) = super::upstream::tls_config(env)?;
        let client = super::upstream::client(&network, tls);
        let direct = || "direct".to_string();
        tracing::info!(
            addr = %local_addr,
            openai_upstream = %openai.shown,
            openai_via = %openai.via.clone().unwrap_or_else(direct),
            anthropic_upstream = %anthropic.shown,
            anthropic_via = %anthropic.via.clone().unwrap_or_else(direct),
            trusted_certificates = trusted,
            "LLM metering proxy listening"
        );
        let tasks = Arc::new(Tasks::default());
        let ending = Arc::new(LoopEnds::default());
        // Under a budget, a stream's usage is asked for: a call without it would
        // count at its worst case.
        let request_usage = config.request_usage || recorder.asks_for_usage();
        let forwarder = Arc::new(Forwarder {
            ending: Arc::clone(&ending),
            client,
            recorder: Arc::new(recorder),
            openai,
            anthropic,
            request_usage,
            tasks: Arc::clone(&tasks),
        });
        let stop = tokio_util::sync::CancellationToken::new();
        runtime.spawn(serve(listener, forwarder, stop.clone()));
        Ok(LlmProxy {
            local_addr,
            runtime: Some(runtime),
            stop,
            tasks,
            ending,
        })
    }

    /// Says whether the loop is ending: set it before loopwatch signals the loop (an
    /// operator's stop, a stall or exit-timeout kill, a restart) and when the loop's
    /// process has exited; clear it when the loop is started again. A call the loop
    /// leaves before its provider answered (or after the provider fell silent for
    /// [`STALLED_ANSWER`]) is `abandoned` when the loop was ended while the call was
    /// in flight or within [`SETTLE_WAIT`] after the loop left it, since that end cut
    /// it; otherwise the loop gave up waiting for the provider, and the call is a
    /// `timeout`.
    pub fn loop_ending(&self, ending: bool) {
        self.ending.set(ending);
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Its base URL (`http://127.0.0.1:PORT`): `LOOPWATCH_LLM_PROXY` and
    /// `ANTHROPIC_BASE_URL` for the loop.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// The loop's `OPENAI_BASE_URL`: the base URL and `/v1`.
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.base_url())
    }

    /// Stops accepting and closes the loop's connections. Plain answers that had
    /// come whole are still read for their usage (for at most [`SHUTDOWN_WAIT`]);
    /// every other call in flight is recorded as abandoned.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.ending.set(true);
        self.stop.cancel();
        if let Some(runtime) = self.runtime.take() {
            // Blocking is not allowed on a runtime's thread: there, nothing is awaited.
            if tokio::runtime::Handle::try_current().is_err() {
                let tasks = Arc::clone(&self.tasks);
                runtime.block_on(async move {
                    let _ = tokio::time::timeout(SHUTDOWN_WAIT, tasks.idle()).await;
                });
            }
            // What is still open ends here, recorded as abandoned. On a runtime's
            // thread a runtime may not be dropped blocking: it is let go instead.
            if tokio::runtime::Handle::try_current().is_err() {
                runtime.shutdown_timeout(Duration::from_secs(1));
            } else {
                runtime.shutdown_background();
            }
        }
    }
}

impl Drop for LlmProxy {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// What forwards and meters one request.
struct Forwarder {
    client: UpstreamClient<RequestBody>,
    recorder: Arc<dyn CallRecorder>,
    openai: Upstream,
    anthropic: Upstream,
    /// See [`ProxyConfig::request_usage`]; on too under a budget
    /// ([`CallRecorder::asks_for_usage`]).
    request_usage: bool,
    tasks: Arc<Tasks>,
    /// See [`LlmProxy::loop_ending`].
    ending: Arc<LoopEnds>,
}

/// The proxy's tasks that a stop waits for: the loop's connections, and the plain
/// answers still read for their usage after the loop hung up.
#[derive(Debug, Default)]
struct Tasks {
    running: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One task counted in [`Tasks`] while it lives.
struct TaskGuard(Arc<Tasks>);

impl Tasks {
    fn enter(self: &Arc<Self>) -> TaskGuard {
        self.running.fetch_add(1, Ordering::AcqRel);
        TaskGuard(Arc::clone(self))
    }

    /// Once no task runs.
    async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.running.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Accepts connections until stopped, each served on a task of its own.
async fn serve(
    listener: tokio::net::TcpListener,
    forwarder: Arc<Forwarder>,
    stop: tokio_util::sync::CancellationToken,
) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, _) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "the LLM proxy could not accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(
                limit = MAX_CONNECTIONS,
                "too many connections to the LLM proxy; closing a new one"
            );
            continue;
        }
        let _ = stream.set_nodelay(true);
        let guard = forwarder.tasks.enter();
        let forwarder = Arc::clone(&forwarder);
        let open = Arc::clone(&open);
        let stop = stop.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let service = hyper::service::service_fn(move |request| {
                let forwarder = Arc::clone(&forwarder);
                async move { forwarder.forward(request).await }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = stop.cancelled() => {}
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Headers that belong to one connection, not to the request, and are not passed on;
/// `accept-encoding` is replaced by `identity`, so that answers can be read.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "accept-encoding"
            | super::ROLE_HEADER
    )
}

/// The role a request names in [`super::ROLE_HEADER`], as it came (the books judge
/// it: [`super::valid_role`]): at most [`super::MAX_ROLE_CHARS`] bytes and one more,
/// so that a longer one stays too long; several values joined with commas, which no
/// role name holds. `None` without the header.
fn role_of(headers: &HeaderMap) -> Option<String> {
    let mut role = String::new();
    for (i, value) in headers.get_all(super::ROLE_HEADER).iter().enumerate() {
        if i > 0 {
            role.push(',');
        }
        let bytes = value.as_bytes();
        role.push_str(&String::from_utf8_lossy(
            &bytes[..bytes.len().min(super::MAX_ROLE_CHARS + 1)],
        ));
        if role.len() > super::MAX_ROLE_CHARS {
            break;
        }
    }
    headers.contains_key(super::ROLE_HEADER).then_some(role)
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !hop_by_hop(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// The `model` a request asks for, from the start of its body: its JSON, or, for a
/// body longer than the scan (or not JSON), the field found as text.
#[cfg(test)]
fn asked_model(prefix: &[u8]) -> Option<String> {
    asked(prefix).0
}

/// The keys a request names its most output tokens by: OpenAI's chat completions
/// (`max_tokens`, `max_completion_tokens`), the Responses API (`max_output_tokens`),
/// Anthropic's messages (`max_tokens`).
const MAX_OUTPUT_KEYS: [&str; 3] = ["max_completion_tokens", "max_output_tokens", "max_tokens"];

/// The `model` and the most output tokens a request asks for, from the start of its
/// body: its JSON, or, for a body longer than the scan (or not JSON), the fields
/// found as text. The largest maximum wins where a request names several.
fn asked(prefix: &[u8]) -> (Option<String>, Option<u64>) {
    #[derive(serde::Deserialize)]
    struct Fields {
        model: Option<serde_json::Value>,
        max_tokens: Option<serde_json::Value>,
        max_completion_tokens: Option<serde_json::Value>,
        max_output_tokens: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Fields>(prefix) {
        Ok(fields) => (
            fields
                .model
                .as_ref()
                .and_then(serde_json::Value::as_str)
                .map(str::to_string),
            [
                fields.max_tokens,
                fields.max_completion_tokens,
                fields.max_output_tokens,
            ]
            .iter()
            .flatten()
            .filter_map(serde_json::Value::as_u64)
            .max(),
        ),
        Err(_) => {
            let text = String::from_utf8_lossy(prefix);
            (
                text_field(&text, "model"),
                MAX_OUTPUT_KEYS
                    .iter()
                    .filter_map(|key| text_number(&text, key))
                    .max(),
            )
        }
    }
}

/// The whole-number value of `"key": 123` in JSON text.
fn text_number(text: &str, key: &str) -> Option<u64> {
    let at = text.find(&format!("\"{key}\""))?;
    let rest = text[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The string value of `"key": "value"` in JSON text.
fn text_field(text: &str, key: &str) -> Option<String> {
    let at = text.find(&format!("\"{key}\""))?;
    let rest = text[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let quoted = rest.strip_prefix('"')?;
    quoted.find('"').map(|end| quoted[..end].to_string())
}

/// A streamed request's body with `"stream_options": {"include_usage": true}` added,
/// when it is a JSON object with `"stream": true` and says nothing of
/// `include_usage`; `None` otherwise (the body then goes on as it came). Without
/// `stream_options`, the field is put first and every other byte kept; a
/// `stream_options` without `include_usage` gets it (the body is written again).
fn with_usage_requested(body: &[u8]) -> Option<Bytes> {
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let request = value.as_object_mut()?;
    if request.get("stream") != Some(&serde_json::Value::Bool(true)) {
        return None;
    }
    match request.get_mut("stream_options") {
        None | Some(serde_json::Value::Null) => {
            let open = body.iter().position(|b| *b == b'{')?;
            let mut with = Vec::with_capacity(body.len() + 48);
            with.extend_from_slice(&body[..=open]);
            with.extend_from_slice(br#""stream_options":{"include_usage":true},"#);
            with.extend_from_slice(&body[open + 1..]);
            Some(Bytes::from(with))
        }
        Some(serde_json::Value::Object(options)) if !options.contains_key("include_usage") => {
            options.insert("include_usage".into(), serde_json::Value::Bool(true));
            serde_json::to_vec(&value).ok().map(Bytes::from)
        }
        Some(_) => None,
    }
}

impl Forwarder {
    /// Forwards one request; an upstream that cannot be reached becomes an error, on
    /// which hyper closes the loop's connection.
    async fn forward(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<MeteredBody>, std::io::Error> {
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let placement = match place(&parts.method, parts.uri.path(), &parts.headers) {
            Ok(placement) => placement,
            Err(refusal) => {
                if refusal != Refusal::NotApi {
                    tracing::warn!(path = parts.uri.path(), reason = %refusal, "the LLM proxy refused a request it cannot place");
                }
                return Ok(refused(refusal));
            }
        };
        let (target, suffix) = match placement.api {
            Api::Anthropic => (&self.anthropic, path_and_query.as_str()),
            Api::OpenAi => (&self.openai, &path_and_query["/v1".len()..]),
        };
        let (provider, operation) = (placement.api.provider(), placement.operation);
        let uri: hyper::Uri = format!("{}{suffix}", target.base)
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let body_bytes = parts
            .headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        let (mut prefix, rest) = read_prefix(body).await?;
        let (model, max_output_tokens) = match operation {
            Some(_) => asked(&prefix),
            None => (None, None),
        };
        let model = model.unwrap_or_else(|| super::OTHER_MODEL.to_string());
        let role = operation.and_then(|_| role_of(&parts.headers));
        // Admitted (its worst case reserved against the budget) or refused, before
        // anything is sent.
        let metering = match operation {
            None => None,
            Some(operation) => {
                let mut request =
                    CallRequest::new(model.clone(), body_bytes.unwrap_or(prefix.len() as u64))
                        .with_provider(provider, operation)
                        .with_role(role.clone());
                request.max_output_tokens = max_output_tokens;
                let id = match self.recorder.started(&request) {
                    Admission::Admitted(id) => id,
                    Admission::Blocked(refusal) => {
                        return Ok(budget_refusal(placement.api, &refusal));
                    }
                };
                Some(Metering {
                    recorder: Arc::clone(&self.recorder),
                    id,
                    call: Some({
                        let mut call = LlmCall::new(model, Duration::ZERO)
                            .with_provider(provider)
                            .with_operation(operation);
                        call.role = role;
                        call
                    }),
                    started,
                    first_chunk: None,
                    reader: None,
                    tasks: Arc::clone(&self.tasks),
                    answered: false,
                    last_byte: started,
                    ending: Arc::clone(&self.ending),
                    headroom: None,
                })
            }
        };
        let usage_asked = match (placement.api, operation, &rest) {
            (Api::OpenAi, Some(Operation::Chat | Operation::TextCompletion), None)
                if self.request_usage =>
            {
                with_usage_requested(&prefix)
            }
            _ => None,
        };
        let mut upstream = Request::builder().method(parts.method).uri(uri);
        if let Some(headers) = upstream.headers_mut() {
            copy_headers(&parts.headers, headers);
            if let Some(body) = usage_asked {
                headers.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                prefix = body;
            }
            headers.insert(
                hyper::header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
            if let Some(basic) = &target.basic {
                headers
                    .entry(hyper::header::AUTHORIZATION)
                    .or_insert_with(|| basic.clone());
            }
            if let Some(proxy_authorization) = &target.proxy_authorization {
                headers.insert(
                    hyper::header::PROXY_AUTHORIZATION,
                    proxy_authorization.clone(),
                );
            }
        }
        let upstream = upstream
            .body(RequestBody {
                prefix: (!prefix.is_empty()).then_some(prefix),
                rest,
            })
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let answer = match self.client.request(upstream).await {
            Ok(answer) => answer,
            Err(e) => {
                // Refused, reset, or not HTTP: no answer came, as for the loop.
                if let Some(mut metering) = metering {
                    metering.finish(End::Failed(LlmError::Connection));
                }
                tracing::warn!(
                    upstream = %target.shown,
                    via = %target.via.as_deref().unwrap_or("direct"),
                    error = %chain(&e),
                    "the LLM upstream could not be reached"
                );
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    e,
                ));
            }
        };
        let (parts, body) = answer.into_parts();
        // Its rate limits, booked with the call when it ends (as of then).
        let headroom = match &metering {
            Some(_) => Headroom::read(&parts.headers, std::time::SystemTime::now()),
            None => None,
        };
        let wait_asked = headroom.as_ref().and_then(|h| h.retry_after);
        let metering = metering.map(|mut metering| {
            metering.headroom = headroom.map(|headroom| (headroom, Instant::now()));
            metering.answered = true;
            metering.last_byte = Instant::now();
            let status = parts.status;
            let streaming = parts
                .headers
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            // An upstream that compressed its answer anyway: its usage cannot be read.
            let encoded = parts
                .headers
                .get(hyper::header::CONTENT_ENCODING)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    !v.trim().is_empty() && !v.trim().eq_ignore_ascii_case("identity")
                });
            if let Some(call) = metering.call.as_mut() {
                if status.as_u16() >= 400 {
                    call.error = Some(LlmError::Status(status.as_u16()));
                    call.retry_after = wait_asked.or_else(|| {
                        super::headroom::retry_after(&parts.headers, std::time::SystemTime::now())
                    });
                }
            }
            metering.reader = status.is_success().then(|| {
                if encoded {
                    UsageReader::unreadable()
                } else {
                    UsageReader::new(streaming)
                }
            });
            metering
        });
        let mut response = Response::builder().status(parts.status);
        if let Some(headers) = response.headers_mut() {
            copy_headers(&parts.headers, headers);
        }
        response
            .body(MeteredBody {
                inner: BodySource::Upstream(body),
                metering,
            })
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

/// The answer to a request the proxy does not forward: its status, and an error body
/// both SDKs read (`error.message`, `error.type`), naming the reason.
fn refused(refusal: Refusal) -> Response<MeteredBody> {
    let body = serde_json::json!({
        "type": "error",
        "error": {
            "type": if refusal == Refusal::NotApi { "not_found_error" } else { "invalid_request_error" },
            "message": refusal.to_string(),
        },
    });
    let mut response = Response::new(MeteredBody {
        inner: BodySource::Fixed(Some(Bytes::from(body.to_string()))),
        metering: None,
    });
    *response.status_mut() =
        StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // Sent again, it would be refused again.
    headers.insert("x-should-retry", HeaderValue::from_static("false"));
    response
}

/// The answer to a call the budget refused, in the format of the API it speaks, so
/// that the loop's SDK raises its usual error with the budget's message; never
/// forwarded. `x-should-retry: false` tells the openai and anthropic SDKs not to
/// send it again (both read that header before their status rules).
///
/// - OpenAI-compatible: 429 with `insufficient_quota`, what OpenAI answers when an
///   account's quota or budget is spent; its SDK raises `RateLimitError` and, told
///   not to retry, gives up at once.
/// - Anthropic: 400 `invalid_request_error`, what Anthropic answers when an
///   organization's or workspace's spend limit is reached ("You have reached your
///   specified API usage limits"); its SDK raises `BadRequestError` and never retries
///   a 400. A 429 `rate_limit_error` would say "wait and retry", which a spent budget
///   does not allow, and `billing_error` has no status of its own in the SDK.
///
/// A deferred call ([`BudgetRefusal::deferred`]: the spend is below the budget, the
/// calls in flight could take it past) is told to wait and retry instead: a 429 in
/// each API's rate-limit format (OpenAI-compatible: `rate_limit_exceeded`; Anthropic:
/// `rate_limit_error`) with `Retry-After: 1` and `x-should-retry: true`, which both
/// SDKs retry on their own, so that the call goes through once those calls settle.
fn budget_refusal(api: Api, refusal: &BudgetRefusal) -> Response<MeteredBody> {
    let message = refusal.to_string();
    let (status, body) = match (api, refusal.deferred) {
        (Api::OpenAi, false) => (
            StatusCode::TOO_MANY_REQUESTS,
            serde_json::json!({
                "error": {
                    "message": message,
                    "type": "insufficient_quota",
                    "param": null,
                    "code": "insufficient_quota",
                },
            }),
        ),
        (Api::OpenAi, true) => (
            StatusCode::TOO_MANY_REQUESTS,
            serde_json::json!({
                "error": {
                    "message": message,
                    "type": "requests",
                    "param": null,
                    "code": "rate_limit_exceeded",
                },
            }),
        ),
        (Api::Anthropic, false) => (
            StatusCode::BAD_REQUEST,
            serde_json::json!({
                "type": "error",
                "error": {"type": "invalid_request_error", "message": message},
            }),
        ),
        (Api::Anthropic, true) => (
            StatusCode::TOO_MANY_REQUESTS,
            serde_json::json!({
                "type": "error",
                "error": {"type": "rate_limit_error", "message": message},
            }),
        ),
    };
    let mut response = Response::new(MeteredBody {
        inner: BodySource::Fixed(Some(Bytes::from(body.to_string()))),
        metering: None,
    });
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if refusal.deferred {
        headers.insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
        headers.insert("x-should-retry", HeaderValue::from_static("true"));
    } else {
        headers.insert("x-should-retry", HeaderValue::from_static("false"));
    }
    response
}

/// Reads the first [`MODEL_SCAN_BYTES`] of a request body; the rest, if any, is
/// forwarded as it comes.
async fn read_prefix(mut body: Incoming) -> Result<(Bytes, Option<Incoming>), std::io::Error> {
    let mut prefix = BytesMut::new();
    while prefix.len() < MODEL_SCAN_BYTES {
        match body.frame().await {
            None => return Ok((prefix.freeze(), None)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    prefix.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, e)),
        }
    }
    Ok((prefix.freeze(), Some(body)))
}

/// A request body forwarded upstream: what was read for the model, then the rest.
struct RequestBody {
    prefix: Option<Bytes>,
    rest: Option<Incoming>,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        match &self.rest {
            None => SizeHint::with_exact(prefix),
            Some(rest) => {
                let hint = rest.size_hint();
                let mut sum = SizeHint::new();
                sum.set_lower(hint.lower() + prefix);
                if let Some(upper) = hint.upper() {
                    sum.set_upper(upper + prefix);
                }
                sum
            }
        }
    }
}

/// How a metered answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Its last byte came from the upstream.
    Ended,
    /// The upstream failed.
    Failed(LlmError),
    /// It was left before its end: the loop hung up, or loopwatch stopped the loop
    /// or the proxy.
    Left,
}

/// One metered call, recorded once: when its answer ends, fails, or is left.
struct Metering {
    recorder: Arc<dyn CallRecorder>,
    id: u64,
    call: Option<LlmCall>,
    started: Instant,
    first_chunk: Option<Duration>,
    reader: Option<UsageReader>,
    tasks: Arc<Tasks>,
    /// Whether the provider's status line came.
    answered: bool,
    /// When the upstream last sent something (its status line or a chunk).
    last_byte: Instant,
    /// See [`LlmProxy::loop_ending`].
    ending: Arc<LoopEnds>,
    /// The rate limits its answer's headers stated, and when they came.
    headroom: Option<(super::Headroom, Instant)>,
}

impl Metering {
    /// Records the call. An error status stays the call's error; a failure the
    /// answer named is an error of its type; an answer read whole is `ok` however it
    /// ended; else an upstream failure is an error, a stream that ended without its
    /// closing event was cut, a call the loop gave up on before the provider answered
    /// is a timeout (unless loopwatch was ending the loop), and any other call left
    /// before its end is abandoned.
    fn finish(&mut self, end: End) {
        let Some(mut call) = self.call.take() else {
            return;
        };
        call.duration = self.started.elapsed();
        call.time_to_first_chunk = self.first_chunk;
        call.headroom = self
            .headroom
            .take()
            .map(|(headroom, read)| headroom.aged(read.elapsed()));
        let (mut streaming, mut complete, mut failure) = (false, false, None);
        if let Some(reader) = self.reader.take() {
            streaming = reader.streaming();
            let usage = reader.finish();
            // Once finished: a stream's last line may lack its newline.
            complete = usage.complete;
            call.response_model = usage.response_model;
            call.input_tokens = usage.input_tokens;
            call.output_tokens = usage.output_tokens;
            call.cached_input_tokens = usage.cached_input_tokens;
            call.cache_write_input_tokens = usage.cache_write_input_tokens;
            call.reasoning_tokens = usage.reasoning_tokens;
            failure = usage.failure;
        }
        if call.error.is_none() {
            call.error = match (failure, end) {
                (Some(kind), _) => Some(LlmError::provider(&kind)),
                (None, _) if complete => None,
                (None, End::Failed(error)) => Some(error),
                (None, End::Ended) => streaming.then_some(LlmError::StreamCut),
                (None, End::Left) => {
                    let waiting = !self.answered || self.last_byte.elapsed() >= STALLED_ANSWER;
                    if waiting && !self.ending.ended_since(self.started) {
                        // Left waiting on the provider: a timeout, unless the loop
                        // turns out to have ended then.
                        return self.settle(call);
                    }
                    call.abandoned = true;
                    None
                }
            };
        }
        // Booked and ended at once: its reservation gives way to its cost (or, its
        // usage unknown, is charged to the budget).
        self.recorder.ended(self.id, &call);
    }

    /// Books a call the loop left waiting on its provider once [`SETTLE_WAIT`] has
    /// shown whether the loop ended then: `abandoned` if it did, else a `timeout`.
    /// Outside a runtime, or with the proxy stopping, it is booked now.
    fn settle(&self, call: LlmCall) {
        let mut settling = Settling {
            recorder: Arc::clone(&self.recorder),
            id: self.id,
            call: Some(call),
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            settling.book(false);
            return;
        };
        let (ending, started, guard) = (Arc::clone(&self.ending), self.started, self.tasks.enter());
        runtime.spawn(async move {
            let _guard = guard;
            let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
            while tokio::time::Instant::now() < deadline && !ending.ended_since(started) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            settling.book(ending.ended_since(started));
        });
    }

    /// Whether what is left of the answer is worth reading for its usage after the
    /// loop hung up: a plain JSON answer not read whole yet.
    fn worth_draining(&self) -> bool {
        self.call.is_some()
            && self
                .reader
                .as_ref()
                .is_some_and(|reader| reader.scanning_plain() && !reader.complete())
    }
}

/// A call left waiting on its provider, booked once it is known whether the loop
/// ended then; dropped unbooked (the proxy's runtime stopping), it is abandoned.
struct Settling {
    recorder: Arc<dyn CallRecorder>,
    /// The call's id: it is in flight, its worst case reserved, until booked.
    id: u64,
    call: Option<LlmCall>,
}

impl Settling {
    fn book(&mut self, abandoned: bool) {
        if let Some(mut call) = self.call.take() {
            if abandoned {
                call.abandoned = true;
            } else {
                call.error = Some(LlmError::Timeout);
            }
            self.recorder.ended(self.id, &call);
        }
    }
}

impl Drop for Settling {
    fn drop(&mut self) {
        self.book(true);
    }
}

impl Drop for Metering {
    /// Dropped unrecorded: the call was left before its answer ended.
    fn drop(&mut self) {
        self.finish(End::Left);
    }
}

/// Reads the rest of a plain answer the loop hung up on, for its usage: until its
/// end, its JSON closes, [`DRAIN_TIMEOUT`] or [`DRAIN_MAX_BYTES`]; then records the
/// call (`ok` when read whole, else abandoned).
async fn drain(mut body: Incoming, mut metering: Metering) {
    let read = async {
        let mut read = 0usize;
        loop {
            match body.frame().await {
                None => return End::Ended,
                Some(Ok(frame)) => {
                    if let (Some(data), Some(reader)) = (frame.data_ref(), metering.reader.as_mut())
                    {
                        read = read.saturating_add(data.len());
                        metering.last_byte = Instant::now();
                        reader.feed(data);
                        if reader.complete() || read > DRAIN_MAX_BYTES {
                            return End::Left;
                        }
                    }
                }
                Some(Err(_)) => return End::Left,
            }
        }
    };
    let end = tokio::time::timeout(DRAIN_TIMEOUT, read)
        .await
        .unwrap_or(End::Left);
    metering.finish(end);
}

/// Where an answer's bytes come from.
enum BodySource {
    Upstream(Incoming),
    Fixed(Option<Bytes>),
}

/// An answer on its way back to the loop, read as it passes.
struct MeteredBody {
    inner: BodySource,
    metering: Option<Metering>,
}

impl Drop for MeteredBody {
    /// Dropped with all of the answer read: it ended. Else the loop hung up: the rest
    /// of a plain answer is read for its usage on a task of its own; any other call
    /// is recorded as left.
    fn drop(&mut self) {
        let Some(mut metering) = self.metering.take() else {
            return;
        };
        if self.inner.is_end_stream() {
            metering.finish(End::Ended);
            return;
        }
        if metering.worth_draining() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                if let BodySource::Upstream(body) =
                    std::mem::replace(&mut self.inner, BodySource::Fixed(None))
                {
                    let guard = metering.tasks.enter();
                    runtime.spawn(async move {
                        let _guard = guard;
                        drain(body, metering).await;
                    });
                    return;
                }
            }
        }
        metering.finish(End::Left);
    }
}

impl BodySource {
    fn is_end_stream(&self) -> bool {
        match self {
            BodySource::Upstream(body) => body.is_end_stream(),
            BodySource::Fixed(bytes) => bytes.is_none(),
        }
    }
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            BodySource::Upstream(body) => Pin::new(body).poll_frame(cx),
            BodySource::Fixed(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        };
        if let Poll::Ready(ready) = &polled {
            if let Some(metering) = this.metering.as_mut() {
                match ready {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            metering.last_byte = Instant::now();
                            metering
                                .first_chunk
                                .get_or_insert_with(|| metering.started.elapsed());
                            if let Some(reader) = metering.reader.as_mut() {
                                reader.feed(data);
                            }
                        }
                        // A body of known length ends with its last bytes: the server
                        // may not ask for more. An answer read whole (a stream's closing
                        // event passed) is booked before its last bytes go on, so that
                        // the loop's next call never finds this one still reserved.
                        let read_whole = metering.reader.as_ref().is_some_and(|r| r.complete());
                        if this.inner.is_end_stream() || read_whole {
                            metering.finish(End::Ended);
                        }
                    }
                    Some(Err(_)) => metering.finish(End::Failed(LlmError::StreamCut)),
                    None => metering.finish(End::Ended),
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            BodySource::Upstream(body) => body.size_hint(),
            BodySource::Fixed(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_is_read_from_whole_or_cut_bodies() {
        assert_eq!(
            asked_model(br#"{"model":"gpt-4o","stream":true,"messages":[]}"#).as_deref(),
            Some("gpt-4o")
        );
        assert_eq!(
            asked_model(
                br#"{"messages":[{"content":"x"}], "model" : "claude-sonnet-4", "stream": tr"#
            )
            .as_deref(),
            Some("claude-sonnet-4")
        );
        assert_eq!(asked_model(b"\xff\xfe not json"), None);
    }

    #[test]
    fn the_most_output_tokens_are_read_by_each_apis_name_from_whole_or_cut_bodies() {
        for (body, expected) in [
            (
                &br#"{"model":"m","max_tokens":10,"messages":[]}"#[..],
                Some(10),
            ),
            (br#"{"model":"m","max_completion_tokens":64}"#, Some(64)),
            (
                br#"{"model":"m","max_output_tokens":512,"input":"x"}"#,
                Some(512),
            ),
            (
                br#"{"model":"m","max_tokens":10,"max_completion_tokens":20}"#,
                Some(20),
            ),
            (br#"{"model":"m","max_tokens":null}"#, None),
            (br#"{"model":"m","max_tokens":-3}"#, None),
            (br#"{"model":"m"}"#, None),
            // Cut: read as text.
            (
                br#"{"max_tokens" : 300, "model":"m","messages":[{"content":"x"#,
                Some(300),
            ),
            (br#"{"model":"m","max_tokens":"many","messages":[{"#, None),
        ] {
            let (model, max) = asked(body);
            assert_eq!(
                model.as_deref(),
                Some("m"),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(max, expected, "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(asked(b"\xff\xfe not json"), (None, None));
    }

    /// A refusal in each API's own error format, the budget's message in it, told
    /// not to be retried.
    #[test]
    fn a_budget_refusal_speaks_each_apis_error_format() {
        let refusal = BudgetRefusal {
            budget_usd: 2.0,
            spent_usd: 1.5,
            reserved_usd: 0.5,
            deferred: false,
        };
        for (api, status) in [
            (Api::OpenAi, StatusCode::TOO_MANY_REQUESTS),
            (Api::Anthropic, StatusCode::BAD_REQUEST),
        ] {
            let response = budget_refusal(api, &refusal);
            assert_eq!(response.status(), status);
            assert_eq!(response.headers()["x-should-retry"], "false");
            assert!(response.headers().get("retry-after").is_none());
            assert_eq!(response.headers()["content-type"], "application/json");
            let BodySource::Fixed(Some(bytes)) = &response.body().inner else {
                panic!("a whole body");
            };
            let body: serde_json::Value = serde_json::from_slice(bytes).unwrap();
            let (message, kind) = match api {
                Api::OpenAi => {
                    assert_eq!(body["error"]["code"], "insufficient_quota");
                    (&body["error"]["message"], &body["error"]["type"])
                }
                Api::Anthropic => {
                    assert_eq!(body["type"], "error");
                    (&body["error"]["message"], &body["error"]["type"])
                }
            };
            let expected_kind = match api {
                Api::OpenAi => "insufficient_quota",
                Api::Anthropic => "invalid_request_error",
            };
            assert_eq!(kind, expected_kind);
            let message = message.as_str().unwrap();
            for part in [
                "$2.0000",
                "$1.5000 spent",
                "$0.5000 reserved",
                "--llm-budget-usd",
            ] {
                assert!(message.contains(part), "{part}: {message}");
            }
        }
    }

    /// A deferral in each API's rate-limit format: a 429 both SDKs retry, after
    /// `Retry-After: 1`, the budget named and no word of raising it.
    #[test]
    fn a_budget_deferral_is_each_apis_retriable_rate_limit() {
        let deferral = BudgetRefusal {
            budget_usd: 2.0,
            spent_usd: 0.5,
            reserved_usd: 1.5,
            deferred: true,
        };
        for api in [Api::OpenAi, Api::Anthropic] {
            let response = budget_refusal(api, &deferral);
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(response.headers()["retry-after"], "1");
            assert_eq!(response.headers()["x-should-retry"], "true");
            let BodySource::Fixed(Some(bytes)) = &response.body().inner else {
                panic!("a whole body");
            };
            let body: serde_json::Value = serde_json::from_slice(bytes).unwrap();
            match api {
                Api::OpenAi => assert_eq!(body["error"]["code"], "rate_limit_exceeded"),
                Api::Anthropic => {
                    assert_eq!(body["type"], "error");
                    assert_eq!(body["error"]["type"], "rate_limit_error");
                }
            }
            let message = body["error"]["message"].as_str().unwrap();
            for part in ["$2.0000", "$0.5000 spent", "$1.5000 reserved", "Retry"] {
                assert!(message.contains(part), "{part}: {message}");
            }
            assert!(!message.contains("insufficient"), "{message}");
        }
    }

    /// A recorder keeping what it is given, for the booking of one call.
    #[derive(Default)]
    struct Kept(std::sync::Mutex<Vec<LlmCall>>);

    impl CallRecorder for Arc<Kept> {
        fn started(&self, _: &CallRequest) -> Admission {
            Admission::Admitted(0)
        }
        fn ended(&self, _: u64, call: &LlmCall) {
            self.0.lock().unwrap().push(call.clone());
        }
    }

    fn booked(reader: UsageReader, bytes: &[u8], end: End) -> LlmCall {
        let kept = Arc::new(Kept::default());
        let mut metering = Metering {
            recorder: Arc::new(Arc::clone(&kept)),
            id: 0,
            call: Some(LlmCall::new("m", Duration::ZERO)),
            started: Instant::now(),
            first_chunk: None,
            reader: Some(reader),
            tasks: Arc::default(),
            answered: true,
            last_byte: Instant::now(),
            ending: Arc::default(),
            headroom: None,
        };
        if let Some(reader) = metering.reader.as_mut() {
            reader.feed(bytes);
        }
        metering.finish(end);
        drop(metering);
        let calls = kept.0.lock().unwrap();
        assert_eq!(calls.len(), 1, "booked once");
        calls[0].clone()
    }

    #[test]
    fn each_end_of_an_answer_is_booked_as_what_it_was() {
        let stream = || UsageReader::new(true);
        let plain = || UsageReader::new(false);
        let done =
            b"data: {\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1}}\n\ndata: [DONE]";
        // The closing event, even without its newline: ok, however the answer ended.
        for end in [End::Ended, End::Left, End::Failed(LlmError::StreamCut)] {
            let call = booked(stream(), done, end);
            assert_eq!((call.error, call.abandoned), (None, false), "{end:?}");
            assert_eq!(call.input_tokens, Some(2));
        }
        let half = b"data: {\"choices\":[]}\n\n";
        assert_eq!(
            booked(stream(), half, End::Ended).error,
            Some(LlmError::StreamCut)
        );
        let left = booked(stream(), half, End::Left);
        assert!(left.abandoned && left.error.is_none());
        // A plain answer that ended is ok, JSON or not; left half-way, abandoned.
        let html = booked(plain(), b"<html>", End::Ended);
        assert_eq!((html.error, html.input_tokens), (None, None));
        assert!(booked(plain(), b"{\"usage\":", End::Left).abandoned);
        assert!(!booked(UsageReader::unreadable(), b"\x1f\x8b", End::Ended).abandoned);
        let failed = booked(
            stream(),
            b"data: {\"type\":\"response.failed\",\"response\":{\"error\":{\"code\":\"server_error\"}}}\n\n",
            End::Ended,
        );
        assert_eq!(failed.error, Some(LlmError::Provider("server_error")));
        assert!(failed.error.unwrap().is_outage());
    }

    /// A call left before the provider's status line: the loop gave up waiting (a
    /// timeout, an outage's sign), unless loopwatch was ending the loop.
    #[test]
    fn a_call_left_unanswered_is_a_timeout_unless_loopwatch_ended_the_loop() {
        for (ending, expected) in [(false, Some(LlmError::Timeout)), (true, None)] {
            let (kept, mut metering) = left_call(false);
            metering.ending.set(ending);
            metering.finish(End::Left);
            let calls = kept.0.lock().unwrap();
            assert_eq!(calls[0].error, expected, "ending: {ending}");
            assert_eq!(calls[0].abandoned, ending, "ending: {ending}");
        }
    }

    /// A metered call in flight, its status line come (`answered`) or not.
    fn left_call(answered: bool) -> (Arc<Kept>, Metering) {
        let kept = Arc::new(Kept::default());
        let metering = Metering {
            recorder: Arc::new(Arc::clone(&kept)),
            id: 0,
            call: Some(LlmCall::new("m", Duration::ZERO)),
            started: Instant::now(),
            first_chunk: None,
            reader: None,
            tasks: Arc::default(),
            answered,
            last_byte: Instant::now(),
            ending: Arc::default(),
            headroom: None,
        };
        (kept, metering)
    }

    /// The loop's process exits just after its calls were cut (a crash, a Ctrl-C
    /// at the terminal): the calls were cut by that end, not by the provider. An end
    /// before the call started says nothing of it: the loop gave up on the provider.
    #[test]
    fn a_call_cut_as_the_loop_exits_is_abandoned_and_one_given_up_on_is_a_timeout() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (kept, mut metering) = left_call(false);
            let ending = Arc::clone(&metering.ending);
            metering.finish(End::Left);
            assert!(
                kept.0.lock().unwrap().is_empty(),
                "booked before it settled"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            ending.set(true); // the supervisor saw the loop's process exit
            metering.tasks.idle().await;
            let calls = kept.0.lock().unwrap();
            assert_eq!((calls[0].error, calls[0].abandoned), (None, true));
        });
        runtime.block_on(async {
            let (kept, mut metering) = left_call(false);
            metering.ending.set(true); // a crash before this call: restarted since
            metering.ending.set(false);
            metering.started = Instant::now() + Duration::from_millis(1);
            metering.finish(End::Left);
            metering.tasks.idle().await;
            let calls = kept.0.lock().unwrap();
            assert_eq!(calls[0].error, Some(LlmError::Timeout));
        });
    }

    /// A provider that sent its status line, then fell silent: the loop that hangs up
    /// after [`STALLED_ANSWER`] of silence gave up on it (a timeout); one that hangs up
    /// on an answer still coming left it (abandoned).
    #[test]
    fn a_provider_silent_after_its_status_line_is_a_timeout_when_the_loop_gives_up() {
        for (silent, expected) in [
            (
                STALLED_ANSWER + Duration::from_secs(1),
                Some(LlmError::Timeout),
            ),
            (Duration::from_millis(10), None),
        ] {
            let (kept, mut metering) = left_call(true);
            let Some(then) = Instant::now().checked_sub(silent) else {
                return; // a clock too young to look back: nothing to check
            };
            metering.started = then;
            metering.last_byte = then;
            metering.finish(End::Left);
            let calls = kept.0.lock().unwrap();
            assert_eq!(calls[0].error, expected, "silent for {silent:?}");
            assert_eq!(calls[0].abandoned, expected.is_none());
        }
    }

    #[test]
    fn the_role_header_is_read_as_it_came_and_never_forwarded() {
        let mut headers = HeaderMap::new();
        assert_eq!(role_of(&headers), None);
        headers.insert("x-loopwatch-role", HeaderValue::from_static("mutation"));
        assert_eq!(role_of(&headers).as_deref(), Some("mutation"));
        headers.append("X-Loopwatch-Role", HeaderValue::from_static("judge"));
        assert_eq!(role_of(&headers).as_deref(), Some("mutation,judge"));
        let long = HeaderValue::from_str(&"r".repeat(10_000)).unwrap();
        headers.insert("x-loopwatch-role", long);
        assert_eq!(role_of(&headers).map(|r| r.len()), Some(65));
        headers.insert(
            "x-loopwatch-role",
            HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        assert!(!crate::llm::valid_role(&role_of(&headers).unwrap()));
        headers.insert("authorization", HeaderValue::from_static("Bearer k"));
        let mut forwarded = HeaderMap::new();
        copy_headers(&headers, &mut forwarded);
        assert!(forwarded.get("x-loopwatch-role").is_none());
        assert_eq!(forwarded["authorization"], "Bearer k");
    }

    #[test]
    fn usage_is_asked_for_only_where_a_stream_says_nothing_of_it() {
        let asked = |body: &str| {
            with_usage_requested(body.as_bytes()).map(|b| String::from_utf8(b.to_vec()).unwrap())
        };
        assert_eq!(
            asked(r#" {"model":"m","stream":true}"#).as_deref(),
            Some(r#" {"stream_options":{"include_usage":true},"model":"m","stream":true}"#)
        );
        let options: serde_json::Value =
            serde_json::from_str(&asked(r#"{"stream":true,"stream_options":{}}"#).unwrap())
                .unwrap();
        assert_eq!(options["stream_options"]["include_usage"], true);
        for unchanged in [
            r#"{"stream":true,"stream_options":{"include_usage":false}}"#,
            r#"{"stream":false}"#,
            r#"{"model":"m"}"#,
            "not json",
            "[1]",
        ] {
            assert_eq!(asked(unchanged), None, "{unchanged}");
        }
    }

    #[test]
    fn upstreams_come_from_the_flag_then_the_environment_then_the_providers() {
        let env =
            |key: &str| (key == "OPENAI_BASE_URL").then(|| "http://litellm:4000/".to_string());
        let config = ProxyConfig::default().upstreams(None, env);
        assert_eq!(config.openai_base, "http://litellm:4000");
        assert_eq!(config.openai_from, "OPENAI_BASE_URL");
        assert_eq!(config.anthropic_base, ANTHROPIC_DEFAULT_BASE);
        assert_eq!(config.anthropic_from, DEFAULT_UPSTREAM);
        let config = ProxyConfig::default().upstreams(Some("http://127.0.0.1:9/"), env);
        assert_eq!(config.openai_base, "http://127.0.0.1:9/v1");
        assert_eq!(config.anthropic_base, "http://127.0.0.1:9");
        assert_eq!(config.anthropic_from, "--llm-upstream");
    }
}

//! The HTTP endpoint: `GET /metrics` (Prometheus text format), `GET /` (the embedded
//! dashboard) and `GET /healthz`, hardened for days of unattended running:
//!
//! * concurrent scrapes share one render (a single flight) instead of each collecting;
//! * renders run on blocking threads, never on the loop's thread;
//! * at most [`MAX_IN_FLIGHT`] requests are served at once, the rest get a quick 503
//!   (tower's global concurrency limit behind its load shedder);
//! * every request must be answered within [`REQUEST_TIMEOUT`] (tower's timeout);
//! * at most [`MAX_CONNECTIONS`] connections are open, further ones are closed at once;
//! * a client gets [`HEADER_READ_TIMEOUT`] to send its request head (no slowloris).

#[cfg(feature = "web-config")]
pub(crate) mod auth;
pub(crate) mod page;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{BoxError, Router};
use futures_util::future::{BoxFuture, FutureExt as _, Shared};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use opentelemetry::metrics::Counter;
use opentelemetry::KeyValue;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;

use crate::error::CollectError;
use crate::export::Source;
use crate::pipeline::PROMETHEUS_CONTENT_TYPE;

/// Requests served at once; more get 503 at once rather than queue.
pub(crate) const MAX_IN_FLIGHT: usize = 128;
/// Open connections; more are closed on accept.
const MAX_CONNECTIONS: usize = 512;
/// Time a client has to send a request's head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a request has to be answered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

type Render = Shared<BoxFuture<'static, Result<Arc<String>, CollectError>>>;

/// The counters the endpoint adds to.
#[derive(Clone)]
pub(crate) struct EndpointCounters {
    /// `loopwatch_metrics_renders_total`.
    pub(crate) renders: Counter<u64>,
    /// `loopwatch_http_rejected_total`, by reason.
    pub(crate) rejected: Counter<u64>,
    /// When renders started, for a shutdown that lets the scraper see the end.
    pub(crate) scrapes: Arc<ScrapeClock>,
}

/// Longest a shutting-down monitor waits for a scraper to see its final state.
const LAST_SCRAPE_WAIT: Duration = Duration::from_secs(15);

/// When `/metrics` renders started, the gap between the last two, and the start of
/// the last render whose response was handed over whole: a loop that ends cleanly
/// waits (at most about one scrape interval) until a scrape has carried
/// `loopwatch_loop_done` away, so that Prometheus's LoopDown rule knows it ended on
/// purpose rather than vanished.
#[derive(Debug, Default)]
pub(crate) struct ScrapeClock {
    times: Mutex<ScrapeTimes>,
    served: std::sync::Condvar,
}

#[derive(Debug, Default, Clone, Copy)]
struct ScrapeTimes {
    last_start: Option<Instant>,
    gap: Option<Duration>,
    last_served: Option<Instant>,
}

impl ScrapeClock {
    /// A render starts now; returns when.
    fn rendering(&self) -> Instant {
        let now = Instant::now();
        let mut times = self.times.lock().unwrap_or_else(PoisonError::into_inner);
        times.gap = times.last_start.map(|last| now.duration_since(last));
        times.last_start = Some(now);
        now
    }

    /// The response of the render started at `started` was handed over whole.
    fn served(&self, started: Instant) {
        let mut times = self.times.lock().unwrap_or_else(PoisonError::into_inner);
        if times.last_served.is_none_or(|last| started > last) {
            times.last_served = Some(started);
        }
        self.served.notify_all();
    }

    /// Waits until the response of a render started after `since` has been served, if
    /// a scraper is there to ask for one: at least two scrapes seen, the last within
    /// three gaps. Waits one and a half gaps at most, and never over 15 s. Returns
    /// whether such a response was served.
    pub(crate) fn wait_for_scrape_after(&self, since: Instant) -> bool {
        let mut times = self.times.lock().unwrap_or_else(PoisonError::into_inner);
        let (Some(last), Some(gap)) = (times.last_start, times.gap) else {
            return false;
        };
        if last < since && since.duration_since(last) > gap * 3 {
            return false;
        }
        let deadline = since + (gap * 3 / 2).min(LAST_SCRAPE_WAIT);
        loop {
            if times.last_served.is_some_and(|served| served >= since) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            times = self
                .served
                .wait_timeout(times, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// A `/metrics` body that tells the [`ScrapeClock`] when hyper has taken all of it.
struct ServedBody {
    inner: http_body_util::Full<bytes::Bytes>,
    clock: Arc<ScrapeClock>,
    started: Instant,
}

impl hyper::body::Body for ServedBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(None) = polled {
            self.clock.served(self.started);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// TLS and basic auth from a web configuration file, when the feature is built.
#[cfg(feature = "web-config")]
pub(crate) type Access = auth::WebConfig;
/// Without the `web-config` feature there is no access control to configure.
#[cfg(not(feature = "web-config"))]
pub(crate) type Access = std::convert::Infallible;

/// The endpoint's shared state.
struct Endpoint {
    source: Arc<dyn Source>,
    #[cfg(feature = "web-config")]
    auth: Option<auth::BasicAuth>,
    /// The render in flight, and when it started.
    current_render: Mutex<Option<(Render, Instant)>>,
    counters: EndpointCounters,
}

impl Endpoint {
    /// Joins the render in flight, or starts one on a blocking thread; returns its
    /// outcome and when it started.
    async fn render(&self) -> (Result<Arc<String>, CollectError>, Instant) {
        let (render, started) = {
            let mut current = self
                .current_render
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match current.as_ref() {
                Some((render, started)) => (render.clone(), *started),
                None => {
                    self.counters.renders.add(1, &[]);
                    let started = self.counters.scrapes.rendering();
                    let source = Arc::clone(&self.source);
                    let render: Render = async move {
                        match tokio::task::spawn_blocking(move || source.exposition()).await {
                            Ok(result) => result.map(Arc::new),
                            Err(_) => Err(CollectError::Aborted),
                        }
                    }
                    .boxed()
                    .shared();
                    *current = Some((render.clone(), started));
                    (render, started)
                }
            }
        };
        let result = render.clone().await;
        let mut current = self
            .current_render
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|(c, _)| c.ptr_eq(&render)) {
            *current = None;
        }
        (result, started)
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// The routes: `/` and `/metrics` behind the in-flight cap, the request timeout and,
/// with basic auth configured, a login; `/healthz` always open.
fn router(endpoint: Arc<Endpoint>) -> Router {
    let rejected = endpoint.counters.rejected.clone();
    let admission = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |error: BoxError| {
            let rejected = rejected.clone();
            async move {
                if error.is::<tower::load_shed::error::Overloaded>() {
                    rejected.add(1, &[KeyValue::new("reason", "overload")]);
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too many concurrent requests; retry shortly\n",
                    )
                } else if error.is::<tower::timeout::error::Elapsed>() {
                    text(StatusCode::SERVICE_UNAVAILABLE, "request timed out\n")
                } else {
                    text(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n"))
                }
            }
        }))
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            MAX_IN_FLIGHT,
        ))
        .timeout(REQUEST_TIMEOUT);
    let protected = Router::new()
        .route("/", get(dashboard))
        .route("/api/v1/snapshot", get(snapshot))
        .route("/metrics", get(metrics))
        .fallback(not_found);
    #[cfg(feature = "web-config")]
    let protected = protected.route_layer(axum::middleware::from_fn_with_state(
        Arc::clone(&endpoint),
        require_login,
    ));
    Router::new()
        .merge(protected.route_layer(admission))
        .route("/healthz", get(healthz))
        .with_state(endpoint)
}

/// Lets a request through when no users are configured or its credentials check out
/// (bcrypt runs on a blocking thread); otherwise 401.
#[cfg(feature = "web-config")]
async fn require_login(
    State(endpoint): State<Arc<Endpoint>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use headers::authorization::{Authorization, Basic};
    use headers::HeaderMapExt as _;
    if endpoint.auth.is_some() {
        let credentials = request
            .headers()
            .typed_get::<Authorization<Basic>>()
            .map(|a| (a.username().to_string(), a.password().to_string()));
        let checker = Arc::clone(&endpoint);
        let allowed = tokio::task::spawn_blocking(move || {
            checker
                .auth
                .as_ref()
                .is_some_and(|auth| auth.check(credentials))
        })
        .await
        .unwrap_or(false);
        if !allowed {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"loopwatch\"")],
                "unauthorized\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// Serves one connection with hyper, under the header-read timeout, until it ends or
/// `cancel` fires.
async fn serve_connection<S>(stream: S, app: Router, cancel: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::select! {
        _ = connection => {}
        _ = cancel.cancelled() => {}
    }
}

/// Accepts connections until `cancel` fires, each served by hyper with the limits
/// above, over TLS when the web configuration asks for it.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    source: Arc<dyn Source>,
    access: Option<Access>,
    counters: EndpointCounters,
    cancel: CancellationToken,
) {
    #[cfg(feature = "web-config")]
    let (tls, auth) = match access {
        Some(web) => (web.tls, web.auth),
        None => (None, None),
    };
    #[cfg(not(feature = "web-config"))]
    let _ = access;
    let endpoint = Arc::new(Endpoint {
        source,
        #[cfg(feature = "web-config")]
        auth,
        current_render: Mutex::new(None),
        counters,
    });
    let app = router(Arc::clone(&endpoint));
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, say: back off briefly rather than spin.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            endpoint
                .counters
                .rejected
                .add(1, &[KeyValue::new("reason", "connections")]);
            drop(stream);
            continue;
        };
        let app = app.clone();
        let cancel = cancel.clone();
        #[cfg(feature = "web-config")]
        let tls = tls.clone();
        tokio::spawn(async move {
            #[cfg(feature = "web-config")]
            if let Some(acceptor) = tls {
                // The handshake, too, must finish within the header-read timeout.
                match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(stream, app, cancel).await,
                    Ok(Err(err)) => tracing::debug!(error = %err, "TLS handshake refused"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
                drop(permit);
                return;
            }
            serve_connection(stream, app, cancel).await;
            drop(permit);
        });
    }
}

async fn metrics(State(endpoint): State<Arc<Endpoint>>) -> Response {
    match endpoint.render().await {
        (Ok(body), started) => {
            let body = ServedBody {
                inner: http_body_util::Full::new(bytes::Bytes::from(body.as_str().to_owned())),
                clock: Arc::clone(&endpoint.counters.scrapes),
                started,
            };
            (
                [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
                axum::body::Body::new(body),
            )
                .into_response()
        }
        (Err(err), _) => {
            tracing::error!(error = %err, "scrape failed");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("metrics collection failed: {err}\n"),
            )
        }
    }
}

async fn dashboard(State(endpoint): State<Arc<Endpoint>>) -> Response {
    let source = Arc::clone(&endpoint.source);
    match tokio::task::spawn_blocking(move || page::render(&source.snapshot())).await {
        Ok(page) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response(),
        Err(err) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("dashboard failed: {err}\n"),
        ),
    }
}

async fn snapshot(State(endpoint): State<Arc<Endpoint>>) -> Response {
    let source = Arc::clone(&endpoint.source);
    match tokio::task::spawn_blocking(move || {
        serde_json::to_vec(&crate::export::view::snapshot_json(&source.snapshot()))
    })
    .await
    {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Ok(Err(err)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("snapshot failed: {err}\n"),
        ),
        Err(err) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("snapshot failed: {err}\n"),
        ),
    }
}

async fn healthz(State(endpoint): State<Arc<Endpoint>>) -> Response {
    text(
        StatusCode::OK,
        format!("ok run_id={}\n", endpoint.source.identity().run_id),
    )
}

async fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "not found: loopwatch serves /, /metrics, /api/v1/snapshot and /healthz\n",
    )
}

//! The HTTP endpoint: `GET /metrics` (Prometheus text format), `GET /` (the embedded
//! dashboard) and `GET /healthz`, hardened for days of unattended running:
//!
//! * concurrent scrapes share one render (a single flight) instead of each collecting;
//! * renders run on blocking threads, never on the loop's thread;
//! * at most [`MAX_IN_FLIGHT`] requests are served at once, the rest get a quick 503;
//! * at most [`MAX_CONNECTIONS`] connections are open, further ones are closed at once;
//! * a client gets [`HEADER_READ_TIMEOUT`] to send its request head (no slowloris) and
//!   every request must finish within [`REQUEST_TIMEOUT`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::future::{BoxFuture, FutureExt as _, Shared};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use opentelemetry::metrics::Counter;
use opentelemetry::KeyValue;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::catalog;
use crate::export::web_config::{BasicAuth, WebConfig};
use crate::instruments::counter;
use crate::monitor::Inner;
use crate::pipeline::PROMETHEUS_CONTENT_TYPE;

/// Requests served at once; more get 503 at once rather than queue.
pub const MAX_IN_FLIGHT: usize = 128;
/// Open connections; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 512;
/// Time a client has to send a request's head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a request has to be answered.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

type Render = Shared<BoxFuture<'static, Result<Arc<String>, String>>>;

/// The endpoint's shared state.
pub(crate) struct Endpoint {
    inner: Arc<Inner>,
    auth: Option<BasicAuth>,
    in_flight: Semaphore,
    current_render: Mutex<Option<Render>>,
    renders: Counter<u64>,
    rejected: Counter<u64>,
}

impl Endpoint {
    pub(crate) fn new(inner: Arc<Inner>, auth: Option<BasicAuth>) -> Arc<Self> {
        let meter = inner.pipeline.core_meter();
        let renders = counter(meter, &catalog::METRICS_RENDERS_TOTAL);
        let rejected = counter(meter, &catalog::HTTP_REJECTED_TOTAL);
        renders.add(0, &[]);
        for reason in ["overload", "connections"] {
            rejected.add(0, &[KeyValue::new("reason", reason)]);
        }
        Arc::new(Endpoint {
            inner,
            auth,
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
            current_render: Mutex::new(None),
            renders,
            rejected,
        })
    }

    /// A place among the requests in flight, or `None` (counted) when all are taken.
    fn admit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let permit = self.in_flight.try_acquire().ok();
        if permit.is_none() {
            self.rejected.add(1, &[KeyValue::new("reason", "overload")]);
        }
        permit
    }

    /// Joins the render in flight, or starts one on a blocking thread.
    async fn render(&self) -> Result<Arc<String>, String> {
        let render = {
            let mut current = self
                .current_render
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match current.as_ref() {
                Some(render) => render.clone(),
                None => {
                    self.renders.add(1, &[]);
                    let inner = Arc::clone(&self.inner);
                    let render: Render = async move {
                        match tokio::task::spawn_blocking(move || inner.render()).await {
                            Ok(Ok(text)) => Ok(Arc::new(text)),
                            Ok(Err(err)) => Err(err.to_string()),
                            Err(err) => Err(format!("the render task failed: {err}")),
                        }
                    }
                    .boxed()
                    .shared();
                    *current = Some(render.clone());
                    render
                }
            }
        };
        let result = render.clone().await;
        let mut current = self
            .current_render
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|c| c.ptr_eq(&render)) {
            *current = None;
        }
        result
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

/// The routes of the endpoint; with basic auth, every route but /healthz needs it.
pub(crate) fn router(endpoint: Arc<Endpoint>) -> Router {
    let protected = Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&endpoint),
            require_login,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(protected)
        .with_state(endpoint)
}

/// Lets a request through when no users are configured or its credentials check out
/// (bcrypt runs on a blocking thread); otherwise 401.
async fn require_login(
    State(endpoint): State<Arc<Endpoint>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if endpoint.auth.is_some() {
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let checker = Arc::clone(&endpoint);
        let allowed = tokio::task::spawn_blocking(move || {
            checker
                .auth
                .as_ref()
                .is_some_and(|auth| auth.check(header.as_deref()))
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
    inner: Arc<Inner>,
    web: Option<WebConfig>,
    cancel: CancellationToken,
) {
    let (tls, auth) = match web {
        Some(web) => (web.tls, web.auth),
        None => (None, None),
    };
    let endpoint = Endpoint::new(inner, auth);
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
                .rejected
                .add(1, &[KeyValue::new("reason", "connections")]);
            drop(stream);
            continue;
        };
        let app = app.clone();
        let cancel = cancel.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                // The handshake, too, must finish within the header-read timeout.
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, app, cancel).await,
                        Ok(Err(err)) => tracing::debug!(error = %err, "TLS handshake refused"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
                None => serve_connection(stream, app, cancel).await,
            }
            drop(permit);
        });
    }
}

async fn metrics(State(endpoint): State<Arc<Endpoint>>) -> Response {
    let Some(_permit) = endpoint.admit() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many concurrent requests; retry shortly\n",
        );
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, endpoint.render()).await {
        Ok(Ok(body)) => (
            [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
            body.as_str().to_owned(),
        )
            .into_response(),
        Ok(Err(err)) => {
            tracing::error!(error = %err, "scrape failed");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("metrics collection failed: {err}\n"),
            )
        }
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics collection timed out\n",
        ),
    }
}

async fn dashboard(State(endpoint): State<Arc<Endpoint>>) -> Response {
    let Some(_permit) = endpoint.admit() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many concurrent requests; retry shortly\n",
        );
    };
    let inner = Arc::clone(&endpoint.inner);
    match tokio::task::spawn_blocking(move || crate::export::dashboard::render(&inner)).await {
        Ok(page) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response(),
        Err(err) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("dashboard failed: {err}\n"),
        ),
    }
}

async fn healthz(State(endpoint): State<Arc<Endpoint>>) -> Response {
    text(
        StatusCode::OK,
        format!("ok run_id={}\n", endpoint.inner.identity.run_id),
    )
}

async fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "not found: loopwatch serves /, /metrics and /healthz\n",
    )
}

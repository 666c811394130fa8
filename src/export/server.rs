//! The HTTP endpoint: `GET /metrics` (Prometheus text format) and `GET /healthz`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::monitor::Inner;
use crate::pipeline::PROMETHEUS_CONTENT_TYPE;

/// The routes of the endpoint.
pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .with_state(inner)
}

/// Serves the endpoint until `cancel` fires.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    inner: Arc<Inner>,
    cancel: CancellationToken,
) {
    let app = router(inner);
    let shutdown = cancel.clone();
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(error = %err, "the metrics endpoint stopped");
    }
}

async fn metrics(State(inner): State<Arc<Inner>>) -> Response {
    match inner.render() {
        Ok(body) => ([(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], body).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "scrape failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("metrics collection failed: {err}\n"),
            )
                .into_response()
        }
    }
}

async fn dashboard(State(inner): State<Arc<Inner>>) -> Response {
    let page = crate::export::dashboard::render(&inner);
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

async fn healthz(State(inner): State<Arc<Inner>>) -> Response {
    let body = format!("ok run_id={}\n", inner.identity.run_id);
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found: loopwatch serves /, /metrics and /healthz\n",
    )
        .into_response()
}

//! The agent's private HTTP API: `/live`, `/ready`, `/metrics`, `/processes`.
//! Bind it to a private address; Envoy's public listener never routes to it (its cluster
//! name cannot pass the route guard).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::status::Status;

/// The API's routes over shared status.
pub fn router(status: Arc<Status>) -> Router {
    Router::new()
        .route("/live", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/processes", get(processes))
        .with_state(status)
}

/// Serves the API on `listener` until `shutdown` completes.
///
/// # Errors
/// The server failing.
pub async fn serve(
    listener: tokio::net::TcpListener,
    status: Arc<Status>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(status))
        .with_graceful_shutdown(shutdown)
        .await
}

/// 200 once the first full sync reached Envoy's config, 503 before.
async fn ready(State(status): State<Arc<Status>>) -> impl IntoResponse {
    if status.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first sync\n",
        )
    }
}

async fn metrics(State(status): State<Arc<Status>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        status.metrics.render(),
    )
}

async fn processes(State(status): State<Arc<Status>>) -> impl IntoResponse {
    Json(status.processes())
}

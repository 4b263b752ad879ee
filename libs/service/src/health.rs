//! The operational endpoints every service answers, at the same paths:
//!
//! - `GET /health/live`: the process is up and serving HTTP, `{"status": "ok"}`. It says
//!   nothing about dependencies on purpose: restarting the service would not fix a database
//!   outage.
//! - `GET /health/ready`: the service can do its job; what that means is the service's own
//!   handler (200 when ready, 503 when not).
//! - `GET /metrics`: Prometheus text (OpenMetrics), rendered by the service's handler with
//!   [`openmetrics`].

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};

/// The three routes, with the service's readiness and metrics handlers.
pub fn routes<S>(ready: MethodRouter<S>, metrics: MethodRouter<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", ready)
        .route("/metrics", metrics)
}

async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// A `/metrics` answer: the exposition text with its content type.
pub fn openmetrics(text: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

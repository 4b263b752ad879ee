//! The app's readiness and metrics handlers, served at `service::health`'s paths
//! (`/health/ready`, `/metrics`; `/health/live` is the shared one).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::App;

/// How long readiness waits for `SELECT 1` on the control plane.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Ready: the control plane answers and the identity provider's configuration is known.
pub async fn ready(State(app): State<App>) -> Response {
    let (db, idp) = tokio::join!(
        tokio::time::timeout(READY_TIMEOUT, service::database::pool::ping(&app.control)),
        app.oidc.ready()
    );
    let db_ok = matches!(db, Ok(Ok(())));
    let body = serde_json::json!({"database": db_ok, "identity_provider": idp});
    let status = if db_ok && idp {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

pub async fn metrics(State(app): State<App>) -> Response {
    service::health::openmetrics(app.metrics.render())
}

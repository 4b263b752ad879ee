//! Every error leaves the service as JSON, `{"error": "..."}`, with a status a client can act
//! on. The text is written for the client: database and secret-store details go to the log,
//! never into a response.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is wrong; the message says how.
    #[error("{0}")]
    BadRequest(String),
    /// No route for this path.
    #[error("not found")]
    NotFound,
    /// The database cannot be reached right now (down, pool exhausted, timeout).
    #[error("the database is unavailable, try again later")]
    Unavailable,
    /// Anything else; the cause is logged where it happened.
    #[error("internal error")]
    Internal,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        (self.status(), Json(Body { error: &message })).into_response()
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        use crate::db::DbError;
        match e {
            DbError::Unavailable(reason) => {
                tracing::warn!(%reason, "database unavailable");
                ApiError::Unavailable
            }
            DbError::Query(e) => {
                // A cancelled statement (statement_timeout) or a lost connection is
                // transient; other errors are bugs or schema drift.
                let transient = e.is_closed()
                    || e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED);
                if transient {
                    tracing::warn!(error = %e, "rates query failed (transient)");
                    ApiError::Unavailable
                } else {
                    tracing::error!(error = %e, "rates query failed");
                    ApiError::Internal
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_are_json_with_an_error_field() {
        let response = ApiError::BadRequest("invalid date_from: `x`".into()).into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "application/json"
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, serde_json::json!({"error": "invalid date_from: `x`"}));

        let unavailable = ApiError::Unavailable.into_response();
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}

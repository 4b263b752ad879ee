//! SCIM error responses (RFC 7644 3.12): `{"schemas": [Error], "status": "400",
//! "scimType": ..., "detail": ...}` as `application/scim+json`. What identity providers show
//! their administrators when a push fails, so the detail says what to fix.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The media type of every SCIM body.
pub const CONTENT_TYPE: &str = "application/scim+json";
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

#[derive(Debug)]
pub struct ScimError {
    pub status: StatusCode,
    /// RFC 7644 table 9 (`invalidSyntax`, `invalidFilter`, `invalidValue`, `uniqueness`, ...).
    pub scim_type: Option<&'static str>,
    pub detail: String,
}

impl ScimError {
    pub fn bad(scim_type: &'static str, detail: impl Into<String>) -> ScimError {
        ScimError {
            status: StatusCode::BAD_REQUEST,
            scim_type: Some(scim_type),
            detail: detail.into(),
        }
    }

    pub fn not_found(id: &str) -> ScimError {
        ScimError {
            status: StatusCode::NOT_FOUND,
            scim_type: None,
            detail: format!("There is no user {id}."),
        }
    }

    pub fn unauthorized() -> ScimError {
        ScimError {
            status: StatusCode::UNAUTHORIZED,
            scim_type: None,
            detail: "A valid bearer token is required.".into(),
        }
    }

    pub fn conflict(detail: impl Into<String>) -> ScimError {
        ScimError {
            status: StatusCode::CONFLICT,
            scim_type: Some("uniqueness"),
            detail: detail.into(),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> ScimError {
        tracing::error!(error = %e, "SCIM request failed");
        ScimError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            scim_type: None,
            detail: "Something went wrong on our side; try again.".into(),
        }
    }
}

impl From<tokio_postgres::Error> for ScimError {
    fn from(e: tokio_postgres::Error) -> Self {
        ScimError::internal(e)
    }
}

impl From<crate::error::Error> for ScimError {
    fn from(e: crate::error::Error) -> Self {
        ScimError::internal(e)
    }
}

impl From<deadpool::managed::PoolError<crate::db::ConnectError>> for ScimError {
    fn from(e: deadpool::managed::PoolError<crate::db::ConnectError>) -> Self {
        ScimError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            scim_type: None,
            detail: format!("The database is unavailable: {e}"),
        }
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status.as_u16().to_string(),
            "detail": self.detail,
        });
        if let Some(t) = self.scim_type {
            body["scimType"] = json!(t);
        }
        let mut response = scim_json(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A SCIM body with its media type.
pub fn scim_json(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        body.to_string(),
    )
        .into_response()
}

//! What can go wrong with a request, said once: each variant has an HTTP status and a message
//! a person can act on. Pages render it as HTML ([`crate::web`]), the API as JSON
//! ([`crate::api`]). Internal errors are logged in full and shown as a generic message.

use axum::http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("you are not signed in")]
    NotSignedIn,
    #[error("your session has expired; sign in again")]
    SessionExpired,
    /// Approver rights are checked with the identity provider at each decision; the
    /// session's proof of sign-in is too old to ask.
    #[error("{0}")]
    SignInAgain(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NotSignedIn | Error::SessionExpired | Error::SignInAgain(_) => {
                StatusCode::UNAUTHORIZED
            }
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::BadInput(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short machine-readable name (the API's `error` field).
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotSignedIn => "not_signed_in",
            Error::SessionExpired => "session_expired",
            Error::SignInAgain(_) => "sign_in_again",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::BadInput(_) => "bad_input",
            Error::Unavailable(_) => "unavailable",
            Error::Internal(_) => "internal",
        }
    }

    /// The text shown to the person. Internal details stay in the log.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                "Something went wrong on our side; nothing was changed unless the page says so. \
                 Try again, or ask the data-security team."
                    .into()
            }
            other => other.to_string(),
        }
    }

    pub fn not_found_request(id: i64) -> Error {
        Error::NotFound(format!("There is no request {id} that you can see."))
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Internal(e.into())
    }
}

impl From<crate::db::PoolError> for Error {
    fn from(e: crate::db::PoolError) -> Self {
        Error::Unavailable(format!("the database is unavailable: {e}"))
    }
}

impl From<grants::GrantError> for Error {
    fn from(e: grants::GrantError) -> Self {
        Error::Internal(e.into())
    }
}

impl From<secret_store::Error> for Error {
    fn from(e: secret_store::Error) -> Self {
        Error::Internal(e.into())
    }
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Error::Internal(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

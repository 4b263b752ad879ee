//! Request bodies, for the pages and the API alike: the largest one accepted, and a body
//! that could not be read turned into an [`Error`] that says why.

use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::http::StatusCode;
use axum::{Form, Json};

use crate::error::{Error, Result};

/// Largest form or JSON body accepted.
pub const LIMIT: usize = 64 * 1024;

/// A page's form.
pub fn form<T>(form: std::result::Result<Form<T>, FormRejection>) -> Result<T> {
    match form {
        Ok(Form(t)) => Ok(t),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Error::BadInput(format!(
            "The form is too large: at most {} KiB are accepted. Nothing was changed.",
            LIMIT / 1024
        ))),
        Err(e) => Err(Error::BadInput(format!(
            "The form could not be read ({}). Nothing was changed.",
            e.body_text()
        ))),
    }
}

/// An API call's JSON body.
pub fn json<T>(json: std::result::Result<Json<T>, JsonRejection>) -> Result<T> {
    json.map(|Json(t)| t).map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::BadInput(format!(
                "The body is too large: at most {} KiB are accepted.",
                LIMIT / 1024
            ))
        } else {
            Error::BadInput(e.body_text())
        }
    })
}

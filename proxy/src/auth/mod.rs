//! Client authentication, done by the proxy itself: SCRAM cannot be relayed when TLS ends at
//! the proxy (the channel binding would not match), so the proxy checks the client and then
//! logs in upstream with credentials it holds.
//!
//! - [`service`]: applications, with database credentials from the secret store (SCRAM).
//! - [`person`]: people, with an ID token from the company's identity provider.
//! - [`token`]: ID token verification against the provider's keys.
//! - [`scram`]: the SCRAM-SHA-256 exchange, both sides.

pub mod person;
pub mod scram;
pub mod service;
pub mod step_up;
pub mod token;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::protocol::sqlstate;
use crate::protocol::{backend, frontend};
use crate::wire::{self, ReadError};

/// Largest authentication message accepted (an ID token fits easily).
const MAX_AUTH_MESSAGE: usize = 64 * 1024;

/// A failed login. `client` is what the client is told; `audit` is the precise reason, for
/// the audit log only (it may say that a user does not exist, the client is not told).
#[derive(Debug)]
pub struct Refused {
    pub code: &'static str,
    pub client: String,
    pub audit: String,
}

impl Refused {
    pub fn new(code: &'static str, client: impl Into<String>, audit: impl Into<String>) -> Self {
        Refused {
            code,
            client: client.into(),
            audit: audit.into(),
        }
    }
}

impl From<ReadError> for Refused {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Closed => Refused::new(
                sqlstate::CONNECTION_FAILURE,
                "connection closed",
                "client closed the connection during authentication",
            ),
            ReadError::Protocol(p) => Refused::new(
                sqlstate::PROTOCOL_VIOLATION,
                p.0.clone(),
                format!("protocol error: {}", p.0),
            ),
            ReadError::Io(io) => Refused::new(
                sqlstate::CONNECTION_FAILURE,
                "i/o error",
                format!("i/o error during authentication: {io}"),
            ),
        }
    }
}

/// Writes an authentication message and flushes it.
pub(crate) async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &BytesMut,
) -> Result<(), Refused> {
    stream
        .write_all(out)
        .await
        .map_err(|e| Refused::from(ReadError::Io(e)))?;
    stream
        .flush()
        .await
        .map_err(|e| Refused::from(ReadError::Io(e)))
}

/// Reads the client's next PasswordMessage-family message ('p') body.
pub(crate) async fn read_password_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<BytesMut, Refused> {
    let (tag, body) = wire::read_message(stream, buf, MAX_AUTH_MESSAGE).await?;
    if tag != frontend::PASSWORD {
        return Err(Refused::new(
            sqlstate::PROTOCOL_VIOLATION,
            "expected a password message",
            format!(
                "unexpected message type {:?} during authentication",
                tag as char
            ),
        ));
    }
    Ok(body)
}

/// A SCRAM-SHA-256 exchange with the client against `verifier`. Sends everything up to
/// SASLFinal; AuthenticationOk is the caller's to send once the upstream login worked.
pub(crate) async fn scram_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    verifier: scram::Verifier,
    user: &str,
) -> Result<(), Refused> {
    let failed = || {
        Refused::new(
            sqlstate::INVALID_PASSWORD,
            format!("password authentication failed for user \"{user}\""),
            "wrong password",
        )
    };
    let mut out = BytesMut::new();
    backend::auth_sasl(&mut out, &[scram::MECHANISM]);
    send(stream, &out).await?;

    let body = read_password_message(stream, buf).await?;
    let (mechanism, data) =
        crate::protocol::startup::sasl_initial_body(&body).map_err(ReadError::from)?;
    if mechanism != scram::MECHANISM {
        return Err(Refused::new(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            format!("SASL mechanism {mechanism} is not supported"),
            format!("client chose SASL mechanism {mechanism}"),
        ));
    }
    let (exchange, server_first) = scram::ServerExchange::start(verifier, data).map_err(|e| {
        Refused::new(
            sqlstate::PROTOCOL_VIOLATION,
            e.to_string(),
            format!("SCRAM: {e}"),
        )
    })?;
    out.clear();
    backend::auth_sasl_continue(&mut out, server_first.as_bytes());
    send(stream, &out).await?;

    let body = read_password_message(stream, buf).await?;
    let server_final = exchange.finish(&body).map_err(|e| match e {
        scram::ScramError::BadProof => failed(),
        other => Refused::new(
            sqlstate::PROTOCOL_VIOLATION,
            other.to_string(),
            format!("SCRAM: {other}"),
        ),
    })?;
    out.clear();
    backend::auth_sasl_final(&mut out, server_final.as_bytes());
    send(stream, &out).await
}

//! The identity provider's bearer token: read once from the secret store, kept only as its
//! SHA-256, compared in constant time. A refused call is logged (never with what was sent)
//! and counted (`dbgw_approvals_scim_auth_failures_total`), so a provider with a stale token or
//! someone guessing shows on a dashboard.

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use secret_store::SecretStore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ScimError;
use crate::App;

/// Shortest token accepted: Okta and Entra take any string, so a weak one is refused here.
pub const MIN_TOKEN_LEN: usize = 32;

pub struct Token {
    digest: [u8; 32],
}

impl Token {
    pub fn new(token: &SecretString) -> anyhow::Result<Token> {
        anyhow::ensure!(
            token.expose_secret().len() >= MIN_TOKEN_LEN,
            "the SCIM token must be at least {MIN_TOKEN_LEN} characters (e.g. `openssl rand -hex 32`)"
        );
        Ok(Token {
            digest: Sha256::digest(token.expose_secret().as_bytes()).into(),
        })
    }

    /// Hashing first makes the comparison's time independent of the length and content of
    /// what was presented.
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(&self.digest).into()
    }

    /// The token from `{"token": "..."}` in the secret store.
    pub async fn read(store: &SecretStore, id: &str) -> anyhow::Result<Token> {
        let raw = store
            .get(id)
            .await
            .with_context(|| format!("reading the SCIM token (secret `{id}`)"))?;
        #[derive(serde::Deserialize)]
        struct Stored {
            token: SecretString,
        }
        let stored: Stored = serde_json::from_str(raw.expose_secret())
            .map_err(|_| anyhow::anyhow!("secret `{id}` must be {{\"token\": \"...\"}}"))?;
        Token::new(&stored.token)
    }
}

/// Lets a call through only with `Authorization: Bearer <the token>`.
pub async fn require(State(app): State<App>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = match (&app.scim, presented) {
        (Some(token), Some(p)) => token.matches(p),
        _ => false,
    };
    if !ok {
        app.metrics.scim_auth_failures.inc();
        tracing::warn!(
            token_sent = presented.is_some(),
            "SCIM call refused: missing or wrong bearer token"
        );
        return ScimError::unauthorized().into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_token_matches_and_short_ones_are_refused() {
        let t = Token::new(&SecretString::from("a".repeat(40))).unwrap();
        assert!(t.matches(&"a".repeat(40)));
        assert!(!t.matches(&"a".repeat(39)));
        assert!(!t.matches(""));
        assert!(Token::new(&SecretString::from("short")).is_err());
    }
}

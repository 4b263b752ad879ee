//! Service accounts: an application logs in with the database user name and password that
//! the proxy also holds (from the secret store), by SCRAM-SHA-256. The proxy then logs in
//! upstream with the same credentials.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::BytesMut;
use secrecy::ExposeSecret;
use secret_store::{DbCredentials, SecretStore};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};

use super::scram::Verifier;
use super::{scram_exchange, Refused};

/// SCRAM verifiers derived from the current passwords. PBKDF2 runs once per password, not
/// once per connection; a rotated password (different hash) derives a new verifier.
#[derive(Default)]
pub struct Verifiers {
    by_user: Mutex<HashMap<String, ([u8; 32], Verifier)>>,
}

impl Verifiers {
    fn get(&self, creds: &DbCredentials) -> Verifier {
        let fingerprint: [u8; 32] =
            Sha256::digest(creds.password.expose_secret().as_bytes()).into();
        if let Some((fp, v)) = self.by_user.lock().unwrap().get(&creds.username) {
            if *fp == fingerprint {
                return v.clone();
            }
        }
        let v = Verifier::new(creds.password.expose_secret());
        self.by_user
            .lock()
            .unwrap()
            .insert(creds.username.clone(), (fingerprint, v.clone()));
        v
    }

    /// A verifier no password matches, for users that do not exist: they go through the
    /// same exchange and fail the same way, so the client learns nothing.
    fn decoy(&self) -> Verifier {
        Verifier::with_salt(
            &secret_store::generate_password(),
            &rand::random::<[u8; 16]>(),
            super::scram::ITERATIONS,
        )
    }
}

/// Authenticates service account `user` and returns the credentials to log in upstream.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    user: &str,
    secret_id: Option<&str>,
    store: &SecretStore,
    verifiers: &Verifiers,
) -> Result<DbCredentials, Refused> {
    let Some(secret_id) = secret_id else {
        let mut refused = match scram_exchange(stream, buf, verifiers.decoy(), user).await {
            Err(r) => r,
            // No password matches a decoy; refuse all the same.
            Ok(()) => Refused::new(
                "28P01",
                format!("password authentication failed for user \"{user}\""),
                "",
            ),
        };
        if refused.code == "28P01" {
            refused.audit = "unknown user".into();
        }
        return Err(refused);
    };
    let creds = match store.db_credentials(secret_id).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(user, error = %e, "service credentials unavailable");
            return Err(Refused::new(
                "08006",
                "the proxy cannot read the credentials of this account; try again later",
                format!("secret unavailable: {e}"),
            ));
        }
    };
    if creds.username != user {
        return Err(Refused::new(
            "28000",
            format!("account \"{user}\" is misconfigured at the proxy"),
            format!("secret {secret_id} holds user {} instead", creds.username),
        ));
    }
    scram_exchange(stream, buf, verifiers.get(&creds), user).await?;
    Ok(creds)
}

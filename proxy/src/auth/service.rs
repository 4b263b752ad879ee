//! Service accounts: an application logs in with the database user name and password that
//! the proxy also holds (from the secret store), by SCRAM-SHA-256. The proxy then logs in
//! upstream with the same credentials.
//!
//! Rotation with alternating users: a service `NAME` logs in as `NAME` or `NAME_clone`,
//! whichever its secret's `AWSCURRENT` version names. During the overlap after a rotation
//! the proxy accepts the `AWSPREVIOUS` version too (the other user name), so connections
//! opened with credentials read just before the rotation still work. The user name picks the
//! version; the password must match that version.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::BytesMut;
use secrecy::ExposeSecret;
use secret_store::{DbCredentials, SecretStore, Stage};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};

use super::scram::Verifier;
use super::{scram_exchange, Refused};
use crate::protocol::sqlstate;

/// SCRAM verifiers derived from the current passwords. PBKDF2 runs once per password, not
/// once per connection, and never on a session thread (a blocking task does it). A rotated
/// password (different hash) derives a new verifier.
///
/// Unknown users get a decoy verifier that no password matches, made the same way and
/// cached the same way (its salt derived from the user name, so it is stable as a real
/// one is): a client cannot tell from timing or salts which users exist.
pub struct Verifiers {
    by_user: Mutex<HashMap<String, ([u8; 32], Verifier)>>,
    decoys: Mutex<HashMap<String, Verifier>>,
    /// Keys the decoys' salts and passwords; random per process.
    decoy_key: [u8; 32],
}

impl Default for Verifiers {
    fn default() -> Self {
        Verifiers {
            by_user: Mutex::default(),
            decoys: Mutex::default(),
            decoy_key: rand::random(),
        }
    }
}

/// Decoys kept at most; beyond, the cache starts again (each costs one PBKDF2 to remake).
const MAX_DECOYS: usize = 10_000;

impl Verifiers {
    async fn get(&self, creds: &DbCredentials) -> Verifier {
        let fingerprint: [u8; 32] =
            Sha256::digest(creds.password.expose_secret().as_bytes()).into();
        if let Some((fp, v)) = lock(&self.by_user).get(&creds.username) {
            if *fp == fingerprint {
                return v.clone();
            }
        }
        let password = creds.password.clone();
        let v = derive(move || Verifier::new(password.expose_secret())).await;
        lock(&self.by_user).insert(creds.username.clone(), (fingerprint, v.clone()));
        v
    }

    /// A verifier no password matches, for a user that does not exist.
    async fn decoy(&self, user: &str) -> Verifier {
        if let Some(v) = lock(&self.decoys).get(user) {
            return v.clone();
        }
        let keyed = |what: &[u8]| -> [u8; 32] {
            use hmac::Mac;
            let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&self.decoy_key).expect("any key");
            mac.update(what);
            mac.update(user.as_bytes());
            mac.finalize().into_bytes().into()
        };
        let salt = keyed(b"salt");
        let password = hex::encode(keyed(b"password"));
        let v =
            derive(move || Verifier::with_salt(&password, &salt[..16], super::scram::ITERATIONS))
                .await;
        let mut decoys = lock(&self.decoys);
        if decoys.len() >= MAX_DECOYS {
            decoys.clear();
        }
        decoys.insert(user.to_string(), v.clone());
        v
    }
}

/// Runs PBKDF2 on the blocking pool.
async fn derive(f: impl FnOnce() -> Verifier + Send + 'static) -> Verifier {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// These maps hold no invariant a panic could break halfway: a poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A service's logical name and secret for the user name a client gave: `NAME` or
/// `NAME_clone` where `services` maps `NAME`.
pub fn lookup<'a>(
    services: &'a std::collections::BTreeMap<String, String>,
    user: &str,
) -> Option<(&'a str, &'a str)> {
    let base = user.strip_suffix("_clone").unwrap_or(user);
    services
        .get_key_value(base)
        .map(|(name, secret)| (name.as_str(), secret.as_str()))
}

/// Who logged in: the credentials for the upstream login and the id of their version.
pub struct Login {
    pub creds: DbCredentials,
    pub version: String,
}

/// The version of `secret_id` whose user is `user`: `AWSCURRENT`, else `AWSPREVIOUS`.
async fn version_for(
    store: &SecretStore,
    secret_id: &str,
    user: &str,
) -> Result<Option<Login>, secret_store::Error> {
    for stage in [Stage::Current, Stage::Previous] {
        // The AWS SDK's timers need the timer thread's runtime (crate::clock).
        match crate::clock::with_timers(store.db_credentials_at(secret_id, stage)).await {
            Ok((version, creds)) if creds.username == user => {
                return Ok(Some(Login { creds, version }))
            }
            Ok(_) => {}
            Err(secret_store::Error::NotFound(_)) if stage == Stage::Previous => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// A SCRAM exchange no password passes, so that a user without credentials looks like one
/// with: the refusal, with `audit` as the reason.
async fn decoy_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    verifiers: &Verifiers,
    user: &str,
    audit: String,
) -> Refused {
    let mut refused = match scram_exchange(stream, buf, verifiers.decoy(user).await, user).await {
        Err(r) => r,
        // No password matches a decoy; refuse all the same.
        Ok(()) => Refused::new(
            sqlstate::INVALID_PASSWORD,
            format!("password authentication failed for user \"{user}\""),
            "",
        ),
    };
    if refused.code == sqlstate::INVALID_PASSWORD {
        refused.audit = audit;
    }
    refused
}

/// Authenticates service account `user` and returns the credentials to log in upstream.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    user: &str,
    secret_id: Option<&str>,
    store: &SecretStore,
    verifiers: &Verifiers,
) -> Result<Login, Refused> {
    let Some(secret_id) = secret_id else {
        return Err(decoy_exchange(stream, buf, verifiers, user, "unknown user".into()).await);
    };
    // A user name neither cached version has: the stages may have moved since; read again.
    let mut found = version_for(store, secret_id, user).await;
    if matches!(found, Ok(None)) {
        store.refresh(secret_id);
        found = version_for(store, secret_id, user).await;
    }
    let login = match found {
        Ok(Some(login)) => login,
        // `NAME_clone` before the first rotation, or a misconfigured secret: to the client,
        // as an unknown user.
        Ok(None) => {
            let why = format!("no current or previous version of {secret_id} is user {user}");
            return Err(decoy_exchange(stream, buf, verifiers, user, why).await);
        }
        Err(e) => {
            tracing::error!(user, error = %e, "service credentials unavailable");
            return Err(Refused::new(
                sqlstate::CONNECTION_FAILURE,
                "the proxy cannot read the credentials of this account; try again later",
                format!("secret unavailable: {e}"),
            ));
        }
    };
    let verifier = verifiers.get(&login.creds).await;
    if let Err(refused) = scram_exchange(stream, buf, verifier, user).await {
        if refused.code == sqlstate::INVALID_PASSWORD {
            // The client may hold a newer password than our cached read: its retry finds a
            // fresh one (at most one read per `min_refresh_ms`, however many failures).
            store.refresh(secret_id);
        }
        return Err(refused);
    }
    Ok(login)
}

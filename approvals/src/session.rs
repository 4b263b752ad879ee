//! Browser sessions, kept in PostgreSQL (`web_sessions`) so they survive a restart and work
//! with several app instances. The cookie carries 256 random bits; the table holds only
//! their SHA-256, so reading the table does not give anyone a session. A session ends after
//! `idle_timeout_secs` unused or `absolute_timeout_secs` after sign-in; signing in starts a
//! new session id (no fixation); every form carries the session's CSRF token.

use axum_extra::extract::cookie::{Cookie, SameSite};
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::db::Pool;
use crate::error::Result;
use crate::oidc::{LoginFlow, User};
use crate::settings::SessionSettings;

/// What a session remembers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Data {
    /// A sign-in in progress.
    pub login: Option<LoginFlow>,
    /// The signed-in person.
    pub user: Option<User>,
    /// Every state-changing form must send this back.
    pub csrf: String,
    /// To ask the provider about the person's groups again at each decision.
    pub access_token: Option<String>,
    pub access_expires_at: Option<DateTime<Utc>>,
    /// A one-time message for the next page ("Request 4 withdrawn.").
    pub flash: Option<String>,
}

/// A loaded session.
pub struct Session {
    pub key: Vec<u8>,
    pub data: Data,
}

pub enum Loaded {
    None,
    /// There was a session and it timed out (the person is told so).
    Expired,
    Active(Box<Session>),
}

#[derive(Clone)]
pub struct Sessions {
    pool: Pool,
    settings: SessionSettings,
    secure: bool,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn key_of(cookie: &str) -> Vec<u8> {
    Sha256::digest(cookie.as_bytes()).to_vec()
}

impl Sessions {
    pub fn new(pool: Pool, settings: SessionSettings, secure: bool) -> Sessions {
        Sessions {
            pool,
            settings,
            secure,
        }
    }

    /// `__Host-` cookies must be Secure; over plain HTTP (the local stack) the name is plain.
    pub fn cookie_name(&self) -> &'static str {
        if self.secure {
            "__Host-dbgw_approvals"
        } else {
            "dbgw_approvals"
        }
    }

    /// The session of this cookie value, if it exists and has not timed out.
    pub async fn load(&self, cookie: Option<&str>) -> Result<Loaded> {
        let Some(cookie) = cookie.filter(|c| !c.is_empty() && c.len() <= 128) else {
            return Ok(Loaded::None);
        };
        let key = key_of(cookie);
        let db = self.pool.get().await?;
        let row = db
            .query_opt(
                "SELECT data, now() - created_at > make_interval(secs => $2) \
                        OR now() - last_seen_at > make_interval(secs => $3) \
                 FROM web_sessions WHERE id_hash = $1",
                &[
                    &key,
                    &(self.settings.absolute_timeout_secs as f64),
                    &(self.settings.idle_timeout_secs as f64),
                ],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Loaded::None);
        };
        if row.get::<_, bool>(1) {
            db.execute("DELETE FROM web_sessions WHERE id_hash = $1", &[&key])
                .await?;
            return Ok(Loaded::Expired);
        }
        let data: Data = serde_json::from_value(row.get(0)).unwrap_or_default();
        db.execute(
            "UPDATE web_sessions SET last_seen_at = now() WHERE id_hash = $1",
            &[&key],
        )
        .await?;
        Ok(Loaded::Active(Box::new(Session { key, data })))
    }

    /// Starts a new session holding `data`; returns it and the cookie value to set.
    pub async fn create(&self, mut data: Data) -> Result<(Session, String)> {
        if data.csrf.is_empty() {
            data.csrf = random_token();
        }
        let cookie = random_token();
        let key = key_of(&cookie);
        let db = self.pool.get().await?;
        db.execute(
            "INSERT INTO web_sessions (id_hash, data) VALUES ($1, $2)",
            &[&key, &serde_json::to_value(&data).expect("session data")],
        )
        .await?;
        Ok((Session { key, data }, cookie))
    }

    pub async fn save(&self, session: &Session) -> Result<()> {
        let db = self.pool.get().await?;
        db.execute(
            "UPDATE web_sessions SET data = $2 WHERE id_hash = $1",
            &[
                &session.key,
                &serde_json::to_value(&session.data).expect("session data"),
            ],
        )
        .await?;
        Ok(())
    }

    pub async fn delete(&self, key: &[u8]) -> Result<()> {
        let db = self.pool.get().await?;
        db.execute("DELETE FROM web_sessions WHERE id_hash = $1", &[&key])
            .await?;
        Ok(())
    }

    /// Deletes sessions past either timeout; returns how many.
    pub async fn sweep(&self) -> Result<u64> {
        let db = self.pool.get().await?;
        Ok(db
            .execute(
                "DELETE FROM web_sessions WHERE now() - created_at > make_interval(secs => $1) \
                 OR now() - last_seen_at > make_interval(secs => $2)",
                &[
                    &(self.settings.absolute_timeout_secs as f64),
                    &(self.settings.idle_timeout_secs as f64),
                ],
            )
            .await?)
    }

    /// The session cookie: HttpOnly, SameSite=Lax (the provider's redirect back is a
    /// top-level GET from another site), Secure over HTTPS, for the whole app.
    pub fn cookie(&self, value: String) -> Cookie<'static> {
        let mut c = Cookie::new(self.cookie_name(), value);
        c.set_http_only(true);
        c.set_same_site(SameSite::Lax);
        c.set_secure(self.secure);
        c.set_path("/");
        c
    }

    /// A cookie that removes the session cookie.
    pub fn removal(&self) -> Cookie<'static> {
        let mut c = self.cookie(String::new());
        c.make_removal();
        c
    }
}

/// Whether `given` is the session's CSRF token (constant-time).
pub fn csrf_ok(session: &Session, given: &str) -> bool {
    let expected = session.data.csrf.as_bytes();
    !expected.is_empty() && bool::from(expected.ct_eq(given.as_bytes()))
}

//! Browser sessions, kept in PostgreSQL (`web_sessions`) so they survive a restart and work
//! with several app instances. The cookie carries 256 random bits; the table holds only
//! their SHA-256, so reading the table does not give anyone a session. A session ends after
//! `idle_timeout_secs` unused or `absolute_timeout_secs` after sign-in; signing in starts a
//! new session id (no fixation); every form carries the session's CSRF token.
//!
//! A sign-in in progress is not a session: its state, nonce and PKCE verifier travel in a
//! short-lived cookie of their own, authenticated with a key derived from the OpenID client
//! secret (so every instance accepts it), and nothing is written to the database until the
//! provider has vouched for the person. Anonymous visits to `/auth/login` cost no rows.

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
    /// The signed-in person.
    pub user: Option<User>,
    /// Every state-changing form must send this back.
    pub csrf: String,
    /// To ask the provider about the person's groups again at each decision.
    pub access_token: Option<String>,
    pub access_expires_at: Option<DateTime<Utc>>,
    /// When the person signed in (the CLI hand-off takes only a fresh sign-in).
    pub signed_in_at: Option<DateTime<Utc>>,
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
    /// Authenticates the sign-in cookie ([`Sessions::login_cookie`]).
    flow_key: [u8; 32],
}

/// How long a sign-in may take, from `/auth/login` to the provider's redirect back.
pub const LOGIN_FLOW_SECS: i64 = 600;

/// HMAC-SHA-256 (RFC 2104) with a 32-byte key.
fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// What the sign-in cookie carries.
#[derive(Serialize, Deserialize)]
struct SignedFlow {
    flow: LoginFlow,
    /// Unix seconds after which the cookie is refused.
    until: i64,
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
    /// `client_secret` keys the sign-in cookie (through a derivation of its own: the
    /// secret itself is never used as that key).
    pub fn new(
        pool: Pool,
        settings: SessionSettings,
        secure: bool,
        client_secret: &[u8],
    ) -> Sessions {
        let flow_key = Sha256::new()
            .chain_update(b"dbgw-approvals sign-in cookie v1\0")
            .chain_update(client_secret)
            .finalize()
            .into();
        Sessions {
            pool,
            settings,
            secure,
            flow_key,
        }
    }

    /// The name of the cookie of a sign-in in progress.
    pub fn login_cookie_name(&self) -> &'static str {
        if self.secure {
            "__Host-dbgw_approvals_login"
        } else {
            "dbgw_approvals_login"
        }
    }

    /// The cookie that carries a sign-in in progress (`payload.mac`, both base64url),
    /// valid for [`LOGIN_FLOW_SECS`] (checked inside it: the cookie itself lasts the browser
    /// session).
    pub fn login_cookie(&self, flow: LoginFlow) -> Cookie<'static> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = serde_json::to_vec(&SignedFlow {
            flow,
            until: Utc::now().timestamp() + LOGIN_FLOW_SECS,
        })
        .expect("sign-in flow");
        let mac = hmac_sha256(&self.flow_key, &payload);
        self.cookie_named(
            self.login_cookie_name(),
            format!("{}.{}", b64.encode(&payload), b64.encode(mac)),
        )
    }

    /// The sign-in in progress of this cookie value, if it is ours, intact and recent.
    pub fn login_flow(&self, value: Option<&str>) -> Option<LoginFlow> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (payload, mac) = value.filter(|v| v.len() <= 4096)?.split_once('.')?;
        let payload = b64.decode(payload).ok()?;
        let mac = b64.decode(mac).ok()?;
        let expected = hmac_sha256(&self.flow_key, &payload);
        if !bool::from(expected.as_slice().ct_eq(&mac)) {
            return None;
        }
        let signed: SignedFlow = serde_json::from_slice(&payload).ok()?;
        (signed.until > Utc::now().timestamp()).then_some(signed.flow)
    }

    /// A cookie that removes the sign-in cookie.
    pub fn login_removal(&self) -> Cookie<'static> {
        let mut c = self.cookie_named(self.login_cookie_name(), String::new());
        c.make_removal();
        c
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
        self.cookie_named(self.cookie_name(), value)
    }

    fn cookie_named(&self, name: &'static str, value: String) -> Cookie<'static> {
        let mut c = Cookie::new(name, value);
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

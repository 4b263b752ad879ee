//! How the `dbgw` CLI gets a token for the JSON API (`dbgw request`, `extend`, `status`).
//!
//! The API takes only access tokens the provider issued to this app (see [`crate::api`]);
//! the CLI's own ID token is a psql password and is refused there. So the CLI signs in
//! *through this app*, as a native app does (RFC 8252 with PKCE, RFC 7636):
//!
//! 1. the CLI listens on a loopback port and opens
//!    `/auth/cli?redirect_uri=http://127.0.0.1:<port>/callback&state=..&code_challenge=..`
//!    (S256 of a verifier only it knows);
//! 2. the person signs in here as on the pages (a fresh sign-in every time);
//! 3. `/auth/cli/finish`, only within two minutes of a sign-in, sends the browser to the
//!    loopback address with a one-time code (stored as its SHA-256 for a minute, with the
//!    session's access token);
//! 4. the CLI posts the code and its verifier to `/api/v1/cli/token` and gets this app's
//!    access token back; it calls the API with it like any other client.
//!
//! Only a loopback `http://127.0.0.1` / `http://[::1]` address with the path `/callback`
//! is accepted as `redirect_uri`: the code never leaves the person's machine.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use axum_extra::extract::cookie::CookieJar;
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::ApiError;
use crate::error::Error;
use crate::session::Loaded;
use crate::App;

/// How long a code may wait to be redeemed.
const CODE_TTL_SECS: i64 = 60;
/// How recent the sign-in must be when the browser comes back to [`finish`].
const FRESH_SECS: i64 = 120;

#[derive(Debug, Deserialize)]
pub struct Start {
    redirect_uri: String,
    state: String,
    code_challenge: String,
}

impl Start {
    fn check(&self) -> Result<(), Error> {
        let url = reqwest::Url::parse(&self.redirect_uri)
            .map_err(|_| Error::BadInput("redirect_uri is not a URL.".into()))?;
        let loopback = url.scheme() == "http"
            && matches!(url.host_str(), Some("127.0.0.1" | "[::1]"))
            && url.port().is_some()
            && url.path() == "/callback"
            && url.query().is_none()
            && url.fragment().is_none()
            && url.username().is_empty()
            && url.password().is_none();
        if !loopback {
            return Err(Error::BadInput(
                "redirect_uri must be http://127.0.0.1:<port>/callback (the dbgw CLI on this \
                 machine)."
                    .into(),
            ));
        }
        let b64url = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !(8..=128).contains(&self.state.len()) || !b64url(&self.state) {
            return Err(Error::BadInput(
                "state must be 8 to 128 URL-safe characters.".into(),
            ));
        }
        if self.code_challenge.len() != 43 || !b64url(&self.code_challenge) {
            return Err(Error::BadInput(
                "code_challenge must be the S256 challenge of a PKCE verifier.".into(),
            ));
        }
        Ok(())
    }

    fn query(&self) -> String {
        let enc = |s: &str| {
            openidconnect::url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
        };
        format!(
            "redirect_uri={}&state={}&code_challenge={}",
            enc(&self.redirect_uri),
            enc(&self.state),
            enc(&self.code_challenge)
        )
    }
}

/// Step 1: a fresh sign-in, then [`finish`].
pub async fn start(Query(q): Query<Start>) -> Result<Response, crate::web::Page> {
    q.check()?;
    let next = format!("/auth/cli/finish?{}", q.query());
    let enc: String =
        openidconnect::url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
    Ok(Redirect::to(&format!("/auth/login?next={enc}")).into_response())
}

/// Step 3: the signed-in person's access token behind a one-time code, to the loopback.
pub async fn finish(
    State(app): State<App>,
    jar: CookieJar,
    Query(q): Query<Start>,
) -> Result<Response, crate::web::Page> {
    q.check()?;
    let cookie = jar.get(app.sessions.cookie_name()).map(|c| c.value());
    let Loaded::Active(session) = app.sessions.load(cookie).await? else {
        return Err(Error::NotSignedIn.into());
    };
    let (Some(user), Some(token), Some(expires)) = (
        session.data.user.clone(),
        session.data.access_token.clone(),
        session.data.access_expires_at,
    ) else {
        return Err(Error::NotSignedIn.into());
    };
    // Only the sign-in that `start` began: a link to this page alone, followed by a browser
    // signed in earlier, hands nothing out.
    let fresh = session
        .data
        .signed_in_at
        .is_some_and(|at| chrono::Utc::now() - at < chrono::Duration::seconds(FRESH_SECS));
    if !fresh {
        return Err(Error::SignInAgain(
            "The CLI gets a token only right after a sign-in; run the command again.".into(),
        )
        .into());
    }
    if expires <= chrono::Utc::now() + chrono::Duration::seconds(30) {
        return Err(Error::SignInAgain(
            "Your sign-in is too old to hand to the CLI; run the command again.".into(),
        )
        .into());
    }
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let code = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let control = app.control.get().await.map_err(Error::from)?;
    control
        .execute("DELETE FROM cli_handoffs WHERE expires_at < now()", &[])
        .await
        .map_err(Error::from)?;
    control
        .execute(
            "INSERT INTO cli_handoffs (code_hash, challenge, access_token, token_expires_at, \
             email, expires_at) VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))",
            &[
                &Sha256::digest(code.as_bytes()).to_vec(),
                &q.code_challenge,
                &token,
                &expires,
                &user.email,
                &(CODE_TTL_SECS as f64),
            ],
        )
        .await
        .map_err(Error::from)?;
    tracing::info!(email = %user.email, "sign-in handed to the CLI");
    Ok(Redirect::to(&format!("{}?code={code}&state={}", q.redirect_uri, q.state)).into_response())
}

#[derive(Deserialize)]
pub struct Redeem {
    code: String,
    code_verifier: String,
}

/// Step 4: the code and the PKCE verifier for the access token (once).
pub async fn redeem(
    State(app): State<App>,
    json: Result<Json<Redeem>, JsonRejection>,
) -> Result<Response, ApiError> {
    let r = crate::body::json(json)?;
    let refused = || Error::SignInAgain("The code is unknown, used or expired.".into());
    let control = app.control.get().await.map_err(Error::from)?;
    let row = control
        .query_opt(
            "DELETE FROM cli_handoffs WHERE code_hash = $1 \
             RETURNING challenge, access_token, token_expires_at, email, expires_at > now()",
            &[&Sha256::digest(r.code.as_bytes()).to_vec()],
        )
        .await
        .map_err(Error::from)?
        .ok_or_else(refused)?;
    let (challenge, token, token_expires, email, fresh): (
        String,
        String,
        chrono::DateTime<chrono::Utc>,
        String,
        bool,
    ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(r.code_verifier.as_bytes()));
    if !fresh || !bool::from(computed.as_bytes().ct_eq(challenge.as_bytes())) {
        return Err(refused().into());
    }
    Ok(
        Json(json!({"access_token": token, "expires_at": token_expires, "email": email}))
            .into_response(),
    )
}

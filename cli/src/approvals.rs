//! Talking to the approvals app's JSON API as the signed-in person.
//!
//! The API takes only access tokens the identity provider issued to the approvals app (the
//! ID token `dbgw login` caches is a psql password and is refused there, by design). So
//! the CLI signs in *through the app* (its `/auth/cli` hand-off, RFC 8252 style): a
//! loopback listener, the browser, a one-time code bound to a PKCE verifier only this
//! process knows, redeemed for the app's access token. That token is cached next to the
//! ID token (`approvals-token.json`, readable by the user only) until it expires.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use openidconnect::{CsrfToken, PkceCodeChallenge};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::settings::Settings;

/// The approvals app's access token, as cached.
#[derive(Clone, Serialize, Deserialize)]
struct ApiToken {
    url: String,
    email: String,
    access_token: String,
    expires_at: DateTime<Utc>,
}

pub struct Approvals {
    settings: Settings,
    file: PathBuf,
    http: reqwest::Client,
    token: Option<ApiToken>,
}

impl Approvals {
    pub fn new(settings: &Settings) -> anyhow::Result<Approvals> {
        tls_config::install_provider();
        Ok(Approvals {
            settings: settings.clone(),
            file: settings.cache_dir()?.join("approvals-token.json"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()?,
            token: None,
        })
    }

    fn base(&self) -> &str {
        self.settings.approvals_url.trim_end_matches('/')
    }

    /// The stored token when it is this app's, expired or not.
    fn stored(&self) -> Option<ApiToken> {
        let text = std::fs::read_to_string(&self.file).ok()?;
        serde_json::from_str::<ApiToken>(&text)
            .ok()
            .filter(|t| t.url == self.base())
    }

    /// The cached token when it is good for another minute.
    fn cached(&self) -> Option<ApiToken> {
        self.stored()
            .filter(|t| (t.expires_at - Utc::now()).num_seconds() > 60)
    }

    /// Who was signed in and when that sign-in ended (or ends within the minute), if it
    /// has: what `dbgw status` says instead of opening a browser.
    pub fn expired(&self) -> Option<(String, DateTime<Utc>)> {
        self.stored()
            .filter(|_| self.cached().is_none())
            .map(|t| (t.email, t.expires_at))
    }

    fn store(&self, token: &ApiToken) -> anyhow::Result<()> {
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        secret_store::write_private(&self.file, serde_json::to_string(token)?.as_bytes())
            .context("writing the approvals token cache")
    }

    /// Whether a usable token is cached (no sign-in needed).
    pub fn has_token(&self) -> bool {
        self.cached().is_some()
    }

    /// Forgets the cached token (`dbgw logout`).
    pub fn clear(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(&self.file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn token(&mut self) -> anyhow::Result<ApiToken> {
        if let Some(t) = self.token.clone().or_else(|| self.cached()) {
            self.token = Some(t.clone());
            return Ok(t);
        }
        // No refresh token to use (see `sign_in`): say why the browser opens again.
        if let Some((email, at)) = self.expired() {
            eprintln!(
                "Your approvals sign-in as {email} expired at {}; sign in again.",
                at.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        let t = self.sign_in().await?;
        self.store(&t)?;
        self.token = Some(t.clone());
        Ok(t)
    }

    /// The hand-off: browser sign-in at the app, code to our loopback port, code + PKCE
    /// verifier for the token.
    ///
    /// Each expiry of the token means another hand-off, not a refresh: the token is the
    /// provider's access token issued to the app, a confidential client, so refreshing it
    /// takes the app's client secret, which the CLI must not hold; and the app keeping
    /// refresh tokens for the CLI would be a long-lived credential per person in the
    /// control plane. While the provider's own session lasts the hand-off is one browser
    /// round trip without typing anything.
    async fn sign_in(&self) -> anyhow::Result<ApiToken> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let redirect = format!(
            "http://127.0.0.1:{}/callback",
            listener.local_addr()?.port()
        );
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = CsrfToken::new_random();
        let mut url = reqwest::Url::parse(&format!("{}/auth/cli", self.base()))
            .context("approvals_url is not a URL")?;
        url.query_pairs_mut()
            .append_pair("redirect_uri", &redirect)
            .append_pair("state", state.secret())
            .append_pair("code_challenge", challenge.as_str());
        eprintln!("To sign in to the approvals app, open this URL in your browser:\n\n  {url}\n");
        if self.settings.open_browser {
            crate::login::open(url.as_str());
        }
        let timeout = Duration::from_secs(self.settings.login_timeout_secs);
        let code = tokio::time::timeout(timeout, crate::login::callback(&listener, state.secret()))
            .await
            .map_err(|_| {
                anyhow::anyhow!("sign-in did not finish within {} s", timeout.as_secs())
            })??;
        #[derive(Deserialize)]
        struct Redeemed {
            access_token: String,
            expires_at: DateTime<Utc>,
            email: String,
        }
        let response = self
            .http
            .post(format!("{}/api/v1/cli/token", self.base()))
            .json(&serde_json::json!({"code": code, "code_verifier": verifier.secret()}))
            .send()
            .await
            .with_context(|| format!("reaching the approvals app at {}", self.base()))?;
        if !response.status().is_success() {
            bail!(
                "the approvals app refused the sign-in: {}",
                problem(response).await
            );
        }
        let r: Redeemed = response
            .json()
            .await
            .context("reading the approvals app's answer")?;
        eprintln!("Signed in to the approvals app as {}.", r.email);
        Ok(ApiToken {
            url: self.base().to_string(),
            email: r.email,
            access_token: r.access_token,
            expires_at: r.expires_at,
        })
    }

    /// One API call; a refused token (expired, revoked) means one new sign-in and a retry.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        for attempt in 0..2 {
            let token = self.token().await?;
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base()))
                .bearer_auth(&token.access_token);
            if let Some(b) = body {
                req = req.json(b);
            }
            let response = req
                .send()
                .await
                .with_context(|| format!("reaching the approvals app at {}", self.base()))?;
            if response.status() == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                eprintln!(
                    "The approvals app no longer accepts your sign-in as {} (ended or \
                     revoked at the identity provider); sign in again.",
                    token.email
                );
                self.token = None;
                self.clear()?;
                continue;
            }
            if !response.status().is_success() {
                bail!("{}", problem(response).await);
            }
            return response
                .json()
                .await
                .context("reading the approvals app's answer");
        }
        bail!("the approvals app refused the new sign-in")
    }
}

/// The API's `{"error", "message"}`, or the status.
async fn problem(response: reqwest::Response) -> String {
    let status = response.status();
    match response.json::<Value>().await {
        Ok(v) => v["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {status}")),
        Err(_) => format!("HTTP {status}"),
    }
}

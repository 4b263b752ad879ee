//! OpenID Connect ID tokens as passwords. A token is accepted when the workspace's one
//! ID-token verifier ([`oidc::Verifier`]: signature against the provider's published keys,
//! issuer, audience, validity) accepts it, and its `email` (verified, where the provider
//! says) is the user name the client gave.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use oidc::TokenError;

/// The `[oidc]` section of the proxy's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcSettings {
    /// The identity provider; empty turns person logins off. Its discovery document is at
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// Accepted `aud` values (the client ids of dbgw's login tools).
    pub audiences: Vec<String>,
    /// Tolerance for `exp` and `nbf` between our clock and the provider's.
    pub clock_skew_secs: u64,
    /// How often the keys are fetched again.
    pub jwks_refresh_secs: u64,
    /// A token with an unknown key id triggers a fetch at most this often.
    pub unknown_key_refetch_secs: u64,
    pub http_timeout_secs: u64,
    /// A token must say `email_verified: true` (a provider that never verifies emails can
    /// turn this off; the person is still identified by issuer and subject).
    pub require_verified_email: bool,
}

impl Default for OidcSettings {
    fn default() -> Self {
        OidcSettings {
            issuer: String::new(),
            audiences: vec!["dbgw-cli".into()],
            clock_skew_secs: 30,
            jwks_refresh_secs: 300,
            unknown_key_refetch_secs: 10,
            http_timeout_secs: 5,
            require_verified_email: true,
        }
    }
}

/// Who a valid token says the person is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub email: String,
    pub subject: String,
    pub issuer: String,
    /// How the person signed in (`amr`, RFC 8176 names such as `pwd`, `mfa`, `otp`).
    pub amr: Vec<String>,
    /// When the person last signed in at the provider (`auth_time`, seconds since the epoch).
    pub auth_time: Option<i64>,
}

pub struct TokenVerifier {
    inner: Arc<oidc::Verifier>,
    require_verified_email: bool,
}

impl TokenVerifier {
    pub fn new(settings: OidcSettings) -> anyhow::Result<Arc<TokenVerifier>> {
        let require_verified_email = settings.require_verified_email;
        let inner = oidc::Verifier::new(oidc::VerifierSettings {
            issuer: settings.issuer,
            audiences: settings.audiences,
            clock_skew_secs: settings.clock_skew_secs,
            jwks_refresh_secs: settings.jwks_refresh_secs,
            unknown_key_refetch_secs: settings.unknown_key_refetch_secs,
            http_timeout_secs: settings.http_timeout_secs,
        })
        .map_err(|e| anyhow::anyhow!("oidc: {e}"))?;
        Ok(Arc::new(TokenVerifier {
            inner,
            require_verified_email,
        }))
    }

    /// Fetches the provider's keys now.
    pub async fn refresh(&self) -> Result<(), TokenError> {
        self.inner.refresh().await
    }

    /// Refreshes the keys on schedule until `stop`.
    pub async fn run_refresher(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        self.inner.clone().run_refresher(stop).await
    }

    /// Checks `token` for a session whose user name is `user`.
    pub async fn verify(&self, token: &str, user: &str) -> Result<Person, TokenError> {
        let claims = self.inner.verify(token).await?;
        let email = grants::normalize_email(claims.verified_email(self.require_verified_email)?);
        if email != grants::normalize_email(user) {
            return Err(TokenError::WrongUser(email));
        }
        Ok(Person {
            email,
            subject: claims.sub,
            issuer: claims.iss,
            amr: claims.amr,
            auth_time: claims.auth_time,
        })
    }
}

//! Signing in with the company's OpenID Connect provider (authorization code + PKCE, as a
//! confidential client), checking the API's bearer access tokens with the provider
//! (introspection, then userinfo), and asking the provider again, at each decision, which
//! groups a person is in (userinfo).
//!
//! The provider's metadata and signing keys are read at start and again when a token is
//! signed with a key we do not know (a key rotation), at most every [`REFRESH_EVERY`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AccessToken, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use crate::settings::OidcSettings;

/// Least time between two reads of the provider's metadata and keys.
const REFRESH_EVERY: Duration = Duration::from_secs(10);

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A signed-in person, as the provider says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    pub email: String,
    pub subject: String,
    pub name: String,
    pub groups: Vec<String>,
}

/// What a sign-in in progress must remember until the provider sends the browser back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginFlow {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// Where to go after signing in (a path of this app).
    pub next: String,
}

/// The result of a completed sign-in.
pub struct SignedIn {
    pub user: User,
    pub access_token: String,
    pub access_expires_at: chrono::DateTime<chrono::Utc>,
}

pub struct Oidc {
    settings: OidcSettings,
    redirect: RedirectUrl,
    client_secret: SecretString,
    http: reqwest::Client,
    /// Verifies the ID token of a sign-in.
    ids: Arc<oidc::Verifier>,
    metadata: RwLock<Option<(Instant, Arc<CoreProviderMetadata>)>>,
    introspection: RwLock<Option<String>>,
}

impl Oidc {
    /// Prepares the client; the provider is contacted at the first need.
    pub fn new(
        settings: OidcSettings,
        public_url: &str,
        client_secret: SecretString,
    ) -> anyhow::Result<Oidc> {
        tls_config::install_provider();
        if !settings.api_audiences.is_empty() {
            tracing::warn!(
                ignored = ?settings.api_audiences,
                "oidc.api_audiences is no longer used and is ignored: the API accepts only \
                 access tokens issued to oidc.client_id; remove the key"
            );
        }
        let redirect = RedirectUrl::new(format!(
            "{}/auth/callback",
            public_url.trim_end_matches('/')
        ))
        .context("public_url does not make a valid redirect URI")?;
        let http = oidc::http::client(Duration::from_secs(10))?;
        let ids = oidc::Verifier::new(oidc::VerifierSettings::new(
            &settings.issuer,
            &settings.client_id,
        ))
        .context("oidc.issuer")?;
        Ok(Oidc {
            settings,
            redirect,
            client_secret,
            http,
            ids,
            metadata: RwLock::new(None),
            introspection: RwLock::new(None),
        })
    }

    /// The provider's metadata, read now if never read or if `refresh` and not read lately.
    async fn metadata(&self, refresh: bool) -> anyhow::Result<Arc<CoreProviderMetadata>> {
        if let Some((at, m)) = self.metadata.read().await.as_ref() {
            if !refresh || at.elapsed() < REFRESH_EVERY {
                return Ok(m.clone());
            }
        }
        let mut slot = self.metadata.write().await;
        if let Some((at, m)) = slot.as_ref() {
            if !refresh || at.elapsed() < REFRESH_EVERY {
                return Ok(m.clone());
            }
        }
        let issuer = IssuerUrl::new(self.settings.issuer.clone()).context("oidc.issuer")?;
        let http = self.http.clone();
        let m = CoreProviderMetadata::discover_async(issuer, &move |r| {
            oidc::http::send(http.clone(), r)
        })
        .await
        .with_context(|| {
            format!(
                "reading the identity provider's configuration at {}",
                self.settings.issuer
            )
        })?;
        let m = Arc::new(m);
        *slot = Some((Instant::now(), m.clone()));
        Ok(m)
    }

    /// Whether the provider's configuration has been read (readiness).
    pub async fn ready(&self) -> bool {
        self.metadata(false).await.is_ok()
    }

    fn client(&self, metadata: &CoreProviderMetadata) -> Client {
        CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(
                self.client_secret.expose_secret().to_string(),
            )),
        )
        .set_redirect_uri(self.redirect.clone())
    }

    /// Where to send the browser to sign in, and what to remember meanwhile.
    pub async fn begin(&self, next: String) -> anyhow::Result<(String, LoginFlow)> {
        let metadata = self.metadata(false).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = self
            .client(&metadata)
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .add_scope(Scope::new("groups".into()))
            .set_pkce_challenge(challenge)
            .url();
        Ok((
            url.to_string(),
            LoginFlow {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                pkce_verifier: verifier.secret().clone(),
                next,
            },
        ))
    }

    /// Redeems the code the provider sent back and verifies the ID token (signature, issuer,
    /// audience, expiry, nonce).
    pub async fn finish(&self, code: String, flow: &LoginFlow) -> anyhow::Result<SignedIn> {
        let metadata = self.metadata(false).await?;
        let client = self.client(&metadata);
        let http = self.http.clone();
        let response = client
            .exchange_code(AuthorizationCode::new(code))?
            .set_pkce_verifier(PkceCodeVerifier::new(flow.pkce_verifier.clone()))
            .request_async(&move |r| oidc::http::send(http.clone(), r))
            .await
            .map_err(|e| anyhow!("exchanging the authorization code: {e}"))?;
        let id_token = response
            .id_token()
            .context("the provider returned no ID token")?
            .to_string();
        let user = self.verify(&id_token, &flow.nonce).await?;
        let lifetime = response
            .expires_in()
            .unwrap_or(Duration::from_secs(300))
            .min(Duration::from_secs(24 * 3600));
        Ok(SignedIn {
            user,
            access_token: response.access_token().secret().clone(),
            access_expires_at: chrono::Utc::now()
                + chrono::Duration::from_std(lifetime).unwrap_or_default(),
        })
    }

    /// The person behind a bearer token of the API, as the provider sees them now.
    ///
    /// The token must be an **access token the provider issued to this app**
    /// (`oidc.client_id`): the provider's introspection endpoint (RFC 7662, asked as this
    /// app, with its client secret) says whether it is active and to which client it was
    /// issued. So a token a person holds for another client (the CLI's ID token, which is
    /// also their psql password) is refused here. Identity and groups then come from the
    /// provider's userinfo, at every call: a person removed from the approvers' group
    /// cannot decide through the API from that moment, as on the pages.
    pub async fn api_user(&self, token: &str) -> anyhow::Result<User> {
        anyhow::ensure!(
            !token.is_empty() && token.len() <= 4096,
            "the token is empty or too long"
        );
        if token.split('.').count() == 3 {
            anyhow::bail!(
                "this is a JWT (an ID token, such as the one `dbgw login` gives for psql); the \
                 API takes an access token issued to `{}`",
                self.settings.client_id
            );
        }
        let endpoint = self.introspection_endpoint().await?;
        let encode = |s: &str| {
            openidconnect::url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
        };
        let response = self
            .http
            .post(endpoint.as_str())
            .basic_auth(
                encode(&self.settings.client_id),
                Some(encode(self.client_secret.expose_secret())),
            )
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .context("asking the provider about the token (introspection)")?;
        #[derive(Deserialize)]
        struct Introspection {
            #[serde(default)]
            active: bool,
            client_id: Option<String>,
            sub: Option<String>,
            token_type: Option<String>,
            error: Option<String>,
        }
        let status = response.status();
        let info: Introspection = response
            .json()
            .await
            .context("reading the provider's introspection answer")?;
        if let Some(error) = info.error {
            anyhow::bail!(
                "the provider refused to introspect the token (HTTP {}, {error}): it is not \
                 an access token of this provider",
                status.as_u16()
            );
        }
        anyhow::ensure!(
            info.active,
            "the provider says this is not an active access token of this app (expired, \
             revoked, or issued to another client); get one for `{}`",
            self.settings.client_id
        );
        anyhow::ensure!(
            info.client_id.as_deref() == Some(self.settings.client_id.as_str()),
            "the token was issued to another client, not to `{}`",
            self.settings.client_id
        );
        if let Some(kind) = &info.token_type {
            anyhow::ensure!(
                kind.eq_ignore_ascii_case("bearer"),
                "not an access token ({kind})"
            );
        }
        let subject = info
            .sub
            .context("the provider names no subject for the token")?;
        let user = self.userinfo(token, &subject).await?;
        anyhow::ensure!(
            !user.email.is_empty(),
            "the provider gives no email for this token (scope `email` missing?)"
        );
        Ok(user)
    }

    /// The provider's introspection endpoint, from its discovery document (read once).
    async fn introspection_endpoint(&self) -> anyhow::Result<String> {
        if let Some(url) = self.introspection.read().await.as_ref() {
            return Ok(url.clone());
        }
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            introspection_endpoint: Option<String>,
        }
        let d: Discovery = self
            .http
            .get(&discovery)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("reading {discovery}"))?
            .json()
            .await
            .with_context(|| format!("reading {discovery}"))?;
        anyhow::ensure!(
            d.issuer.trim_end_matches('/') == self.settings.issuer.trim_end_matches('/'),
            "the provider's discovery names another issuer ({})",
            d.issuer
        );
        let url = d.introspection_endpoint.context(
            "the provider offers no token introspection endpoint (RFC 7662), which the API needs",
        )?;
        *self.introspection.write().await = Some(url.clone());
        Ok(url)
    }

    /// Verifies a sign-in's ID token (the workspace's one verifier: signature, issuer,
    /// audience = this app, expiry) and that it carries this sign-in's nonce.
    async fn verify(&self, id_token: &str, nonce: &str) -> anyhow::Result<User> {
        let claims = self
            .ids
            .verify(id_token)
            .await
            .map_err(|e| anyhow!("the ID token did not verify: {e}"))?;
        anyhow::ensure!(
            claims.nonce.as_deref() == Some(nonce),
            "the ID token did not verify: it is not the token of this sign-in (nonce)"
        );
        let email = claims.verified_email(false).map_err(|e| anyhow!("{e}"))?;
        Ok(User {
            email: grants::normalize_email(email),
            subject: claims.sub,
            name: claims.name.unwrap_or_default(),
            groups: claims.groups,
        })
    }

    /// Asks the provider who holds `access_token` now and in which groups. The subject must
    /// be the one that signed in.
    pub async fn userinfo(&self, access_token: &str, subject: &str) -> anyhow::Result<User> {
        let metadata = self.metadata(false).await?;
        let url = metadata
            .userinfo_endpoint()
            .context("the provider has no userinfo endpoint")?
            .url()
            .clone();
        let token = AccessToken::new(access_token.to_string());
        let response = self
            .http
            .get(url.as_str())
            .bearer_auth(token.secret())
            .send()
            .await
            .context("asking the provider for userinfo")?;
        anyhow::ensure!(
            response.status().is_success(),
            "the provider answered userinfo with HTTP {}",
            response.status().as_u16()
        );
        #[derive(Deserialize)]
        struct Info {
            sub: String,
            email: Option<String>,
            email_verified: Option<bool>,
            name: Option<String>,
            #[serde(default)]
            groups: Vec<String>,
        }
        let info: Info = response.json().await.context("reading userinfo")?;
        anyhow::ensure!(
            info.sub == subject,
            "userinfo names another subject than the one signed in"
        );
        anyhow::ensure!(
            info.email_verified != Some(false),
            "the provider says this email address is not verified"
        );
        Ok(User {
            email: grants::normalize_email(&info.email.unwrap_or_default()),
            subject: info.sub,
            name: info.name.unwrap_or_default(),
            groups: info.groups,
        })
    }
}

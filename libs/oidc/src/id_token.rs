//! ID tokens. A token is accepted when its signature checks out against the provider's
//! published keys (JWKS), it was issued by the configured issuer for one of the configured
//! audiences, and it is within its validity (with a small clock skew).
//!
//! Keys are fetched from the provider's discovery document and cached, parsed, by key id.
//! They are refreshed on a schedule ([`Verifier::run_refresher`]), and at once when a token
//! names a key id we do not know (a key rotation at the provider), at most once per
//! `unknown_key_refetch_secs`. Only asymmetric algorithms are accepted: `none` and HMAC
//! never are, whatever the token header says.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Whom to trust and how often to ask.
#[derive(Debug, Clone)]
pub struct VerifierSettings {
    /// The identity provider; its discovery document is at
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// Tolerance for `exp` and `nbf` between our clock and the provider's.
    pub clock_skew_secs: u64,
    /// How often [`Verifier::run_refresher`] fetches the keys again.
    pub jwks_refresh_secs: u64,
    /// A token with an unknown key id triggers a fetch at most this often.
    pub unknown_key_refetch_secs: u64,
    pub http_timeout_secs: u64,
}

impl VerifierSettings {
    /// One issuer and one audience, with the usual skew and refresh periods.
    pub fn new(issuer: &str, audience: &str) -> VerifierSettings {
        VerifierSettings {
            issuer: issuer.to_string(),
            audiences: vec![audience.to_string()],
            clock_skew_secs: 30,
            jwks_refresh_secs: 300,
            unknown_key_refetch_secs: 10,
            http_timeout_secs: 10,
        }
    }
}

/// Why a token was refused. The text goes to the client and the audit log.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the password is not an identity token")]
    Malformed,
    #[error("unsigned tokens (alg none) are refused")]
    Unsigned,
    #[error("tokens signed with {0} are refused: only asymmetric signatures are accepted")]
    Algorithm(String),
    #[error("the token has no key id")]
    NoKeyId,
    #[error("the token is signed with a key the identity provider does not publish")]
    UnknownKey,
    #[error("the token's signature is not valid")]
    Signature,
    #[error("the token has expired: log in again")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued by another identity provider")]
    Issuer,
    #[error("the token was issued for another application")]
    Audience,
    #[error("the token carries no email")]
    NoEmail,
    #[error("the token's email is not verified")]
    EmailNotVerified,
    #[error("the token belongs to {0}, not to the user name given")]
    WrongUser(String),
    #[error("the identity provider's keys are unavailable: {0}")]
    KeysUnavailable(String),
    #[error("the token is invalid: {0}")]
    Invalid(String),
}

/// What a verified ID token says. Each caller applies its own policy on top (the proxy:
/// the email is the user name given; the approvals app and the CLI: the nonce of their
/// sign-in, `amr` for a multi-factor one).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// How the person signed in (`amr`, RFC 8176 names such as `pwd`, `mfa`, `otp`).
    #[serde(default)]
    pub amr: Vec<String>,
    /// When the person last signed in at the provider (`auth_time`, seconds since the epoch).
    pub auth_time: Option<i64>,
    pub nonce: Option<String>,
}

impl Claims {
    /// The token's email (as written), refused when the provider says it is not verified
    /// or, with `require_verified`, does not say it is.
    pub fn verified_email(&self, require_verified: bool) -> Result<&str, TokenError> {
        let email = self.email.as_deref().ok_or(TokenError::NoEmail)?;
        match self.email_verified {
            Some(false) => Err(TokenError::EmailNotVerified),
            None if require_verified => Err(TokenError::EmailNotVerified),
            _ => Ok(email),
        }
    }
}

/// The members checked here but not handed to callers.
#[derive(Deserialize)]
struct Checked {
    /// One audience or several (checked against the configured ones by jsonwebtoken).
    aud: serde_json::Value,
    /// The client the token was issued to; required to be ours when `aud` lists several.
    azp: Option<String>,
    #[serde(flatten)]
    claims: Claims,
}

/// A parsed key and the algorithms it may verify.
struct Key {
    decoding: DecodingKey,
    algorithms: Vec<Algorithm>,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, Arc<Key>>,
    /// When a token's unknown key id last made us fetch.
    unknown_fetch: Option<Instant>,
}

pub struct Verifier {
    settings: VerifierSettings,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl Verifier {
    pub fn new(settings: VerifierSettings) -> anyhow::Result<Arc<Verifier>> {
        let url = reqwest::Url::parse(&settings.issuer)
            .map_err(|e| anyhow::anyhow!("the issuer is not a URL: {e}"))?;
        let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        anyhow::ensure!(
            url.scheme() == "https" || loopback,
            "the issuer must use https (plain http only on loopback)"
        );
        anyhow::ensure!(!settings.audiences.is_empty(), "no audience is configured");
        let http = crate::http::client(Duration::from_secs(settings.http_timeout_secs))?;
        Ok(Arc::new(Verifier {
            settings,
            http,
            keys: RwLock::new(Keys::default()),
            fetching: tokio::sync::Mutex::new(()),
        }))
    }

    /// Fetches the discovery document and the keys it points to.
    pub async fn refresh(&self) -> Result<(), TokenError> {
        let _one = self.fetching.lock().await;
        let unavailable = |e: String| TokenError::KeysUnavailable(e);
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let discovery: serde_json::Value =
            self.get_json(&discovery_url).await.map_err(unavailable)?;
        if discovery["issuer"].as_str() != Some(self.settings.issuer.as_str()) {
            return Err(unavailable(format!(
                "the discovery document names issuer {}",
                discovery["issuer"]
            )));
        }
        let jwks_uri = discovery["jwks_uri"]
            .as_str()
            .ok_or_else(|| unavailable("no jwks_uri in the discovery document".into()))?;
        let set = self.get_json(jwks_uri).await.map_err(unavailable)?;
        let entries = set["keys"]
            .as_array()
            .ok_or_else(|| unavailable("the JWKS has no `keys` array".into()))?;
        let mut by_kid = HashMap::new();
        // One key this library cannot read (a new key type) does not cost the others.
        for jwk in entries
            .iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            // Encryption keys never verify signatures.
            if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
                continue;
            }
            let algorithms = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => vec![
                    Algorithm::RS256,
                    Algorithm::RS384,
                    Algorithm::RS512,
                    Algorithm::PS256,
                    Algorithm::PS384,
                    Algorithm::PS512,
                ],
                AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                    EllipticCurve::P256 => vec![Algorithm::ES256],
                    EllipticCurve::P384 => vec![Algorithm::ES384],
                    _ => continue,
                },
                AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
                // A symmetric key in a public key set is a configuration error: ignore it.
                _ => continue,
            };
            // A key that names its algorithm may only verify that one.
            let algorithms = match jwk.common.key_algorithm.map(|a| a.to_string()) {
                Some(named) => algorithms
                    .into_iter()
                    .filter(|a| format!("{a:?}") == named)
                    .collect(),
                None => algorithms,
            };
            if let Ok(decoding) = DecodingKey::from_jwk(&jwk) {
                by_kid.insert(
                    kid,
                    Arc::new(Key {
                        decoding,
                        algorithms,
                    }),
                );
            }
        }
        if by_kid.is_empty() {
            // Keep the keys we have rather than lock everyone out.
            return Err(unavailable("the JWKS has no usable signing key".into()));
        }
        tracing::info!(keys = by_kid.len(), issuer = %self.settings.issuer, "identity provider keys loaded");
        startup::sync::write(&self.keys).by_kid = by_kid;
        Ok(())
    }

    async fn get_json(&self, url: &str) -> Result<serde_json::Value, String> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: {}", response.status()));
        }
        response.json().await.map_err(|e| format!("GET {url}: {e}"))
    }

    /// Refreshes the keys on schedule until `stop`.
    pub async fn run_refresher(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let every = Duration::from_secs(self.settings.jwks_refresh_secs.max(10));
        loop {
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "refreshing identity provider keys failed; keeping the old ones");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    fn key(&self, kid: &str) -> Option<Arc<Key>> {
        startup::sync::read(&self.keys).by_kid.get(kid).cloned()
    }

    /// Finds the key for `kid`, fetching the keys again if it is new to us (rate-limited).
    async fn key_for(&self, kid: &str) -> Result<Arc<Key>, TokenError> {
        if let Some(k) = self.key(kid) {
            return Ok(k);
        }
        let may_fetch = {
            let mut keys = startup::sync::write(&self.keys);
            let min = Duration::from_secs(self.settings.unknown_key_refetch_secs.max(1));
            // The first fetch (no keys yet) is not an unknown key: it spends no budget.
            if keys.by_kid.is_empty() {
                true
            } else {
                let due = keys.unknown_fetch.is_none_or(|at| at.elapsed() >= min);
                if due {
                    keys.unknown_fetch = Some(Instant::now());
                }
                due
            }
        };
        if may_fetch {
            self.refresh().await?;
        }
        self.key(kid).ok_or(TokenError::UnknownKey)
    }

    /// Checks `token`'s signature (with a key the provider publishes, by an asymmetric
    /// algorithm that key may use), issuer, audience (and `azp` when there are several),
    /// expiry and not-before, and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let alg = header_alg(token)?;
        if alg.eq_ignore_ascii_case("none") {
            return Err(TokenError::Unsigned);
        }
        if alg.starts_with("HS") {
            return Err(TokenError::Algorithm(alg));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let kid = header.kid.ok_or(TokenError::NoKeyId)?;
        let key = self.key_for(&kid).await?;
        if !key.algorithms.contains(&header.alg) {
            return Err(TokenError::Algorithm(alg));
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.settings.clock_skew_secs;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&self.settings.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data =
            jsonwebtoken::decode::<Checked>(token, &key.decoding, &validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::InvalidSignature => TokenError::Signature,
                    K::ExpiredSignature => TokenError::Expired,
                    K::ImmatureSignature => TokenError::NotYetValid,
                    K::InvalidIssuer => TokenError::Issuer,
                    K::InvalidAudience => TokenError::Audience,
                    K::InvalidAlgorithm => TokenError::Algorithm(alg.clone()),
                    other => TokenError::Invalid(format!("{other:?}")),
                }
            })?;
        let claims = data.claims;
        // A token for another client that also names us in `aud` is not ours to accept
        // (OpenID Connect Core 3.1.3.7): with several audiences, `azp` must be one of ours.
        if claims.aud.as_array().is_some_and(|a| a.len() > 1)
            && !claims
                .azp
                .as_ref()
                .is_some_and(|azp| self.settings.audiences.contains(azp))
        {
            return Err(TokenError::Audience);
        }
        Ok(claims.claims)
    }
}

/// The `alg` of a token's header, read without trusting anything else in it.
fn header_alg(token: &str) -> Result<String, TokenError> {
    let header = token.split('.').next().ok_or(TokenError::Malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed)?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    value["alg"]
        .as_str()
        .map(str::to_string)
        .ok_or(TokenError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    fn claims(email: Option<&str>, verified: Option<bool>) -> Claims {
        Claims {
            sub: "s".into(),
            iss: "i".into(),
            exp: 0,
            email: email.map(str::to_string),
            email_verified: verified,
            name: None,
            groups: vec![],
            amr: vec![],
            auth_time: None,
            nonce: None,
        }
    }

    #[test]
    fn an_email_the_provider_did_not_verify_is_refused() {
        let a = Some("a@example.com");
        assert_eq!(
            claims(a, Some(true)).verified_email(true),
            Ok("a@example.com")
        );
        assert_eq!(claims(a, None).verified_email(false), Ok("a@example.com"));
        assert_eq!(
            claims(a, None).verified_email(true),
            Err(TokenError::EmailNotVerified)
        );
        assert_eq!(
            claims(a, Some(false)).verified_email(false),
            Err(TokenError::EmailNotVerified)
        );
        assert_eq!(
            claims(None, Some(true)).verified_email(false),
            Err(TokenError::NoEmail)
        );
    }

    #[test]
    fn reads_the_algorithm_before_anything_else() {
        let none = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64("{}"));
        assert_eq!(header_alg(&none).unwrap(), "none");
        assert_eq!(header_alg("garbage"), Err(TokenError::Malformed));
        assert_eq!(
            header_alg(&format!("{}.x.y", b64("[]"))),
            Err(TokenError::Malformed)
        );
    }
}

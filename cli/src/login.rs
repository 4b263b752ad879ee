//! Signing in: the OpenID Connect authorization-code flow with PKCE, as RFC 8252 describes
//! for native apps. The browser brings the code back to a one-shot listener on a loopback
//! port; the ID token is verified (signature, issuer, audience, expiry, nonce) before it is
//! cached.

use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{TimeZone, Utc};
use openidconnect::core::{
    CoreAuthPrompt, CoreAuthenticationFlow, CoreClient, CoreProviderMetadata,
};
use openidconnect::{
    AuthenticationContextClass, AuthorizationCode, ClientId, CsrfToken, IssuerUrl, Nonce,
    PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::cache::Cached;
use crate::settings::Settings;

/// The `amr` value (RFC 8176) of a multi-factor sign-in.
const MFA: &str = "mfa";

/// Runs the whole sign-in and returns the verified token. With `mfa`, asks the provider for
/// a new multi-factor sign-in (`acr_values=mfa`, `prompt=login`, so an existing browser
/// session does not stand in for it) and checks the token says so (`amr`).
pub async fn login(settings: &Settings, open_browser: bool, mfa: bool) -> anyhow::Result<Cached> {
    let http = oidc::http::client(Duration::from_secs(30))?;
    let send = |request: openidconnect::HttpRequest| oidc::http::send(http.clone(), request);

    let issuer = IssuerUrl::new(settings.issuer.clone()).context("issuer is not a URL")?;
    let metadata = CoreProviderMetadata::discover_async(issuer, &send)
        .await
        .with_context(|| {
            format!(
                "reading the identity provider's configuration at {}",
                settings.issuer
            )
        })?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let redirect = format!(
        "http://127.0.0.1:{}/callback",
        listener.local_addr()?.port()
    );
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(settings.client_id.clone()),
        None,
    )
    .set_redirect_uri(RedirectUrl::new(redirect)?);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge);
    if mfa {
        request = request
            .add_auth_context_value(AuthenticationContextClass::new(MFA.into()))
            .add_prompt(CoreAuthPrompt::Login);
    }
    let (url, state, nonce) = request.url();

    eprintln!("To sign in, open this URL in your browser:\n\n  {url}\n");
    if open_browser {
        open(url.as_str());
    }
    let timeout = Duration::from_secs(settings.login_timeout_secs);
    let code = tokio::time::timeout(timeout, callback(&listener, state.secret()))
        .await
        .map_err(|_| anyhow::anyhow!("sign-in did not finish within {} s", timeout.as_secs()))??;

    let response = client
        .exchange_code(AuthorizationCode::new(code))?
        .set_pkce_verifier(verifier)
        .request_async(&send)
        .await
        .context("exchanging the authorization code")?;
    let id_token = response
        .id_token()
        .context("the provider returned no ID token")?
        .to_string();
    // The workspace's one ID-token verifier (the proxy's own): signature, issuer, audience,
    // expiry; then this sign-in's nonce.
    let ids = oidc::Verifier::new(oidc::VerifierSettings::new(
        &settings.issuer,
        &settings.client_id,
    ))?;
    let claims = ids
        .verify(&id_token)
        .await
        .context("the ID token did not verify")?;
    if claims.nonce.as_deref() != Some(nonce.secret().as_str()) {
        bail!("the ID token did not verify: it is not the token of this sign-in (nonce)");
    }
    if mfa && !claims.amr.iter().any(|m| m == MFA) {
        bail!(
            "the identity provider did not confirm a multi-factor sign-in (amr {:?}): \
             it may need multi-factor set up for your account",
            claims.amr
        );
    }
    let email = claims
        .email
        .as_deref()
        .context("the ID token carries no email: is the `email` scope allowed?")?
        .to_lowercase();
    let expires_at = Utc
        .timestamp_opt(claims.exp, 0)
        .single()
        .context("bad expiry")?;
    Ok(Cached {
        issuer: settings.issuer.clone(),
        email,
        id_token,
        expires_at,
    })
}

/// Opens the sign-in page in the user's browser, if there is one. `$BROWSER` may carry
/// arguments (`BROWSER="firefox --new-window"`).
pub(crate) fn open(url: &str) {
    let opener = std::env::var("BROWSER").unwrap_or_else(|_| "xdg-open".into());
    let mut words = opener.split_whitespace();
    let Some(program) = words.next() else {
        return;
    };
    let spawned = std::process::Command::new(program)
        .args(words)
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if spawned.is_err() {
        eprintln!("(could not start {opener}; open the URL yourself)");
    }
}

/// Waits for the browser's redirect and returns the authorization code. Requests that do
/// not carry our `state` are answered and ignored.
pub(crate) async fn callback(listener: &TcpListener, state: &str) -> anyhow::Result<String> {
    loop {
        let (mut conn, _) = listener.accept().await?;
        let mut buf = vec![0u8; 8192];
        let n = conn.read(&mut buf).await.unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..n]);
        let target = head.split_whitespace().nth(1).unwrap_or("/");
        let url = reqwest::Url::parse(&format!("http://127.0.0.1{target}"))?;
        let param = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        if url.path() != "/callback" || param("state").as_deref() != Some(state) {
            let _ = conn
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            continue;
        }
        let (status, page, result) = match (param("code"), param("error")) {
            (Some(code), _) => (
                "200 OK",
                "Signed in. You can close this window and return to the terminal.",
                Ok(code),
            ),
            (None, error) => {
                let why = format!(
                    "{}: {}",
                    error.unwrap_or_else(|| "no code".into()),
                    param("error_description").unwrap_or_default()
                );
                (
                    "400 Bad Request",
                    "Sign-in failed; see the terminal.",
                    Err(why),
                )
            }
        };
        let body = format!("<!doctype html><title>dbgw</title><p>{page}</p>");
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = conn.write_all(reply.as_bytes()).await;
        return match result {
            Ok(code) => Ok(code),
            Err(why) => bail!("sign-in failed: {why}"),
        };
    }
}

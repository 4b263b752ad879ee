//! The HTTP side of talking to the provider.

use std::time::Duration;

/// An HTTP client for the provider. OAuth endpoints must not be followed through redirects
/// (RFC 6749's security advice), so none is followed.
pub fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    tls_config::install_provider();
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()?)
}

/// Why a request to the provider failed (the `openidconnect` crate wants an error type).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// Sends an `openidconnect` request with `http` (its flows are written against this).
pub async fn send(
    http: reqwest::Client,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let failed = |e: &dyn std::fmt::Display| HttpError(e.to_string());
    let request = reqwest::Request::try_from(request).map_err(|e| failed(&e))?;
    let response = http.execute(request).await.map_err(|e| failed(&e))?;
    let mut builder = ::http::Response::builder().status(response.status());
    for (k, v) in response.headers() {
        builder = builder.header(k, v);
    }
    let body = response.bytes().await.map_err(|e| failed(&e))?;
    builder.body(body.to_vec()).map_err(|e| failed(&e))
}

//! `dbgw login` against the real development identity provider, with a stand-in browser
//! (idp/dev-browser.js) that signs in the way a person would.

// A panic is how a test reports a failure.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use dev_idp::DevIdp;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn idp() -> DevIdp {
    DevIdp::start_with(&[("IDP_ID_TOKEN_TTL", "120")]).unwrap()
}

fn dbgw(idp: &DevIdp, cache: &Path, email: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dbgw"))
        .args(args)
        .env("DBGW_ISSUER", idp.issuer())
        .env("DBGW_CACHE_DIR", cache)
        .env("DBGW_LOGIN_TIMEOUT_SECS", "30")
        .env(
            "BROWSER",
            format!("node {}", repo().join("idp/dev-browser.js").display()),
        )
        .env("DEV_BROWSER_EMAIL", email)
        .output()
        .unwrap()
}

fn payload(token: &str) -> serde_json::Value {
    use base64::Engine;
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn login_caches_a_verified_token_and_logs_in_again_when_it_expires() {
    let idp = idp();
    let cache = tempfile::tempdir().unwrap();

    let out = dbgw(&idp, cache.path(), "alice@example.com", &["login"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("code_challenge_method=S256"),
        "PKCE: {stderr}"
    );
    assert!(
        stderr.contains("Signed in as alice@example.com"),
        "{stderr}"
    );

    use std::os::unix::fs::PermissionsExt;
    let file = cache.path().join("token.json");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(cache.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );

    let out = dbgw(&idp, cache.path(), "alice@example.com", &["token"]);
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let claims = payload(&token);
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["aud"], "dbgw-cli");

    // `env` gives every client what it needs, token included, TLS verified.
    let out = dbgw(&idp, cache.path(), "alice@example.com", &["env", "rates"]);
    let env = String::from_utf8(out.stdout).unwrap();
    assert!(env.contains("export PGUSER='alice@example.com'"), "{env}");
    assert!(env.contains(&format!("export PGPASSWORD='{token}'")));
    assert!(env.contains("export PGSSLMODE='verify-full'"));
    assert!(env.contains("export PGDATABASE='rates'"));

    // An expired token: the tool says so and signs in again (as whoever is at the browser).
    let mut cached: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    cached["expires_at"] = serde_json::json!("2020-01-01T00:00:00Z");
    std::fs::write(&file, cached.to_string()).unwrap();
    let out = dbgw(&idp, cache.path(), "bob@example.com", &["token"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("has expired; signing in again"), "{stderr}");
    let again = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_ne!(again, token);
    assert_eq!(payload(&again)["email"], "bob@example.com");

    let out = dbgw(&idp, cache.path(), "bob@example.com", &["logout"]);
    assert!(out.status.success());
    let out = dbgw(&idp, cache.path(), "bob@example.com", &["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("not signed in"));
}

#[test]
fn a_failed_sign_in_is_reported() {
    let idp = idp();
    let cache = tempfile::tempdir().unwrap();
    // Nobody of that name at the provider: the stand-in browser cannot sign in, so the
    // tool never gets a code and gives up at its timeout.
    let out = Command::new(env!("CARGO_BIN_EXE_dbgw"))
        .arg("login")
        .env("DBGW_ISSUER", idp.issuer())
        .env("DBGW_CACHE_DIR", cache.path())
        .env("DBGW_LOGIN_TIMEOUT_SECS", "5")
        .env(
            "BROWSER",
            format!("node {}", repo().join("idp/dev-browser.js").display()),
        )
        .env("DEV_BROWSER_EMAIL", "mallory@example.com")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("did not finish"));
    assert!(!cache.path().join("token.json").exists());
}

/// `dbgw login --mfa` asks the provider for a new multi-factor sign-in (acr_values=mfa,
/// prompt=login) and caches a token that says so; a plain `dbgw login` token does not.
#[test]
fn login_with_mfa_caches_a_multi_factor_token() {
    let idp = idp();
    let cache = tempfile::tempdir().unwrap();

    let out = dbgw(&idp, cache.path(), "alice@example.com", &["login"]);
    assert!(out.status.success());
    let out = dbgw(&idp, cache.path(), "alice@example.com", &["token"]);
    let plain = payload(String::from_utf8(out.stdout).unwrap().trim());
    assert_eq!(plain["amr"], serde_json::json!(["pwd"]));

    let out = dbgw(&idp, cache.path(), "alice@example.com", &["login", "--mfa"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("acr_values=mfa"), "{stderr}");
    assert!(stderr.contains("prompt=login"), "{stderr}");
    let out = dbgw(&idp, cache.path(), "alice@example.com", &["token"]);
    let mfa = payload(String::from_utf8(out.stdout).unwrap().trim());
    assert_eq!(mfa["amr"], serde_json::json!(["pwd", "otp", "mfa"]));
    assert_eq!(mfa["acr"], "mfa");
    let now = chrono::Utc::now().timestamp();
    assert!((now - mfa["auth_time"].as_i64().unwrap()).abs() < 60);

    // A wrong one-time code: no token.
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dbgw"))
        .args(["login", "--mfa"])
        .env("DBGW_ISSUER", idp.issuer())
        .env("DBGW_CACHE_DIR", cache.path())
        .env("DBGW_LOGIN_TIMEOUT_SECS", "5")
        .env(
            "BROWSER",
            format!("node {}", repo().join("idp/dev-browser.js").display()),
        )
        .env("DEV_BROWSER_OTP", "123456")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!cache.path().join("token.json").exists());
}

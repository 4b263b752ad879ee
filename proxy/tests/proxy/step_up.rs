//! Step-up MFA per grant: a grant whose policy has `require_amr = ["mfa"]` and
//! `max_auth_age_secs` takes only a token from a multi-factor sign-in that is recent
//! enough, with real tokens from the development provider; the refusal says how to sign
//! in again, and the `auth` record keeps how and when the person signed in.

use crate::common::{Options, Stack};
use dev_idp::DevIdp;
use proxy::settings::Plaintext;
use serde_json::Value;

const ALICE: &str = "alice@example.com";

/// Connects as a person with `token` over TLS; the error's message on refusal.
async fn login(stack: &Stack, token: &str) -> Result<tokio_postgres::Client, String> {
    let mut config = stack.pg_config(&stack.app);
    config
        .user(ALICE)
        .password(token)
        .application_name("step-up-test");
    let tls = tls_config::postgres_connector(Some(&stack.ca)).unwrap();
    match config.connect(tls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            Ok(client)
        }
        Err(e) => Err(e
            .as_db_error()
            .map(|d| format!("{} {}", d.code().code(), d.message()))
            .unwrap_or_else(|| e.to_string())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_level_requiring_mfa_takes_only_a_recent_multi_factor_sign_in() {
    let idp = DevIdp::start().unwrap();
    let stack = Stack::with(Options {
        oidc_issuer: Some(idp.issuer().to_string()),
        plaintext: Plaintext::Loopback,
        ..Options::default()
    })
    .await;
    stack
        .grant_with(
            ALICE,
            "rates_reader",
            chrono::Utc::now() + chrono::Duration::hours(1),
            grants::SessionPolicy {
                require_amr: vec!["mfa".into()],
                max_auth_age_secs: Some(600),
                ..Default::default()
            },
        )
        .await;

    // A password-only sign-in: refused, with what to do.
    let err = login(&stack, &idp.token(ALICE).unwrap())
        .await
        .expect_err("a password-only token logs in");
    assert!(err.starts_with("28000 "), "{err}");
    assert!(err.contains("dbgw login --mfa"), "{err}");
    assert!(err.contains("mfa"), "{err}");

    // A multi-factor sign-in an hour ago: too old for this level.
    let old = idp
        .token_with(ALICE, &["--mfa", "--auth-age", "3600"])
        .unwrap();
    let err = login(&stack, &old)
        .await
        .expect_err("an old sign-in logs in");
    assert!(err.contains("within the last 600 seconds"), "{err}");
    assert!(err.contains("dbgw login --mfa"), "{err}");

    // A fresh multi-factor sign-in logs in.
    let before = chrono::Utc::now() - chrono::Duration::seconds(60);
    let alice = login(&stack, &idp.mfa_token(ALICE).unwrap()).await.unwrap();
    alice.simple_query("SELECT 1").await.unwrap();
    drop(alice);
    stack.sessions_ended().await;

    let auths: Vec<Value> = stack
        .records()
        .into_iter()
        .filter(|r| r["type"] == "auth")
        .collect();
    assert_eq!(auths.len(), 3, "{auths:#?}");
    for refused in &auths[..2] {
        assert_eq!(refused["result"], "refused", "{refused}");
        let reason = refused["reason"].as_str().unwrap();
        assert!(reason.starts_with("step-up required"), "{reason}");
    }
    assert!(auths[0]["reason"].as_str().unwrap().contains("[\"pwd\"]"));
    let ok = &auths[2];
    assert_eq!(ok["result"], "ok", "{ok}");
    assert_eq!(ok["amr"], serde_json::json!(["pwd", "otp", "mfa"]), "{ok}");
    let at = chrono::DateTime::parse_from_rfc3339(ok["auth_time"].as_str().unwrap()).unwrap();
    assert!(at >= before && at <= chrono::Utc::now(), "{ok}");
    crate::common::assert_chain_verifies(&stack.audit_dir());
    stack.stop().await;
}

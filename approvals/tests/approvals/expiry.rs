//! A one-minute grant expires by the app's own scheduler: its membership is gone, open
//! sessions through the proxy are closed, new logins are refused, and a person's other
//! active grant keeps working.

use std::time::Duration;

use crate::common::{eventually, Options, Stack};

/// A connection through the proxy as `email`, the ID token as password, TLS verified.
async fn connect(
    stack: &Stack,
    email: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let proxy = stack.proxy.as_ref().unwrap();
    let token = stack.token(email);
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(proxy.addr.port())
        .user(email)
        .password(token)
        .dbname("rates")
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let tls = tls_config::postgres_connector(Some(&stack.cluster.ca_cert())).unwrap();
    let (client, conn) = config.connect(tls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

#[tokio::test]
async fn a_short_grant_expires_and_the_other_grant_stays() {
    let stack = Stack::with(Options {
        proxy: true,
        scheduler_ms: 500,
        ..Options::default()
    })
    .await;
    let dana = stack.browser();
    dana.sign_in("dana@example.com").await;
    let sam = stack.browser();
    sam.sign_in("sam@example.com").await;

    // bob: read-write for an hour (two approvers), then read-only for a minute.
    let bob = stack.browser();
    bob.sign_in("bob@example.com").await;
    let long = bob.request("read-write", 60).await;
    dana.decide(long, "approve", "").await;
    sam.decide(long, "approve", "").await;
    assert_eq!(stack.status(long).await, "active");
    let short_bob = bob.request("read-only", 1).await;
    // alice: only read-only for a minute.
    let alice = stack.browser();
    alice.sign_in("alice@example.com").await;
    let short_alice = alice.request("read-only", 1).await;
    for id in [short_bob, short_alice] {
        let done = dana.decide(id, "approve", "").await;
        assert!(
            done.body.contains("the access is in place"),
            "{}",
            done.body
        );
    }
    assert_eq!(
        stack.memberships("bob@example.com").await,
        ["rates_reader", "rates_writer"]
    );

    // alice's session runs under her one-minute grant.
    let session = connect(&stack, "alice@example.com").await.unwrap();
    let n: i64 = session
        .query_one("SELECT count(*) FROM ports", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n > 0);

    eventually(
        "the short grants end",
        Duration::from_secs(100),
        async || {
            stack.status(short_alice).await == "ended" && stack.status(short_bob).await == "ended"
        },
    )
    .await;
    let kinds = stack.event_kinds(short_alice).await;
    assert!(kinds.iter().any(|k| k == "access.ending"), "{kinds:?}");
    assert!(
        kinds.iter().any(|k| k == "access.login_removed"),
        "{kinds:?}"
    );
    let reason: String = stack
        .control()
        .await
        .query_one(
            "SELECT end_reason FROM access_requests WHERE id = $1",
            &[&short_alice],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(reason, "expired");

    // alice: membership gone, her open session closed, a new login refused.
    assert!(stack.memberships("alice@example.com").await.is_empty());
    assert!(
        session.query_one("SELECT 1", &[]).await.is_err(),
        "alice's session outlived her grant"
    );
    let Err(refused) = connect(&stack, "alice@example.com").await else {
        panic!("alice could log in after her grant expired");
    };
    assert!(
        refused.to_string().contains("expired") || format!("{refused:?}").contains("expired"),
        "{refused:?}"
    );

    // bob: the read-only membership is gone, the read-write grant still works.
    assert_eq!(stack.memberships("bob@example.com").await, ["rates_writer"]);
    let bob_db = connect(&stack, "bob@example.com").await.unwrap();
    bob_db
        .batch_execute("BEGIN; DELETE FROM ports WHERE false; ROLLBACK")
        .await
        .expect("bob's other grant still works");
    assert_eq!(stack.status(long).await, "active");
    stack.stop().await;
}

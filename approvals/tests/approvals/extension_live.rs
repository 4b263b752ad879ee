//! Issue 22 end to end, approvals app and proxy in one test: three people hold one-minute
//! access through the proxy. Alice's extension is asked for and approved through the app's
//! API; her session is the same server process (`pg_backend_pid()`) past the original end and
//! has no `disconnect` record. Bob asks too, then withdraws it, and Sam's is denied: their
//! sessions end at the original time with the grant-expired FATAL.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::json;

use crate::common::{eventually, Options, Stack};
use crate::extend::{api, decide, extend, grant};

/// A session through the proxy as `email` (ID token as password, TLS verified) and when
/// and how its connection ended.
async fn session(
    stack: &Stack,
    email: &str,
    application: &str,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<(DateTime<Utc>, Option<tokio_postgres::Error>)>,
) {
    let proxy = stack.proxy.as_ref().unwrap();
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(proxy.addr.port())
        .user(email)
        .password(stack.token(email))
        .dbname("rates")
        .application_name(application)
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let tls = tls_config::postgres_connector(Some(&stack.cluster.ca_cert())).unwrap();
    let (client, conn) = config.connect(tls).await.unwrap();
    let ended = tokio::spawn(async move {
        let result = conn.await;
        (Utc::now(), result.err())
    });
    (client, ended)
}

async fn backend_pid(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_extension_keeps_the_live_session_and_a_withdrawn_or_denied_one_ends_it_on_time(
) {
    let stack = Stack::with(Options {
        proxy: true,
        ..Options::default()
    })
    .await;
    let alice = stack.api_token("alice@example.com");
    let bob = stack.api_token("bob@example.com");
    let sam = stack.api_token("sam@example.com");
    let dana = stack.api_token("dana@example.com");
    let minute = |token: &str| {
        let new = json!({"database": "rates", "level": "read-only",
                         "justification": "incident 22", "duration_secs": 60});
        let token = token.to_string();
        let stack = &stack;
        async move {
            let (status, body) =
                api(stack, Method::POST, "/api/v1/requests", &token, Some(new)).await;
            assert_eq!(status, 201, "{body}");
            body["id"].as_i64().unwrap()
        }
    };
    let (alice_req, bob_req, sam_req) =
        (minute(&alice).await, minute(&bob).await, minute(&sam).await);
    for id in [alice_req, bob_req, sam_req] {
        let (status, body) = api(
            &stack,
            Method::POST,
            &format!("/api/v1/requests/{id}/decide"),
            &dana,
            Some(json!({"decision": "approve", "comment": "ok"})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(stack.status(id).await, "active");
    }
    let (alice_grant, alice_end, _) = grant(&stack, alice_req).await;
    let (_, bob_end, _) = grant(&stack, bob_req).await;
    let (_, sam_end, _) = grant(&stack, sam_req).await;

    let (alice_db, _) = session(&stack, "alice@example.com", "alice-live").await;
    let (bob_db, bob_ended) = session(&stack, "bob@example.com", "bob-live").await;
    let (sam_db, sam_ended) = session(&stack, "sam@example.com", "sam-live").await;
    let alice_pid = backend_pid(&alice_db).await;
    backend_pid(&bob_db).await;
    backend_pid(&sam_db).await;

    // Alice: an hour more, asked and approved through the API.
    let ask = json!({"justification": "the incident runs long", "extra_secs": 3600});
    let (status, ext) = extend(&stack, &alice, alice_req, ask.clone()).await;
    assert_eq!(status, 201, "{ext}");
    let (status, body) = decide(&stack, &dana, ext["id"].as_i64().unwrap(), "approve").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "approved");
    let moved = alice_end + chrono::Duration::hours(1);
    assert_eq!(grant(&stack, alice_req).await, (alice_grant, moved, false));
    // Bob: asked, then withdrawn before anyone decided.
    let (status, ext) = extend(&stack, &bob, bob_req, ask.clone()).await;
    assert_eq!(status, 201, "{ext}");
    let (status, body) = api(
        &stack,
        Method::POST,
        &format!("/api/v1/extensions/{}/withdraw", ext["id"]),
        &bob,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(grant(&stack, bob_req).await.1, bob_end);
    // Sam: asked, denied.
    let (status, ext) = extend(&stack, &sam, sam_req, ask).await;
    assert_eq!(status, 201, "{ext}");
    let (status, body) = decide(&stack, &dana, ext["id"].as_i64().unwrap(), "deny").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "denied");
    assert_eq!(grant(&stack, sam_req).await.1, sam_end);

    // Past the original ends (with slack), Alice works on in the same server process.
    let past = alice_end.max(bob_end).max(sam_end) + chrono::Duration::seconds(3);
    while Utc::now() < past {
        alice_db.simple_query("SELECT 1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(backend_pid(&alice_db).await, alice_pid, "no drop");

    // Bob's and Sam's sessions ended at their grants' original ends, with the reason.
    for (ended, end) in [(bob_ended, bob_end), (sam_ended, sam_end)] {
        let (closed_at, error) = tokio::time::timeout(Duration::from_secs(10), ended)
            .await
            .expect("the session is closed")
            .unwrap();
        let error = error.expect("closed with an error");
        let db = error.as_db_error().unwrap_or_else(|| panic!("{error}"));
        assert_eq!(db.code().code(), "28000", "{db:?}");
        assert!(db.message().contains("expired"), "{db:?}");
        assert!(
            closed_at >= end - chrono::Duration::milliseconds(500)
                && closed_at <= end + chrono::Duration::seconds(3),
            "closed at {closed_at}, the end was {end}"
        );
    }

    // The audit: Bob's and Sam's disconnects with the reason, none for Alice.
    let proxy = stack.proxy.as_ref().unwrap();
    let disconnect = |application: &str| {
        proxy
            .records()
            .into_iter()
            .find(|r| r["type"] == "disconnect" && r["application"] == application)
            .map(|r| r["reason"].as_str().unwrap_or_default().to_string())
    };
    for application in ["bob-live", "sam-live"] {
        let reason = eventually(
            &format!("the disconnect record of {application}"),
            Duration::from_secs(10),
            async || disconnect(application),
        )
        .await;
        assert!(reason.contains("expired"), "{application}: {reason}");
    }
    assert_eq!(disconnect("alice-live"), None);
    drop(alice_db);
    stack.stop().await;
}

//! The JSON API with bearer access tokens, the JSON-lines export, and the webhook: delivered
//! with retries after failures, which the metrics count, while decisions never wait for it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::common::{eventually, Options, Stack};

/// A webhook receiver that fails its first `fail` calls and records the rest.
async fn receiver(fail: usize) -> (String, Arc<Mutex<Vec<Value>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(Mutex::new(0usize));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let got = got.clone();
            move |axum::Json(v): axum::Json<Value>| {
                let got = got.clone();
                let calls = calls.clone();
                async move {
                    let mut n = calls.lock().unwrap();
                    *n += 1;
                    if *n <= fail {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    got.lock().unwrap().push(v);
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

pub(crate) async fn call(
    stack: &Stack,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, String) {
    let http = reqwest::Client::new();
    let mut req = http.request(method, format!("{}{path}", stack.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn the_api_does_what_the_pages_do_and_the_webhook_retries() {
    let (hook, got) = receiver(2).await;
    let stack = Stack::with(Options {
        scheduler_ms: 300,
        webhook: hook,
        ..Options::default()
    })
    .await;
    let alice = stack.api_token("alice@example.com");
    let dana = stack.api_token("dana@example.com");
    use reqwest::Method;

    let (status, body) = call(&stack, Method::GET, "/api/v1/requests", None, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = call(&stack, Method::GET, "/api/v1/requests", Some("x.y.z"), None).await;
    assert_eq!(status, 401);
    assert!(body.contains("bearer token was refused"), "{body}");

    let new = json!({"database": "rates", "level": "read-only",
                     "justification": "incident 42", "duration_secs": 3600});
    let (status, body) = call(
        &stack,
        Method::POST,
        "/api/v1/requests",
        Some(&alice),
        Some(new),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_i64()
        .unwrap();

    // alice is not an approver and cannot decide; dana can, through the API.
    let (status, body) = call(
        &stack,
        Method::POST,
        &format!("/api/v1/requests/{id}/decide"),
        Some(&alice),
        Some(json!({"decision": "approve"})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = call(&stack, Method::GET, "/api/v1/queue", Some(&dana), None).await;
    assert_eq!(status, 200);
    assert!(body.contains("incident 42"), "{body}");
    let (status, body) = call(
        &stack,
        Method::POST,
        &format!("/api/v1/requests/{id}/decide"),
        Some(&dana),
        Some(json!({"decision": "approve", "comment": "ok"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "active"
    );
    let (status, body) = call(&stack, Method::GET, "/api/v1/grants", Some(&dana), None).await;
    assert_eq!(status, 200);
    assert!(body.contains("alice@example.com"), "{body}");

    // alice gives it up; the history says every step; the export is JSON lines.
    let (status, body) = call(
        &stack,
        Method::POST,
        &format!("/api/v1/requests/{id}/give-up"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "ended"
    );
    let (status, body) = call(&stack, Method::GET, "/api/v1/events", Some(&dana), None).await;
    assert_eq!(status, 200);
    let events: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for k in [
        "request.created",
        "decision.approve",
        "request.approved",
        "provision.login",
        "access.active",
        "access.ending",
        "access.secret_deleted",
        "access.ended",
    ] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    assert!(events
        .windows(2)
        .all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64()));
    let (status, _) = call(&stack, Method::GET, "/api/v1/events", Some(&alice), None).await;
    assert_eq!(status, 403);

    // The webhook failed twice, then got every message, in order, Slack-shaped.
    eventually(
        "webhook messages delivered",
        Duration::from_secs(20),
        async || got.lock().unwrap().len() >= 5,
    )
    .await;
    let messages = got.lock().unwrap().clone();
    assert!(
        messages.iter().any(|m| m["text"]
            .as_str()
            .unwrap()
            .contains("alice@example.com asks for read-only access to rates")),
        "{messages:?}"
    );
    assert!(messages
        .iter()
        .any(|m| m["event"]["kind"] == "access.ending"));
    let metrics = reqwest::get(format!("{}/metrics", stack.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("dbgw_approvals_webhook_messages_total{outcome=\"failed\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dbgw_approvals_webhook_messages_total{outcome=\"delivered\"}"),
        "{metrics}"
    );
    stack.stop().await;
}

/// A later start: approved now, provisioned by the scheduler when the start comes, ending a
/// duration after the start; a pending request can be withdrawn by its owner only.
#[tokio::test]
async fn a_later_start_is_provisioned_when_it_comes_and_withdrawing_works() {
    let stack = Stack::with(Options {
        scheduler_ms: 3_600_000,
        ..Options::default()
    })
    .await;
    stack.scheduler_settled().await;
    let alice = stack.api_token("alice@example.com");
    let bob = stack.api_token("bob@example.com");
    let dana = stack.api_token("dana@example.com");
    use reqwest::Method;
    let start = chrono::Utc::now() + chrono::Duration::hours(1);
    let new = json!({"database": "rates", "level": "read-only", "justification": "night run",
                     "duration_secs": 1800, "starts_at": start});
    let (status, body) = call(
        &stack,
        Method::POST,
        "/api/v1/requests",
        Some(&alice),
        Some(new),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_i64()
        .unwrap();
    let (status, body) = call(
        &stack,
        Method::POST,
        &format!("/api/v1/requests/{id}/decide"),
        Some(&dana),
        Some(json!({"decision": "approve"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stack.status(id).await, "approved");
    assert!(stack.memberships("alice@example.com").await.is_empty());
    approvals::scheduler::tick(&stack.app).await.unwrap();
    assert_eq!(
        stack.status(id).await,
        "approved",
        "provisioned before its start"
    );

    // The start comes (moved here rather than waited for).
    stack
        .control()
        .await
        .execute(
            "UPDATE access_requests SET starts_at = now() - interval '1 second', \
             decided_at = now() - interval '1 minute' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    approvals::scheduler::tick(&stack.app).await.unwrap();
    assert_eq!(stack.status(id).await, "active");
    assert_eq!(
        stack.memberships("alice@example.com").await,
        ["rates_reader"]
    );
    let ends: chrono::DateTime<chrono::Utc> = stack
        .control()
        .await
        .query_one(
            "SELECT g.expires_at - r.starts_at = interval '30 minutes' AND g.request_id = r.id, \
             g.expires_at FROM access_requests r JOIN grants g ON g.id = r.grant_id WHERE r.id = $1",
            &[&id],
        )
        .await
        .map(|row| {
            assert!(row.get::<_, bool>(0), "the grant does not end 30 minutes after the start");
            row.get(1)
        })
        .unwrap();
    assert!(ends > chrono::Utc::now());

    // Withdrawing: only the owner, only while pending.
    let new = json!({"database": "rates", "level": "read-write", "justification": "maybe",
                     "duration_secs": 600});
    let (_, body) = call(
        &stack,
        Method::POST,
        "/api/v1/requests",
        Some(&alice),
        Some(new),
    )
    .await;
    let second = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_i64()
        .unwrap();
    let path = format!("/api/v1/requests/{second}/withdraw");
    let (status, body) = call(&stack, Method::POST, &path, Some(&bob), None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = call(&stack, Method::POST, &path, Some(&alice), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stack.status(second).await, "withdrawn");
    let (status, body) = call(&stack, Method::POST, &path, Some(&alice), None).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("only a pending request can be withdrawn"),
        "{body}"
    );
    stack.stop().await;
}

//! One token, one relying party (issue 17, item 5): the ID token a person types into psql
//! (issued to the CLI) is not a key to the approvals API, and the API asks the provider,
//! not the token, whether someone may decide.

use reqwest::Method;
use serde_json::{json, Value};

use crate::api::call;
use crate::common::Stack;

/// A real token for `email` from the provider, of the given client and kind.
fn token(stack: &Stack, email: &str, client: &str, access: bool) -> String {
    let mut cmd = std::process::Command::new("node");
    cmd.arg(dev_idp::idp_dir().join("token.js"))
        .args(["--issuer", stack.idp.issuer(), "--email", email])
        .args(["--client", client]);
    if client == "dbgw-approvals" {
        cmd.args(["--client-secret", &stack.client_secret]);
    }
    if access {
        cmd.arg("--access-token");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn pending_request(stack: &Stack) -> i64 {
    let alice = stack.api_token("alice@example.com");
    let new = json!({"database": "rates", "level": "read-only",
                     "justification": "incident 7", "duration_secs": 3600});
    let (status, body) = call(
        stack,
        Method::POST,
        "/api/v1/requests",
        Some(&alice),
        Some(new),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_psql_token_of_the_cli_is_refused_by_the_api() {
    let stack = Stack::start().await;
    let id = pending_request(&stack).await;
    let decide = format!("/api/v1/requests/{id}/decide");
    let approve = json!({"decision": "approve", "comment": "ok"});

    // dana's password for psql (the CLI's ID token, groups: data-security), and the CLI's
    // access token: neither reads nor decides.
    for (what, t) in [
        ("the CLI's ID token", stack.token("dana@example.com")),
        (
            "the CLI's access token",
            token(&stack, "dana@example.com", "dbgw-cli", true),
        ),
    ] {
        let (status, body) = call(&stack, Method::GET, "/api/v1/queue", Some(&t), None).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(body.contains("bearer token was refused"), "{what}: {body}");
        let (status, body) = call(
            &stack,
            Method::POST,
            &decide,
            Some(&t),
            Some(approve.clone()),
        )
        .await;
        assert_eq!(status, 401, "{what}: {body}");
        let (status, _) = call(
            &stack,
            Method::POST,
            &format!("/api/v1/requests/{id}/revoke"),
            Some(&t),
            Some(json!({"reason": "x"})),
        )
        .await;
        assert_eq!(status, 401, "{what}");
    }
    assert_eq!(stack.status(id).await, "pending");
    assert_eq!(stack.count("decisions").await, 0);

    // The API's own token works.
    let dana = stack.api_token("dana@example.com");
    let (status, body) = call(&stack, Method::POST, &decide, Some(&dana), Some(approve)).await;
    assert_eq!(status, 200, "{body}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_removed_at_the_provider_cannot_decide_through_the_api() {
    let stack = Stack::start().await;
    let id = pending_request(&stack).await;
    let decide = format!("/api/v1/requests/{id}/decide");
    let approve = json!({"decision": "approve", "comment": "ok"});

    // Tokens issued while dana is in data-security (the ID token says so in `groups`)...
    let id_token = token(&stack, "dana@example.com", "dbgw-approvals", false);
    let payload = id_token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["groups"], json!(["data-security"]));
    let access = stack.api_token("dana@example.com");
    // ...then the provider takes her out of the group.
    stack.set_groups("dana@example.com", &["engineering"]);

    for (what, t) in [("ID token", &id_token), ("access token", &access)] {
        let (status, body) = call(
            &stack,
            Method::POST,
            &decide,
            Some(t),
            Some(approve.clone()),
        )
        .await;
        assert!(status == 401 || status == 403, "{what}: {status} {body}");
        let (status, _) = call(&stack, Method::GET, "/api/v1/queue", Some(t), None).await;
        assert!(status == 401 || status == 403, "{what}: {status}");
    }
    assert_eq!(stack.status(id).await, "pending");
    assert_eq!(stack.count("decisions").await, 0);

    // Back in the group at the provider, the same access token decides.
    stack.set_groups("dana@example.com", &["data-security"]);
    let (status, body) = call(&stack, Method::POST, &decide, Some(&access), Some(approve)).await;
    assert_eq!(status, 200, "{body}");
    stack.stop().await;
}

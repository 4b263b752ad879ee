//! A person withdraws their own pending extension (issue 22): from the API and the pages;
//! the grant's end stays, approvers can no longer decide on it, nobody else can withdraw it,
//! and the history records it. The proxy side (the session ends at the original time) is in
//! `extension_live`.

use reqwest::Method;
use serde_json::json;

use crate::common::Stack;
use crate::extend::{active, api, decide, extend, grant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_extension_is_withdrawn_by_its_requester_only() {
    let stack = Stack::start().await;
    let alice = stack.api_token("alice@example.com");
    let dana = stack.api_token("dana@example.com");
    let id = active(&stack, &alice, "read-only", &[&dana]).await;
    let (grant_id, end, _) = grant(&stack, id).await;
    let ask = json!({"justification": "maybe longer", "extra_secs": 3600});
    let (status, ext) = extend(&stack, &alice, id, ask.clone()).await;
    assert_eq!(status, 201, "{ext}");
    let ext_id = ext["id"].as_i64().unwrap();
    let withdraw = |token: &str| {
        let token = token.to_string();
        let stack = &stack;
        async move {
            api(
                stack,
                Method::POST,
                &format!("/api/v1/extensions/{ext_id}/withdraw"),
                &token,
                None,
            )
            .await
        }
    };

    // An approver is not the requester: not theirs to withdraw (and not told it exists).
    let (status, body) = withdraw(&dana).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = withdraw(&alice).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "withdrawn");
    assert!(body["decided_at"].is_string(), "{body}");
    assert_eq!(grant(&stack, id).await, (grant_id, end, false));
    // Closed: no decision, no second withdrawal.
    let (status, body) = decide(&stack, &dana, ext_id, "approve").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("withdrawn"),
        "{body}"
    );
    let (status, _) = withdraw(&alice).await;
    assert_eq!(status, 409);
    assert_eq!(grant(&stack, id).await, (grant_id, end, false));
    let events = stack
        .control()
        .await
        .query_one(
            "SELECT actor, data FROM events WHERE request_id = $1 AND kind = 'extension.withdrawn'",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(events.get::<_, String>(0), "alice@example.com");
    let data: serde_json::Value = events.get(1);
    assert_eq!(data["extension_id"], ext_id);
    assert_eq!(
        data["expires_at"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap(),
        end
    );
    let kinds = stack.event_kinds(id).await;
    assert!(!kinds.iter().any(|k| k == "access.extended"), "{kinds:?}");
    // The person may ask again.
    let (status, body) = extend(&stack, &alice, id, ask).await;
    assert_eq!(status, 201, "{body}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_withdrawn_on_the_pages() {
    let stack = Stack::start().await;
    let alice = stack.browser();
    alice.sign_in("alice@example.com").await;
    let dana = stack.browser();
    dana.sign_in("dana@example.com").await;
    let id = alice.request("read-only", 60).await;
    dana.decide(id, "approve", "ok").await;
    let (grant_id, end, _) = grant(&stack, id).await;
    let page = alice.get(&format!("/requests/{id}")).await;
    let answer = alice
        .post(
            &format!("/requests/{id}/extend"),
            &[
                ("csrf", &page.csrf()),
                ("justification", "the review takes longer"),
                ("hours", "3"),
            ],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let ext: i64 = stack
        .control()
        .await
        .query_one("SELECT id FROM extensions WHERE request_id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    let action = format!("/extensions/{ext}/withdraw");
    assert!(answer.body.contains(&action), "{}", answer.body);
    // The approver's page has the decision, not the withdrawal.
    let theirs = dana.get(&format!("/requests/{id}")).await;
    assert!(!theirs.body.contains(&action), "{}", theirs.body);

    let answer = alice.post(&action, &[("csrf", &answer.csrf())]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.body.contains(&format!(
            "Extension {ext} withdrawn; the access ends at the time it had."
        )),
        "{}",
        answer.body
    );
    assert!(!answer.body.contains(&action), "{}", answer.body);
    assert!(answer.body.contains("withdrawn"), "{}", answer.body);
    assert!(
        answer.body.contains("Extend this access"),
        "asking again is offered"
    );
    assert_eq!(grant(&stack, id).await, (grant_id, end, false));
    // The approver's decision arriving afterwards is refused and changes nothing.
    let page = dana.get(&format!("/requests/{id}")).await;
    let answer = dana
        .post(
            &format!("/extensions/{ext}/decide"),
            &[
                ("csrf", &page.csrf()),
                ("decision", "approve"),
                ("comment", ""),
            ],
        )
        .await;
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert_eq!(grant(&stack, id).await, (grant_id, end, false));
    stack.stop().await;
}

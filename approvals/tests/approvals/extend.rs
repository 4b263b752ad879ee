//! Issue 22 in the approvals app: extending active access in place (same grant, a later
//! `expires_at`, an `access.extended` event in the sealed history), under the level's rules
//! (approvers needed, never oneself, capped at the level's maximum), never for ended access;
//! and the level's session controls shown, and copied into the grant from the request's
//! snapshot.

use std::sync::Arc;

use approvals::oidc::User;
use approvals::settings::Level;
use approvals::status::Decision;
use approvals::workflow::{self, Actor};
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{json, Value};

use crate::api::call;
use crate::common::{Options, Stack};

pub(crate) async fn api(
    stack: &Stack,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, text) = call(stack, method, path, Some(token), body).await;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// A request of `level` by the holder of `token`, approved by `approvers`: its id.
pub(crate) async fn active(stack: &Stack, token: &str, level: &str, approvers: &[&str]) -> i64 {
    let new = json!({"database": "rates", "level": level,
                     "justification": "incident 22", "duration_secs": 3600});
    let (status, body) = api(stack, Method::POST, "/api/v1/requests", token, Some(new)).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_i64().unwrap();
    for a in approvers {
        let (status, body) = api(
            stack,
            Method::POST,
            &format!("/api/v1/requests/{id}/decide"),
            a,
            Some(json!({"decision": "approve", "comment": "ok"})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(stack.status(id).await, "active");
    id
}

/// The request's grant: id, end, revoked.
pub(crate) async fn grant(stack: &Stack, id: i64) -> (i64, DateTime<Utc>, bool) {
    let row = stack
        .control()
        .await
        .query_one(
            "SELECT g.id, g.expires_at, g.revoked_at IS NOT NULL FROM grants g \
             JOIN access_requests r ON r.grant_id = g.id WHERE r.id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

pub(crate) async fn extend(stack: &Stack, token: &str, id: i64, body: Value) -> (u16, Value) {
    api(
        stack,
        Method::POST,
        &format!("/api/v1/requests/{id}/extend"),
        token,
        Some(body),
    )
    .await
}

pub(crate) async fn decide(stack: &Stack, token: &str, ext: i64, decision: &str) -> (u16, Value) {
    api(
        stack,
        Method::POST,
        &format!("/api/v1/extensions/{ext}/decide"),
        token,
        Some(json!({"decision": decision, "comment": "incident still open"})),
    )
    .await
}

fn ts(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_extension_moves_the_end_of_the_same_grant_and_is_recorded() {
    let stack = Stack::start().await;
    let dana = stack.api_token("dana@example.com");
    let sam = stack.api_token("sam@example.com");
    // dana, an approver, asks for access herself: sam approves it.
    let id = active(&stack, &dana, "read-only", &[&sam]).await;
    let (grant_id, end, _) = grant(&stack, id).await;
    let grants_before = stack.count("grants").await;
    let events_before = stack.event_kinds(id).await.len();
    let secret = stack
        .store
        .db_credentials(&grants::person_secret(&grants::request_role(
            "dana@example.com",
            id,
        )))
        .await
        .unwrap();

    let (status, ext) = extend(
        &stack,
        &dana,
        id,
        json!({"justification": "the incident runs long", "extra_secs": 7200}),
    )
    .await;
    assert_eq!(status, 201, "{ext}");
    assert_eq!(ext["state"], "pending");
    let ext_id = ext["id"].as_i64().unwrap();
    let extend_to = ts(&ext["extend_to"]);
    assert_eq!(extend_to, end + chrono::Duration::seconds(7200));
    // One open extension at a time.
    let (status, body) = extend(
        &stack,
        &dana,
        id,
        json!({"justification": "again", "extra_secs": 600}),
    )
    .await;
    assert_eq!(status, 409, "{body}");

    // Nobody approves their own extension, approver or not.
    let (status, body) = decide(&stack, &dana, ext_id, "approve").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains("their own extension"), "{body}");
    assert_eq!(grant(&stack, id).await.1, end);
    // The approvers see it waiting.
    let (status, queue) = api(&stack, Method::GET, "/api/v1/queue", &sam, None).await;
    assert_eq!(status, 200);
    assert_eq!(queue["extensions"][0]["id"], ext_id, "{queue}");

    let (status, body) = decide(&stack, &sam, ext_id, "approve").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "approved");

    // The same grant, ending later; no new grant, no new password, no provisioning.
    let (same_id, new_end, revoked) = grant(&stack, id).await;
    assert_eq!((same_id, new_end, revoked), (grant_id, extend_to, false));
    assert_eq!(stack.count("grants").await, grants_before);
    let after = stack
        .store
        .db_credentials(&grants::person_secret(&grants::request_role(
            "dana@example.com",
            id,
        )))
        .await
        .unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&after.password),
        secrecy::ExposeSecret::expose_secret(&secret.password),
        "the password stays"
    );
    let kinds = stack.event_kinds(id).await;
    assert_eq!(
        kinds[events_before..],
        ["extension.requested", "access.extended"],
        "{kinds:?}"
    );
    assert!(!kinds.iter().any(|k| k == "access.ending"));

    // The request shows the new end, and the extension; the history holds and says it.
    let (status, detail) = api(
        &stack,
        Method::GET,
        &format!("/api/v1/requests/{id}"),
        &dana,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ts(&detail["request"]["expires_at"]), extend_to);
    assert_eq!(detail["extensions"][0]["state"], "approved");
    let extended = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "access.extended")
        .unwrap()
        .clone();
    assert_eq!(extended["grant_id"], grant_id);
    assert_eq!(ts(&extended["data"]["previous_end"]), end);
    assert_eq!(ts(&extended["data"]["expires_at"]), extend_to);
    assert_eq!(extended["data"]["approvers"], json!(["sam@example.com"]));
    let app_db = stack.as_app("dbgw").await;
    approvals::history::verify(&app_db, None).await.unwrap();

    // Closed: deciding again changes nothing.
    let (status, body) = decide(&stack, &sam, ext_id, "deny").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(grant(&stack, id).await.1, extend_to);

    // The scheduler's expiry uses the new end: the old one has no effect.
    stack
        .control()
        .await
        .execute(
            "UPDATE grants SET valid_from = now() - interval '2 seconds', \
             expires_at = now() - interval '1 second' WHERE id = $1",
            &[&grant_id],
        )
        .await
        .unwrap();
    approvals::scheduler::tick(&stack.app).await.unwrap();
    assert_eq!(stack.status(id).await, "ended");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extensions_follow_the_level_rules_and_its_cap() {
    let stack = Stack::start().await;
    let alice = stack.api_token("alice@example.com");
    let dana = stack.api_token("dana@example.com");
    let sam = stack.api_token("sam@example.com");

    // read-write needs two approvers, and so does its extension.
    let id = active(&stack, &alice, "read-write", &[&dana, &sam]).await;
    let (_, end, _) = grant(&stack, id).await;
    // Its maximum is a day from now: a day and an hour from now is refused, by either form.
    for over in [
        json!({"justification": "x", "extra_secs": 86_400}),
        json!({"justification": "x",
               "extend_to": (Utc::now() + chrono::Duration::hours(25)).to_rfc3339()}),
    ] {
        let (status, body) = extend(&stack, &alice, id, over).await;
        assert_eq!(status, 422, "{body}");
        assert!(body.to_string().contains("at most"), "{body}");
    }
    // An end before the current one, no justification, or both forms at once: refused.
    for bad in [
        json!({"justification": "x",
               "extend_to": (end - chrono::Duration::minutes(5)).to_rfc3339()}),
        json!({"justification": " ", "extra_secs": 600}),
        json!({"justification": "x", "extra_secs": 600,
               "extend_to": (end + chrono::Duration::hours(1)).to_rfc3339()}),
    ] {
        let (status, body) = extend(&stack, &alice, id, bad).await;
        assert_eq!(status, 422, "{body}");
    }
    // Only the person extends their access: not an approver for them, not someone else.
    let bob = stack.api_token("bob@example.com");
    let (status, _) = extend(
        &stack,
        &bob,
        id,
        json!({"justification": "x", "extra_secs": 600}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = extend(
        &stack,
        &dana,
        id,
        json!({"justification": "x", "extra_secs": 600}),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(stack.count("extensions").await, 0);

    let to = end + chrono::Duration::hours(4);
    let (status, ext) = extend(
        &stack,
        &alice,
        id,
        json!({"justification": "migration overruns", "extend_to": to.to_rfc3339()}),
    )
    .await;
    assert_eq!(status, 201, "{ext}");
    assert_eq!(ext["approvals_needed"], 2);
    let ext_id = ext["id"].as_i64().unwrap();
    // alice is no approver.
    let (status, _) = decide(&stack, &alice, ext_id, "approve").await;
    assert_eq!(status, 403);
    let (status, body) = decide(&stack, &dana, ext_id, "approve").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "pending", "one of two approvals");
    assert_eq!(
        grant(&stack, id).await.1,
        end,
        "not moved after one approval"
    );
    let (status, _) = decide(&stack, &dana, ext_id, "approve").await;
    assert_eq!(status, 409, "the same approver twice");
    let (status, body) = decide(&stack, &sam, ext_id, "approve").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "approved");
    assert_eq!(grant(&stack, id).await.1, to);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_extension_changes_nothing_and_ended_access_cannot_be_extended() {
    let stack = Stack::start().await;
    let alice = stack.api_token("alice@example.com");
    let dana = stack.api_token("dana@example.com");
    let ask = json!({"justification": "more time please", "extra_secs": 3600});

    // Denied: the end stays, the record says so.
    let id = active(&stack, &alice, "read-only", &[&dana]).await;
    let (grant_id, end, _) = grant(&stack, id).await;
    let (status, ext) = extend(&stack, &alice, id, ask.clone()).await;
    assert_eq!(status, 201, "{ext}");
    let ext_id = ext["id"].as_i64().unwrap();
    let (status, body) = api(
        &stack,
        Method::POST,
        &format!("/api/v1/extensions/{ext_id}/decide"),
        &dana,
        Some(json!({"decision": "deny"})),
    )
    .await;
    assert_eq!(status, 422, "a denial needs a comment: {body}");
    let (status, body) = decide(&stack, &dana, ext_id, "deny").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "denied");
    assert_eq!(grant(&stack, id).await, (grant_id, end, false));
    let kinds = stack.event_kinds(id).await;
    assert!(kinds.iter().any(|k| k == "extension.denied"), "{kinds:?}");
    assert!(!kinds.iter().any(|k| k == "access.extended"), "{kinds:?}");
    let (status, _) = decide(&stack, &dana, ext_id, "approve").await;
    assert_eq!(status, 409);
    assert_eq!(grant(&stack, id).await.1, end);

    // Pending while the access is revoked: it can no longer be approved, the scheduler
    // closes it, and the grant stays revoked.
    let (status, ext) = extend(&stack, &alice, id, ask.clone()).await;
    assert_eq!(status, 201, "{ext}");
    let pending = ext["id"].as_i64().unwrap();
    let (status, body) = api(
        &stack,
        Method::POST,
        &format!("/api/v1/requests/{id}/revoke"),
        &dana,
        Some(json!({"reason": "incident closed"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = decide(&stack, &dana, pending, "approve").await;
    assert_eq!(status, 409, "{body}");
    let (_, end_after, revoked) = grant(&stack, id).await;
    assert!(revoked);
    assert_eq!(end_after, end);
    approvals::extension::expire_stale(&stack.app)
        .await
        .unwrap();
    let (_, ext) = api(
        &stack,
        Method::GET,
        &format!("/api/v1/extensions/{pending}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(ext["state"], "expired");
    // Ended access: no new extension.
    let (status, body) = extend(&stack, &alice, id, ask.clone()).await;
    assert_eq!(status, 409, "{body}");

    // Given up: refused too.
    let given_up = active(&stack, &alice, "read-only", &[&dana]).await;
    let (status, _) = api(
        &stack,
        Method::POST,
        &format!("/api/v1/requests/{given_up}/give-up"),
        &alice,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = extend(&stack, &alice, given_up, ask.clone()).await;
    assert_eq!(status, 409, "{body}");

    // Past its end, before the scheduler has ended it: no resurrection either.
    let lapsed = active(&stack, &alice, "read-only", &[&dana]).await;
    let (lapsed_grant, _, _) = grant(&stack, lapsed).await;
    stack
        .control()
        .await
        .execute(
            "UPDATE grants SET valid_from = now() - interval '2 seconds', \
             expires_at = now() - interval '1 second' WHERE id = $1",
            &[&lapsed_grant],
        )
        .await
        .unwrap();
    assert_eq!(stack.status(lapsed).await, "active");
    let (status, body) = extend(&stack, &alice, lapsed, ask.clone()).await;
    assert_eq!(status, 409, "{body}");
    assert!(grant(&stack, lapsed).await.1 < Utc::now());
    stack.stop().await;
}

fn strict_level() -> Level {
    Level {
        database: "rates".into(),
        level: "read-only".into(),
        description: "Read the rates data".into(),
        role: "rates_reader".into(),
        max_duration_secs: 7 * 24 * 3600,
        approvals: 1,
        policy: grants::SessionPolicy {
            idle_timeout_secs: Some(900),
            idle_in_transaction_timeout_secs: Some(60),
            max_session_secs: Some(8 * 3600),
            read_only: true,
            require_amr: vec!["mfa".into()],
            max_auth_age_secs: Some(3600),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_is_shown_and_the_grant_gets_the_requests_snapshot() {
    let level = strict_level();
    let stack = Stack::with(Options {
        catalogue: vec![level.clone()],
        ..Options::default()
    })
    .await;
    let alice = stack.api_token("alice@example.com");

    // The form shows each level's controls.
    let browser = stack.browser();
    browser.sign_in("alice@example.com").await;
    let form = browser.get("/requests/new").await;
    for text in [
        "Idle sessions close after 15 minutes",
        "Idle in a transaction: closed after 1 minute",
        "Each session lasts at most 8 hours",
        "Read-only at the gateway",
        "Sign-in must use: mfa",
        "Sign-in at most 1 hour old at login",
    ] {
        assert!(form.body.contains(text), "{text}: {}", form.body);
    }
    let (_, catalogue) = api(&stack, Method::GET, "/api/v1/catalogue", &alice, None).await;
    assert_eq!(catalogue["levels"][0]["policy"]["idle_timeout_secs"], 900);

    // The request records it; the API and its page show it.
    let new = json!({"database": "rates", "level": "read-only",
                     "justification": "audit", "duration_secs": 3600});
    let (status, req) = api(&stack, Method::POST, "/api/v1/requests", &alice, Some(new)).await;
    assert_eq!(status, 201, "{req}");
    let id = req["id"].as_i64().unwrap();
    assert_eq!(
        req["policy"],
        serde_json::to_value(&level.policy).unwrap(),
        "{req}"
    );
    let page = browser.get(&format!("/requests/{id}")).await;
    assert!(
        page.body.contains("Idle sessions close after 15 minutes"),
        "{}",
        page.body
    );

    // The catalogue changes before the approval (an app restarted with new settings): the
    // grant still gets what was asked for and approved.
    let mut changed = (*stack.app.settings).clone();
    changed.catalogue[0].policy = grants::SessionPolicy::default();
    let mut later = stack.app.clone();
    later.settings = Arc::new(changed);
    let dana = Actor::new(
        User {
            email: "dana@example.com".into(),
            subject: "c9d8e7f6-1a2b-4c3d-8e9f-da7a00000003".into(),
            name: "Dana Security".into(),
            groups: vec!["data-security".into()],
        },
        "data-security",
    );
    let approved = workflow::decide(&later, &dana, id, Decision::Approve, "ok")
        .await
        .unwrap();
    assert_eq!(approved.status.as_str(), "active");
    let control = stack.control().await;
    let g = grants::get(&control, approved.grant_id.unwrap())
        .await
        .unwrap();
    assert_eq!(g.policy, level.policy);
    stack.stop().await;
}

/// A stand-in for the CLI's loopback listener: the query of each `/callback` hit.
async fn loopback() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(move |uri: axum::http::Uri| {
            let tx = tx.clone();
            async move {
                tx.send(uri.query().unwrap_or_default().to_string())
                    .unwrap();
                "signed in"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/callback", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

fn param(query: &str, name: &str) -> String {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {query}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_hand_off_gives_the_apps_token_once_to_the_verifier_on_loopback() {
    use base64::Engine;
    use sha2::Digest;
    let stack = Stack::start().await;
    let verifier = "a-verifier-of-the-cli-that-nobody-else-knows-0123456789";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let (callback, mut codes) = loopback().await;
    let start = |redirect: &str| {
        let mut url = reqwest::Url::parse(&format!("{}/auth/cli", stack.base)).unwrap();
        url.query_pairs_mut()
            .append_pair("redirect_uri", redirect)
            .append_pair("state", "state-of-the-cli")
            .append_pair("code_challenge", &challenge);
        url.to_string()
    };

    // Only the CLI's loopback address.
    let browser = stack.browser();
    for elsewhere in [
        "https://evil.example/callback",
        "http://evil.example:8000/callback",
        "http://127.0.0.1:9/other",
        "http://127.0.0.1/callback",
    ] {
        let r = browser.http.get(start(elsewhere)).send().await.unwrap();
        assert_eq!(r.status(), 422, "{elsewhere}");
    }
    // Not signed in and straight to the end: nothing handed out.
    let finish = start(&callback).replace("/auth/cli?", "/auth/cli/finish?");
    let r = browser.http.get(&finish).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // A sign-in through the provider's form, then back to the loopback with a code.
    let form = browser.http.get(start(&callback)).send().await.unwrap();
    let form_url = form.url().to_string();
    assert!(form.text().await.unwrap().contains("Sign in to"));
    let done = browser
        .http
        .post(form_url + "/login")
        .form(&[("email", "alice@example.com"), ("password", "dev")])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let query = codes.recv().await.unwrap();
    assert_eq!(param(&query, "state"), "state-of-the-cli");
    let code = param(&query, "code");
    let redeem = |code: &str, verifier: &str| {
        let body = json!({"code": code, "code_verifier": verifier});
        let url = format!("{}/api/v1/cli/token", stack.base);
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    // The wrong verifier: refused, and the code is gone.
    let (status, _) = redeem(&code, "someone-elses-verifier-0123456789-0123456789").await;
    assert_eq!(status, 401);
    let (status, _) = redeem(&code, verifier).await;
    assert_eq!(status, 401, "a code is tried once");

    // Again, and right: the app's access token, once.
    let form = browser.http.get(start(&callback)).send().await.unwrap();
    assert_eq!(form.status(), 200);
    let code = param(&codes.recv().await.unwrap(), "code");
    let (status, token) = redeem(&code, verifier).await;
    assert_eq!(status, 200, "{token}");
    assert_eq!(token["email"], "alice@example.com");
    let (status, _) = redeem(&code, verifier).await;
    assert_eq!(status, 401);
    let (status, mine) = api(
        &stack,
        Method::GET,
        "/api/v1/requests",
        token["access_token"].as_str().unwrap(),
        None,
    )
    .await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(stack.count("cli_handoffs").await, 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_asked_and_approved_on_the_pages() {
    let stack = Stack::start().await;
    let alice = stack.browser();
    alice.sign_in("alice@example.com").await;
    let dana = stack.browser();
    dana.sign_in("dana@example.com").await;
    let id = alice.request("read-only", 60).await;
    let answer = dana.decide(id, "approve", "ok").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let (grant_id, end, _) = grant(&stack, id).await;

    let page = alice.get(&format!("/requests/{id}")).await;
    assert!(page.body.contains("Extend this access"), "{}", page.body);
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
    assert!(answer.body.contains("Extension"), "{}", answer.body);
    assert!(!answer.body.contains("Extend this access"), "one at a time");

    let page = dana.get(&format!("/requests/{id}")).await;
    assert!(page.body.contains("Approve extension"), "{}", page.body);
    let ext: i64 = stack
        .control()
        .await
        .query_one("SELECT id FROM extensions WHERE request_id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
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
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer
            .body
            .contains(&format!("Extension {ext} is approved")),
        "{}",
        answer.body
    );
    assert_eq!(
        grant(&stack, id).await,
        (grant_id, end + chrono::Duration::hours(3), false)
    );
    stack.stop().await;
}

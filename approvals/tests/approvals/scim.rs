//! Issue 17, item 8: a person the identity provider deactivates or deletes loses access at
//! once, not when each grant ends. The provider's calls are the ones Okta and Microsoft Entra
//! ID send to `/scim/v2/Users`; alice has an active grant with a server session open under
//! its role and a pending request. After the call (before any scheduler pass) the grant has
//! ended, the role cannot log in, the session is gone, the request is withdrawn, the history
//! says why, and alice cannot ask for access again until she is reactivated.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::api::call;
use crate::common::{eventually, Options, Stack};

const ALICE: &str = "alice@example.com";
const REASON: &str = "deprovisioned at the identity provider";

/// A SCIM call with `token`: status, content type, body as JSON (Null when empty).
async fn scim(
    stack: &Stack,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String, Value) {
    let http = reqwest::Client::new();
    let mut req = http.request(method, format!("{}/scim/v2{path}", stack.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/scim+json")
            .body(b.to_string());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let kind = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = r.text().await.unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status} {text}"))
    };
    (status, kind, value)
}

async fn quiet_scim_stack() -> Stack {
    // The scheduler does not run during the test: whatever ends, the SCIM call ended.
    let stack = Stack::with(Options {
        scim: true,
        scheduler_ms: 3_600_000,
        ..Options::default()
    })
    .await;
    stack.scheduler_settled().await;
    stack
}

/// POSTs alice as Okta and Entra do; returns her SCIM id.
async fn provision_alice(stack: &Stack) -> String {
    let t = Some(stack.scim_token.as_str());
    let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "Alice@Example.com", "externalId": "00u1alice", "active": true,
        "name": {"givenName": "Alice", "familyName": "Example"},
        "emails": [{"primary": true, "value": ALICE, "type": "work"}]});
    let (status, kind, user) =
        scim(stack, Method::POST, "/Users", t, Some(&body.to_string())).await;
    assert_eq!(status, 201, "{user}");
    assert!(kind.starts_with("application/scim+json"), "{kind}");
    assert_eq!(user["userName"], ALICE);
    assert_eq!(user["active"], true);
    user["id"].as_str().unwrap().to_string()
}

/// Alice's active read-only grant (approved by dana) and a pending read-write request.
async fn alice_with_access(stack: &Stack) -> (i64, i64) {
    let alice = stack.browser();
    alice.sign_in(ALICE).await;
    let dana = stack.browser();
    dana.sign_in("dana@example.com").await;
    let active = alice.request("read-only", 60).await;
    dana.decide(active, "approve", "").await;
    assert_eq!(stack.status(active).await, "active");
    let pending = alice.request("read-write", 60).await;
    assert_eq!(stack.status(pending).await, "pending");
    (active, pending)
}

/// A server session under the login role of request `id`'s grant, as the secret store
/// gives it to the proxy.
async fn open_session(
    stack: &Stack,
    id: i64,
) -> (tokio_postgres::Client, secret_store::DbCredentials) {
    let role = grants::request_role(ALICE, id);
    let creds = stack
        .store
        .db_credentials(&grants::person_secret(&role))
        .await
        .unwrap();
    let session = stack
        .cluster
        .server()
        .connect_as("rates", &creds)
        .await
        .unwrap();
    let n: i64 = session
        .query_one("SELECT count(*) FROM ports", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n > 0);
    (session, creds)
}

/// Everything of alice ended at once, for `reason`.
async fn assert_all_ended(
    stack: &Stack,
    active: i64,
    pending: i64,
    session: &tokio_postgres::Client,
    creds: &secret_store::DbCredentials,
) {
    assert_eq!(stack.status(active).await, "ended");
    assert_eq!(stack.status(pending).await, "withdrawn");
    let control = stack.control().await;
    for id in [active, pending] {
        let row = control
            .query_one(
                "SELECT end_reason, ended_by FROM access_requests WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some(REASON));
        assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("scim"));
    }
    let revoked: Option<String> = control
        .query_one(
            "SELECT revoke_reason FROM grants WHERE request_id = $1",
            &[&active],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(revoked.as_deref(), Some(REASON));
    assert!(stack.memberships(ALICE).await.is_empty());
    let target = stack.cluster.connect("postgres").await.unwrap();
    let role = grants::request_role(ALICE, active);
    assert!(!grants::can_login(&target, &role).await.unwrap());
    // Terminated on the server (the signal is delivered asynchronously: wait for it).
    eventually(
        "alice's open session is terminated",
        Duration::from_secs(10),
        async || {
            session.query_one("SELECT 1", &[]).await.is_err()
                && grants::backends(&target, &role).await.unwrap() == 0
        },
    )
    .await;
    assert!(
        stack
            .cluster
            .server()
            .connect_as("rates", creds)
            .await
            .is_err(),
        "alice's role still logs in"
    );
    let kinds = stack.event_kinds(active).await;
    for k in [
        "access.ending",
        "access.grant_revoked",
        "access.login_removed",
        "access.ended",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k}: {kinds:?}");
    }
    assert!(stack
        .event_kinds(pending)
        .await
        .iter()
        .any(|k| k == "request.withdrawn"));
    let deprovisioned = control
        .query(
            "SELECT actor, data FROM events WHERE kind = 'person.deprovisioned'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(deprovisioned.len(), 1);
    let data: Value = deprovisioned[0].get(1);
    assert_eq!(deprovisioned[0].get::<_, String>(0), "scim");
    assert_eq!(data["email"], ALICE);
    assert_eq!(data["reason"], REASON);
    // The chain still verifies with the new events in it.
    let head = approvals::history::verify(&stack.control().await, None).await;
    assert!(head.is_ok(), "{head:?}");
}

/// Alice, deprovisioned, cannot ask for access through the API with her still-valid token.
async fn assert_refused_request(stack: &Stack) {
    let token = stack.api_token(ALICE);
    let new = json!({"database": "rates", "level": "read-only",
                     "justification": "after leaving", "duration_secs": 3600});
    let before = stack.count("access_requests").await;
    let (status, body) = call(
        stack,
        Method::POST,
        "/api/v1/requests",
        Some(&token),
        Some(new),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("deprovisioned at the identity provider"),
        "{body}"
    );
    assert_eq!(stack.count("access_requests").await, before);
}

/// The whole story with one provider's deactivation call.
async fn deactivated_by(method: Method, body: Option<Value>, want: u16) {
    let stack = quiet_scim_stack().await;
    let t = Some(stack.scim_token.as_str());
    let id = provision_alice(&stack).await;
    let (active, pending) = alice_with_access(&stack).await;
    let (session, creds) = open_session(&stack, active).await;

    let body = body.map(|b| b.to_string());
    let (status, kind, user) = scim(
        &stack,
        method.clone(),
        &format!("/Users/{id}"),
        t,
        body.as_deref(),
    )
    .await;
    assert_eq!(status, want, "{user}");
    assert_all_ended(&stack, active, pending, &session, &creds).await;
    assert_refused_request(&stack).await;
    assert_eq!(
        stack.app.metrics.people_deprovisioned.get(),
        1,
        "one person deprovisioned"
    );

    if method == Method::DELETE {
        assert_eq!(user, Value::Null);
        let (status, kind, err) = scim(&stack, Method::GET, &format!("/Users/{id}"), t, None).await;
        assert_eq!(status, 404, "{err}");
        assert!(kind.starts_with("application/scim+json"), "{kind}");
        assert_eq!(
            err["schemas"][0],
            "urn:ietf:params:scim:api:messages:2.0:Error"
        );
        assert_eq!(err["status"], "404");
    } else {
        assert!(kind.starts_with("application/scim+json"), "{kind}");
        assert_eq!(user["active"], false);
        // Reactivated (Entra's form): she may ask again, but nothing comes back by itself.
        let on = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "Replace", "path": "active", "value": "True"}]});
        let (status, _, user) = scim(
            &stack,
            Method::PATCH,
            &format!("/Users/{id}"),
            t,
            Some(&on.to_string()),
        )
        .await;
        assert_eq!((status, &user["active"]), (200, &json!(true)), "{user}");
        assert_eq!(stack.status(active).await, "ended");
        assert_eq!(stack.status(pending).await, "withdrawn");
        assert!(stack.memberships(ALICE).await.is_empty());
        let token = stack.api_token(ALICE);
        let new = json!({"database": "rates", "level": "read-only",
                         "justification": "back again", "duration_secs": 3600});
        let (status, body) = call(
            &stack,
            Method::POST,
            "/api/v1/requests",
            Some(&token),
            Some(new),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn entra_patch_with_a_string_false_ends_alices_access_at_once() {
    let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Replace", "path": "active", "value": "False"}]});
    deactivated_by(Method::PATCH, Some(body), 200).await;
}

#[tokio::test]
async fn okta_patch_ends_alices_access_at_once() {
    let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "value": {"active": false}}]});
    deactivated_by(Method::PATCH, Some(body), 200).await;
}

#[tokio::test]
async fn delete_ends_alices_access_at_once() {
    deactivated_by(Method::DELETE, None, 204).await;
}

/// The same deactivation as alice's psql sees it *through the proxy* (her token as the
/// password, the session open when the call comes): the proxy ends the session within its
/// poll interval and tells psql why at its next statement, the server has no backend of her
/// grant's role left, and her still-valid token opens nothing any more.
#[tokio::test]
async fn a_deactivation_ends_alices_psql_session_through_the_proxy() {
    use std::io::Write;
    use std::process::Stdio;

    let stack = Stack::with(Options {
        scim: true,
        proxy: true,
        scheduler_ms: 3_600_000,
        ..Options::default()
    })
    .await;
    stack.scheduler_settled().await;
    let id = provision_alice(&stack).await;
    let alice = stack.browser();
    alice.sign_in(ALICE).await;
    let dana = stack.browser();
    dana.sign_in("dana@example.com").await;
    let active = alice.request("read-only", 60).await;
    dana.decide(active, "approve", "").await;
    assert_eq!(stack.status(active).await, "active");

    let proxy = stack.proxy.as_ref().unwrap();
    let (ca, token) = (stack.cluster.ca_cert(), stack.token(ALICE));
    let mut child = proxy
        .psql(&ca, ALICE, &token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "SELECT 'before', count(*) FROM ports;").unwrap();
    let role = grants::request_role(ALICE, active);
    let server = stack.cluster.connect("postgres").await.unwrap();
    eventually(
        "alice's psql is logged in through the proxy",
        Duration::from_secs(10),
        async || grants::backends(&server, &role).await.unwrap() == 1,
    )
    .await;

    let off = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "value": {"active": false}}]});
    let (status, _, user) = scim(
        &stack,
        Method::PATCH,
        &format!("/Users/{id}"),
        Some(stack.scim_token.as_str()),
        Some(&off.to_string()),
    )
    .await;
    assert_eq!(status, 200, "{user}");
    eventually(
        "alice's session through the proxy ends",
        Duration::from_secs(10),
        async || grants::backends(&server, &role).await.unwrap() == 0,
    )
    .await;
    let _ = writeln!(stdin, "SELECT 'after';");
    drop(stdin);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(stdout.contains("before"), "{stdout}\n{stderr}");
    assert!(!stdout.contains("after"), "{stdout}");
    assert!(
        stderr.contains("access revoked") && stderr.contains(REASON),
        "{stderr}"
    );

    // Her token is still valid at the provider; the proxy lets nothing in with it.
    // (Off the runtime's thread: the proxy serves on this runtime.)
    let mut psql = proxy.psql(&ca, ALICE, &token);
    psql.args(["-c", "SELECT 'again'"]);
    let again = tokio::task::spawn_blocking(move || psql.output().unwrap())
        .await
        .unwrap();
    assert!(!again.status.success());
    assert!(!String::from_utf8_lossy(&again.stdout).contains("again"));
    stack.stop().await;
}

/// A request that slipped in before the deactivation (inserted here as such a race would
/// leave it) cannot be approved while its requester is deprovisioned.
#[tokio::test]
async fn a_deprovisioned_persons_request_cannot_be_approved() {
    let stack = quiet_scim_stack().await;
    let t = Some(stack.scim_token.as_str());
    let id = provision_alice(&stack).await;
    let off = json!({"Operations": [{"op": "replace", "path": "active", "value": false}]});
    let (status, _, user) = scim(
        &stack,
        Method::PATCH,
        &format!("/Users/{id}"),
        t,
        Some(&off.to_string()),
    )
    .await;
    assert_eq!(status, 200, "{user}");
    let request: i64 = stack
        .control()
        .await
        .query_one(
            "INSERT INTO access_requests (email, subject, database, level, role, approvals_needed, \
             justification, duration_secs) \
             VALUES ($1, 'sub', 'rates', 'read-only', 'rates_reader', 1, 'raced', 3600) RETURNING id",
            &[&ALICE],
        )
        .await
        .unwrap()
        .get(0);
    let dana = stack.api_token("dana@example.com");
    let (status, body) = call(
        &stack,
        Method::POST,
        &format!("/api/v1/requests/{request}/decide"),
        Some(&dana),
        Some(json!({"decision": "approve"})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("deprovisioned at the identity provider"),
        "{body}"
    );
    assert_eq!(stack.status(request).await, "pending");
    assert_eq!(stack.count("decisions").await, 0);
    stack.stop().await;
}

#[tokio::test]
async fn a_wrong_or_missing_scim_token_is_refused_and_changes_nothing() {
    let stack = quiet_scim_stack().await;
    let id = provision_alice(&stack).await;
    let (active, pending) = alice_with_access(&stack).await;
    let events = stack.count("events").await;
    let off = json!({"Operations": [{"op": "replace", "value": {"active": false}}]}).to_string();
    let almost = format!("{}x", stack.scim_token);
    for token in [None, Some("wrong"), Some(almost.as_str()), Some("")] {
        for (method, path, body) in [
            (Method::PATCH, format!("/Users/{id}"), Some(off.as_str())),
            (Method::DELETE, format!("/Users/{id}"), None),
            (Method::GET, "/Users".to_string(), None),
        ] {
            let (status, kind, err) = scim(&stack, method.clone(), &path, token, body).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}: {err}");
            assert!(kind.starts_with("application/scim+json"), "{kind}");
            assert_eq!(
                err["schemas"][0],
                "urn:ietf:params:scim:api:messages:2.0:Error"
            );
            assert_eq!(err["status"], "401");
        }
    }
    assert_eq!(stack.status(active).await, "active");
    assert_eq!(stack.status(pending).await, "pending");
    assert_eq!(stack.count("events").await, events);
    assert_eq!(stack.app.metrics.scim_auth_failures.get(), 12);
    let metrics = stack.browser().get("/metrics").await.body;
    assert!(
        metrics.contains("dbgw_approvals_scim_auth_failures_total 12"),
        "{metrics}"
    );
    stack.stop().await;

    // Not configured: there is no endpoint at all.
    let off = Stack::start().await;
    let (status, _) = call(
        &off,
        Method::GET,
        "/scim/v2/Users",
        Some(&off.scim_token),
        None,
    )
    .await;
    assert_eq!(status, 404);
    off.stop().await;
}

#[tokio::test]
async fn malformed_calls_get_scim_errors_and_filters_find_people() {
    let stack = quiet_scim_stack().await;
    let t = Some(stack.scim_token.as_str());
    let id = provision_alice(&stack).await;
    let path = format!("/Users/{id}");
    for (method, path, body, scim_type) in [
        (Method::PATCH, path.as_str(), "{not json", "invalidSyntax"),
        (
            Method::PATCH,
            path.as_str(),
            r#"{"Operations":[{"op":"frobnicate","path":"active","value":false}]}"#,
            "invalidSyntax",
        ),
        (
            Method::PATCH,
            path.as_str(),
            r#"{"Operations":[{"op":"replace","path":"active","value":"maybe"}]}"#,
            "invalidValue",
        ),
        (
            Method::PUT,
            path.as_str(),
            r#"{"active":false}"#,
            "invalidValue",
        ),
        (
            Method::POST,
            "/Users",
            r#"{"userName":"not an email"}"#,
            "invalidValue",
        ),
        (Method::POST, "/Users", "[]", "invalidSyntax"),
    ] {
        let (status, kind, err) = scim(&stack, method.clone(), path, t, Some(body)).await;
        assert_eq!(status, 400, "{method} {body}: {err}");
        assert!(kind.starts_with("application/scim+json"), "{kind}");
        assert_eq!(
            err["schemas"][0],
            "urn:ietf:params:scim:api:messages:2.0:Error"
        );
        assert_eq!(err["status"], "400");
        assert_eq!(err["scimType"], scim_type, "{body}");
        assert!(err["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    // Still active: nothing above changed her.
    let (_, _, user) = scim(&stack, Method::GET, &path, t, None).await;
    assert_eq!(user["active"], true);
    let (status, _, err) = scim(&stack, Method::GET, "/Users/no-such-id", t, None).await;
    assert_eq!(
        (status, err["status"].as_str()),
        (404, Some("404")),
        "{err}"
    );
    let off = r#"{"Operations":[{"op":"Replace","path":"active","value":"False"}]}"#;
    let (status, _, err) = scim(&stack, Method::PATCH, "/Users/no-such-id", t, Some(off)).await;
    assert_eq!(status, 404, "{err}");
    let (status, _, err) = scim(
        &stack,
        Method::POST,
        "/Users",
        t,
        Some(&json!({"userName": ALICE}).to_string()),
    )
    .await;
    assert_eq!(
        (status, &err["scimType"]),
        (409, &json!("uniqueness")),
        "{err}"
    );

    // The filter Okta and Entra send before creating someone.
    scim(
        &stack,
        Method::POST,
        "/Users",
        t,
        Some(r#"{"userName":"bob@example.com"}"#),
    )
    .await;
    let q = "/Users?filter=userName%20eq%20%22ALICE%40example.com%22";
    let (status, kind, list) = scim(&stack, Method::GET, q, t, None).await;
    assert_eq!(status, 200, "{list}");
    assert!(kind.starts_with("application/scim+json"), "{kind}");
    assert_eq!(
        list["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:ListResponse"
    );
    assert_eq!(list["totalResults"], 1);
    assert_eq!(list["Resources"][0]["id"], id.as_str());
    assert_eq!(list["Resources"][0]["externalId"], "00u1alice");
    let q = "/Users?filter=userName%20eq%20%22carol%40example.com%22";
    let (_, _, list) = scim(&stack, Method::GET, q, t, None).await;
    assert_eq!(list["totalResults"], 0);
    assert_eq!(list["Resources"], json!([]));
    let (_, _, all) = scim(&stack, Method::GET, "/Users", t, None).await;
    assert_eq!(all["totalResults"], 2);
    let q = "/Users?filter=displayName%20co%20%22a%22";
    let (status, _, err) = scim(&stack, Method::GET, q, t, None).await;
    assert_eq!(
        (status, &err["scimType"]),
        (400, &json!("invalidFilter")),
        "{err}"
    );
    stack.stop().await;
}

/// The binary as deployed, logging at debug: neither the provider's token nor a wrong
/// one sent in its place is in any log line; the refusal is.
#[tokio::test]
async fn the_scim_token_is_in_no_log_line() {
    let stack = Stack::start().await;
    let port = dbgw_db::cluster::free_port().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let log = tempfile::NamedTempFile::new().unwrap();
    let _child = crate::process::start_with(
        &stack,
        port,
        log.as_file(),
        &[("APPROVALS_SCIM__ENABLED", "true")],
    );
    crate::process::wait_ready(&base).await;
    let http = reqwest::Client::new();
    let wrong = "wrong-token-0123456789-0123456789-abcdef";
    for token in [stack.scim_token.as_str(), wrong] {
        let r = http
            .post(format!("{base}/scim/v2/Users"))
            .bearer_auth(token)
            .header("content-type", "application/scim+json")
            .body(json!({"userName": "bob@example.com", "active": false}).to_string())
            .send()
            .await
            .unwrap();
        let want = if token == wrong { 401 } else { 201 };
        assert_eq!(r.status().as_u16(), want);
    }
    let mut text = String::new();
    eventually(
        "the refusal is logged",
        Duration::from_secs(10),
        async || {
            text = std::fs::read_to_string(log.path()).unwrap();
            text.contains("SCIM call refused") && text.contains("person deprovisioned")
        },
    )
    .await;
    assert!(
        !text.contains(&stack.scim_token),
        "the SCIM token is in the logs"
    );
    assert!(!text.contains(wrong), "a presented token is in the logs");
    stack.stop().await;
}

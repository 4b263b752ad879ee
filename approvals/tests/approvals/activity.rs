//! "Activity under this access": what a person ran through the proxy under an approved
//! request, shown on the request's page from the proxy's own audit log, verified, to the
//! requester, its approvers and the data-security group only; each read is an event.

use std::time::Duration;

use crate::common::{eventually, Browser, Options, Stack};

/// Approves a read-only request of alice's (dana decides) and runs `statements` through the
/// proxy as alice; returns the request id once the audit holds them.
async fn approved_and_used(stack: &Stack, statements: &[&str]) -> (i64, Browser, Browser) {
    let alice = stack.browser();
    alice.sign_in("alice@example.com").await;
    let id = alice.request("read-only", 60).await;
    let dana = stack.browser();
    dana.sign_in("dana@example.com").await;
    let decided = dana.decide(id, "approve", "fine").await;
    assert_eq!(decided.status, 200, "{}", decided.body);
    assert_eq!(stack.status(id).await, "active");
    let proxy = stack.proxy.as_ref().unwrap();
    let ca = stack.cluster.ca_cert();
    let token = stack.token("alice@example.com");
    for sql in statements {
        let mut psql = proxy.psql(&ca, "alice@example.com", &token);
        psql.args(["-c", sql]);
        let out = tokio::task::spawn_blocking(move || psql.output().unwrap())
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let want = statements.len();
    eventually(
        "the audit holds alice's statements and their sessions' ends",
        Duration::from_secs(20),
        async || {
            let records = proxy.records();
            let done = |kind: &str| {
                records
                    .iter()
                    .filter(|r| r["type"] == kind && r["identity"]["request_id"] == id)
                    .count()
            };
            done("statement") >= want && done("disconnect") >= want
        },
    )
    .await;
    (id, alice, dana)
}

async fn audit_reads(stack: &Stack, id: i64) -> Vec<serde_json::Value> {
    stack
        .control()
        .await
        .query(
            "SELECT data FROM events WHERE request_id = $1 AND kind = 'audit.read' ORDER BY id",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The first chain link on the page: `/requests/{id}/activity/{file}/{seq}`.
fn first_record_link(body: &str, id: i64) -> String {
    let start = format!("/requests/{id}/activity/");
    let at = body
        .find(&start)
        .unwrap_or_else(|| panic!("no link to a record: {body}"));
    let rest = &body[at..];
    rest[..rest.find('"').unwrap()].to_string()
}

#[tokio::test]
async fn the_request_page_shows_the_verified_activity_and_each_read_is_an_event() {
    let stack = Stack::with(Options {
        proxy: true,
        ..Options::default()
    })
    .await;
    let (id, alice, dana) = approved_and_used(
        &stack,
        &[
            "SELECT count(*) FROM ports",
            "SELECT 'activity-check' AS marker",
        ],
    )
    .await;

    // Making and deciding the request showed its page, and each showing read the audit.
    let before = audit_reads(&stack, id).await.len();
    let page = alice.get(&format!("/requests/{id}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("Activity under this access"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("SELECT count(*) FROM ports"),
        "{}",
        page.body
    );
    assert!(page.body.contains("activity-check"), "{}", page.body);
    assert!(
        page.body.contains("Audit chain: <strong>verified"),
        "{}",
        page.body
    );
    assert!(page.body.contains("ok SELECT 1"), "{}", page.body);
    assert_eq!(audit_reads(&stack, id).await.len(), before + 1);

    // The approver sees it too; that read is its own event, by dana.
    let seen = dana.get(&format!("/requests/{id}")).await;
    assert!(seen.body.contains("activity-check"), "{}", seen.body);
    let reads = audit_reads(&stack, id).await;
    assert_eq!(reads.len(), before + 2, "{reads:?}");
    let last = reads.last().unwrap();
    assert_eq!(last["what"], "activity");
    assert_eq!(last["statements"], 2);
    assert_eq!(last["verification"], "no_head");
    let actor: String = stack
        .control()
        .await
        .query_one(
            "SELECT actor FROM events WHERE request_id = $1 AND kind = 'audit.read' \
             ORDER BY id DESC LIMIT 1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(actor, "dana@example.com");

    // A statement's place in the chain: the record, its hash, prev hash, neighbours and
    // the command that checks it.
    let link = first_record_link(&page.body, id);
    let record = alice.get(&link).await;
    assert_eq!(record.status, 200, "{}", record.body);
    assert!(record.body.contains("Prev hash"), "{}", record.body);
    assert!(record.body.contains("Neighbours"), "{}", record.body);
    assert!(
        record.body.contains("proxy audit session "),
        "{}",
        record.body
    );
    assert!(record.body.contains("FROM ports"), "{}", record.body);
    let reads = audit_reads(&stack, id).await;
    assert_eq!(reads.len(), before + 3, "{reads:?}");
    assert_eq!(reads.last().unwrap()["what"], "record");

    // bob is neither requester, nor approver, nor in the group: nothing, and the same 404
    // whether the record exists or not.
    let bob = stack.browser();
    bob.sign_in("bob@example.com").await;
    let page = bob.get(&format!("/requests/{id}")).await;
    assert_eq!(page.status, 404);
    assert!(!page.body.contains("Activity under this access"));
    let real = bob.get(&link).await;
    let made_up = bob
        .get(&format!(
            "/requests/{id}/activity/audit-0-none.jsonl/999999"
        ))
        .await;
    assert_eq!(real.status, 404);
    assert_eq!(made_up.status, 404);
    assert_eq!(real.body, made_up.body);
    assert!(!real.body.contains("FROM ports"));
    assert_eq!(
        audit_reads(&stack, id).await.len(),
        before + 3,
        "bob read nothing"
    );
    stack.stop().await;
}

#[tokio::test]
async fn an_altered_audit_record_makes_the_page_say_tampered() {
    let stack = Stack::with(Options {
        proxy: true,
        ..Options::default()
    })
    .await;
    let (id, alice, _dana) = approved_and_used(&stack, &["SELECT 'before-the-edit'"]).await;
    let page = alice.get(&format!("/requests/{id}")).await;
    assert!(
        page.body.contains("Audit chain: <strong>verified"),
        "{}",
        page.body
    );

    // Someone edits the statement's text in the file, leaving its hash as it was.
    let proxy = stack.proxy.as_ref().unwrap();
    proxy.records();
    let dir = stack.dir.path().join("audit");
    let mut edited = false;
    for file in proxy::audit::source::audit_files(&dir).unwrap() {
        let text = std::fs::read_to_string(&file).unwrap();
        if text.contains("before-the-edit") {
            std::fs::write(&file, text.replace("before-the-edit", "something-else!")).unwrap();
            edited = true;
        }
    }
    assert!(edited, "the statement is in the audit");

    let page = alice.get(&format!("/requests/{id}")).await;
    assert!(page.body.contains("TAMPERED"), "{}", page.body);
    assert!(page.body.contains("was altered"), "{}", page.body);
    assert!(
        !page.body.contains("Audit chain: <strong>verified"),
        "{}",
        page.body
    );
    let reads = audit_reads(&stack, id).await;
    assert_eq!(
        reads.last().unwrap()["verification"],
        "tampered",
        "{reads:?}"
    );
    stack.stop().await;
}

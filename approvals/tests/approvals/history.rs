//! The history cannot be forged from the app's own database login (issue 17, item 6): the
//! database sets event ids and times and seals each event into a hash chain; decisions get
//! their id and time from the database too. A row changed afterwards (by someone who can get
//! past the triggers: a superuser) is found by `approvals events verify`, here through the
//! binary as an operator runs it.

use std::process::Command;

use approvals::history::{self, Head};
use reqwest::Method;
use serde_json::{json, Value};

use crate::api::call;
use crate::common::Stack;

/// `approvals events ARGS` against the stack's control plane, as the app's login.
fn events_command(stack: &Stack, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_approvals"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APPROVALS_CONTROL__PORT", stack.cluster.port().to_string())
        .env("APPROVALS_CONTROL__CA_FILE", stack.cluster.ca_cert())
        .env("APPROVALS_SECRETS__DIR", stack.dir.path().join("secrets"))
        .arg("events")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("{stdout} {stderr}"));
    (out.status.code().unwrap_or(-1), json, stderr)
}

/// `approvals events export`, checked as an auditor would, without the database: the head
/// the exported chain ends at, or the first problem.
fn exported_chain(stack: &Stack, expect: Option<&Head>) -> anyhow::Result<Option<Head>> {
    let out = Command::new(env!("CARGO_BIN_EXE_approvals"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APPROVALS_CONTROL__PORT", stack.cluster.port().to_string())
        .env("APPROVALS_CONTROL__CA_FILE", stack.cluster.ca_cert())
        .env("APPROVALS_SECRETS__DIR", stack.dir.path().join("secrets"))
        .args(["events", "export"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut chain = grants::history::Chain::default();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let event: grants::history::Exported = serde_json::from_str(line).unwrap();
        chain.push(&event, expect)?;
    }
    Ok(chain.finish(expect)?.head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_login_cannot_forge_the_history_and_changes_are_found() {
    let stack = Stack::start().await;
    let alice = stack.api_token("alice@example.com");
    let new = json!({"database": "rates", "level": "read-only",
                     "justification": "incident 9", "duration_secs": 3600});
    let (status, body) = call(
        &stack,
        Method::POST,
        "/api/v1/requests",
        Some(&alice),
        Some(new),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let request: i64 = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_i64()
        .unwrap();

    // The attacker holds the app's own database login.
    let app = stack.as_app("dbgw").await;
    let last: i64 = app
        .query_one("SELECT max(id) FROM events", &[])
        .await
        .unwrap()
        .get(0);

    // A back-dated event with an id of its choosing: the database gives it the next id and
    // the present time, and seals it like any other.
    let row = app
        .query_one(
            "INSERT INTO events (id, at, request_id, actor, kind, data) OVERRIDING SYSTEM VALUE \
             VALUES (1000, '2020-01-01T00:00:00Z', $1, 'sam@example.com', 'decision.approve', \
             '{\"comment\": \"ok\"}') RETURNING id, at < now() - interval '1 minute'",
            &[&request],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), last + 1, "the chosen id was kept");
    assert!(!row.get::<_, bool>(1), "the back-dated time was kept");
    // It cannot write the hash columns either: the seal overwrites them.
    let row = app
        .query_one(
            "INSERT INTO events (actor, kind, prev_hash, hash) VALUES ('system', 'x', '\\x00', '\\x00') \
             RETURNING length(hash), length(prev_hash)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i32>(0), row.get::<_, i32>(1)), (32, 32));
    // Nor touch the chain's head.
    let err = app
        .execute("UPDATE events_chain_head SET last_id = 1", &[])
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );

    // A decision with a chosen id is refused; a back-dated one gets the database's time.
    let err = app
        .execute(
            "INSERT INTO decisions (id, request_id, approver, decision, decided_at) \
             OVERRIDING SYSTEM VALUE VALUES (500, $1, 'sam@example.com', 'approve', '2020-01-01')",
            &[&request],
        )
        .await
        .unwrap_err();
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("OVERRIDING SYSTEM VALUE refused"),
        "{err:?}"
    );
    let back_dated: bool = app
        .query_one(
            "INSERT INTO decisions (request_id, approver, decision, decided_at) \
             VALUES ($1, 'sam@example.com', 'approve', '2020-01-01') \
             RETURNING decided_at < now() - interval '1 minute'",
            &[&request],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!back_dated, "the back-dated decision time was kept");
    for sql in [
        "UPDATE decisions SET comment = 'x'",
        "DELETE FROM decisions",
    ] {
        assert!(app.execute(sql, &[]).await.is_err(), "{sql}");
    }

    // The chain holds, here and through the binary; its head is exported.
    let verified = history::verify(&app, None).await.unwrap();
    let head = verified.head.clone().unwrap();
    assert_eq!(head.id, last + 2);
    assert_eq!(history::head(&app).await.unwrap(), Some(head.clone()));
    let (code, out, _) = events_command(&stack, &["head"]);
    assert_eq!(
        (code, out["head"].as_str()),
        (0, Some(head.to_string().as_str()))
    );
    let (code, out, err) = events_command(&stack, &["verify", "--head", &head.to_string()]);
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(out["events"], verified.events);
    // The export verifies on its own, to the same head.
    assert_eq!(
        exported_chain(&stack, Some(&head)).unwrap(),
        Some(head.clone())
    );

    // Someone past the triggers (a superuser) changes who did something in an old event:
    // verification fails and names it.
    let superuser = stack.control().await;
    superuser
        .batch_execute(
            "SET session_replication_role = replica; \
             UPDATE events SET actor = 'mallory@example.com' WHERE id = 1; \
             SET session_replication_role = origin;",
        )
        .await
        .unwrap();
    let broken = history::verify(&app, None).await.unwrap_err().to_string();
    assert!(broken.contains("event 1:"), "{broken}");
    let (code, out, err) = events_command(&stack, &["verify", "--head", &head.to_string()]);
    assert_eq!(code, 1, "{out}");
    assert!(out["error"].as_str().unwrap().contains("event 1:"), "{out}");
    assert!(err.contains("does not verify"), "{err}");
    let exported = exported_chain(&stack, None).unwrap_err().to_string();
    assert!(exported.contains("event 1:"), "{exported}");

    // Rewritten with fresh hashes all along, the chain holds again, but not the head
    // exported before.
    superuser
        .batch_execute(
            "SET session_replication_role = replica; \
             DO $$ DECLARE r record; prev bytea := '\\x0000000000000000000000000000000000000000000000000000000000000000'; \
             BEGIN FOR r IN SELECT * FROM events ORDER BY id LOOP \
               UPDATE events SET prev_hash = prev, hash = events_hash(prev, r.id, r.at, r.request_id, \
                 r.grant_id, r.actor, r.kind, r.data) WHERE id = r.id RETURNING hash INTO prev; \
             END LOOP; END $$; \
             SET session_replication_role = origin;",
        )
        .await
        .unwrap();
    history::verify(&app, None).await.unwrap();
    let rewritten = history::verify(&app, Some(&head))
        .await
        .unwrap_err()
        .to_string();
    assert!(rewritten.contains("rewritten"), "{rewritten}");

    // A head of a longer history (events cut off the end) is not in it either.
    let cut = Head {
        id: head.id + 5,
        hash: head.hash,
    };
    let (code, out, _) = events_command(&stack, &["verify", "--head", &cut.to_string()]);
    assert_eq!(code, 1, "{out}");
    stack.stop().await;
}

/// An existing history (written before the chain) is sealed once by the migration, in id
/// order, and new events chain on after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migration_seals_a_history_written_before_it() {
    let stack = Stack::start().await;
    let superuser = stack.control().await;
    // As before the migration: rows without hashes, ids with a gap, no chain head.
    superuser
        .batch_execute(
            "SET session_replication_role = replica; \
             INSERT INTO events (id, at, actor, kind, data) OVERRIDING SYSTEM VALUE VALUES \
               (1, now() - interval '2 days', 'system', 'old.one', '{\"a\": 1}'), \
               (2, now() - interval '1 day', 'dana@example.com', 'old.two', '{}'), \
               (5, now() - interval '1 hour', 'system', 'old.three', '{\"b\": [1, 2]}'); \
             DELETE FROM events_chain_head; \
             SET session_replication_role = origin;",
        )
        .await
        .unwrap();
    let (_, migration) = dbgw_db::schema::CONTROL_MIGRATIONS
        .iter()
        .find(|(name, _)| *name == "0005_approvals_history_sealed")
        .unwrap();
    superuser.batch_execute(migration).await.unwrap();
    // Run again (every start does): nothing changes.
    superuser.batch_execute(migration).await.unwrap();

    let app = stack.as_app("dbgw").await;
    let sealed = history::verify(&app, None).await.unwrap();
    assert_eq!(sealed.events, 3);
    assert_eq!(sealed.head.as_ref().unwrap().id, 5);
    let id: i64 = app
        .query_one(
            "INSERT INTO events (actor, kind) VALUES ('system', 'new') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(id, 6);
    let after = history::verify(&app, sealed.head.as_ref()).await.unwrap();
    assert_eq!(after.events, 4);
    stack.stop().await;
}

//! A client with a valid login tries to run SQL the audit log does not hold. Each test
//! speaks the protocol with raw frontend messages (no driver tidies the sequence), checks
//! through a separate admin connection what the server actually did, and that the text and
//! parameters that did it are in a record written before it ran (the record's timestamp
//! precedes the row the statement left behind) and attributed to that execution.

use crate::common;

use crate::common::wire::*;
use crate::common::{query_msg, sqlstate, RawClient, Stack};
use chrono::{DateTime, Utc};
use proxy::settings::Plaintext;
use serde_json::Value;

async fn stack() -> Stack {
    let stack = Stack::with(common::Options {
        plaintext: Plaintext::Loopback,
        ..common::Options::default()
    })
    .await;
    // Every row says when it was written, by the server's clock.
    let admin = stack.cluster.connect("rates").await.unwrap();
    admin
        .batch_execute(
            "ALTER TABLE notes ADD COLUMN at timestamptz NOT NULL DEFAULT clock_timestamp()",
        )
        .await
        .unwrap();
    stack
}

/// When the server wrote the notes row with `body`, if it did.
async fn written(stack: &Stack, body: &str) -> Vec<DateTime<Utc>> {
    let admin = stack.cluster.connect("rates").await.unwrap();
    admin
        .query("SELECT at FROM notes WHERE body = $1 ORDER BY id", &[&body])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The statement record of `application` whose text contains `needle`, and its outcomes.
fn record_with(stack: &Stack, application: &str, needle: &str) -> (Value, Vec<Value>) {
    let records = stack.records();
    let sessions: Vec<Value> = records
        .iter()
        .filter(|r| r["type"] == "auth" && r["application"] == application)
        .map(|r| r["session"].clone())
        .collect();
    let found: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["type"] == "statement"
                && sessions.contains(&r["session"])
                && r["statement"].as_str().is_some_and(|t| t.contains(needle))
        })
        .collect();
    assert_eq!(found.len(), 1, "one record holds {needle:?}: {found:#?}");
    let outcomes = records
        .iter()
        .filter(|o| o["type"] == "outcome" && o["ref"] == found[0]["seq"])
        .cloned()
        .collect();
    (found[0].clone(), outcomes)
}

fn ts(record: &Value) -> DateTime<Utc> {
    record["ts"].as_str().unwrap().parse().unwrap()
}

/// `record` was accepted before the server wrote a row at `at`.
fn before(record: &Value, at: DateTime<Utc>) {
    assert!(
        ts(record) < at,
        "record {} is not older than the row it caused ({at})",
        record["ts"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carriage_return_ends_a_comment_and_the_statement_after_it_is_recorded() {
    let stack = stack().await;
    let mut c = RawClient::login(stack.addr, &stack.writer, "cr").await;
    let text = "SELECT 'x'; -- c\rINSERT INTO notes (body) VALUES ('cr-evil')";
    exchange(
        &mut c,
        &[query_msg(text)],
        1,
        &[],
        &["SELECT 1", "INSERT 0 1"],
    )
    .await;

    let rows = written(&stack, "cr-evil").await;
    assert_eq!(rows.len(), 1, "the server ran the INSERT");
    let (record, outcomes) = record_with(&stack, "cr", "cr-evil");
    assert_eq!(record["statement"], text, "the whole query string, as sent");
    assert_eq!(
        record["statements"][1],
        "INSERT INTO notes (body) VALUES ('cr-evil')"
    );
    before(&record, rows[0]);
    let insert = outcomes.iter().find(|o| o["index"] == 1).unwrap();
    assert_eq!(
        (insert["status"].as_str(), insert["tag"].as_str()),
        (Some("ok"), Some("INSERT 0 1"))
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_portal_does_not_let_a_rejected_parse_rename_what_runs() {
    let stack = stack().await;
    let mut c = RawClient::login(stack.addr, &stack.writer, "close-portal").await;
    // The portal's CloseComplete must pair with the Close, not with the second Parse of
    // "s1", which the server rejects (42P05: the name is taken): "s1" still means 'one'.
    let first = [
        parse("s1", "INSERT INTO notes (body) VALUES ('one')"),
        bind_portal("p1", "s1"),
        close(b'P', "p1"),
        parse("s1", "INSERT INTO notes (body) VALUES ('two')"),
        sync(),
        bind_portal("", "s1"),
        execute(),
        sync(),
    ];
    c.send(&first.concat()).await.unwrap();
    let (errors, tags) = answers(&mut c, 2).await;
    assert_eq!(errors, ["42P05"]);
    assert_eq!(tags, ["INSERT 0 1"]);

    assert!(written(&stack, "two").await.is_empty());
    let rows = written(&stack, "one").await;
    assert_eq!(rows.len(), 1);
    let executions = common::executions(&stack.records(), "close-portal");
    assert_eq!(executions.len(), 1, "{executions:#?}");
    let (record, outcome) = &executions[0];
    assert_eq!(
        record["statement"],
        "INSERT INTO notes (body) VALUES ('one')"
    );
    assert_eq!(outcome.as_ref().unwrap()["tag"], "INSERT 0 1");
    before(record, rows[0]);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_data_the_server_rejects_with_syncs_and_a_parse_behind_it_in_one_write() {
    let stack = stack().await;
    let mut c = RawClient::login(stack.addr, &stack.writer, "copy-bad").await;
    let write = [
        query_msg("COPY notes (n) FROM STDIN"),
        msg(b'd', b"not a number\n"),
        sync(),
        msg(b'c', &[]),
        sync(),
        parse("", "INSERT INTO notes (body) VALUES ('after-copy')"),
        bind(""),
        execute(),
        sync(),
    ];
    c.send(&write.concat()).await.unwrap();
    // The COPY fails (22P02) and its Query ends; the Sync after CopyDone is answered; then
    // the pipeline runs. The Sync inside the copy data is not (PostgreSQL ignores it).
    let (errors, tags) = answers(&mut c, 3).await;
    assert_eq!(errors, ["22P02"]);
    assert_eq!(tags, ["INSERT 0 1"]);

    let rows = written(&stack, "after-copy").await;
    assert_eq!(rows.len(), 1);
    let (copy, copy_outcomes) = record_with(&stack, "copy-bad", "COPY notes");
    assert_eq!(copy_outcomes[0]["sqlstate"], "22P02");
    let (insert, insert_outcomes) = record_with(&stack, "copy-bad", "after-copy");
    assert!(insert["seq"].as_u64() > copy["seq"].as_u64());
    assert_eq!(insert_outcomes.len(), 1);
    assert_eq!(insert_outcomes[0]["tag"], "INSERT 0 1");
    before(&insert, rows[0]);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_without_execute_runs_code_and_leaves_a_record() {
    let stack = stack().await;
    let admin = stack.cluster.connect("rates").await.unwrap();
    // A domain whose CHECK writes a row: converting a Bind's parameter runs it.
    admin
        .batch_execute(
            "CREATE TABLE bind_log (v text, at timestamptz DEFAULT clock_timestamp());
             CREATE FUNCTION log_check(v text) RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER
                 AS $$ BEGIN INSERT INTO bind_log (v) VALUES (v); RETURN true; END $$;
             CREATE DOMAIN checked AS text CHECK (log_check(VALUE));",
        )
        .await
        .unwrap();
    let oid: u32 = admin
        .query_one("SELECT 'checked'::regtype::oid", &[])
        .await
        .unwrap()
        .get(0);
    let mut c = RawClient::login(stack.addr, &stack.writer, "bind-only").await;
    let write = [
        parse_typed("", "SELECT $1", &[oid]),
        bind_text("", "", &["bound-but-never-executed"]),
        sync(),
    ];
    c.send(&write.concat()).await.unwrap();
    let (errors, tags) = answers(&mut c, 1).await;
    assert!(errors.is_empty() && tags.is_empty(), "{errors:?} {tags:?}");

    let logged: Vec<DateTime<Utc>> = admin
        .query(
            "SELECT at FROM bind_log WHERE v = 'bound-but-never-executed'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(logged.len(), 1, "the Bind ran the domain's check");
    let (record, outcomes) = record_with(&stack, "bind-only", "SELECT $1");
    assert_eq!(record["steps"], serde_json::json!(["parse", "bind"]));
    assert_eq!(
        record["params"],
        serde_json::json!(["bound-but-never-executed"])
    );
    assert_eq!(outcomes[0]["tag"], "BIND");
    before(&record, logged[0]);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backslash_escapes_cannot_be_switched_on_to_hide_a_statement() {
    let stack = stack().await;
    // At login, in any spelling.
    for options in [
        "-c standard_conforming_strings=off",
        "--standard-conforming-strings=off",
    ] {
        let refused = RawClient::login_refused(
            stack.addr,
            &[
                ("user", &stack.writer.username),
                ("database", "rates"),
                ("options", options),
            ],
        )
        .await;
        assert_eq!(refused, "0A000", "{options}");
    }
    let mut c = RawClient::login(stack.addr, &stack.writer, "scs").await;
    // By statement: refused, and the session goes on.
    exchange(
        &mut c,
        &[query_msg("SET standard_conforming_strings = off")],
        1,
        &["0A000"],
        &[],
    )
    .await;
    // So a backslash before a quote is just a character: the INSERT is a statement of its
    // own, and the record shows it as one.
    let text = "SELECT 'a\\'; INSERT INTO notes (body) VALUES ('scs-plain'); --'";
    exchange(
        &mut c,
        &[query_msg(text)],
        1,
        &[],
        &["SELECT 1", "INSERT 0 1"],
    )
    .await;
    let rows = written(&stack, "scs-plain").await;
    assert_eq!(rows.len(), 1);
    let (record, _) = record_with(&stack, "scs", "scs-plain");
    assert_eq!(
        record["statements"][1],
        "INSERT INTO notes (body) VALUES ('scs-plain')"
    );
    before(&record, rows[0]);

    // Hidden in a function: the server reports the change and the session ends before the
    // query behind it is forwarded.
    let admin = stack.cluster.connect("rates").await.unwrap();
    admin
        .batch_execute(
            "CREATE FUNCTION escapes_on() RETURNS text LANGUAGE sql
                 AS $$ SELECT set_config('standard_conforming_strings', 'off', false) $$",
        )
        .await
        .unwrap();
    let hidden = "SELECT 'b\\'; INSERT INTO notes (body) VALUES ('scs-hidden'); --'";
    c.send(&[query_msg("SELECT escapes_on()"), query_msg(hidden)].concat())
        .await
        .unwrap();
    let mut errors = Vec::new();
    while let Some((tag, body)) = c.recv().await {
        if tag == b'E' {
            errors.push(sqlstate(&body));
        }
    }
    assert_eq!(errors, ["08P01"], "the session ends");
    assert!(written(&stack, "scs-hidden").await.is_empty());
    stack.sessions_ended().await;
    let records = stack.records();
    let end = records
        .iter()
        .find(|r| r["type"] == "disconnect" && r["application"] == "scs")
        .unwrap();
    assert!(
        end["reason"]
            .as_str()
            .unwrap()
            .contains("standard_conforming_strings"),
        "{end}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vertical_tabs_around_password_do_not_leak_it() {
    let stack = stack().await;
    let mut c = RawClient::login(stack.addr, &stack.writer, "vt").await;
    let me = &stack.writer.username;
    for (i, text) in [
        format!("ALTER\x0bROLE {me}\x0bPASSWORD\x0b'vt-secret-1'"),
        format!("ALTER ROLE {me} PASSWORD\x0b'vt-secret-2'"),
        format!("ALTER ROLE {me} PASSWORD 'vt-' \n 'secret-3'"),
        format!("ALTER ROLE {me} PASSWORD E'vt-\\x73ecret-4'"),
    ]
    .iter()
    .enumerate()
    {
        c.send(&query_msg(text)).await.unwrap();
        let (errors, tags) = answers(&mut c, 1).await;
        // PostgreSQL 15 does not read \v as a space (16 does): those are syntax errors here.
        eprintln!("{i}: {errors:?} {tags:?}");
    }
    // Whatever the server made of them, no part of a secret reached the log.
    for file in proxy::audit::source::audit_files(&stack.audit_dir()).unwrap() {
        let text = std::fs::read_to_string(file).unwrap();
        for part in ["vt-secret", "secret-3", "x73ecret"] {
            assert!(
                !text.contains(part),
                "a password reached the audit log: {part}"
            );
        }
    }
    let records = stack.records();
    let redacted = records
        .iter()
        .filter(|r| r["type"] == "statement" && r["redacted"] == true)
        .count();
    assert_eq!(redacted, 4);
    // Put the password back for the stack's own logins.
    let admin = stack.cluster.connect("rates").await.unwrap();
    proxy_test_restore(&admin, &stack).await;
    stack.stop().await;
}

async fn proxy_test_restore(admin: &tokio_postgres::Client, stack: &Stack) {
    use secrecy::ExposeSecret;
    pg_connect::set_password(
        admin,
        &stack.writer.username,
        stack.writer.password.expose_secret(),
    )
    .await
    .unwrap();
}

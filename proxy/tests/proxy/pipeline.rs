//! Protocol corners where the proxy's idea of what runs could drift from the server's:
//! rejected or skipped Parses, statements redefined after DEALLOCATE, Syncs the server
//! ignores during COPY, and FunctionCalls in a pipeline. Driven message by message with a
//! raw client, against the real server; each test checks that the audit record of what ran
//! carries the text the server ran.

use crate::common;

use crate::common::wire::*;
use crate::common::{executions, query_msg, sqlstate, RawClient, Stack};
use proxy::settings::Plaintext;
use serde_json::Value;

async fn stack() -> Stack {
    Stack::with(common::Options {
        plaintext: Plaintext::Loopback,
        ..common::Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_or_skipped_parse_does_not_change_the_audited_text() {
    let stack = stack().await;
    let mut c = RawClient::login(stack.addr, &stack.app, "parse-fail").await;
    // One write, three segments. The second Parse of the unnamed statement is skipped by
    // the server after the first one fails, so the last Execute runs 'kept', not 'skipped'.
    let run = [bind(""), execute(), sync()].concat();
    exchange(
        &mut c,
        &[
            parse("", "SELECT 'kept'"),
            sync(),
            parse("x", "SELEC"),
            parse("", "SELECT 'skipped'"),
            sync(),
            run.clone(),
        ],
        3,
        &["42601"],
        &["SELECT 1"],
    )
    .await;

    // A named statement cannot be redefined (42P05): the first definition still runs.
    let run_s1 = [bind("s1"), execute(), sync()].concat();
    let parts = [
        parse("s1", "SELECT 'one'"),
        sync(),
        parse("s1", "SELECT 'two'"),
        sync(),
        run_s1,
    ];
    exchange(&mut c, &parts, 3, &["42P05"], &["SELECT 1"]).await;

    // After DEALLOCATE in SQL the name is free again: the new definition runs.
    exchange(&mut c, &[parse("s2", "SELECT 'a'"), sync()], 1, &[], &[]).await;
    exchange(
        &mut c,
        &[query_msg("DEALLOCATE s2")],
        1,
        &[],
        &["DEALLOCATE"],
    )
    .await;
    let parts = [parse("s2", "SELECT 'b'"), bind("s2"), execute(), sync()];
    exchange(&mut c, &parts, 1, &[], &["SELECT 1"]).await;

    // An error from a message the proxy does not follow (Describe of a missing statement)
    // makes the server skip the Parse after it: the unnamed statement stays 'first'.
    let mut describe = vec![b'S'];
    cstr(&mut describe, "nosuch");
    let parts = [
        parse("", "SELECT 'first'"),
        sync(),
        msg(b'D', &describe),
        parse("", "SELECT 'second'"),
        sync(),
        run.clone(),
    ];
    exchange(&mut c, &parts, 3, &["26000"], &["SELECT 1"]).await;

    // Redefined twice in one segment after DEALLOCATE: the last definition runs.
    exchange(&mut c, &[parse("s3", "SELECT 'x1'"), sync()], 1, &[], &[]).await;
    exchange(
        &mut c,
        &[query_msg("DEALLOCATE s3")],
        1,
        &[],
        &["DEALLOCATE"],
    )
    .await;
    let mut close = vec![b'S'];
    cstr(&mut close, "s3");
    let parts = [
        parse("s3", "SELECT 'x2'"),
        msg(b'C', &close),
        parse("s3", "SELECT 'x3'"),
        bind("s3"),
        execute(),
        sync(),
    ];
    exchange(&mut c, &parts, 1, &[], &["SELECT 1"]).await;

    // An error answered before its Sync (the client sent Flush) leaves the server skipping
    // to the next Sync: the redefinition after it is skipped, and nothing waits for it.
    exchange(&mut c, &[parse("s4", "SELECT 'y1'"), sync()], 1, &[], &[]).await;
    c.send(&[parse("", "SELEC"), msg(b'H', &[])].concat())
        .await
        .unwrap();
    assert_eq!(sqlstate(&c.until(b'E').await.unwrap()), "42601");
    let run_s4 = [bind("s4"), execute(), sync()].concat();
    let parts = [parse("s4", "SELECT 'y2'"), run_s4.clone(), run_s4];
    exchange(&mut c, &parts, 2, &[], &["SELECT 1"]).await;

    let ran = ran(&stack, "parse-fail");
    let texts: Vec<(&str, &str)> = ran
        .iter()
        .map(|(t, status, _)| (t.as_str(), status.as_str()))
        .collect();
    assert_eq!(
        texts,
        [
            ("SELECT 'kept'", "ok"),
            ("SELECT 'one'", "ok"),
            ("DEALLOCATE s2", "ok"),
            ("SELECT 'b'", "ok"),
            ("SELECT 'first'", "ok"),
            ("DEALLOCATE s3", "ok"),
            ("SELECT 'x3'", "ok"),
            ("SELECT 'y2'", "not_executed"),
            ("SELECT 'y1'", "ok"),
        ]
    );
    common::assert_chain_verifies(&stack.audit_dir());
    drop(c);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_sent_during_copy_in_do_not_shift_later_outcomes() {
    let stack = stack().await;
    let mut c = RawClient::login(stack.addr, &stack.writer, "copy-sync").await;

    // libpq's PQexecParams("COPY ... FROM STDIN") sends a Sync right after Execute, which
    // the server ignores while it copies, and another one after CopyDone.
    let mut start = Vec::new();
    start.extend(parse("", "COPY notes (n) FROM STDIN"));
    start.extend(bind(""));
    start.extend(execute());
    start.extend(sync());
    c.send(&start).await.unwrap();
    c.until(b'G').await.expect("CopyInResponse");
    let mut rest = msg(b'd', b"1\n2\n");
    rest.extend(msg(b'c', &[]));
    rest.extend(sync());
    c.send(&rest).await.unwrap();
    let (errors, tags) = answers(&mut c, 1).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(tags, ["COPY 2"]);

    for sql in [
        "SELECT count(*) FROM notes WHERE n IN (1, 2)",
        "SELECT 1, 2",
    ] {
        let mut q = Vec::new();
        q.extend(parse("", sql));
        q.extend(bind(""));
        q.extend(execute());
        q.extend(sync());
        c.send(&q).await.unwrap();
        let (errors, tags) = answers(&mut c, 1).await;
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(tags, ["SELECT 1"]);
    }

    let ran = ran(&stack, "copy-sync");
    let outcomes: Vec<(&str, &str)> = ran
        .iter()
        .map(|(t, _, tag)| (t.as_str(), tag.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("COPY notes (n) FROM STDIN", "COPY 2"),
            ("SELECT count(*) FROM notes WHERE n IN (1, 2)", "SELECT 1"),
            ("SELECT 1, 2", "SELECT 1"),
        ]
    );
    drop(c);
    stack.stop().await;
}

/// Sends `first`, then (after a pause, when `pause`) a FunctionCall and a query; returns
/// the SQLSTATEs of the errors until the proxy closes the session.
async fn function_call_after(stack: &Stack, application: &str, first: Vec<u8>) -> Vec<String> {
    let mut c = RawClient::login(stack.addr, &stack.app, application).await;
    let mut all = first;
    all.extend(msg(b'F', &[0, 0, 4, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0]));
    all.extend(query_msg("SELECT 'after'"));
    all.extend(msg(b'X', &[]));
    c.send(&all).await.unwrap();
    let mut errors = Vec::new();
    while let Some((tag, body)) = c.recv().await {
        if tag == b'E' {
            errors.push(sqlstate(&body));
        }
    }
    errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_call_behind_unanswered_work_is_refused_in_its_turn_or_closes_the_session() {
    let stack = stack().await;
    // Behind an unanswered pipeline, its refusal would have to wait for the answers before
    // it: the proxy closes the session instead (a flood of them cannot queue up refusals).
    let mut pipeline = parse("", "SELECT pg_sleep(0.5)");
    pipeline.extend(bind(""));
    pipeline.extend(execute());
    let errors = function_call_after(&stack, "fcall-pipeline", pipeline).await;
    assert_eq!(errors, ["0A000"], "one FATAL refusal, then the end");
    let refused = ran(&stack, "fcall-pipeline");
    assert_eq!(refused.len(), 1, "the pipeline is recorded: {refused:?}");
    assert_eq!(refused[0].1, "not_executed", "and was never forwarded");

    // Behind a Query it waits (a Query may start COPY, so nothing but copy data passes it
    // until it is answered), then is refused alone; the session goes on.
    let errors =
        function_call_after(&stack, "fcall-query", query_msg("SELECT pg_sleep(0.5)")).await;
    assert_eq!(errors, ["0A000"], "the refusal, as an ERROR");
    let ran = ran(&stack, "fcall-query");
    let texts: Vec<&str> = ran.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(texts, ["SELECT pg_sleep(0.5)", "SELECT 'after'"]);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_name_used_again_after_its_execution_ended_is_a_new_execution() {
    let stack = stack().await;
    let mut c = RawClient::login(stack.addr, &stack.app, "portal-again").await;
    // Portal "c" fetched in two parts (one record), then completed.
    let mut q = Vec::new();
    q.extend(parse("", "SELECT generate_series(1, 3)"));
    q.extend(bind_portal("c", ""));
    q.extend(execute_portal("c", 2));
    q.extend(execute_portal("c", 0));
    q.extend(sync());
    c.send(&q).await.unwrap();
    let (errors, tags) = answers(&mut c, 1).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(tags, ["SELECT 1"]);
    // The transaction ended with the Sync, and portal "c" with it. A cursor of the same
    // name, fetched through the protocol, is another execution.
    c.send(&query_msg(
        "BEGIN; DECLARE c CURSOR FOR SELECT 'cursor row'",
    ))
    .await
    .unwrap();
    answers(&mut c, 1).await;
    let mut q = execute_portal("c", 0);
    q.extend(sync());
    c.send(&q).await.unwrap();
    let (errors, tags) = answers(&mut c, 1).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(tags, ["SELECT 1"]);
    c.send(&query_msg("COMMIT")).await.unwrap();
    answers(&mut c, 1).await;

    stack.flush();
    let runs = executions(&stack.records(), "portal-again");
    let summary: Vec<(String, String, Option<u64>)> = runs
        .iter()
        .map(|(s, o)| {
            let o = o.clone().unwrap_or(Value::Null);
            (
                format!(
                    "{}|{}",
                    s["portal"].as_str().unwrap_or("-"),
                    s["statement"].as_str().unwrap_or("")
                ),
                o["tag"].as_str().unwrap_or("").to_string(),
                o["rows"].as_u64(),
            )
        })
        .collect();
    let expect = |p: &str, t: &str, rows: Option<u64>| (p.to_string(), t.to_string(), rows);
    assert_eq!(
        summary,
        [
            expect("c|SELECT generate_series(1, 3)", "SELECT 1", Some(3)),
            expect("-|BEGIN", "BEGIN", None),
            expect(
                "-|DECLARE c CURSOR FOR SELECT 'cursor row'",
                "DECLARE CURSOR",
                None
            ),
            expect("c|", "SELECT 1", Some(1)),
            expect("-|COMMIT", "COMMIT", None),
        ]
    );
    drop(c);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_execution_skipped_after_an_error_keeps_its_rows() {
    let stack = stack().await;
    let mut c = RawClient::login(stack.addr, &stack.app, "suspended-skip").await;
    c.send(&query_msg("BEGIN")).await.unwrap();
    answers(&mut c, 1).await;
    let mut q = Vec::new();
    q.extend(parse("sp", "SELECT generate_series(1, 3)"));
    q.extend(bind_portal("p", "sp"));
    q.extend(execute_portal("p", 2));
    q.extend(sync());
    c.send(&q).await.unwrap();
    answers(&mut c, 1).await;
    // The division fails; the server skips the fetch of "p" that follows it.
    let mut q = Vec::new();
    q.extend(parse("", "SELECT 1/0"));
    q.extend(bind(""));
    q.extend(execute());
    q.extend(execute_portal("p", 0));
    q.extend(sync());
    c.send(&q).await.unwrap();
    let (errors, _) = answers(&mut c, 1).await;
    assert_eq!(errors, ["22012"]);
    c.send(&query_msg("ROLLBACK")).await.unwrap();
    answers(&mut c, 1).await;

    stack.flush();
    let runs = executions(&stack.records(), "suspended-skip");
    let summary: Vec<(String, String, String, Option<u64>)> = runs
        .iter()
        .map(|(s, o)| {
            let o = o.clone().unwrap_or(Value::Null);
            let text = |v: &Value| v.as_str().unwrap_or("").to_string();
            (
                text(&s["statement"]),
                text(&o["status"]),
                text(&o["tag"]).to_string() + &text(&o["sqlstate"]),
                o["rows"].as_u64(),
            )
        })
        .collect();
    let row = |t: &str, status: &str, tag: &str, rows: Option<u64>| {
        (t.to_string(), status.to_string(), tag.to_string(), rows)
    };
    assert_eq!(
        summary,
        [
            row("BEGIN", "ok", "BEGIN", None),
            row(
                "SELECT generate_series(1, 3)",
                "ok",
                "PORTAL CLOSED",
                Some(2)
            ),
            row("SELECT 1/0", "error", "22012", None),
            row("ROLLBACK", "ok", "ROLLBACK", None),
        ]
    );
    drop(c);
    stack.stop().await;
}

/// A simple Query inside an unsynced extended-protocol segment, as asyncpg sends it: the
/// server runs it and drops the unnamed statement (postgres.c, `exec_simple_query`); after
/// an error in the segment it ignores the Query without a word until the Sync. The proxy
/// forwards both and records what the server did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_inside_an_unsynced_segment_runs_or_is_skipped_as_the_server_does() {
    let stack = stack().await;
    let mut c = RawClient::login(stack.addr, &stack.app, "query-in-segment").await;
    // Parse + Describe + Flush: answered at once, no ReadyForQuery.
    let mut describe = vec![b'S'];
    cstr(&mut describe, "s1");
    c.send(
        &[
            parse("", "SELECT 'unnamed'"),
            parse("s1", "SELECT 'named'"),
            msg(b'D', &describe),
            msg(b'H', &[]),
        ]
        .concat(),
    )
    .await
    .unwrap();
    c.until(b'T').await.unwrap();
    // The Query runs; the unnamed statement is gone after it, the named one stays.
    exchange(&mut c, &[query_msg("SELECT 2")], 1, &[], &["SELECT 1"]).await;
    let run = [bind(""), execute(), sync()].concat();
    exchange(&mut c, &[run], 1, &["26000"], &[]).await;
    let run_s1 = [bind("s1"), execute(), sync()].concat();
    exchange(&mut c, &[run_s1], 1, &[], &["SELECT 1"]).await;

    // After an error in the segment the Query is skipped: only the Sync answers.
    c.send(&[parse("", "SELEC"), msg(b'H', &[])].concat())
        .await
        .unwrap();
    assert_eq!(sqlstate(&c.until(b'E').await.unwrap()), "42601");
    exchange(
        &mut c,
        &[query_msg("SELECT 'skipped'"), sync()],
        1,
        &[],
        &[],
    )
    .await;
    // And the session goes on.
    exchange(&mut c, &[query_msg("SELECT 3")], 1, &[], &["SELECT 1"]).await;

    let ran = ran(&stack, "query-in-segment");
    let texts: Vec<(&str, &str)> = ran
        .iter()
        .map(|(t, status, _)| (t.as_str(), status.as_str()))
        .collect();
    assert_eq!(
        texts,
        [
            ("SELECT 2", "ok"),
            ("", "error"),
            ("SELECT 'named'", "ok"),
            ("SELECT 'skipped'", "not_executed"),
            ("SELECT 3", "ok"),
        ]
    );
    common::assert_chain_verifies(&stack.audit_dir());
    drop(c);
    stack.stop().await;
}

//! Statements run by functions, procedures and triggers: pgaudit logs them as substatements
//! of the top-level statement that called them (the same statement id), and the crosscheck
//! pairs them with that statement's record, whatever protocol ran it. Removing the record
//! of the call leaves the call and what it ran reported.

use serde_json::Value;

use crate::common::{self, Stack};
use crate::crosscheck::{copy_without, crosscheck, kinds, server_log, server_log_settled};

/// A function of each language that writes, a procedure, and a trigger that writes.
const SCHEMA: &str = "
    CREATE TABLE call_log (v text, n int);
    GRANT SELECT, INSERT, UPDATE ON call_log TO rates_writer;
    CREATE FUNCTION log_call(v text) RETURNS int LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO call_log (v) VALUES (v);
            UPDATE call_log SET n = 1 WHERE call_log.v = log_call.v;
            RETURN 1;
        END $$;
    CREATE FUNCTION log_call_sql(v text) RETURNS int LANGUAGE sql AS $$
        INSERT INTO call_log (v) VALUES (v);
        SELECT 1 $$;
    CREATE PROCEDURE log_proc(v text) LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO call_log (v) VALUES (v); END $$;
    CREATE FUNCTION log_note() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO call_log (v) VALUES (NEW.body); RETURN NEW; END $$;
    CREATE TRIGGER log_note AFTER INSERT ON notes FOR EACH ROW EXECUTE FUNCTION log_note();";

/// pgaudit's (statement id, substatement id, the rest) of each AUDIT line of the server log.
fn audit_entries(stack: &Stack) -> Vec<(String, String, String)> {
    server_log(&stack.pgaudit_dir())
        .iter()
        .filter_map(|l| l["message"].as_str()?.strip_prefix("AUDIT: SESSION,"))
        .map(|rest| {
            let mut f = rest.splitn(3, ',');
            let (id, sub) = (f.next().unwrap(), f.next().unwrap());
            (
                id.to_string(),
                sub.to_string(),
                f.next().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_statements_pair_with_the_call_that_ran_them() {
    use crate::common::wire::*;
    use crate::common::{query_msg, RawClient};
    let stack = Stack::with(common::Options {
        pgaudit: true,
        plaintext: proxy::settings::Plaintext::Loopback,
        ..Default::default()
    })
    .await;
    let admin = stack.cluster.connect("rates").await.unwrap();
    admin.batch_execute(SCHEMA).await.unwrap();

    // The simple protocol (psql): each kind of call, one of them twice in a statement.
    let out = stack
        .libpq_command("psql", &stack.writer)
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "SELECT log_call('simple')",
            "-c",
            "SELECT log_call_sql('simple-sql')",
            "-c",
            "SELECT log_call(v) FROM (VALUES ('row-1'), ('row-2')) AS t (v)",
            "-c",
            "CALL log_proc('called')",
            "-c",
            "INSERT INTO notes (body, n) VALUES ('triggered', 1)",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The extended protocol (tokio-postgres: Parse, Describe, Sync; Bind, Execute, Sync).
    let client = stack.connect(&stack.writer).await;
    let one: i32 = client
        .query_one("SELECT log_call($1)", &[&"extended"])
        .await
        .unwrap()
        .get(0);
    assert_eq!(one, 1);
    client
        .execute("CALL log_proc($1)", &[&"extended-call"])
        .await
        .unwrap();
    drop(client);

    // A portal fetched a row at a time: each Execute runs the function again.
    let mut c = RawClient::login(stack.addr, &stack.writer, "nested-portal").await;
    exchange(&mut c, &[query_msg("BEGIN")], 1, &[], &["BEGIN"]).await;
    let sql = "SELECT log_call(v) FROM (VALUES ('part-1'), ('part-2')) AS t (v)";
    exchange(
        &mut c,
        &[
            parse("", sql),
            bind_portal("p", ""),
            execute_portal("p", 1),
            execute_portal("p", 1),
            execute_portal("p", 1),
            sync(),
        ],
        1,
        &[],
        &["SELECT 0"],
    )
    .await;
    exchange(&mut c, &[query_msg("COMMIT")], 1, &[], &["COMMIT"]).await;
    drop(c);

    let logged: i64 = admin
        .query_one("SELECT count(*) FROM call_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, 10, "every call wrote its row");
    stack.sessions_ended().await;
    server_log_settled(&stack, "nested-settled").await;

    // pgaudit did log them as substatements: the test is about that numbering.
    let nested = audit_entries(&stack)
        .into_iter()
        .filter(|(_, sub, rest)| {
            sub != "1" && rest.starts_with("WRITE,INSERT,") && rest.contains("INSERT INTO call_log")
        })
        .count();
    assert!(nested >= 10, "{nested} nested INSERTs logged");

    let (audit, pgaudit) = (stack.audit_dir(), stack.pgaudit_dir());
    let (code, report, text) = crosscheck(&audit, &pgaudit);
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("OK: 0 difference(s)"), "{text}");
    assert!(
        report["summary"]["matched_statements"].as_u64().unwrap() >= 10,
        "{text}"
    );

    // The record of the extended call is removed: the call and what it ran are reported.
    let records = stack.records();
    let call = records
        .iter()
        .find(|r| {
            r["type"] == "statement"
                && r["statement"] == "SELECT log_call($1)"
                && r["steps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s == "execute")
        })
        .map(|r| (r["session"].clone(), r["seq"].clone()))
        .unwrap();
    let cut = stack.dir.path().join("audit-without-call");
    let removed = copy_without(&audit, &cut, |r: &Value| {
        r["session"] == call.0 && (r["seq"] == call.1 || r["ref"] == call.1)
    });
    assert_eq!(removed, 2);
    let (code, report, text) = crosscheck(&cut, &pgaudit);
    assert_eq!(code, 1, "{text}");
    assert_eq!(
        kinds(&report),
        [(
            "missing_in_proxy".to_string(),
            "SELECT log_call($1)".to_string()
        )],
        "{text}"
    );
    let detail = report["differences"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("3 nested statement(s): FUNCTION EXECUTE, WRITE INSERT, WRITE UPDATE"),
        "{detail}"
    );
    stack.stop().await;
}

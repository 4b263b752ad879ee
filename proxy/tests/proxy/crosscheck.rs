//! `proxy audit crosscheck` against a real server log: a mixed workload through the proxy
//! (psql and tokio-postgres; simple, multi-statement and extended queries, COPY both ways,
//! errors at parse, plan and execution time, a rolled-back transaction, a refused statement,
//! a redacted password change, nested SQL, SQL PREPARE/EXECUTE, a client posing as another
//! session through application_name) leaves no difference between the proxy's audit
//! log and pgaudit's. Then a removed pgaudit entry, a removed proxy record and a statement
//! sent straight to the database as the service user are each reported, with exit code 1.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use testkit::eventually;

use secrecy::ExposeSecret;
use serde_json::Value;

use crate::common::{self, Stack};

/// Runs the real `proxy audit crosscheck --json`: (exit code, report, text report).
pub(crate) fn crosscheck(audit: &Path, pgaudit: &Path) -> (i32, Value, String) {
    let run = |json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_proxy"));
        cmd.args(["audit", "crosscheck"])
            .arg(audit)
            .arg("--pgaudit")
            .arg(pgaudit);
        if json {
            cmd.arg("--json");
        }
        cmd.output().unwrap()
    };
    let out = run(true);
    let text = run(false);
    assert_eq!(out.status.code(), text.status.code());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "crosscheck printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        out.status.code().unwrap_or(-1),
        report,
        String::from_utf8_lossy(&text.stdout).into_owned(),
    )
}

/// A stack whose cluster runs pgaudit, the witness every driver is compared with.
pub(crate) async fn witnessed() -> Stack {
    Stack::with(crate::common::Options {
        pgaudit: true,
        ..Default::default()
    })
    .await
}

/// The proxy's audit log and pgaudit's tell the same story: zero differences, at least
/// `min` statements paired.
pub(crate) async fn assert_witness_agrees(stack: &Stack, marker: &str, min: u64) {
    server_log_settled(stack, marker).await;
    let (code, report, text) = crosscheck(&stack.audit_dir(), &stack.pgaudit_dir());
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("OK: 0 difference(s)"), "{text}");
    assert!(
        report["summary"]["matched_statements"].as_u64().unwrap() >= min,
        "{text}"
    );
}

/// Every line of the server's JSON log so far.
pub(crate) fn server_log(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    common::read_json_lines(&files)
}

/// Runs a marker statement as the superuser and waits until the log collector has written
/// it: everything logged before it is in the files then.
pub(crate) async fn server_log_settled(stack: &Stack, marker: &str) {
    let admin = stack.cluster.connect("rates").await.unwrap();
    admin
        .simple_query(&format!("SELECT '{marker}'"))
        .await
        .unwrap();
    let dir = stack.pgaudit_dir();
    eventually(
        &format!("the server log gets {marker}"),
        Duration::from_secs(10),
        async || {
            server_log(&dir)
                .iter()
                .any(|l| l["message"].as_str().is_some_and(|m| m.contains(marker)))
        },
    )
    .await;
}

fn psql(stack: &Stack, creds: &secret_store::DbCredentials, args: &[&str]) -> std::process::Output {
    let mut cmd = stack.libpq_command("psql", creds);
    cmd.arg("-X").args(args);
    cmd.output().unwrap()
}

/// Copies the files of `from` into a new directory, dropping the lines `drop` selects.
pub(crate) fn copy_without(from: &Path, to: &Path, drop: impl Fn(&Value) -> bool) -> usize {
    std::fs::create_dir_all(to).unwrap();
    let mut dropped = 0;
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut kept = String::new();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            if drop(&v) {
                dropped += 1;
            } else {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        std::fs::write(to.join(path.file_name().unwrap()), kept).unwrap();
    }
    dropped
}

pub(crate) fn kinds(report: &Value) -> Vec<(String, String)> {
    report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_string(),
                d["text"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crosscheck_with_pgaudit_finds_no_difference_then_finds_each_tampering_and_bypass() {
    let stack = Stack::with(common::Options {
        pgaudit: true,
        ..Default::default()
    })
    .await;
    let dir = stack.dir.path().to_path_buf();

    // psql, simple protocol: a multi-statement query string, a transaction rolled back,
    // errors at parse, plan and execution time, COPY in and out, nested SQL in a DO block,
    // and a statement the proxy refuses (it never reaches the server).
    let out = psql(
        &stack,
        &stack.writer,
        &[
            "-c",
            "SELECT 1; INSERT INTO notes (body, n) VALUES ('multi', 1); SELECT count(*) FROM notes",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let input = dir.join("in.csv");
    std::fs::write(&input, "10,ten\n11,eleven\n").unwrap();
    let script = format!(
        "BEGIN;\n\
         INSERT INTO notes (body) VALUES ('rolled back');\n\
         ROLLBACK;\n\
         SELECT * FROM no_such_table;\n\
         SELECT 1/0;\n\
         SELECT 1/(n - n) FROM notes WHERE n = 1;\n\
         \\copy notes (n, body) FROM '{}' WITH (FORMAT csv)\n\
         COPY (SELECT n, body FROM notes ORDER BY id) TO STDOUT;\n\
         DO $$ BEGIN PERFORM count(*) FROM notes; END $$;\n\
         PREPARE p(int) AS SELECT $1 + 1;\n\
         EXECUTE p(5);\n\
         SET application_name = 'dbgw:000000000000000000000000';\n\
         SET client_encoding = 'LATIN1';\n\
         SELECT 'tamper-me';\n",
        input.display()
    );
    let mut cmd = stack.libpq_command("psql", &stack.writer);
    cmd.arg("-X").stdin(std::process::Stdio::piped());
    cmd.stdout(std::process::Stdio::piped());
    cmd.stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("division by zero"), "{stderr}");
    assert!(stderr.contains("no_such_table"), "{stderr}");
    assert!(
        stderr.contains("dbgw pins"),
        "the proxy refused the SET: {stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("eleven"));

    // \password with the same password: the proxy records the statement redacted, pgaudit
    // has the verifier; they still pair.
    let mut cmd = stack.libpq_command("psql", &stack.writer);
    cmd.args(["-X", "-c", "\\password"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let pw = stack.writer.password.expose_secret().to_string();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{pw}\n{pw}\n").as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // tokio-postgres, extended protocol with parameters: a query, inserts, an error inside a
    // transaction that is then rolled back, and a plain read as the read-only service.
    let client = stack.connect(&stack.writer).await;
    let row = client
        .query_one("SELECT $1::int + 1", &[&41i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    client
        .execute(
            "INSERT INTO notes (body, n) VALUES ($1, $2)",
            &[&"extended", &7i32],
        )
        .await
        .unwrap();
    let mut client = client;
    let tx = client.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO notes (body, n) VALUES ($1, $2)",
        &[&"in tx", &8i32],
    )
    .await
    .unwrap();
    let failed = tx
        .query("SELECT 1/(n - $1::int) FROM notes WHERE n = 8", &[&8i32])
        .await;
    assert!(failed.is_err());
    tx.rollback().await.unwrap();
    drop(client);
    let reader = stack.connect(&stack.app).await;
    reader.simple_query("SELECT 'reader'").await.unwrap();
    drop(reader);

    // An insert that succeeds and is undone by the implicit commit (a deferred unique
    // check), in both protocols: the proxy records the commit's failure, so the server's
    // ERROR line has its record.
    let admin = stack.cluster.connect("rates").await.unwrap();
    admin
        .batch_execute(
            "SET ROLE rates_owner;
             CREATE TABLE deferred_check (n int UNIQUE DEFERRABLE INITIALLY DEFERRED);
             GRANT INSERT ON deferred_check TO rates_writer;
             RESET ROLE;",
        )
        .await
        .unwrap();
    let client = stack.connect(&stack.writer).await;
    let undone = client
        .execute("INSERT INTO deferred_check VALUES ($1), ($1)", &[&1i32])
        .await
        .unwrap_err();
    assert_eq!(undone.code().map(|c| c.code()), Some("23505"), "{undone}");
    drop(client);
    let out = psql(
        &stack,
        &stack.writer,
        &["-c", "INSERT INTO deferred_check VALUES (2), (2)"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("duplicate key"));

    stack.sessions_ended().await;
    stack.flush();
    server_log_settled(&stack, "crosscheck-marker-1").await;

    // The upstream sessions carry the proxy session's id and the pid the audit recorded.
    let records = stack.records();
    let pids: Vec<(String, i64)> = records
        .iter()
        .filter(|r| r["type"] == "upstream")
        .map(|r| {
            assert_eq!(
                r["application_name"].as_str().unwrap(),
                format!("dbgw:{}", r["session"].as_str().unwrap())
            );
            (
                r["session"].as_str().unwrap().to_string(),
                r["backend_pid"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(pids.len() >= 5, "{pids:?}");
    let log = server_log(&stack.pgaudit_dir());
    for (session, pid) in &pids {
        let app = format!("dbgw:{session}");
        assert!(
            log.iter()
                .any(|l| l["application_name"] == app.as_str() && l["pid"] == *pid),
            "no server log line of {app} from pid {pid}"
        );
    }

    let audit = stack.audit_dir();
    let pgaudit = stack.pgaudit_dir();
    let (code, report, text) = crosscheck(&audit, &pgaudit);
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("OK: 0 difference(s)"), "{text}");
    let summary = &report["summary"];
    assert_eq!(
        summary["linked_sessions"], summary["proxy_sessions"],
        "{text}"
    );
    assert_eq!(
        summary["linked_sessions"].as_u64().unwrap(),
        pids.len() as u64
    );
    // Every statement that ran: 3 + BEGIN, INSERT, ROLLBACK, the execution-time error,
    // 2 COPY, DO, 'tamper-me', \password, 2 extended, BEGIN, INSERT, 'reader' at least.
    assert!(
        summary["matched_statements"].as_u64().unwrap() >= 17,
        "{text}"
    );

    // Tampering 1: a pgaudit entry of a statement that ran through the proxy is removed.
    let cut_server = dir.join("pgaudit-cut");
    let removed = copy_without(&pgaudit, &cut_server, |l| {
        l["message"].as_str().is_some_and(|m| {
            m.starts_with("AUDIT:") && m.contains("VALUES ($1, $2)\",\"extended,7")
        })
    });
    assert_eq!(removed, 1);
    let (code, report, text) = crosscheck(&audit, &cut_server);
    assert_eq!(code, 1, "{text}");
    assert_eq!(
        kinds(&report),
        [(
            "missing_in_pgaudit".to_string(),
            "INSERT INTO notes (body, n) VALUES ($1, $2)".to_string()
        )],
        "{text}"
    );
    assert!(text.contains("MISSING_IN_PGAUDIT"), "{text}");

    // Tampering 2: the proxy's record of a statement that ran is removed.
    let cut_audit = dir.join("audit-cut");
    let seq = records
        .iter()
        .find(|r| r["type"] == "statement" && r["statement"] == "SELECT 'tamper-me';")
        .map(|r| (r["session"].clone(), r["seq"].clone()))
        .unwrap();
    let removed = copy_without(&audit, &cut_audit, |r| {
        r["session"] == seq.0 && (r["seq"] == seq.1 || r["ref"] == seq.1)
    });
    assert_eq!(removed, 2);
    let (code, report, text) = crosscheck(&cut_audit, &pgaudit);
    assert_eq!(code, 1, "{text}");
    assert_eq!(
        kinds(&report),
        [(
            "missing_in_proxy".to_string(),
            "SELECT 'tamper-me';".to_string()
        )],
        "{text}"
    );

    // A statement straight to the database as the read-only service's user: bypassed.
    let tls = tls_config::postgres_connector(Some(&stack.cluster.ca_cert())).unwrap();
    let mut direct = tokio_postgres::Config::new();
    direct
        .host(stack.cluster.host())
        .port(stack.cluster.port())
        .user(&stack.app.username)
        .password(stack.app.password.expose_secret())
        .dbname("rates")
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let (bypass, conn) = direct.connect(tls).await.unwrap();
    let conn = tokio::spawn(conn);
    bypass
        .simple_query("SELECT 'around the proxy'")
        .await
        .unwrap();
    drop(bypass);
    let _ = conn.await;
    server_log_settled(&stack, "crosscheck-marker-2").await;
    let (code, report, text) = crosscheck(&audit, &pgaudit);
    assert_eq!(code, 1, "{text}");
    assert_eq!(
        kinds(&report),
        [(
            "bypassed_proxy".to_string(),
            "SELECT 'around the proxy'".to_string()
        )],
        "{text}"
    );
    assert!(text.contains("BYPASSED_PROXY"), "{text}");
    assert_eq!(
        report["differences"][0]["user"],
        stack.app.username.as_str()
    );

    stack.stop().await;
}

/// Statements the server runs while binding: a Parse + Bind + Sync with no Execute whose
/// parameter is of a domain with a CHECK calling a function that runs SQL. pgaudit logs the
/// function's INSERT (its own statement, while the server binds) and the SELECT (its portal
/// starts at Bind); the proxy's record of the Bind, with its parameter, pairs with both. The
/// same for a Bind alone, a Bind with its Execute, a Bind and its Execute sent apart, and a
/// Bind the check refuses. Removing the Bind's record leaves both reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_run_while_binding_pair_with_the_bind_that_ran_them() {
    use crate::common::wire::*;
    use crate::common::{query_msg, RawClient};
    let stack = Stack::with(common::Options {
        pgaudit: true,
        plaintext: proxy::settings::Plaintext::Loopback,
        ..Default::default()
    })
    .await;
    let dir = stack.dir.path().to_path_buf();
    let admin = stack.cluster.connect("rates").await.unwrap();
    // A domain whose CHECK runs SQL: converting a Bind's parameter runs it, Execute or not.
    admin
        .batch_execute(
            "CREATE TABLE bind_log (v text);
             GRANT INSERT ON bind_log TO rates_writer;
             CREATE FUNCTION log_check(v text) RETURNS boolean LANGUAGE plpgsql
                 AS $$ BEGIN INSERT INTO bind_log (v) VALUES (v); RETURN v <> 'refused'; END $$;
             CREATE DOMAIN checked AS text CHECK (log_check(VALUE));",
        )
        .await
        .unwrap();
    let oid: u32 = admin
        .query_one("SELECT 'checked'::regtype::oid", &[])
        .await
        .unwrap()
        .get(0);
    let mut c = RawClient::login(stack.addr, &stack.writer, "bind-time").await;
    // Parse + Bind + Sync, no Execute: the case.
    exchange(
        &mut c,
        &[
            parse_typed("", "SELECT $1", &[oid]),
            bind_text("", "", &["bound-only"]),
            sync(),
        ],
        1,
        &[],
        &[],
    )
    .await;
    // The same without a domain: only the SELECT's own start is logged at Bind.
    exchange(
        &mut c,
        &[parse("", "SELECT 'plain bind'"), bind(""), sync()],
        1,
        &[],
        &[],
    )
    .await;
    // A named statement, then a Bind alone in its own segment.
    exchange(
        &mut c,
        &[parse_typed("s1", "SELECT length($1)", &[oid]), sync()],
        1,
        &[],
        &[],
    )
    .await;
    exchange(
        &mut c,
        &[bind_text("", "s1", &["bound-alone"]), sync()],
        1,
        &[],
        &[],
    )
    .await;
    // Bound and executed: the check's statement, then the execution.
    exchange(
        &mut c,
        &[bind_text("", "s1", &["bound-and-run"]), execute(), sync()],
        1,
        &[],
        &["SELECT 1"],
    )
    .await;
    // A Bind and its Execute sent apart (two records), in a transaction.
    exchange(&mut c, &[query_msg("BEGIN")], 1, &[], &["BEGIN"]).await;
    c.send(&[bind_text("p1", "s1", &["apart"]), msg(b'H', &[])].concat())
        .await
        .unwrap();
    c.until(b'2').await.expect("BindComplete");
    exchange(
        &mut c,
        &[execute_portal("p1", 0), sync()],
        1,
        &[],
        &["SELECT 1"],
    )
    .await;
    exchange(&mut c, &[query_msg("COMMIT")], 1, &[], &["COMMIT"]).await;
    // A Bind the domain's check refuses: its INSERT ran, then was rolled back.
    exchange(
        &mut c,
        &[bind_text("", "s1", &["refused"]), execute(), sync()],
        1,
        &["23514"],
        &[],
    )
    .await;
    drop(c);
    let logged: Vec<String> = admin
        .query("SELECT v FROM bind_log", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        logged,
        ["bound-only", "bound-alone", "bound-and-run", "apart"],
        "the check ran at each Bind"
    );
    stack.sessions_ended().await;
    server_log_settled(&stack, "bind-time-settled").await;

    let (audit, pgaudit) = (stack.audit_dir(), stack.pgaudit_dir());
    let (code, report, text) = crosscheck(&audit, &pgaudit);
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("OK: 0 difference(s)"), "{text}");
    // The five INSERTs ran while binding; 'plain bind', the two Bind-only SELECTs, the two
    // executions, BEGIN and COMMIT are paired too.
    assert_eq!(report["summary"]["bind_time_statements"], 5, "{text}");
    assert!(
        report["summary"]["matched_statements"].as_u64().unwrap() >= 12,
        "{text}"
    );

    // The record of the Bind without Execute is removed: what it ran has no record.
    let records = stack.records();
    let bind = records
        .iter()
        .find(|r| r["type"] == "statement" && r["statement"] == "SELECT $1")
        .map(|r| (r["session"].clone(), r["seq"].clone()))
        .unwrap();
    let cut = dir.join("audit-without-bind");
    let removed = copy_without(&audit, &cut, |r| {
        r["session"] == bind.0 && (r["seq"] == bind.1 || r["ref"] == bind.1)
    });
    assert_eq!(removed, 2);
    let (code, report, text) = crosscheck(&cut, &pgaudit);
    assert_eq!(code, 1, "{text}");
    assert_eq!(
        kinds(&report),
        [
            (
                "missing_in_proxy".to_string(),
                "INSERT INTO bind_log (v) VALUES (v)".to_string()
            ),
            ("missing_in_proxy".to_string(), "SELECT $1".to_string())
        ],
        "{text}"
    );
    stack.stop().await;
}

/// Runs the real `proxy audit crosscheck --json` with the rotation function's log and
/// networks: the report.
/// Statements pgaudit numbers under a portal still open: a portal bound and not executed,
/// then Queries in the same unsynced segment (the first is logged as a substatement of the
/// bound SELECT, the next as a statement of its own), and a portal bound twice, executed
/// apart, with a Query of two statements behind it and the same statement bound again
/// later. Each execution pairs once, with no difference either way (the 200-session
/// fuzzer's seeds 7 and 12345 found both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_under_an_open_portal_pair_once_each() {
    use crate::common::wire::*;
    use crate::common::{query_msg, RawClient};
    let stack = Stack::with(common::Options {
        pgaudit: true,
        plaintext: proxy::settings::Plaintext::Loopback,
        ..Default::default()
    })
    .await;
    let mut c = RawClient::login(stack.addr, &stack.writer, "open-portal").await;
    exchange(
        &mut c,
        &[
            parse("s1", "SELECT 'bound'"),
            bind_portal("p1", "s1"),
            query_msg("SELECT 'q'"),
            query_msg("SELECT 'q'"),
            sync(),
        ],
        3,
        &[],
        &["SELECT 1", "SELECT 1"],
    )
    .await;
    exchange(
        &mut c,
        &[parse("s2", "SELECT 'twice'"), sync()],
        1,
        &[],
        &[],
    )
    .await;
    exchange(
        &mut c,
        &[
            bind_portal("p2", "s2"),
            bind_portal("", "s2"),
            execute_portal("p2", 0),
            query_msg("SELECT 'r1'; SELECT 'r2'"),
            sync(),
        ],
        2,
        &[],
        &["SELECT 1", "SELECT 1", "SELECT 1"],
    )
    .await;
    exchange(&mut c, &[query_msg("SELECT 'end'")], 1, &[], &["SELECT 1"]).await;
    exchange(&mut c, &[bind_portal("p2", "s2"), sync()], 1, &[], &[]).await;
    exchange(&mut c, &[query_msg("SELECT 'end'")], 1, &[], &["SELECT 1"]).await;
    drop(c);
    stack.sessions_ended().await;
    server_log_settled(&stack, "open-portal-settled").await;

    let (code, report, text) = crosscheck(&stack.audit_dir(), &stack.pgaudit_dir());
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("OK: 0 difference(s)"), "{text}");
    assert!(
        report["summary"]["matched_statements"].as_u64().unwrap() >= 8,
        "{text}"
    );
    stack.stop().await;
}

fn crosscheck_rotation(audit: &Path, pgaudit: &Path, log: &Path, sources: &[&str]) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_proxy"));
    cmd.args(["audit", "crosscheck", "--json"])
        .arg(audit)
        .arg("--pgaudit")
        .arg(pgaudit)
        .arg("--rotation-log")
        .arg(log);
    for s in sources {
        cmd.args(["--rotation-source", s]);
    }
    let out = cmd.output().unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)))
}

/// The rotation function's own logins go around the proxy by design (`setSecret` proves the
/// current password, `testSecret` the pending one). With its log and its network they are
/// reported as rotation test logins, not bypasses. An imitation is still a bypass: the same
/// application_name and statement from the same address but not in the log, a login the log
/// names (forged) that runs a second statement, each from tokio-postgres and from psql, and
/// the real ones from outside the configured network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_test_logins_are_recognised_and_imitations_are_bypasses() {
    use testkit::Moto;
    use tracing::instrument::WithSubscriber;
    const APP: &str = "dbgw/rates-api";
    const MASTER: &str = "dbgw/postgres-admin";
    assert_eq!(
        rotation::strategy::TEST_STATEMENT,
        proxy::audit::crosscheck::ROTATION_TEST_STATEMENT
    );
    let moto = Moto::start().await;
    let stack = Stack::with(common::Options {
        pgaudit: true,
        secrets: Some(moto.store(0)),
        ..Default::default()
    })
    .await;
    let dir = stack.dir.path().to_path_buf();
    let (host, port) = (stack.cluster.host().to_string(), stack.cluster.port());
    let admin = stack.cluster.admin().clone();
    moto.client()
        .create_secret()
        .name(MASTER)
        .secret_string(testkit::moto::layout(&host, port, &admin, "postgres", None).to_string())
        .send()
        .await
        .unwrap();
    moto.client()
        .put_secret_value()
        .secret_id(APP)
        .secret_string(
            testkit::moto::layout(&host, port, &stack.app, "rates", Some(MASTER)).to_string(),
        )
        .send()
        .await
        .unwrap();
    moto.enable_rotation(APP).await;

    // The service through the proxy, before and after the rotation (as rates_api_clone).
    let client = stack.connect(&stack.app).await;
    client.simple_query("SELECT 'before'").await.unwrap();
    drop(client);
    let rotator = rotation::Rotator::new(
        moto.client(),
        rotation::Settings {
            database: rotation::settings::DatabaseSettings {
                ca_file: stack.cluster.ca_cert(),
                default_host: "127.0.0.1".into(),
                client_cert_file: Some(stack.cluster.client_cert().cert_file),
                client_key_file: Some(stack.cluster.client_cert().key_file),
            },
            secrets: moto.settings(0),
            log: Default::default(),
        },
    );
    // The function's log, as the Lambda writes it (JSON lines).
    let log = dir.join("rotation.log");
    let file = std::sync::Mutex::new(std::fs::File::create(&log).unwrap());
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(file)
        .finish();
    rotation::local::rotate(&rotator, APP)
        .with_subscriber(subscriber)
        .await
        .unwrap();
    let (_, clone) = moto
        .store(0)
        .db_credentials_at(APP, secret_store::Stage::Current)
        .await
        .unwrap();
    assert_eq!(clone.username, "rates_api_clone");
    let client = stack.connect(&clone).await;
    client.simple_query("SELECT 'after'").await.unwrap();
    drop(client);

    // Imitations: straight to the database with the service's password, named as the
    // function names its logins.
    let direct = |creds: secret_store::DbCredentials| {
        let stack = &stack;
        async move {
            let tls = tls_config::postgres_connector(Some(&stack.cluster.ca_cert())).unwrap();
            let mut config = tokio_postgres::Config::new();
            config
                .host(stack.cluster.host())
                .port(stack.cluster.port())
                .user(&creds.username)
                .password(creds.password.expose_secret())
                .dbname("rates")
                .application_name("dbgw-db")
                .ssl_mode(tokio_postgres::config::SslMode::Require);
            let (client, conn) = config.connect(tls).await.unwrap();
            tokio::spawn(conn);
            client
        }
    };
    // 1. The test statement itself, not in the log.
    let imitation = direct(clone.clone()).await;
    imitation
        .query_one(proxy::audit::crosscheck::ROTATION_TEST_STATEMENT, &[])
        .await
        .unwrap();
    drop(imitation);
    // 2. The test statement and another, with a (forged) log line naming the login.
    let forged = direct(clone.clone()).await;
    let row = forged
        .query_one(proxy::audit::crosscheck::ROTATION_TEST_STATEMENT, &[])
        .await
        .unwrap();
    let pid: i32 = row.get(1);
    forged.simple_query("SELECT 'exfiltrate'").await.unwrap();
    drop(forged);
    // 3 and 4. The same from psql (the simple protocol): the test statement alone, and the
    // test statement then another, with a (forged) log line naming the login.
    let psql_direct = |commands: &[&str]| {
        let mut cmd = stack.libpq_command("psql", &clone);
        cmd.envs([
            ("PGHOST", stack.cluster.host().to_string()),
            ("PGPORT", stack.cluster.port().to_string()),
            ("PGSSLMODE", "verify-ca".to_string()),
            (
                "PGSSLROOTCERT",
                stack.cluster.ca_cert().display().to_string(),
            ),
            ("PGAPPNAME", "dbgw-db".to_string()),
        ]);
        cmd.args(["-X", "-At", "-v", "ON_ERROR_STOP=1"]);
        for c in commands {
            cmd.args(["-c", c]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    psql_direct(&[proxy::audit::crosscheck::ROTATION_TEST_STATEMENT]);
    let printed = psql_direct(&[
        proxy::audit::crosscheck::ROTATION_TEST_STATEMENT,
        "SELECT 'psql second'",
    ]);
    let psql_pid: i32 = printed
        .lines()
        .next()
        .and_then(|l| l.split('|').nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("psql printed no pid: {printed}"));
    let forged_line = |pid: i32| {
        serde_json::json!({
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "level": "INFO",
            "message": "rotation test login",
            "secret": APP,
            "version": "forged",
            "step": "testSecret",
            "user": "rates_api_clone",
            "database": "rates",
            "backend_pid": pid,
        })
    };
    let real_lines = std::fs::read_to_string(&log).unwrap();
    let forged_log = dir.join("rotation-forged.log");
    std::fs::write(
        &forged_log,
        format!(
            "{real_lines}{}\n{}\n",
            forged_line(pid),
            forged_line(psql_pid)
        ),
    )
    .unwrap();
    stack.sessions_ended().await;
    stack.flush();
    server_log_settled(&stack, "rotation-settled").await;
    let (audit, pgaudit) = (stack.audit_dir(), stack.pgaudit_dir());

    // The function's two logins are recognised; the imitations are bypasses.
    let report = crosscheck_rotation(&audit, &pgaudit, &forged_log, &["127.0.0.1/32"]);
    let logins = report["rotation_logins"].as_array().unwrap();
    let steps: Vec<(&str, &str, &str)> = logins
        .iter()
        .map(|l| {
            (
                l["secret"].as_str().unwrap(),
                l["step"].as_str().unwrap(),
                l["user"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            (APP, "setSecret", "rates_api"),
            (APP, "testSecret", "rates_api_clone")
        ],
        "{report:#}"
    );
    let mut bypasses = kinds(&report);
    bypasses.sort();
    assert_eq!(
        bypasses,
        [
            (
                "bypassed_proxy".to_string(),
                "SELECT 'exfiltrate'".to_string()
            ),
            (
                "bypassed_proxy".to_string(),
                "SELECT 'psql second'".to_string()
            ),
            (
                "bypassed_proxy".to_string(),
                proxy::audit::crosscheck::ROTATION_TEST_STATEMENT.to_string()
            ),
            (
                "bypassed_proxy".to_string(),
                proxy::audit::crosscheck::ROTATION_TEST_STATEMENT.to_string()
            ),
            (
                "bypassed_proxy".to_string(),
                proxy::audit::crosscheck::ROTATION_TEST_STATEMENT.to_string()
            ),
            (
                "bypassed_proxy".to_string(),
                proxy::audit::crosscheck::ROTATION_TEST_STATEMENT.to_string()
            ),
        ],
        "{report:#}"
    );
    // Both forged logins: named by the log, but more than the one statement.
    assert_eq!(
        report["differences"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["detail"].as_str().unwrap().contains("ran 2 statements"))
            .count(),
        4,
        "{report:#}"
    );

    // From outside the function's network, the real ones are bypasses too; and without the
    // rotation log every one of them is.
    let report = crosscheck_rotation(&audit, &pgaudit, &log, &["10.0.0.0/8"]);
    assert_eq!(report["rotation_logins"].as_array().unwrap().len(), 0);
    assert_eq!(
        report["differences"].as_array().unwrap().len(),
        8,
        "{report:#}"
    );
    let (code, report, text) = crosscheck(&audit, &pgaudit);
    assert_eq!(code, 1, "{text}");
    assert_eq!(report["differences"].as_array().unwrap().len(), 8, "{text}");
    stack.stop().await;
}

//! Real clients through the proxy: each test checks that the audit log holds exactly the
//! statements the client ran, with parameters and outcomes, and that the chain verifies.

use crate::common::{assert_chain_verifies, executions, Stack};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_simple_extended_and_errors() {
    let stack = Stack::start().await;
    let db = stack.connect(&stack.writer).await;

    // Extended protocol with parameters of several types, NULL among them.
    let row = db
        .query_one(
            "SELECT $1::int + 1, $2::text, $3::text IS NULL",
            &[&41i32, &"héllo", &None::<String>],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);

    db.execute(
        "INSERT INTO notes (body, n) VALUES ($1, $2)",
        &[&"first", &7i32],
    )
    .await
    .unwrap();
    let err = db
        .execute("INSERT INTO nope VALUES (1)", &[])
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42P01");
    db.batch_execute("SELECT 1; SELECT 2").await.unwrap();

    let records = stack.records();
    let runs = executions(&records, "proxy-test");
    let texts: Vec<&str> = runs
        .iter()
        .map(|(s, _)| s["statement"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        vec![
            "SELECT $1::int + 1, $2::text, $3::text IS NULL",
            "INSERT INTO notes (body, n) VALUES ($1, $2)",
            "SELECT 1",
            "SELECT 2"
        ],
        "one record per execution; the failed Parse is not an execution"
    );
    // tokio-postgres sends int4 and text in binary; the record reads them as text (the
    // types come from the server's ParameterDescription).
    let (first, first_out) = &runs[0];
    assert_eq!(first["protocol"], "extended");
    assert_eq!(first["params"][0], json!("41"));
    assert_eq!(first["params"][1], json!("héllo"));
    assert!(first["params"][2].is_null());
    assert_eq!(first_out.as_ref().unwrap()["tag"], "SELECT 1");
    assert_eq!(first_out.as_ref().unwrap()["rows"], 1);
    assert_eq!(runs[1].1.as_ref().unwrap()["tag"], "INSERT 0 1");
    assert_eq!(runs[2].0["protocol"], "simple");
    assert_eq!(
        (runs[3].0["index"].as_u64(), runs[3].0["of"].as_u64()),
        (Some(1), Some(2))
    );
    for (s, o) in &runs {
        assert_eq!(
            s["identity"],
            json!({"kind": "service", "name": "app_writer"})
        );
        assert_eq!(s["db_user"], "app_writer");
        assert_eq!(s["database"], "rates");
        assert_eq!(
            o.as_ref().expect("every execution has an outcome")["status"],
            "ok"
        );
    }
    drop(db);
    assert_chain_verifies(&stack.audit_dir());
    stack.stop().await;
}

/// Runs a command, returns stdout; panics with stderr when it fails.
fn run(mut cmd: std::process::Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{:?} failed: {}{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_multi_statement_copy_both_ways_and_password() {
    let stack = Stack::start().await;
    let dir = stack.dir.path();

    // One Query message holding three statements, the second failing: the third never runs.
    let mut psql = stack.libpq_command("psql", &stack.writer);
    psql.args(["-X", "-c", "INSERT INTO notes (body) VALUES ('a;b'); SELECT 1/0; INSERT INTO notes (body) VALUES ('never')"]);
    let out = psql.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("division by zero"));

    // \copy in both directions (COPY FROM STDIN / COPY TO STDOUT through the proxy).
    let input = dir.join("in.csv");
    std::fs::write(
        &input,
        (0..500)
            .map(|i| format!("{i},row {i}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let output = dir.join("out.csv");
    let mut psql = stack.libpq_command("psql", &stack.writer);
    psql.args(["-X", "-v", "ON_ERROR_STOP=1"])
        .args(["-c", &format!("\\copy notes (n, body) FROM '{}' WITH (FORMAT csv)", input.display())])
        .args(["-c", &format!("\\copy (SELECT n, body FROM notes WHERE n IS NOT NULL ORDER BY n) TO '{}' WITH (FORMAT csv)", output.display())]);
    run(psql);
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        std::fs::read_to_string(&input).unwrap()
    );

    // \password sends ALTER USER ... PASSWORD '<SCRAM verifier>': the verifier must not reach
    // the audit log. psql reads the new password from stdin when there is no terminal.
    let mut psql = stack.libpq_command("psql", &stack.writer);
    psql.args(["-X", "-c", "\\password"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = psql.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"N3w-secret-pw\nN3w-secret-pw\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let records = stack.records();
    let runs = executions(&records, "proxy-test");
    let texts: Vec<&str> = runs
        .iter()
        .map(|(s, _)| s["statement"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts[..3],
        [
            "INSERT INTO notes (body) VALUES ('a;b')",
            "SELECT 1/0",
            "INSERT INTO notes (body) VALUES ('never')"
        ]
    );
    let status: Vec<&str> = runs[..3]
        .iter()
        .map(|(_, o)| o.as_ref().unwrap()["status"].as_str().unwrap())
        .collect();
    assert_eq!(status, ["ok", "error", "not_executed"]);
    assert_eq!(runs[1].1.as_ref().unwrap()["sqlstate"], "22012");
    // psql rewrites \copy into COPY ... FROM STDIN / TO STDOUT (with its own spacing).
    assert!(
        texts[3].starts_with("COPY") && texts[3].contains("FROM STDIN"),
        "{}",
        texts[3]
    );
    assert_eq!(runs[3].1.as_ref().unwrap()["tag"], "COPY 500");
    assert!(
        texts[4].starts_with("COPY") && texts[4].contains("TO STDOUT"),
        "{}",
        texts[4]
    );
    assert_eq!(runs[4].1.as_ref().unwrap()["rows"], 500);
    let alter = runs
        .iter()
        .find(|(s, _)| s["statement"].as_str().unwrap().starts_with("ALTER USER"))
        .unwrap();
    assert_eq!(alter.0["redacted"], true);
    assert_eq!(alter.1.as_ref().unwrap()["tag"], "ALTER ROLE");

    // Neither the verifier nor the password appears in any audit file.
    for f in proxy::audit::source::audit_files(&stack.audit_dir()).unwrap() {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(
            !text.contains("SCRAM-SHA-256$"),
            "a password verifier leaked into the audit log"
        );
        assert!(!text.contains("N3w-secret-pw"));
    }
    // The data really is in the database: the failed string rolled back as one transaction.
    let admin = stack.cluster.connect("rates").await.unwrap();
    let (a, never): (i64, i64) = {
        let r = admin
            .query_one("SELECT count(*) FILTER (WHERE body = 'a;b'), count(*) FILTER (WHERE body = 'never') FROM notes", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (a, never),
        (0, 0),
        "an implicit transaction: the error rolled back the first insert"
    );
    assert_chain_verifies(&stack.audit_dir());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_cancel_reaches_the_right_backend() {
    let stack = Stack::start().await;
    let mut psql = stack.libpq_command("psql", &stack.app);
    psql.args(["-X", "-c", "SELECT pg_sleep(30)"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let started = std::time::Instant::now();
    let child = psql.spawn().unwrap();
    // Wait until the statement runs (its record is written before it is forwarded).
    testkit::eventually(
        "the statement's record",
        std::time::Duration::from_secs(10),
        async || {
            stack
                .records()
                .iter()
                .any(|r| r["statement"] == "SELECT pg_sleep(30)")
        },
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // psql turns SIGINT into a CancelRequest on a new connection, with the proxy's key.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the cancel did not stop the query"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );

    let records = stack.records();
    let runs = executions(&records, "proxy-test");
    let (_, outcome) = runs
        .iter()
        .find(|(s, _)| s["statement"] == "SELECT pg_sleep(30)")
        .unwrap();
    assert_eq!(outcome.as_ref().unwrap()["sqlstate"], "57014");
    assert_chain_verifies(&stack.audit_dir());
    stack.stop().await;
}

/// pgbench in one protocol mode: returns the statements audited for it, in order.
async fn pgbench(
    stack: &Stack,
    mode: &str,
    app: &str,
) -> Vec<(serde_json::Value, Option<serde_json::Value>)> {
    let script = stack.dir.path().join("bench.sql");
    std::fs::write(
        &script,
        "\\set v random(1, 1000000)\nINSERT INTO notes (body, n) VALUES ('bench', :v);\nSELECT count(*) FROM notes WHERE n = :v;\n",
    )
    .unwrap();
    let mut cmd = stack.libpq_command("pgbench", &stack.writer);
    cmd.env("PGAPPNAME", app)
        .args(["-n", "-c", "2", "-t", "25", "-M", mode, "-f"])
        .arg(&script);
    let out = tokio::task::spawn_blocking(move || run(cmd)).await.unwrap();
    assert!(out.contains("number of failed transactions: 0"), "{out}");
    executions(&stack.records(), app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_simple_extended_and_prepared() {
    let stack = crate::crosscheck::witnessed().await;
    for mode in ["simple", "extended", "prepared"] {
        let app = format!("pgbench-{mode}");
        let runs = pgbench(&stack, mode, &app).await;
        // 2 clients x 25 transactions x 2 statements, nothing more, nothing less.
        assert_eq!(runs.len(), 100, "{mode}");
        let inserts: Vec<_> = runs
            .iter()
            .filter(|(s, _)| s["statement"].as_str().unwrap().starts_with("INSERT"))
            .collect();
        assert_eq!(inserts.len(), 50, "{mode}");
        for (s, o) in &runs {
            let o = o
                .as_ref()
                .unwrap_or_else(|| panic!("{mode}: no outcome for {s}"));
            assert_eq!(o["status"], "ok", "{mode}: {o}");
        }
        for (s, o) in &inserts {
            assert_eq!(o.as_ref().unwrap()["tag"], "INSERT 0 1");
            match mode {
                // Values are in the text in simple mode, bound parameters otherwise.
                "simple" => {
                    assert_eq!(s["protocol"], "simple");
                    assert!(s.get("params").is_none());
                }
                _ => {
                    assert_eq!(s["protocol"], "extended");
                    assert_eq!(
                        s["statement"],
                        "INSERT INTO notes (body, n) VALUES ('bench', $1);"
                    );
                    let v: i64 = s["params"][0].as_str().unwrap().parse().unwrap();
                    assert!((1..=1_000_000).contains(&v));
                }
            }
        }
        if mode == "prepared" {
            // Named statements, parsed once per connection, executed 25 times each.
            assert!(inserts.iter().all(|(s, _)| s["prepared"] != ""));
        }
    }
    // And the database holds exactly what the audit says ran.
    let admin = stack.cluster.connect("rates").await.unwrap();
    let n: i64 = admin
        .query_one("SELECT count(*) FROM notes WHERE body = 'bench'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 150);
    assert_chain_verifies(&stack.audit_dir());
    // And pgaudit saw the same 300 executions in the same sessions, nothing more.
    crate::crosscheck::assert_witness_agrees(&stack, "pgbench-settled", 300).await;
    stack.stop().await;
}

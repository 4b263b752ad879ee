//! Real client drivers through the proxy (issue 19's matrix), each in its own idioms, and
//! each run compared with pgaudit's log (`proxy audit crosscheck`: zero differences).
//! Their dependencies are pinned in tests/clients (requirements.txt, package-lock.json) or
//! are Debian packages, installed by `scripts/install.sh test` (`make test`).

use std::path::Path;
use std::process::Command;

use crate::common::{assert_chain_verifies, executions, Stack};
use crate::crosscheck::{assert_witness_agrees, witnessed};
use secrecy::ExposeSecret;
use serde_json::json;

fn clients_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients"))
}

fn run_client(stack: &Stack, program: &str, script: &str) {
    let mut cmd = Command::new(program);
    cmd.arg(clients_dir().join(script))
        .envs(stack.libpq_env(&stack.writer));
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{program} not runnable ({e}): run `make test-deps`"));
    assert!(
        out.status.success(),
        "{script} failed (missing dependency? run `make test-deps`): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn statements(runs: &[(serde_json::Value, Option<serde_json::Value>)]) -> Vec<String> {
    runs.iter()
        .map(|(s, _)| s["statement"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3() {
    let stack = witnessed().await;
    run_client(&stack, "python3", "psycopg_client.py");
    let runs = executions(&stack.records(), "psycopg-test");
    let texts = statements(&runs);
    let insert = "INSERT INTO notes (body, n) VALUES ($1, $2)";
    // psycopg's own statements (BEGIN, the cursor's DECLARE/FETCH/CLOSE) are audited too.
    let expected = [
        "BEGIN",
        "SELECT $1::int * 2, $2::text",
        insert,
        insert,
        insert,
        insert,
        "SELECT count(*) FROM notes WHERE body = $1",
        "COPY notes (body, n) FROM STDIN",
        "COMMIT",
        "BEGIN",
        "SELECT * FROM missing_table WHERE x = $1",
        "ROLLBACK",
        // psycopg forgets its prepared statements after a rollback.
        "DEALLOCATE ALL",
        "BEGIN",
        "DECLARE \"big\" CURSOR FOR SELECT n FROM notes WHERE body = 'copied' ORDER BY n",
    ];
    assert_eq!(texts[..expected.len()], expected, "{texts:#?}");
    assert!(
        texts[expected.len()..]
            .iter()
            .any(|t| t.starts_with("FETCH FORWARD 2 FROM \"big\"")),
        "{texts:#?}"
    );
    assert_eq!(texts.last().unwrap(), "COMMIT");

    let (select, out) = &runs[1];
    // psycopg sends Python ints in binary (int2 here, typed in its Parse) and strings as
    // text: both read as text.
    assert_eq!(select["params"], json!(["21", "zwölf"]));
    assert_eq!(out.as_ref().unwrap()["rows"], 1);
    // executemany and the pipeline: one record per execution, each with its own values.
    let params: Vec<_> = runs[2..6]
        .iter()
        .map(|(s, _)| s["params"].clone())
        .collect();
    assert_eq!(
        params,
        vec![
            json!(["many", "0"]),
            json!(["many", "1"]),
            json!(["many", "2"]),
            json!(["piped", "10"])
        ]
    );
    assert_eq!(runs[7].1.as_ref().unwrap()["tag"], "COPY 5");
    assert_eq!(runs[10].1.as_ref().unwrap()["sqlstate"], "42P01");
    assert!(
        runs.iter().all(|(_, o)| o.is_some()),
        "every execution has an outcome"
    );

    // ClientCursor, prepare=True, automatic prepares, pipelines with a sync and an error.
    let runs = executions(&stack.records(), "psycopg-more");
    let texts = statements(&runs);
    let client_side = &runs[0].0;
    assert_eq!(client_side["protocol"], "simple");
    assert_eq!(
        client_side["statement"],
        "SELECT 1::int + 1, 'o''clock'::text"
    );
    let prepared: Vec<_> = runs
        .iter()
        .filter(|(s, _)| s["statement"] == "SELECT n FROM notes WHERE body = $1 AND n = $2")
        .collect();
    assert_eq!(prepared.len(), 3, "{texts:#?}");
    // prepare=True: one named statement, parsed once, executed three times.
    let name = prepared[0].0["prepared"].as_str().unwrap();
    assert!(!name.is_empty(), "{:?}", prepared[0].0);
    assert!(prepared.iter().all(|(s, _)| s["prepared"] == name));
    let params: Vec<_> = prepared
        .iter()
        .map(|(s, _)| s["params"][1].clone())
        .collect();
    assert_eq!(params, [json!("0"), json!("1"), json!("2")]);
    // prepare_threshold = 2: unnamed twice, then a named statement.
    let auto: Vec<_> = runs
        .iter()
        .filter(|(s, _)| s["statement"] == "SELECT $1::int * 3")
        .map(|(s, _)| s["prepared"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(auto.len(), 3, "{texts:#?}");
    assert!(auto[0].is_empty() && !auto[2].is_empty(), "{auto:?}");
    // The failed pipeline: the division fails, the INSERT behind it never runs.
    let divide = runs
        .iter()
        .position(|(s, _)| s["statement"] == "SELECT 1 / $1::int")
        .unwrap();
    assert_eq!(runs[divide].1.as_ref().unwrap()["sqlstate"], "22012");
    let after = runs[divide + 1].1.as_ref().map(|o| o["status"].clone());
    assert_eq!(after, Some(json!("not_executed")), "{:#?}", &runs[divide..]);
    assert_chain_verifies(&stack.audit_dir());
    assert_witness_agrees(&stack, "psycopg-settled", 30).await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres() {
    let stack = witnessed().await;
    run_client(&stack, "node", "node_pg_client.js");
    let runs = executions(&stack.records(), "node-pg-test");
    assert_eq!(
        statements(&runs),
        [
            "SELECT $1::int + $2::int AS sum",
            "BEGIN",
            "INSERT INTO notes (body, n) VALUES ($1, $2)",
            "COMMIT",
            "SELECT count(*)::int AS c FROM notes WHERE body = 'node'",
            "SELECT $1::int",
            "SELECT $1::int * 2 AS d",
            "SELECT $1::int * 2 AS d",
            "SELECT $1::int * 2 AS d",
        ]
    );
    // The named query: one statement name for the three executions.
    assert!(runs[6..].iter().all(|(s, _)| s["prepared"] == "double"));
    assert_eq!(runs[8].0["params"], json!(["3"]));
    assert_eq!(runs[0].0["params"], json!(["40", "2"]));
    assert_eq!(runs[0].0["protocol"], "extended");
    assert_eq!(runs[1].0["protocol"], "simple");
    assert_eq!(runs[2].0["params"], json!(["node", null]));
    assert_eq!(runs[2].1.as_ref().unwrap()["tag"], "INSERT 0 1");
    assert_eq!(runs[5].1.as_ref().unwrap()["sqlstate"], "22P02");
    assert_chain_verifies(&stack.audit_dir());
    assert_witness_agrees(&stack, "node-pg-settled", 8).await;
    stack.stop().await;
}

/// asyncpg prepares with Parse + Describe + Flush and may then send a simple Query before
/// any Sync (`prepare()` then `execute()`, and `copy_records_to_table`): PostgreSQL runs
/// both, so the proxy must too. What ran is then compared with pgaudit's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg() {
    let stack = witnessed().await;
    run_client(&stack, "python3", "asyncpg_client.py");
    let runs = executions(&stack.records(), "asyncpg-test");
    let texts = statements(&runs);
    for expected in [
        "SELECT 1",
        "SELECT $1::int + 1",
        "INSERT INTO notes (body, n) VALUES ($1, $2)",
        "SELECT n FROM notes WHERE body = $1 ORDER BY n",
        "SELECT 1 / 0",
        "SELECT pg_sleep(30)",
        "SELECT 7",
    ] {
        assert!(
            texts.iter().any(|t| t == expected),
            "{expected}: {texts:#?}"
        );
    }
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("COPY ") && t.contains("FROM STDIN")),
        "{texts:#?}"
    );
    let inserts = runs
        .iter()
        .filter(|(s, _)| s["statement"] == "INSERT INTO notes (body, n) VALUES ($1, $2)")
        .count();
    assert_eq!(inserts, 3, "executemany: one record per execution");
    assert_chain_verifies(&stack.audit_dir());

    assert_witness_agrees(&stack, "asyncpg-settled", 10).await;
    stack.stop().await;
}

/// postgres.js: 40 queries in flight on one connection, unsafe(), transactions with a
/// savepoint, prepared statements reused, COPY FROM STDIN, a cursor, errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_js() {
    let stack = witnessed().await;
    run_client(&stack, "node", "postgresjs_client.js");
    let runs = executions(&stack.records(), "postgresjs-test");
    let texts = statements(&runs);
    // 40 pipelined queries: two named statements, each parsed once, every execution
    // recorded with its own value.
    assert_eq!(runs.len(), 65, "{texts:#?}");
    for (i, (s, o)) in runs[..40].iter().enumerate() {
        let text = ["SELECT $1::int + 1 AS v", "SELECT $1::int * 2 AS v"][i % 2];
        assert_eq!(s["statement"], text);
        assert_eq!(s["params"], json!([i.to_string()]));
        assert_eq!(s["prepared"], runs[i % 2].0["prepared"]);
        assert_eq!(o.as_ref().unwrap()["status"], "ok");
    }
    assert_ne!(runs[0].0["prepared"], runs[1].0["prepared"]);
    assert!(!runs[0].0["prepared"].as_str().unwrap().is_empty());
    // unsafe(): unnamed with parameters, then a simple two-statement Query.
    assert_eq!(runs[40].0["prepared"], "");
    assert_eq!(texts[41..43], ["SELECT 1 AS a", "SELECT 'two' AS b"]);
    assert_eq!(runs[42].0["protocol"], "simple");
    for expected in [
        "savepoint \"s0\"",
        "rollback to \"s0\"",
        "commit",
        "rollback",
        "COPY notes (body, n) FROM STDIN",
    ] {
        assert!(
            texts.iter().any(|t| t == expected),
            "{expected}: {texts:#?}"
        );
    }
    let divide = texts
        .iter()
        .position(|t| t == "SELECT 1 / $1::int")
        .unwrap();
    assert_eq!(runs[divide].1.as_ref().unwrap()["sqlstate"], "22012");
    // The reused prepared statement: five executions of one name.
    let counts: Vec<_> = runs
        .iter()
        .filter(|(s, _)| s["statement"] == "SELECT count(*)::int AS c FROM notes WHERE body = $1")
        .map(|(s, _)| s["prepared"].clone())
        .collect();
    assert_eq!(counts.len(), 5);
    assert!(counts.iter().all(|p| *p == counts[0]));
    // The cursor (Execute with a row limit, three times): one execution, all its rows.
    let cursor = runs
        .iter()
        .find(|(s, _)| {
            s["statement"] == "SELECT n FROM notes WHERE body = 'postgresjs-copied' ORDER BY n"
        })
        .unwrap();
    assert_eq!(cursor.1.as_ref().unwrap()["rows"], 4, "{cursor:?}");
    assert_chain_verifies(&stack.audit_dir());
    assert_witness_agrees(&stack, "postgresjs-settled", 60).await;
    stack.stop().await;
}

/// Ruby pg (libpq underneath): exec, exec_params, prepare/exec_prepared, transaction
/// blocks, COPY both ways, pipeline mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ruby_pg() {
    let stack = witnessed().await;
    run_client(&stack, "ruby", "ruby_pg_client.rb");
    let runs = executions(&stack.records(), "ruby-pg-test");
    let texts = statements(&runs);
    let insert = "INSERT INTO notes (body, n) VALUES ($1, $2)";
    assert_eq!(
        texts,
        [
            "SELECT 1 AS a",
            "SELECT 2 AS b",
            "SELECT $1::int + $2::int",
            insert,
            insert,
            insert,
            "BEGIN",
            insert,
            "COMMIT",
            "BEGIN",
            insert,
            "SELECT * FROM missing_table",
            "ROLLBACK",
            "SELECT count(*) FROM notes WHERE body = 'ruby-tx'",
            "COPY notes (body, n) FROM STDIN",
            "COPY (SELECT n FROM notes WHERE body = 'ruby-copied' ORDER BY n) TO STDOUT",
            "SELECT $1::int * 10",
            "SELECT count(*) FROM notes WHERE body = $1",
        ]
    );
    // exec_prepared: the statement named "ins", three executions with their values.
    assert!(runs[3..6].iter().all(|(s, _)| s["prepared"] == "ins"));
    assert_eq!(runs[5].0["params"], json!(["ruby", "2"]));
    assert_eq!(runs[2].0["prepared"], "");
    assert_eq!(runs[11].1.as_ref().unwrap()["sqlstate"], "42P01");
    assert_eq!(runs[14].1.as_ref().unwrap()["tag"], "COPY 4");
    assert_eq!(runs[15].1.as_ref().unwrap()["tag"], "COPY 4");
    assert_eq!(runs[17].0["params"], json!(["ruby"]));
    assert_chain_verifies(&stack.audit_dir());
    assert_witness_agrees(&stack, "ruby-pg-settled", 16).await;
    stack.stop().await;
}

/// Perl DBD::Pg (libpq underneath): placeholders of three kinds, server-side and
/// client-side prepares, transactions, COPY, errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perl_dbd_pg() {
    let stack = witnessed().await;
    run_client(&stack, "perl", "dbd_pg_client.pl");
    let runs = executions(&stack.records(), "dbd-pg-test");
    let texts = statements(&runs);
    let insert = "INSERT INTO notes (body, n) VALUES ($1, $2)";
    assert_eq!(
        texts,
        [
            "SET search_path TO public",
            "SELECT $1::int + $2::int",
            insert,
            insert,
            insert,
            insert,
            "SELECT count(*) FROM notes WHERE body = $1 AND n > $2",
            "SELECT 'it''s'::text || '!'",
            "begin",
            insert,
            "commit",
            "begin",
            insert,
            "SELECT 1 / (n - n) FROM notes WHERE body = 'perl-tx'",
            "rollback",
            "SELECT count(*) FROM notes WHERE body = 'perl-tx'",
            "COPY notes (body, n) FROM STDIN",
            "SELECT * FROM missing_table WHERE n = $1",
            "SELECT count(*) FROM notes WHERE body = $1",
        ]
    );
    // pg_switch_prepared: the first execution unnamed, then one named statement.
    assert_eq!(runs[2].0["prepared"], "");
    let name = runs[3].0["prepared"].as_str().unwrap();
    assert!(name.starts_with("dbdpg_"), "{name}");
    assert!(runs[3..6].iter().all(|(s, _)| s["prepared"] == name));
    assert_eq!(runs[5].0["params"], json!(["perl", "4"]));
    // :name placeholders become $n with their values bound.
    assert_eq!(runs[6].0["params"], json!(["perl", "1"]));
    // pg_server_prepare => 0: the value is in the text of a simple Query.
    assert_eq!(runs[7].0["protocol"], "simple");
    assert_eq!(runs[13].1.as_ref().unwrap()["sqlstate"], "22012");
    assert_eq!(runs[16].1.as_ref().unwrap()["tag"], "COPY 3");
    assert_eq!(runs[17].1.as_ref().unwrap()["sqlstate"], "42P01");
    assert_chain_verifies(&stack.audit_dir());
    assert_witness_agrees(&stack, "dbd-pg-settled", 16).await;
    stack.stop().await;
}

/// pg_dump of the rates database through the proxy (as the read-only application login),
/// restored with pg_restore straight into a fresh database of the same cluster: the dump
/// succeeds, the restore has the same row counts, and the witness agrees with the dump's
/// session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_dump_and_restore() {
    let stack = witnessed().await;
    let dump = stack.dir.path().join("rates.dump");
    let mut cmd = stack.libpq_command("pg_dump", &stack.app);
    cmd.env("PGAPPNAME", "pg-dump-test")
        // The test stack's own table (notes, for writers) is not the rates database's.
        .args(["--format=custom", "--exclude-table=public.notes*", "--file"])
        .arg(&dump);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "pg_dump through the proxy: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The restore needs a superuser's rights (owners, grants): straight to the cluster.
    let admin = stack.cluster.connect("rates").await.unwrap();
    admin
        .batch_execute("CREATE DATABASE rates_restored")
        .await
        .unwrap();
    let mut cmd = Command::new(dbgw_db::cluster::pg_bin("pg_restore").unwrap());
    let creds = stack.cluster.admin();
    cmd.env_clear()
        .env("PGHOST", stack.cluster.host())
        .env("PGPORT", stack.cluster.port().to_string())
        .env("PGUSER", &creds.username)
        .env("PGPASSWORD", creds.password.expose_secret())
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", stack.cluster.ca_cert())
        .args(["--exit-on-error", "--dbname", "rates_restored"])
        .arg(&dump);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "pg_restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = stack.cluster.connect("rates_restored").await.unwrap();
    let count_sql = "SELECT (SELECT count(*) FROM ports), (SELECT count(*) FROM prices), (SELECT count(*) FROM regions)";
    let counts = |row: tokio_postgres::Row| -> Vec<i64> { (0..3).map(|i| row.get(i)).collect() };
    let before = counts(admin.query_one(count_sql, &[]).await.unwrap());
    let after = counts(restored.query_one(count_sql, &[]).await.unwrap());
    assert_eq!(before, after);
    assert!(before.iter().all(|&n| n > 0), "{before:?}");

    let runs = executions(&stack.records(), "pg-dump-test");
    let texts = statements(&runs);
    assert!(
        texts.contains(&"SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY".into()),
        "{texts:#?}"
    );
    assert!(texts.iter().any(|t| t.starts_with("PREPARE dumpFunc")));
    // Each table's data went out as COPY TO STDOUT, its row count in the outcome.
    for (table, n) in ["ports", "prices", "regions"].iter().zip(&before) {
        let (_, o) = runs
            .iter()
            .find(|(s, _)| {
                s["statement"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("COPY public.{table} "))
            })
            .unwrap_or_else(|| panic!("no COPY of {table}: {texts:#?}"));
        assert_eq!(o.as_ref().unwrap()["rows"], *n, "{table}");
    }
    assert_chain_verifies(&stack.audit_dir());
    assert_witness_agrees(&stack, "pg-dump-settled", 60).await;
    stack.stop().await;
}

/// pgJDBC 42.5 (Debian's jar, run as a single-file Java program): prepareThreshold, a
/// batch, DatabaseMetaData, transactions, CopyManager.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc() {
    let stack = witnessed().await;
    let mut cmd = Command::new("java");
    cmd.args(["-cp", "/usr/share/java/postgresql.jar"])
        .arg(clients_dir().join("JdbcClient.java"))
        .envs(stack.libpq_env(&stack.writer));
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("java not runnable ({e}): run `make test-deps`"));
    assert!(
        out.status.success(),
        "JdbcClient.java failed (missing dependency? run `make test-deps`): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let runs = executions(&stack.records(), "jdbc-test");
    let texts = statements(&runs);
    assert_eq!(runs.len(), 20, "{texts:#?}");
    // prepareThreshold=3: two unnamed executions, then the named statement S_1.
    let names: Vec<_> = runs[..5]
        .iter()
        .map(|(s, _)| s["prepared"].clone())
        .collect();
    assert_eq!(names, ["", "", "S_1", "S_1", "S_1"]);
    assert_eq!(runs[4].0["params"], json!(["4"]));
    // The batch: one named statement, three executions, each with its values.
    let insert = "INSERT INTO notes (body, n) VALUES ($1, $2)";
    assert!(runs[5..8].iter().all(|(s, _)| s["statement"] == insert));
    let params: Vec<_> = runs[5..8]
        .iter()
        .map(|(s, _)| s["params"][1].clone())
        .collect();
    assert_eq!(params, [json!("0"), json!("1"), json!("2")]);
    // DatabaseMetaData: the driver's own catalogue queries, audited like any other.
    assert!(runs[8..11]
        .iter()
        .all(|(s, _)| s["statement"].as_str().unwrap().contains("pg_catalog")));
    assert_eq!(
        texts[11..],
        [
            "BEGIN",
            "INSERT INTO notes (body, n) VALUES ('jdbc-tx', 1)",
            "COMMIT",
            "BEGIN",
            "INSERT INTO notes (body, n) VALUES ('jdbc-tx', 2)",
            "SELECT * FROM missing_table",
            "ROLLBACK",
            "COPY notes (body, n) FROM STDIN",
            "SELECT count(*) FROM notes WHERE body LIKE 'jdbc%'",
        ]
    );
    assert_eq!(runs[11].0["protocol"], "extended");
    assert_eq!(runs[16].1.as_ref().unwrap()["sqlstate"], "42P01");
    assert_eq!(runs[18].1.as_ref().unwrap()["tag"], "COPY 2");
    assert_chain_verifies(&stack.audit_dir());
    assert_witness_agrees(&stack, "jdbc-settled", 18).await;
    stack.stop().await;
}

/// sqlx 0.9 (Rust, `postgres` feature, rustls with ring): prepared queries (its statement
/// cache: a named statement parsed once, then bound again), an unnamed one
/// (`persistent(false)`), a transaction committed and one rolled back after an error, a
/// multi-statement simple Query (`raw_sql`), COPY in and out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx() {
    use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
    use sqlx::{Connection, Row};
    let stack = witnessed().await;
    let options = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(stack.addr.port())
        .username(&stack.writer.username)
        .password(stack.writer.password.expose_secret())
        .database("rates")
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert(stack.ca.clone())
        .application_name("sqlx-test");
    let mut conn = PgConnection::connect_with(&options).await.unwrap();
    for i in 0..3i32 {
        let row = sqlx::query("SELECT $1::int + 1")
            .bind(i)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(row.get::<i32, _>(0), i + 1);
    }
    let row = sqlx::query("SELECT $1::text || '!'")
        .bind("once")
        .persistent(false)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>(0), "once!");

    let mut tx = conn.begin().await.unwrap();
    for n in 1..=2i32 {
        sqlx::query("INSERT INTO notes (body, n) VALUES ($1, $2)")
            .bind("sqlx")
            .bind(n)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("INSERT INTO notes (body, n) VALUES ($1, $2)")
        .bind("sqlx-undone")
        .bind(3i32)
        .execute(&mut *tx)
        .await
        .unwrap();
    let failed = sqlx::query("SELECT * FROM missing_table")
        .fetch_all(&mut *tx)
        .await;
    assert!(failed.is_err());
    tx.rollback().await.unwrap();

    sqlx::raw_sql("SELECT 1; SELECT 'two'")
        .execute(&mut conn)
        .await
        .unwrap();

    let mut copy = conn
        .copy_in_raw("COPY notes (body, n) FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    copy.send(b"sqlx-copy,10\nsqlx-copy,11\n".as_slice())
        .await
        .unwrap();
    assert_eq!(copy.finish().await.unwrap(), 2);
    let out: Vec<u8> = {
        use futures_util::TryStreamExt;
        let chunks: Vec<_> = conn
            .copy_out_raw(
                "COPY (SELECT n FROM notes WHERE body = 'sqlx-copy' ORDER BY n) TO STDOUT",
            )
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        chunks.concat()
    };
    assert_eq!(out, b"10\n11\n");
    let count: i64 = sqlx::query("SELECT count(*) FROM notes WHERE body = $1")
        .bind("sqlx")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2);
    conn.close().await.unwrap();

    let runs = executions(&stack.records(), "sqlx-test");
    let texts = statements(&runs);
    let prepared: Vec<_> = runs
        .iter()
        .filter(|(s, _)| s["statement"] == "SELECT $1::int + 1")
        .collect();
    assert_eq!(prepared.len(), 3, "{texts:#?}");
    // The statement cache: one named statement for the three executions.
    let name = prepared[0].0["prepared"].as_str().unwrap();
    assert!(!name.is_empty(), "{:?}", prepared[0].0);
    assert!(prepared.iter().all(|(s, _)| s["prepared"] == name));
    assert_eq!(prepared[2].0["params"], json!(["2"]));
    for expected in [
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SELECT 'two'",
        "COPY notes (body, n) FROM STDIN WITH (FORMAT csv)",
    ] {
        assert!(
            texts.iter().any(|t| t == expected),
            "{expected}: {texts:#?}"
        );
    }
    assert_chain_verifies(&stack.audit_dir());
    assert_witness_agrees(&stack, "sqlx-settled", 14).await;
    stack.stop().await;
}

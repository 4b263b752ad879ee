//! Read-only at the gateway: a person whose grant's policy has `read_only` runs with
//! `default_transaction_read_only` pinned on, even under a role that may write; every way
//! to turn it off is refused (and audited), a change the proxy cannot see in the text ends
//! the session when the server reports it, and zero writes reach the server. Reading,
//! psql's `\d+` and the catalog queries GUI tools send still work.

use std::time::Duration;

use crate::common::wire::{bind, execute, parse, sync};
use crate::common::{query_msg, Options, RawClient, Stack};
use dev_idp::DevIdp;
use proxy::settings::Plaintext;
use serde_json::Value;

const ALICE: &str = "alice@example.com";

async fn stack(idp: &DevIdp) -> Stack {
    let stack = Stack::with(Options {
        oidc_issuer: Some(idp.issuer().to_string()),
        plaintext: Plaintext::Loopback,
        pgaudit: true,
        ..Options::default()
    })
    .await;
    // Rows to lose, and code a writer could run (created by the superuser, run as the
    // caller): a writing function, one that tries to make its own transaction read-write,
    // one that turns the default off where the proxy cannot read the name, a procedure
    // that commits.
    let admin = stack.cluster.connect("rates").await.unwrap();
    admin
        .batch_execute(
            "INSERT INTO notes (body) VALUES ('one'), ('two'), ('three');
             CREATE FUNCTION write_note() RETURNS void LANGUAGE plpgsql AS
               $$ BEGIN INSERT INTO notes (body) VALUES ('by write_note'); END $$;
             CREATE FUNCTION write_note_rw() RETURNS void LANGUAGE plpgsql AS
               $$ BEGIN PERFORM set_config('transaction_read_only', 'off', true);
                        INSERT INTO notes (body) VALUES ('by write_note_rw'); END $$;
             CREATE FUNCTION unlock() RETURNS text LANGUAGE sql AS
               $$ SELECT set_config(reverse('ylno_daer_noitcasnart_tluafed'), 'off', false) $$;
             CREATE PROCEDURE write_proc() LANGUAGE plpgsql AS
               $$ BEGIN PERFORM unlock(); COMMIT; DELETE FROM notes; END $$;",
        )
        .await
        .unwrap();
    stack
}

async fn read_only_grant(stack: &Stack) -> grants::Grant {
    stack
        .grant_with(
            ALICE,
            "rates_writer",
            chrono::Utc::now() + chrono::Duration::hours(1),
            grants::SessionPolicy {
                read_only: true,
                ..Default::default()
            },
        )
        .await
}

async fn login(stack: &Stack, token: &str, application: &str) -> tokio_postgres::Client {
    let mut config = stack.pg_config(&stack.app);
    config
        .user(ALICE)
        .password(token)
        .application_name(application);
    let tls = tls_config::postgres_connector(Some(&stack.ca)).unwrap();
    let (client, conn) = config.connect(tls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// Row counts the server holds, read as the superuser.
async fn notes(stack: &Stack) -> (i64, i64) {
    let admin = stack.cluster.connect("rates").await.unwrap();
    let row = admin
        .query_one(
            "SELECT (SELECT count(*) FROM notes), (SELECT count(*) FROM ports)",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

fn code(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| format!("not a database error: {e}"))
}

/// The corpus: every write attempt fails, the proxy refuses those that would turn
/// read-only off, the session goes on, and the server's row counts, catalog and pgaudit
/// log show that nothing was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_grant_lets_no_write_reach_the_server() {
    let idp = DevIdp::start().unwrap();
    let stack = stack(&idp).await;
    let grant = read_only_grant(&stack).await;
    // The role itself may write (a service in it, through the proxy): read-only is the
    // policy's doing.
    let writer = stack.connect(&stack.writer).await;
    writer
        .batch_execute("INSERT INTO notes (body) VALUES ('by the service')")
        .await
        .unwrap();
    drop(writer);
    let before = notes(&stack).await;
    let alice = login(&stack, &idp.token(ALICE).unwrap(), "ro-corpus").await;

    // Refused by the server: the transaction is read-only.
    let server = [
        "INSERT INTO notes (body) VALUES ('w')",
        "UPDATE notes SET body = 'w'",
        "DELETE FROM notes",
        "TRUNCATE notes",
        "CREATE TABLE ro_made (a int)",
        "DROP TABLE notes",
        "WITH d AS (DELETE FROM notes RETURNING *) SELECT count(*) FROM d",
        "EXPLAIN ANALYZE DELETE FROM notes",
        "SELECT write_note()",
        "SELECT write_note_rw()",
        "SELECT nextval('notes_id_seq')",
        "BEGIN; DELETE FROM notes; COMMIT",
        "SELECT unlock(); DELETE FROM notes",
    ];
    // Refused by the proxy: they would turn read-only off (now or for a later
    // transaction), or run code that can commit and go on.
    let proxy = [
        "SET default_transaction_read_only = off",
        "SET SESSION \"default_transaction_read_only\" TO 'off'",
        "set transaction_read_only = off",
        "RESET default_transaction_read_only",
        "RESET ALL",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "SET TRANSACTION READ WRITE",
        "BEGIN READ WRITE",
        "START TRANSACTION ISOLATION LEVEL READ COMMITTED, READ WRITE",
        "BEGIN; SET TRANSACTION READ WRITE; DELETE FROM notes; COMMIT",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "SELECT SET_CONFIG('Default_Transaction_Read_Only', 'off', false)",
        "DO $$ BEGIN DELETE FROM notes; END $$",
        "DO $$ BEGIN PERFORM unlock(); COMMIT; DELETE FROM notes; END $$",
        "CALL write_proc()",
        "SELECT unlock(); COMMIT; DELETE FROM notes",
    ];
    let mut refused_by_proxy = 0;
    for text in server.iter().chain(&proxy) {
        let err = alice
            .simple_query(text)
            .await
            .expect_err(&format!("{text} ran"));
        let code = code(&err);
        assert!(
            ["25006", "25001", "42501"].contains(&code.as_str()),
            "{text}: {err:?} (expected a read-only or privilege error)"
        );
        // A failed explicit transaction stays open: end it, as a client would.
        alice.simple_query("ROLLBACK").await.unwrap();
        if proxy.contains(text) {
            let message = err.as_db_error().unwrap().message().to_string();
            assert!(message.contains("read-only"), "{text}: {message}");
            refused_by_proxy += 1;
        }
    }
    // The same through the extended protocol, and COPY FROM STDIN.
    for text in ["DELETE FROM notes", "SELECT write_note()"] {
        let err = alice.execute(text, &[]).await.unwrap_err();
        assert_eq!(code(&err), "25006", "{text}");
    }
    let err = alice
        .execute(
            "SELECT set_config($1, 'off', false)",
            &[&"transaction_read_only"],
        )
        .await
        .unwrap_err();
    assert_eq!(
        code(&err),
        "25001",
        "the server refuses it after the snapshot"
    );

    // Still read-only, still working.
    let show = alice
        .query_one("SHOW default_transaction_read_only", &[])
        .await
        .unwrap();
    assert_eq!(show.get::<_, String>(0), "on");
    alice.simple_query("DISCARD ALL").await.unwrap();
    let show = alice
        .query_one("SHOW default_transaction_read_only", &[])
        .await
        .unwrap();
    assert_eq!(show.get::<_, String>(0), "on", "DISCARD ALL keeps the pin");
    drop(alice);
    // COPY FROM STDIN (on its own connection: tokio-postgres does not go on after a
    // refused COPY, with or without the proxy).
    let copier = login(&stack, &idp.token(ALICE).unwrap(), "ro-copy").await;
    let err = copier
        .copy_in::<_, bytes::Bytes>("COPY notes (body) FROM STDIN")
        .await
        .err()
        .expect("COPY FROM STDIN starts");
    assert_eq!(code(&err), "25006");
    drop(copier);

    // Zero writes: the rows, the catalog and pgaudit's witness.
    assert_eq!(notes(&stack).await, before);
    let admin = stack.cluster.connect("rates").await.unwrap();
    let made = admin
        .query_one("SELECT to_regclass('ro_made') IS NULL", &[])
        .await
        .unwrap();
    assert!(made.get::<_, bool>(0), "a table was created");
    crate::crosscheck::server_log_settled(&stack, "read-only-marker").await;
    // pgaudit logs a utility statement (COPY) as it starts: every write it saw must be
    // followed, in the same backend, by the server's read-only refusal.
    let log = crate::crosscheck::server_log(&stack.pgaudit_dir());
    let mut writes = Vec::new();
    for (i, l) in log.iter().enumerate() {
        let audited_write = l["user"] == grant.db_user.as_str()
            && l["message"].as_str().is_some_and(|m| {
                m.starts_with("AUDIT:") && (m.contains(",WRITE,") || m.contains(",DDL,"))
            });
        if !audited_write {
            continue;
        }
        let next = log[i + 1..].iter().find(|n| n["pid"] == l["pid"]);
        let refused =
            next.is_some_and(|n| n["error_severity"] == "ERROR" && n["state_code"] == "25006");
        if !refused {
            writes.push((l.clone(), next.cloned()));
        }
    }
    assert!(writes.is_empty(), "pgaudit saw writes: {writes:#?}");

    // Each refusal is audited as such.
    stack.sessions_ended().await;
    let refused: Vec<Value> = stack
        .records()
        .into_iter()
        .filter(|r| r["outcome"]["status"] == "refused" || r["status"] == "refused")
        .collect();
    assert_eq!(refused.len(), refused_by_proxy, "{refused:#?}");
    for r in &refused {
        let o = if r["outcome"].is_object() {
            &r["outcome"]
        } else {
            r
        };
        assert_eq!(o["sqlstate"], "25006", "{r}");
    }
    crate::common::assert_chain_verifies(&stack.audit_dir());
    stack.stop().await;
}

/// A change of the default the proxy cannot read (a function builds the setting's name)
/// is reported by the server at the next ReadyForQuery: the proxy ends the session then,
/// and nothing the client pipelined behind it runs: behind a Sync, behind a Query, or
/// after a COMMIT in the same extended-protocol segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_change_ends_the_session_before_anything_behind_it_runs() {
    let idp = DevIdp::start().unwrap();
    let stack = stack(&idp).await;
    read_only_grant(&stack).await;
    let before = notes(&stack).await;
    let token = idp.token(ALICE).unwrap();

    let pipelines: [Vec<Vec<u8>>; 3] = [
        vec![
            parse("", "SELECT unlock()"),
            bind(""),
            execute(),
            sync(),
            parse("", "DELETE FROM notes"),
            bind(""),
            execute(),
            sync(),
        ],
        vec![query_msg("SELECT unlock()"), query_msg("DELETE FROM notes")],
        vec![
            parse("", "SELECT unlock()"),
            bind(""),
            execute(),
            parse("", "COMMIT"),
            bind(""),
            execute(),
            parse("", "DELETE FROM notes"),
            bind(""),
            execute(),
            sync(),
        ],
    ];
    for (i, messages) in pipelines.iter().enumerate() {
        let mut c = RawClient::login_person(&stack, ALICE, &token, "ro-hidden").await;
        c.send(&messages.concat()).await.unwrap();
        let mut fatal = None;
        while let Some((tag, body)) = c.recv().await {
            if tag == b'E' {
                let f = proxy::protocol::backend::error_fields(&body).unwrap();
                if f.is_fatal() {
                    fatal = Some((f.code.clone(), f.message.clone()));
                }
            }
            let completed = String::from_utf8_lossy(&body).into_owned();
            assert!(
                tag != b'C' || !completed.starts_with("DELETE"),
                "pipeline {i}: the DELETE ran"
            );
        }
        let (code, message) = fatal.unwrap_or_else(|| panic!("pipeline {i}: no FATAL"));
        assert!(
            message.contains("default_transaction_read_only") || message.contains("read-only"),
            "pipeline {i}: {code} {message}"
        );
        assert_eq!(notes(&stack).await, before, "pipeline {i} wrote");
    }

    // The disconnects say why.
    stack.sessions_ended().await;
    let reasons: Vec<String> = stack
        .records()
        .into_iter()
        .filter(|r| r["type"] == "disconnect")
        .filter_map(|r| r["reason"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        reasons
            .iter()
            .filter(|r| r.contains("default_transaction_read_only = off"))
            .count(),
        2,
        "{reasons:#?}"
    );
    stack.stop().await;
}

/// Reading works as before: psql's `\d+`, the catalog and information_schema queries GUI
/// tools send (pgJDBC's DatabaseMetaData), a read-only transaction, and the `SET`s drivers
/// send at connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_catalog_queries_work_in_a_read_only_session() {
    let idp = DevIdp::start().unwrap();
    let stack = stack(&idp).await;
    read_only_grant(&stack).await;
    let token = idp.token(ALICE).unwrap();

    let mut psql = stack.libpq_command("psql", &stack.app);
    psql.env("PGUSER", ALICE).env("PGPASSWORD", &token).args([
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        "\\d+ ports",
        "-c",
        "\\dt",
        "-c",
        "SHOW default_transaction_read_only",
    ]);
    let out = psql.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("parent_slug"), "{stdout}");
    assert!(stdout.contains("notes"), "{stdout}");
    assert!(
        stdout.contains(" default_transaction_read_only \n-------------------------------\n on\n"),
        "{stdout}"
    );

    let alice = login(&stack, &token, "ro-gui").await;
    alice
        .batch_execute(
            "SET extra_float_digits = 3; SET application_name = 'DBeaver';
             SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        )
        .await
        .unwrap();
    // DatabaseMetaData.getTables, getColumns, getPrimaryKeys (their shapes).
    let tables = alice
        .query(
            "SELECT NULL AS TABLE_CAT, n.nspname AS TABLE_SCHEM, c.relname AS TABLE_NAME, \
             CASE n.nspname ~ '^pg_' OR n.nspname = 'information_schema' WHEN true THEN \
             'SYSTEM TABLE' ELSE CASE c.relkind WHEN 'r' THEN 'TABLE' WHEN 'v' THEN 'VIEW' \
             ELSE NULL END END AS TABLE_TYPE, d.description AS REMARKS \
             FROM pg_catalog.pg_namespace n, pg_catalog.pg_class c \
             LEFT JOIN pg_catalog.pg_description d ON (c.oid = d.objoid AND d.objsubid = 0 \
             AND d.classoid = 'pg_class'::regclass) \
             WHERE c.relnamespace = n.oid AND n.nspname LIKE $1 AND c.relname LIKE $2 \
             AND c.relkind IN ('r', 'v', 'p') ORDER BY TABLE_TYPE, TABLE_SCHEM, TABLE_NAME",
            &[&"public", &"%"],
        )
        .await
        .unwrap();
    assert!(tables.len() >= 4, "{tables:?}");
    let columns = alice
        .query(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
            &[&"public", &"ports"],
        )
        .await
        .unwrap();
    assert_eq!(columns.len(), 3);
    alice
        .query(
            "SELECT a.attname, i.indisprimary FROM pg_catalog.pg_index i \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid \
             AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::text::regclass",
            &[&"notes"],
        )
        .await
        .unwrap();
    alice
        .batch_execute("BEGIN READ ONLY; SELECT count(*) FROM ports; COMMIT")
        .await
        .unwrap();
    alice.simple_query("BEGIN").await.unwrap();
    alice.simple_query("SELECT 1").await.unwrap();
    alice.simple_query("COMMIT").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), alice.simple_query("SELECT 1"))
        .await
        .unwrap()
        .unwrap();
    stack.stop().await;
}

/// pgJDBC itself (Debian's jar, as a single-file Java program): the DatabaseMetaData calls a
/// GUI tool makes, the driver's own read-only transaction, and a write refused with 25006,
/// while nothing is written on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_metadata_works_in_a_read_only_session() {
    let idp = DevIdp::start().unwrap();
    let stack = stack(&idp).await;
    read_only_grant(&stack).await;
    let token = idp.token(ALICE).unwrap();
    let before = notes(&stack).await;
    let mut java = std::process::Command::new("java");
    java.args(["-cp", "/usr/share/java/postgresql.jar"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/JdbcReadOnly.java"
        ))
        .envs(stack.libpq_env(&stack.app))
        .env("PGUSER", ALICE)
        .env("PGPASSWORD", &token);
    let out = tokio::task::spawn_blocking(move || java.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("java not runnable ({e}): run `make test-deps`"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("metadata ok"),
        "JdbcReadOnly.java failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(notes(&stack).await, before, "nothing was written");
    // The write is recorded before it was forwarded, with the server's refusal.
    stack.sessions_ended().await;
    let runs = crate::common::executions(&stack.records(), "jdbc-read-only");
    let writes: Vec<_> = runs
        .iter()
        .filter(|(s, _)| s["statement"].as_str().unwrap().starts_with("INSERT"))
        .collect();
    assert_eq!(writes.len(), 1, "{runs:#?}");
    let outcome = writes[0].1.as_ref().expect("an outcome");
    assert_eq!(outcome["sqlstate"], "25006", "{outcome}");
    stack.stop().await;
}

//! Session timers (issue 22): a grant's idle, idle-in-transaction and age limits close the
//! session with a NOTICE first and a FATAL with PostgreSQL's SQLSTATE, a `disconnect` record
//! and a metric; what is busy (a long statement, a slow COPY, a pg_dump) is not idle; and a
//! grant extended in the control plane keeps its sessions open, on the same backend.

use std::time::{Duration, Instant};
use testkit::eventually;

use crate::common::{query_msg, sqlstate, Options, RawClient, Stack};
use dev_idp::DevIdp;
use futures_util::StreamExt;
use grants::SessionPolicy;
use proxy::settings::Plaintext;

const ALICE: &str = "alice@example.com";
const APPROVALS: &str = "https://approvals.example.com/requests/new";

async fn stack(
    idp: &DevIdp,
    configure: impl FnOnce(&mut proxy::settings::Settings) + Send + 'static,
) -> Stack {
    Stack::with(Options {
        oidc_issuer: Some(idp.issuer().to_string()),
        plaintext: Plaintext::Loopback,
        configure: Box::new(move |s| {
            s.sessions.approvals_url = APPROVALS.into();
            configure(s)
        }),
        ..Options::default()
    })
    .await
}

fn in_an_hour() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() + chrono::Duration::hours(1)
}

/// A person's session through tokio-postgres, its notices collected.
async fn connect(
    stack: &Stack,
    token: &str,
    application: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let mut config = stack.pg_config(&stack.app);
    config
        .user(ALICE)
        .password(token)
        .application_name(application);
    let tls = tls_config::postgres_connector(Some(&stack.ca)).unwrap();
    let (client, mut conn) = config.connect(tls).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notice(n) = m {
                let _ = tx.send(n.message().to_string());
            }
        }
    });
    (client, rx)
}

/// How many server processes `role` has now.
async fn backends(admin: &tokio_postgres::Client, role: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .unwrap()
        .get(0)
}

/// Waits (with a generous deadline) until `role` has no server process left.
async fn no_backend_left(admin: &tokio_postgres::Client, role: &str) {
    eventually(
        &format!("{role} has no backend left"),
        Duration::from_secs(5),
        async || match backends(admin, role).await {
            0 => Ok(()),
            n => Err(format!("{n} backends")),
        },
    )
    .await;
}

/// The `disconnect` record of the session with this application name, once written.
async fn disconnect_reason(stack: &Stack, application: &str) -> String {
    stack.sessions_ended().await;
    let records = stack.records();
    let end = records
        .iter()
        .find(|r| r["type"] == "disconnect" && r["application"] == application)
        .unwrap_or_else(|| panic!("no disconnect record for {application}"));
    end["reason"].as_str().unwrap().to_string()
}

fn closed_metric(stack: &Stack, reason: &str) -> u64 {
    let line = format!("dbgw_proxy_sessions_closed_total{{reason=\"{reason}\"}} ");
    stack
        .ctx
        .metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&line).map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0)
}

/// The fields of an ErrorResponse or NoticeResponse body: (severity, code, message).
fn fields(body: &[u8]) -> (String, String, String) {
    let (mut severity, mut message) = (String::new(), String::new());
    for field in body.split(|b| *b == 0) {
        match field.first() {
            Some(b'S') => severity = String::from_utf8_lossy(&field[1..]).into(),
            Some(b'M') => message = String::from_utf8_lossy(&field[1..]).into(),
            _ => {}
        }
    }
    (severity, sqlstate(body), message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_warned_then_closed_with_the_idle_reason() {
    let idp = DevIdp::start().unwrap();
    let stack = stack(&idp, |_| {}).await;
    let policy = SessionPolicy {
        idle_timeout_secs: Some(3),
        ..Default::default()
    };
    let grant = stack
        .grant_with(ALICE, "rates_reader", in_an_hour(), policy)
        .await;
    let token = idp.token(ALICE).unwrap();
    let mut c = RawClient::login_person(&stack, ALICE, &token, "idle-psql").await;
    c.send(&query_msg("SELECT 1")).await.unwrap();
    c.until(b'Z').await.unwrap();
    let idle_from = Instant::now();

    // A NOTICE while idle, then the FATAL, then the end of the connection.
    let (tag, body) = c.recv().await.expect("a notice before the close");
    assert_eq!(tag, b'N', "{}", String::from_utf8_lossy(&body));
    let (severity, _, notice) = fields(&body);
    assert_eq!(severity, "NOTICE");
    assert!(notice.contains("closed after 3 s idle"), "{notice}");
    let (tag, body) = c.recv().await.expect("the FATAL");
    assert_eq!(tag, b'E');
    let (severity, code, message) = fields(&body);
    assert_eq!(
        (severity.as_str(), code.as_str()),
        ("FATAL", "57P05"),
        "{message}"
    );
    assert!(message.contains("idle-session timeout"), "{message}");
    assert!(c.recv().await.is_none(), "the connection is closed");
    assert!(
        idle_from.elapsed() >= Duration::from_millis(2500),
        "closed after {:?} idle",
        idle_from.elapsed()
    );

    let admin = stack.cluster.connect("postgres").await.unwrap();
    no_backend_left(&admin, &grant.db_user).await;
    let reason = disconnect_reason(&stack, "idle-psql").await;
    assert!(reason.contains("idle-session timeout"), "{reason}");
    assert_eq!(closed_metric(&stack, "idle"), 1);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_statement_a_slow_copy_and_a_pg_dump_are_not_idle() {
    let idp = DevIdp::start().unwrap();
    // Services get their own limits: pg_dump runs as the application account.
    let stack = stack(&idp, |s| s.sessions.services.idle_timeout_secs = Some(2)).await;
    let admin = stack.cluster.connect("rates").await.unwrap();
    // A table that takes seconds to dump: its row policy sleeps for each row.
    admin
        .batch_execute(
            "SET ROLE rates_owner;
             CREATE TABLE slow_dump (i int);
             INSERT INTO slow_dump SELECT generate_series(1, 1500);
             ALTER TABLE slow_dump ENABLE ROW LEVEL SECURITY;
             CREATE POLICY slow ON slow_dump FOR SELECT USING (pg_sleep(0.002) IS NOT NULL);
             GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO rates_reader;
             RESET ROLE;",
        )
        .await
        .unwrap();
    let policy = SessionPolicy {
        idle_timeout_secs: Some(2),
        idle_in_transaction_timeout_secs: Some(2),
        ..Default::default()
    };
    stack
        .grant_with(ALICE, "rates_reader", in_an_hour(), policy)
        .await;
    let token = idp.token(ALICE).unwrap();
    let (client, _notices) = connect(&stack, &token, "busy-person").await;
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);

    // A statement twice the limit.
    client.simple_query("SELECT pg_sleep(4)").await.unwrap();
    // A COPY TO STDOUT that the server takes twice the limit to produce.
    let started = Instant::now();
    let copy = client
        .copy_out("COPY (SELECT i, pg_sleep(0.8) FROM generate_series(1, 5) i) TO STDOUT")
        .await
        .unwrap();
    futures_util::pin_mut!(copy);
    let mut rows = 0;
    while let Some(chunk) = copy.next().await {
        chunk.unwrap();
        rows += 1;
    }
    assert_eq!(rows, 5);
    assert!(started.elapsed() > Duration::from_secs(4));
    // A large COPY read slowly (100 ms per MB, beyond what socket buffers hold): the proxy
    // is still sending the result.
    let started = Instant::now();
    let copy = client
        .copy_out("COPY (SELECT repeat('x', 1000) FROM generate_series(1, 40000)) TO STDOUT")
        .await
        .unwrap();
    futures_util::pin_mut!(copy);
    let (mut bytes, mut paced) = (0usize, 0usize);
    while let Some(chunk) = copy.next().await {
        bytes += chunk.unwrap().len();
        if bytes - paced >= 1 << 20 {
            paced = bytes;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(bytes > 40_000_000);
    assert!(
        started.elapsed() > Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let after: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pid, after, "the same backend throughout");

    // A real pg_dump of the rates database, longer than the services' idle limit.
    let started = Instant::now();
    let out = stack
        .libpq_command("pg_dump", &stack.app)
        .args(["--enable-row-security", "-d", "rates"])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(
        dump.contains("COPY public.slow_dump"),
        "the dump has the table"
    );
    assert!(dump.contains("\n1500\n"), "and all its rows");
    assert!(took > Duration::from_secs(2), "the dump took only {took:?}");

    // And yet the limits are on: the person, idle during the dump, and an idle service are
    // closed.
    eventually(
        "the idle person is closed",
        Duration::from_secs(10),
        async || client.is_closed(),
    )
    .await;
    let mut service = RawClient::login(stack.addr, &stack.app, "idle-service").await;
    let (_, body) = loop {
        let (tag, body) = service.recv().await.expect("the service's FATAL");
        if tag == b'E' {
            break (tag, body);
        }
    };
    assert_eq!(sqlstate(&body), "57P05");
    stack.sessions_ended().await;
    assert_eq!(closed_metric(&stack, "idle"), 2);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_in_a_transaction_holding_a_lock_is_closed_and_the_lock_released() {
    let idp = DevIdp::start().unwrap();
    let stack = stack(&idp, |_| {}).await;
    let policy = SessionPolicy {
        idle_timeout_secs: Some(600),
        idle_in_transaction_timeout_secs: Some(3),
        ..Default::default()
    };
    let grant = stack
        .grant_with(ALICE, "rates_writer", in_an_hour(), policy)
        .await;
    let admin = stack.cluster.connect("rates").await.unwrap();
    admin
        .batch_execute("INSERT INTO notes (id, body) VALUES (1, 'locked')")
        .await
        .unwrap();
    let token = idp.token(ALICE).unwrap();
    let mut c = RawClient::login_person(&stack, ALICE, &token, "idle-tx").await;
    c.send(&query_msg(
        "BEGIN; SELECT * FROM notes WHERE id = 1 FOR UPDATE",
    ))
    .await
    .unwrap();
    let status = c.until(b'Z').await.unwrap();
    assert_eq!(status, b"T");
    let locks = "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
                 WHERE a.usename = $1 AND l.relation = 'notes'::regclass";
    let held: i64 = admin
        .query_one(locks, &[&grant.db_user])
        .await
        .unwrap()
        .get(0);
    assert!(held > 0, "the session holds the row lock");

    let (tag, body) = c.recv().await.expect("a notice before the close");
    assert_eq!(tag, b'N');
    assert!(
        fields(&body).2.contains("idle in a transaction"),
        "{:?}",
        fields(&body)
    );
    let (tag, body) = c.recv().await.expect("the FATAL");
    assert_eq!(tag, b'E');
    let (severity, code, message) = fields(&body);
    assert_eq!(
        (severity.as_str(), code.as_str()),
        ("FATAL", "25P03"),
        "{message}"
    );
    assert!(c.recv().await.is_none());

    // The server rolled back: another session takes the lock at once.
    no_backend_left(&admin, &grant.db_user).await;
    admin
        .batch_execute("BEGIN; SELECT * FROM notes WHERE id = 1 FOR UPDATE NOWAIT; COMMIT")
        .await
        .unwrap();
    let reason = disconnect_reason(&stack, "idle-tx").await;
    assert!(reason.contains("idle-in-transaction timeout"), "{reason}");
    assert_eq!(closed_metric(&stack, "idle_in_transaction"), 1);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_age_limit_closes_a_busy_session_with_its_own_reason() {
    let idp = DevIdp::start().unwrap();
    let stack = stack(&idp, |_| {}).await;
    let policy = SessionPolicy {
        idle_timeout_secs: Some(600),
        max_session_secs: Some(4),
        ..Default::default()
    };
    let grant = stack
        .grant_with(ALICE, "rates_reader", in_an_hour(), policy)
        .await;
    let token = idp.token(ALICE).unwrap();
    let mut c = RawClient::login_person(&stack, ALICE, &token, "too-old").await;
    let started = Instant::now();
    c.send(&query_msg("SELECT pg_sleep(60)")).await.unwrap();
    let (tag, body) = loop {
        let (tag, body) = c.recv().await.expect("the FATAL");
        if tag == b'E' {
            break (tag, body);
        }
    };
    assert_eq!(tag, b'E');
    let (severity, code, message) = fields(&body);
    assert_eq!(
        (severity.as_str(), code.as_str()),
        ("FATAL", "57P01"),
        "{message}"
    );
    assert!(message.contains("maximum length of 4 s"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let admin = stack.cluster.connect("postgres").await.unwrap();
    no_backend_left(&admin, &grant.db_user).await;
    let reason = disconnect_reason(&stack, "too-old").await;
    assert!(reason.contains("maximum length"), "{reason}");
    assert_eq!(closed_metric(&stack, "max_session"), 1);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extended_grant_keeps_its_session_and_a_shortened_one_ends_it() {
    let idp = DevIdp::start().unwrap();
    let stack = stack(&idp, |s| s.sessions.warn_before_secs = 2).await;
    let first_end = chrono::Utc::now() + chrono::Duration::seconds(6);
    let grant = stack.grant_until(ALICE, "rates_reader", first_end).await;
    let token = idp.token(ALICE).unwrap();
    let (client, mut notices) = connect(&stack, &token, "extended").await;
    let before: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);

    // The approvals app extends the grant in the control plane.
    let control = stack.cluster.connect("dbgw").await.unwrap();
    let moved = chrono::Utc::now() + chrono::Duration::seconds(30);
    assert!(grants::set_end(&control, grant.id, moved).await.unwrap());
    // Past the first end (with slack), the session is the same one.
    while chrono::Utc::now() < first_end + chrono::Duration::seconds(2) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.simple_query("SELECT 1").await.unwrap();
    }
    let after: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(before, after, "same backend, no drop");
    stack.flush();
    assert!(
        !stack
            .records()
            .iter()
            .any(|r| r["type"] == "disconnect" && r["application"] == "extended"),
        "no disconnect"
    );

    // Now it ends sooner than the extension said: the session ends then.
    let shortened = Instant::now();
    let moved = chrono::Utc::now() + chrono::Duration::seconds(3);
    assert!(grants::set_end(&control, grant.id, moved).await.unwrap());
    eventually(
        "the shortened grant closes the session",
        Duration::from_secs(15),
        async || {
            let _ = client.simple_query("SELECT 1").await;
            client.is_closed()
        },
    )
    .await;
    assert!(
        shortened.elapsed() >= Duration::from_millis(2500),
        "closed too early"
    );
    // Before it ended, a warning named the grant's end and where to extend it.
    let mut warned = Vec::new();
    while let Ok(n) = notices.try_recv() {
        warned.push(n);
    }
    assert!(
        warned
            .iter()
            .any(|n| n.contains("access ends at") && n.contains(APPROVALS)),
        "{warned:?}"
    );
    let reason = disconnect_reason(&stack, "extended").await;
    assert!(reason.contains("expired"), "{reason}");
    stack.stop().await;
}

/// psql as Alice, one command before the proxy closes the session (`reason`, the metric's
/// label) and one after; its exit and stderr. An idle psql reads nothing until its next
/// command, so the NOTICE and the FATAL the proxy sent meanwhile are printed then, as psql
/// prints PostgreSQL's own `idle_session_timeout` (`NOTICE:`, then `FATAL:` and the lost
/// connection).
async fn psql_across_a_close(stack: &Stack, token: &str, reason: &str) -> String {
    use std::io::Write as _;
    let mut psql = stack.libpq_command("psql", &stack.app);
    psql.env("PGUSER", ALICE)
        .env("PGPASSWORD", token)
        .env("PGAPPNAME", "psql-closed")
        .args(["-X", "-v", "ON_ERROR_STOP=1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = psql.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "SELECT 'before' AS phase;").unwrap();
    stdin.flush().unwrap();

    // The proxy closes the session while psql waits for its next line.
    eventually(
        &format!("the session is closed ({reason})"),
        Duration::from_secs(20),
        async || closed_metric(stack, reason) > 0,
    )
    .await;
    writeln!(stdin, "SELECT 'after' AS phase;").unwrap();
    drop(stdin);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(stdout.contains("before"), "{stdout}");
    assert!(!stdout.contains("after"), "{stdout}");
    assert!(!out.status.success(), "psql exits non-zero: {stderr}");
    stderr
}

/// The NOTICE, then the FATAL, each with its text, in psql's stderr.
fn assert_notice_then_fatal(stderr: &str, notice: &str, fatal: &str) {
    let at_notice = stderr
        .find("NOTICE:  ")
        .unwrap_or_else(|| panic!("no NOTICE: {stderr}"));
    let at_fatal = stderr
        .find("FATAL:  ")
        .unwrap_or_else(|| panic!("no FATAL: {stderr}"));
    assert!(at_notice < at_fatal, "the notice comes first: {stderr}");
    assert!(stderr[at_notice..at_fatal].contains(notice), "{stderr}");
    assert!(stderr[at_fatal..].contains(fatal), "{stderr}");
}

/// What a person sees in psql when the idle limit and when the age limit closes the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_shows_the_notice_and_the_reason() {
    let idp = DevIdp::start().unwrap();
    let stack = stack(&idp, |_| {}).await;
    let token = idp.token(ALICE).unwrap();
    let idle = SessionPolicy {
        idle_timeout_secs: Some(2),
        ..Default::default()
    };
    let grant = stack
        .grant_with(ALICE, "rates_reader", in_an_hour(), idle)
        .await;
    let stderr = psql_across_a_close(&stack, &token, "idle").await;
    assert_notice_then_fatal(&stderr, "closed after 2 s idle", "idle-session timeout");

    // The same grant with an age limit instead (no idle limit), for the next session: it
    // is warned at half of it.
    let control = stack.cluster.connect("dbgw").await.unwrap();
    control
        .execute(
            "UPDATE grants SET idle_timeout_secs = NULL, max_session_secs = 4 WHERE id = $1",
            &[&grant.id],
        )
        .await
        .unwrap();
    let stderr = psql_across_a_close(&stack, &token, "max_session").await;
    assert_notice_then_fatal(
        &stderr,
        "sessions last at most 4 s",
        "the session reached its maximum length of 4 s",
    );
    stack.stop().await;
}

/// A client that stops sending in the middle of `COPY ... FROM STDIN` is busy, not idle:
/// PostgreSQL's own idle timeouts do not apply there either (the backend is in a statement,
/// `state = active`); only the age limit ends it, and the server rolls the COPY back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_copy_from_stdin_is_busy_until_the_age_limit() {
    let idp = DevIdp::start().unwrap();
    let stack = stack(&idp, |_| {}).await;
    let policy = SessionPolicy {
        idle_timeout_secs: Some(2),
        idle_in_transaction_timeout_secs: Some(2),
        max_session_secs: Some(8),
        ..Default::default()
    };
    let grant = stack
        .grant_with(ALICE, "rates_writer", in_an_hour(), policy)
        .await;
    let token = idp.token(ALICE).unwrap();
    let mut c = RawClient::login_person(&stack, ALICE, &token, "stalled-copy").await;
    let started = Instant::now();
    c.send(&query_msg("COPY notes (body) FROM STDIN"))
        .await
        .unwrap();
    let (tag, _) = c.recv().await.expect("CopyInResponse");
    assert_eq!(tag, b'G');
    c.send(&crate::common::wire::msg(b'd', b"first row\n"))
        .await
        .unwrap();

    // The client stalls for twice both idle limits: nothing closes it, and the server
    // still runs the COPY.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let admin = stack.cluster.connect("rates").await.unwrap();
    let state: String = admin
        .query_one(
            "SELECT state FROM pg_stat_activity WHERE usename = $1",
            &[&grant.db_user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, "active");
    assert_eq!(closed_metric(&stack, "idle"), 0);
    assert_eq!(closed_metric(&stack, "idle_in_transaction"), 0);

    // The age limit ends it; the row sent never lands.
    let body = loop {
        let (tag, body) = c.recv().await.expect("the FATAL");
        if tag == b'E' {
            break body;
        }
    };
    let (severity, code, message) = fields(&body);
    assert_eq!(
        (severity.as_str(), code.as_str()),
        ("FATAL", "57P01"),
        "{message}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(7),
        "{:?}",
        started.elapsed()
    );
    no_backend_left(&admin, &grant.db_user).await;
    let rows: i64 = admin
        .query_one("SELECT count(*) FROM notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "the COPY was rolled back");
    assert_eq!(closed_metric(&stack, "max_session"), 1);
    stack.stop().await;
}

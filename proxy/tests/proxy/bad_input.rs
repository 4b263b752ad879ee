//! Bad input gets a clear error, loses nothing, and never disturbs other sessions.

use crate::common;

use crate::common::{query_msg, sqlstate, Options, RawClient, Stack};
use proxy::settings::Plaintext;

async fn stack() -> Stack {
    Stack::with(Options {
        plaintext: Plaintext::Loopback,
        max_message_bytes: 1024 * 1024,
        ..Options::default()
    })
    .await
}

/// A bystander session that must keep working whatever the others do.
async fn still_serves(stack: &Stack, bystander: &tokio_postgres::Client) {
    let n: i64 = bystander
        .query_one("SELECT count(*) FROM ports", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n > 0);
    let fresh = stack.connect(&stack.app).await;
    fresh.query_one("SELECT 1", &[]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_truncated_startup_packets_are_refused() {
    let stack = stack().await;
    let bystander = stack.connect(&stack.app).await;

    for bytes in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], // not PostgreSQL at all
        &[0xff, 0xff, 0xff, 0xff, 0, 3, 0, 0][..], // absurd length
        &[0, 0, 0, 3][..],                         // length below the minimum
        &[0, 0, 0, 16, 0, 2, 0, 0, b'u', 0, 0, 0, 0, 0, 0, 0][..], // protocol 2
        &[0, 0, 0, 12, 0, 3, 0, 0, b'u', b's', b'e', b'r'][..], // parameters not terminated
    ] {
        let mut c = RawClient::connect(stack.addr).await;
        c.send(bytes).await.unwrap();
        // Closed, possibly after an ErrorResponse; never a hang.
        while let Some((tag, body)) = c.recv().await {
            assert_eq!(tag, b'E', "only an error may come back");
            assert_eq!(sqlstate(&body), "08P01");
        }
    }
    // A start-up packet cut short by the client going away.
    let mut c = RawClient::connect(stack.addr).await;
    c.send(&[0, 0, 0, 100, 0, 3, 0, 0, b'u']).await.unwrap();
    drop(c);
    still_serves(&stack, &bystander).await;
    drop(bystander);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_truncated_and_oversized_messages_end_only_their_session() {
    let stack = stack().await;
    let bystander = stack.connect(&stack.app).await;

    // A length that counts less than itself.
    let mut c = RawClient::login(stack.addr, &stack.app, "bad").await;
    c.send(&[b'Q', 0, 0, 0, 2]).await.unwrap();
    assert_eq!(sqlstate(&c.until(b'E').await.unwrap()), "08P01");
    assert!(
        c.recv().await.is_none(),
        "the session is closed after a protocol error"
    );

    // A Bind whose parameter length runs past the end of the message.
    let mut c = RawClient::login(stack.addr, &stack.app, "bad").await;
    let mut bind = vec![
        b'B', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 100, b'x', 0, 0,
    ];
    let len = (bind.len() - 1) as u32;
    bind[1..5].copy_from_slice(&len.to_be_bytes());
    c.send(&bind).await.unwrap();
    let err = c.until(b'E').await.unwrap();
    assert_eq!(sqlstate(&err), "08P01");

    // An unknown message type.
    let mut c = RawClient::login(stack.addr, &stack.app, "bad").await;
    c.send(&[b'?', 0, 0, 0, 4]).await.unwrap();
    assert_eq!(sqlstate(&c.until(b'E').await.unwrap()), "08P01");

    // A message over the configured limit (1 MiB): refused from its header alone.
    let mut c = RawClient::login(stack.addr, &stack.app, "bad").await;
    let mut huge = vec![b'Q'];
    huge.extend((4u32 * 1024 * 1024).to_be_bytes());
    c.send(&huge).await.unwrap();
    assert_eq!(sqlstate(&c.until(b'E').await.unwrap()), "54000");

    // A client that goes away in the middle of a message.
    let mut c = RawClient::login(stack.addr, &stack.app, "bad").await;
    let q = query_msg("SELECT 'never sent whole'");
    c.send(&q[..10]).await.unwrap();
    drop(c);

    // A FunctionCall is refused with an ordinary error; the session goes on.
    let mut c = RawClient::login(stack.addr, &stack.app, "fcall").await;
    let mut fcall = vec![b'F'];
    let body = [0u8, 0, 4, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0];
    fcall.extend(((body.len() + 4) as u32).to_be_bytes());
    fcall.extend(body);
    c.send(&fcall).await.unwrap();
    assert_eq!(sqlstate(&c.until(b'E').await.unwrap()), "0A000");
    c.until(b'Z').await.unwrap();
    c.send(&query_msg("SELECT 42")).await.unwrap();
    let tag = c.until(b'C').await.unwrap();
    assert_eq!(&tag[..], b"SELECT 1\0");

    still_serves(&stack, &bystander).await;

    // Nothing half-received was audited or forwarded.
    let records = stack.records();
    assert!(!records
        .iter()
        .any(|r| r["statement"] == "SELECT 'never sent whole'"));
    let statements: Vec<_> = records
        .iter()
        .filter(|r| r["type"] == "statement" && r["application"] == "fcall")
        .map(|r| r["statement"].as_str().unwrap())
        .collect();
    assert_eq!(
        statements,
        ["SELECT 42"],
        "the refused FunctionCall never ran"
    );
    common::assert_chain_verifies(&stack.audit_dir());
    drop((bystander, c));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_plaintext_and_unknown_users_are_refused_and_audited() {
    let stack = Stack::start().await; // plaintext not allowed
    let mut wrong = stack.app.clone();
    wrong.password = "not-it".to_string().into();
    let tls = tls_config::postgres_connector(Some(&stack.ca)).unwrap();
    let err = stack
        .pg_config(&wrong)
        .connect(tls.clone())
        .await
        .err()
        .unwrap();
    assert_eq!(err.as_db_error().unwrap().code().code(), "28P01");

    let mut ghost = stack.app.clone();
    ghost.username = "ghost".into();
    let err = stack.pg_config(&ghost).connect(tls).await.err().unwrap();
    assert_eq!(
        err.as_db_error().unwrap().code().code(),
        "28P01",
        "unknown users look like wrong passwords"
    );

    let mut plain = stack.pg_config(&stack.app);
    plain.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let err = plain.connect(tokio_postgres::NoTls).await.err().unwrap();
    assert_eq!(err.as_db_error().unwrap().code().code(), "28000");
    assert!(err
        .as_db_error()
        .unwrap()
        .message()
        .contains("requires TLS"));

    let refusals: Vec<String> = stack
        .records()
        .iter()
        .filter(|r| r["type"] == "auth" && r["result"] == "refused")
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        refusals,
        [
            "wrong password",
            "unknown user",
            "plaintext connection refused"
        ]
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_ups_are_bounded_per_client_address() {
    let stack = common::Stack::with(common::Options {
        plaintext: proxy::settings::Plaintext::Loopback,
        max_handshakes_per_address: 3,
        ..common::Options::default()
    })
    .await;
    // Three connections that never send a start-up packet hold this address's slots.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(stack.addr).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut c = common::RawClient::connect(stack.addr).await;
    let (tag, body) = c.recv().await.expect("refused at once");
    assert_eq!((tag, common::sqlstate(&body).as_str()), (b'E', "53300"));
    // A slot freed, a login works.
    idle.pop();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    common::RawClient::login(stack.addr, &stack.app, "after-slowloris").await;
    stack.stop().await;
}

/// The salt a SCRAM exchange offers `user` (from the server-first-message).
async fn offered_salt(stack: &common::Stack, user: &str) -> String {
    use proxy::protocol::startup;
    let mut c = common::RawClient::connect(stack.addr).await;
    let mut out = bytes::BytesMut::new();
    startup::startup_message(&mut out, &[("user", user), ("database", "rates")]);
    c.send(&out).await.unwrap();
    c.until(b'R').await.expect("SASL");
    let (_, first) = proxy::auth::scram::ClientExchange::start();
    out.clear();
    startup::sasl_initial_response(&mut out, "SCRAM-SHA-256", first.as_bytes());
    c.send(&out).await.unwrap();
    let body = c.until(b'R').await.expect("SASL continue");
    let text = String::from_utf8_lossy(&body[4..]).into_owned();
    text.split(',')
        .find_map(|f| f.strip_prefix("s="))
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_are_offered_stable_salts_as_known_users_are() {
    let stack = common::Stack::with(common::Options {
        plaintext: proxy::settings::Plaintext::Loopback,
        ..common::Options::default()
    })
    .await;
    let known = offered_salt(&stack, &stack.app.username).await;
    assert_eq!(offered_salt(&stack, &stack.app.username).await, known);
    let ghost = offered_salt(&stack, "ghost").await;
    assert_eq!(
        offered_salt(&stack, "ghost").await,
        ghost,
        "a decoy's salt is stable"
    );
    assert_ne!(offered_salt(&stack, "phantom").await, ghost, "and its own");
    stack.stop().await;
}

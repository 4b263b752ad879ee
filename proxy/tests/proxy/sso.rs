//! People sign in with an ID token from the identity provider: user = email, password = the
//! token. Every refusal is clear and audited; key rotation needs no restart; revoking a grant
//! closes the person's open sessions within seconds.

use crate::common;

use std::time::{Duration, Instant};
use testkit::eventually;

use crate::common::{executions, public_pem, signing_key, Options, Stack};
use base64::Engine;
use dev_idp::DevIdp;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proxy::settings::Plaintext;
use serde_json::json;

const ALICE: &str = "alice@example.com";

async fn stack(idp: &DevIdp) -> Stack {
    Stack::with(Options {
        oidc_issuer: Some(idp.issuer().to_string()),
        // Plaintext is allowed on loopback for services; tokens must still be refused on it.
        plaintext: Plaintext::Loopback,
        ..Options::default()
    })
    .await
}

/// Connects as a person with `token` over TLS; the error's message on refusal.
async fn login(stack: &Stack, user: &str, token: &str) -> Result<tokio_postgres::Client, String> {
    let mut config = stack.pg_config(&stack.app);
    config
        .user(user)
        .password(token)
        .application_name("sso-test");
    let tls = tls_config::postgres_connector(Some(&stack.ca)).unwrap();
    match config.connect(tls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            Ok(client)
        }
        Err(e) => Err(e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| e.to_string())),
    }
}

/// A token signed with `key` (kid, PKCS#1 DER) carrying `claims`.
fn sign(kid: &str, der: &[u8], claims: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_der(der)).unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_with_a_token_runs_as_the_persons_role_and_is_audited() {
    let idp = DevIdp::start().unwrap();
    let stack = stack(&idp).await;
    let grant = stack.grant(ALICE, "rates_reader").await;
    let token = idp.token(ALICE).unwrap();

    // Plain psql: user = email, password = the token.
    let mut psql = stack.libpq_command("psql", &stack.app);
    psql.env("PGUSER", ALICE)
        .env("PGPASSWORD", &token)
        .env("PGAPPNAME", "alice-psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT session_user, current_user",
            "-c",
            "SELECT count(*) FROM ports",
        ]);
    let out = psql.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Logged in as her own role, running as the grant's group role.
    assert_eq!(
        stdout.lines().next(),
        Some(format!("{}|rates_reader", grant.db_user).as_str()),
        "{stdout}"
    );

    let records = stack.records();
    let runs = executions(&records, "alice-psql");
    assert_eq!(runs.len(), 2);
    for (s, o) in &runs {
        assert_eq!(
            s["identity"],
            json!({"kind": "person", "email": ALICE, "subject": "3f1c2a9e-6b1d-4c57-9d0a-a11ce0000001",
                   "issuer": idp.issuer(), "grant_id": grant.id})
        );
        assert_eq!(s["db_user"], grant.db_user.as_str());
        assert_eq!(o.as_ref().unwrap()["status"], "ok");
    }
    // The token itself is never written anywhere.
    for f in proxy::audit::source::audit_files(&stack.audit_dir()).unwrap() {
        assert!(!std::fs::read_to_string(f).unwrap().contains(&token[20..60]));
    }
    common::assert_chain_verifies(&stack.audit_dir());
    stack.stop().await;
}

/// A grant approved for a person is theirs alone: whoever holds the same email at the identity
/// provider under another subject (a reused address) is refused, and the rightful person is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_approved_for_another_subject_with_the_same_email_is_refused() {
    let idp = DevIdp::start().unwrap();
    let stack = stack(&idp).await;
    let grant = stack.grant(ALICE, "rates_reader").await;
    let token = idp.token(ALICE).unwrap();
    const ALICES_SUBJECT: &str = "3f1c2a9e-6b1d-4c57-9d0a-a11ce0000001";
    let control = stack.cluster.connect("dbgw").await.unwrap();
    let bind_to = |subject: &'static str| {
        let (control, issuer) = (&control, idp.issuer().to_string());
        async move {
            control
                .execute(
                    "UPDATE grants SET issuer = $2, subject = $3 WHERE id = $1",
                    &[&grant.id, &issuer, &subject],
                )
                .await
                .unwrap();
        }
    };

    bind_to("a-previous-holder-of-the-address").await;
    let Err(refused) = login(&stack, ALICE, &token).await else {
        panic!("a grant approved for another subject let the login in");
    };
    assert!(refused.contains("another identity"), "{refused}");

    bind_to(ALICES_SUBJECT).await;
    let client = login(&stack, ALICE, &token).await.unwrap();
    let user: String = client
        .query_one("SELECT session_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, grant.db_user);
    drop(client);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_with_a_clear_message_and_audited() {
    let idp = DevIdp::start().unwrap();
    let stack = stack(&idp).await;
    stack.grant(ALICE, "rates_reader").await;
    let good = idp.token(ALICE).unwrap();
    let (kid, der) = signing_key(&idp);
    let claims = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = json!({
            "iss": idp.issuer(), "aud": "dbgw-cli", "sub": "3f1c2a9e-6b1d-4c57-9d0a-a11ce0000001",
            "email": ALICE, "email_verified": true, "iat": now(), "exp": now() + 300,
        });
        f(&mut c);
        c
    };
    // The well-formed token signed with the provider's key is accepted: the cases below
    // fail for the one reason each changes.
    assert!(login(&stack, ALICE, &sign(&kid, &der, claims(&|_| {})))
        .await
        .is_ok());

    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let payload = good.split('.').nth(1).unwrap();
    let rogue_der = {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand_core_rng(), 2048).unwrap();
        key.to_pkcs1_der().unwrap().as_bytes().to_vec()
    };
    // Change the signature's first character: every bit of it counts, so the token still
    // decodes and only the signature check can catch it (the last character has spare bits).
    let sig_at = good.rfind('.').unwrap() + 1;
    let flipped = if good.as_bytes()[sig_at] == b'A' {
        "B"
    } else {
        "A"
    };
    let mut wrong_sig = good.clone();
    wrong_sig.replace_range(sig_at..sig_at + 1, flipped);
    let hs256 = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(kid.clone());
        jsonwebtoken::encode(
            &h,
            &claims(&|_| {}),
            &EncodingKey::from_secret(public_pem(&idp).as_bytes()),
        )
        .unwrap()
    };
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "wrong signature",
            wrong_sig,
            ALICE,
            "signature is not valid",
        ),
        (
            "key not in the JWKS",
            sign("rogue-kid", &rogue_der, claims(&|_| {})),
            ALICE,
            "key the identity provider does not publish",
        ),
        (
            "expired",
            sign(
                &kid,
                &der,
                claims(&|c| {
                    c["exp"] = json!(now() - 120);
                    c["iat"] = json!(now() - 720);
                }),
            ),
            ALICE,
            "expired",
        ),
        (
            "not yet valid",
            sign(&kid, &der, claims(&|c| c["nbf"] = json!(now() + 600))),
            ALICE,
            "not valid yet",
        ),
        (
            "wrong issuer",
            sign(
                &kid,
                &der,
                claims(&|c| c["iss"] = json!("https://evil.example.com")),
            ),
            ALICE,
            "another identity provider",
        ),
        (
            "wrong audience",
            sign(&kid, &der, claims(&|c| c["aud"] = json!("someone-else"))),
            ALICE,
            "another application",
        ),
        (
            "several audiences, issued to another client (azp)",
            sign(
                &kid,
                &der,
                claims(&|c| {
                    c["aud"] = json!(["someone-else", "dbgw-cli"]);
                    c["azp"] = json!("someone-else");
                }),
            ),
            ALICE,
            "another application",
        ),
        (
            "alg none",
            format!("{}.{payload}.", b64(r#"{"alg":"none","typ":"JWT"}"#)),
            ALICE,
            "alg none",
        ),
        ("HS256 with the public key", hs256, ALICE, "HS256"),
        (
            "email of someone else",
            idp.token("bob@example.com").unwrap(),
            ALICE,
            "belongs to bob@example.com",
        ),
        (
            "email equal only under Unicode case folding (Kelvin sign)",
            sign(
                &kid,
                &der,
                claims(&|c| c["email"] = json!("\u{212A}ate@example.com")),
            ),
            "kate@example.com",
            "belongs to",
        ),
        (
            "unverified email",
            sign(&kid, &der, claims(&|c| c["email_verified"] = json!(false))),
            ALICE,
            "not verified",
        ),
        (
            "no email_verified claim",
            sign(
                &kid,
                &der,
                claims(&|c| {
                    c.as_object_mut().unwrap().remove("email_verified");
                }),
            ),
            ALICE,
            "not verified",
        ),
        (
            "not a token",
            "hunter2".into(),
            ALICE,
            "not an identity token",
        ),
    ];
    for (case, token, user, expect) in &cases {
        let err = login(&stack, user, token)
            .await
            .err()
            .unwrap_or_else(|| panic!("{case}: accepted"));
        assert!(err.contains(expect), "{case}: {err}");
    }

    // Over a connection without TLS the token is refused before it is even asked for.
    let mut plain = stack.pg_config(&stack.app);
    plain
        .user(ALICE)
        .password(good.as_str())
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    let err = plain.connect(tokio_postgres::NoTls).await.err().unwrap();
    assert!(
        err.as_db_error()
            .unwrap()
            .message()
            .contains("only over TLS"),
        "{err}"
    );

    // A valid token but no grant.
    let err = login(
        &stack,
        "bob@example.com",
        &idp.token("bob@example.com").unwrap(),
    )
    .await
    .err()
    .unwrap();
    assert!(err.contains("no access to database \"rates\""), "{err}");

    // Every refusal is in the audit log with its reason; no token text is.
    let records = stack.records();
    let refusals: Vec<&str> = records
        .iter()
        .filter(|r| r["type"] == "auth" && r["result"] == "refused")
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(refusals.len(), cases.len() + 2, "{refusals:#?}");
    for ((case, _, _, expect), reason) in cases.iter().zip(&refusals) {
        assert!(reason.contains(expect), "{case}: {reason}");
    }
    assert!(refusals[cases.len()].contains("without TLS"));
    assert_eq!(refusals[cases.len() + 1], "no grant");
    for f in proxy::audit::source::audit_files(&stack.audit_dir()).unwrap() {
        assert!(!std::fs::read_to_string(f)
            .unwrap()
            .contains(&good[good.len() - 40..]));
    }
    stack.stop().await;
}

/// Randomness for generating a throwaway RSA key.
fn rand_core_rng() -> impl rsa::rand_core::CryptoRngCore {
    rsa::rand_core::OsRng
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_at_the_provider_needs_no_restart() {
    let idp = DevIdp::start().unwrap();
    let stack = stack(&idp).await;
    stack.grant(ALICE, "rates_reader").await;
    let before = idp.token(ALICE).unwrap();
    login(&stack, ALICE, &before).await.unwrap();

    idp.rotate_keys().unwrap();
    let after = idp.token(ALICE).unwrap();
    let kid = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
    assert_ne!(
        kid(&before),
        kid(&after),
        "the provider signs with a new key"
    );
    // The proxy meets an unknown key id, fetches the keys again, and accepts the token.
    login(&stack, ALICE, &after).await.unwrap();
    // Tokens signed with the previous key stay valid while it is published.
    login(&stack, ALICE, &before).await.unwrap();
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_grant_closes_open_sessions_within_seconds() {
    let idp = DevIdp::start().unwrap();
    let stack = stack(&idp).await;
    let grant = stack.grant(ALICE, "rates_reader").await;
    let token = idp.token(ALICE).unwrap();

    // An open psql session, idle between statements.
    let mut psql = stack.libpq_command("psql", &stack.app);
    psql.env("PGUSER", ALICE)
        .env("PGPASSWORD", &token)
        .env("PGAPPNAME", "alice-open")
        .args(["-X", "-A", "-t"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = psql.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    {
        use std::io::Write;
        writeln!(stdin, "SELECT 'hello';").unwrap();
    }
    let admin = stack.cluster.connect("postgres").await.unwrap();
    let backends = || async {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
                &[&grant.db_user],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    eventually("psql logs in", Duration::from_secs(10), async || {
        backends().await > 0
    })
    .await;

    let control = stack.cluster.connect("dbgw").await.unwrap();
    let target = stack.cluster.connect("postgres").await.unwrap();
    let revoked_at = Instant::now();
    grants::revoke(
        &control,
        &target,
        grant.id,
        "dana@example.com",
        "access review",
    )
    .await
    .unwrap();
    // Within 5 s of the revocation, not of this line.
    eventually(
        "the session ends within 5 s of its grant's revocation",
        Duration::from_secs(5).saturating_sub(revoked_at.elapsed()),
        async || match backends().await {
            0 => Ok(()),
            n => Err(format!("{n} backends")),
        },
    )
    .await;

    // psql learns why at its next statement.
    {
        use std::io::Write;
        let _ = writeln!(stdin, "SELECT 'after';");
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("access revoked") && stderr.contains("access review"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("after"));

    stack.sessions_ended().await;
    let records = stack.records();
    let end = records
        .iter()
        .find(|r| r["type"] == "disconnect" && r["application"] == "alice-open")
        .unwrap();
    assert!(
        end["reason"].as_str().unwrap().contains("access revoked"),
        "{end}"
    );
    // And a new login is refused with the reason.
    let err = login(&stack, ALICE, &idp.token(ALICE).unwrap())
        .await
        .err()
        .unwrap();
    assert!(err.contains("revoked by dana@example.com"), "{err}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_at_its_grants_expiry_even_without_the_control_plane() {
    let idp = DevIdp::start().unwrap();
    let stack = stack(&idp).await;
    let expires = chrono::Utc::now() + chrono::Duration::seconds(3);
    stack.grant_until(ALICE, "rates_reader", expires).await;
    let client = login(&stack, ALICE, &idp.token(ALICE).unwrap())
        .await
        .unwrap();
    client.simple_query("SELECT 1").await.unwrap();

    // The control plane becomes unreachable: the grants watcher cannot see the expiry.
    let admin = stack.cluster.connect("postgres").await.unwrap();
    admin
        .batch_execute(
            "ALTER ROLE dbgw_proxy NOLOGIN; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'dbgw_proxy'",
        )
        .await
        .unwrap();

    // By the grant's end (with slack), not within some time of this line.
    let limit = (expires + chrono::Duration::seconds(2) - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    let err = eventually(
        "the session ends at its grant's expiry",
        limit,
        async || match client.simple_query("SELECT 1").await {
            Ok(_) => Err("the session still answers"),
            Err(e) => Ok(e),
        },
    )
    .await;
    // The proxy's FATAL reaches either the query in flight or, between queries, only the
    // connection (which the next query finds closed).
    match err.as_db_error() {
        Some(db) => assert!(db.message().contains("expired"), "{db}"),
        None => assert!(err.is_closed(), "{err}"),
    }
    stack.sessions_ended().await;
    let reasons: Vec<String> = stack
        .records()
        .iter()
        .filter(|r| r["type"] == "disconnect")
        .filter_map(|r| r["reason"].as_str().map(String::from))
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("the grant has expired")),
        "{reasons:?}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_ends_within_seconds_even_when_the_client_stops_reading() {
    use common::wire::{bind, execute, msg, parse, sync};
    let idp = DevIdp::start().unwrap();
    let stack = stack(&idp).await;
    let grant = stack.grant(ALICE, "rates_writer").await;
    let token = idp.token(ALICE).unwrap();
    let mut c = common::RawClient::login_person(&stack, ALICE, &token, "slow-reader").await;
    // Gigabytes of rows, asked for with Flush (no Sync), and never read: the proxy's writes
    // to this client block.
    let flood = "SELECT repeat('x', 100000) FROM generate_series(1, 100000)";
    c.send(&[parse("", flood), bind(""), execute(), msg(b'H', &[])].concat())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let control = stack.cluster.connect("dbgw").await.unwrap();
    let target = stack.cluster.connect("postgres").await.unwrap();
    let revoked_at = Instant::now();
    grants::revoke(
        &control,
        &target,
        grant.id,
        "dana@example.com",
        "access review",
    )
    .await
    .unwrap();
    // Sent after the revocation: it must never run.
    let after = "INSERT INTO notes (body) VALUES ('after-revoke')";
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        c.send(&[parse("", after), bind(""), execute(), sync()].concat()),
    )
    .await;
    // Within 5 s of the revocation, not of this line.
    eventually(
        "a client that stopped reading loses its revoked session within 5 s",
        Duration::from_secs(5).saturating_sub(revoked_at.elapsed()),
        async || match stack.ctx.sessions.count() {
            0 => Ok(()),
            n => Err(format!("{n} sessions")),
        },
    )
    .await;
    eventually(
        "the database session is ended",
        Duration::from_secs(5),
        async || {
            let backends = target
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
                    &[&grant.db_user],
                )
                .await
                .unwrap()
                .get::<_, i64>(0);
            if backends == 0 {
                Ok(())
            } else {
                Err(format!("{backends} backends"))
            }
        },
    )
    .await;
    let rates = stack.cluster.connect("rates").await.unwrap();
    let ran: i64 = rates
        .query_one(
            "SELECT count(*) FROM notes WHERE body = 'after-revoke'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ran, 0, "a statement sent after the revocation ran");
    let records = stack.records();
    let end = records
        .iter()
        .find(|r| r["type"] == "disconnect" && r["application"] == "slow-reader")
        .unwrap();
    assert!(end["reason"].as_str().unwrap().contains("revoked"), "{end}");
    stack.stop().await;
}

/// A person sets their own role's password with dynamic SQL (a `DO` body, a format()
/// template): the proxy refuses it before it reaches the server, the new password appears
/// nowhere in the audit, and the role's password is still the one dbgw holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_cannot_set_their_roles_password_with_dynamic_sql() {
    let idp = DevIdp::start().unwrap();
    let stack = stack(&idp).await;
    let grant = stack.grant(ALICE, "rates_reader").await;
    let alice = login(&stack, ALICE, &idp.token(ALICE).unwrap())
        .await
        .unwrap();
    for attack in [
        "DO $$ BEGIN EXECUTE format('ALTER ROLE %I PASSWORD %L', current_user, 'hijack-1'); END $$",
        "DO $$ BEGIN EXECUTE 'ALTER USER ' || quote_ident(session_user) || ' PASSWORD ''hijack-1'''; END $$",
    ] {
        let err = alice.simple_query(attack).await.unwrap_err();
        let db = err.as_db_error().expect("an error from the proxy");
        assert_eq!(db.code().code(), "42501", "{attack}: {db:?}");
        assert!(db.message().contains("managed by dbgw"), "{db:?}");
    }
    // The session goes on, and the password dbgw holds still logs in.
    alice.simple_query("SELECT 1").await.unwrap();
    let creds = stack
        .ctx
        .secrets
        .db_credentials(&grants::person_secret(&grant.db_user))
        .await
        .unwrap();
    stack
        .cluster
        .server()
        .connect_as("rates", &creds)
        .await
        .expect("the role's password was changed");
    for f in proxy::audit::source::audit_files(&stack.audit_dir()).unwrap() {
        assert!(!std::fs::read_to_string(f).unwrap().contains("hijack-1"));
    }
    let refused: Vec<_> = stack
        .records()
        .into_iter()
        .filter(|r| r["outcome"]["status"] == "refused" || r["status"] == "refused")
        .collect();
    assert!(refused.len() >= 2, "the refusals are audited: {refused:#?}");
    common::assert_chain_verifies(&stack.audit_dir());
    stack.stop().await;
}

/// A person with two grants (read-write, then read-only) works in a session opened under
/// the read-only one: it runs as the read-only grant's role, so writing and switching to the
/// writer's role are refused by the proxy, and a switch hidden from the proxy (a role name
/// built at run time) by the server: each grant has a login role of its own. Revoking the
/// read-write grant leaves the read-only grant's session untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_holds_exactly_its_grants_privileges() {
    let idp = DevIdp::start().unwrap();
    let stack = stack(&idp).await;
    let writer = stack.grant(ALICE, "rates_writer").await;
    let reader = stack.grant(ALICE, "rates_reader").await;
    let alice = login(&stack, ALICE, &idp.token(ALICE).unwrap())
        .await
        .unwrap();
    let code = |e: tokio_postgres::Error| e.as_db_error().unwrap().code().code().to_string();
    let write = "INSERT INTO notes (body) VALUES ('by alice')";
    assert_eq!(code(alice.simple_query(write).await.unwrap_err()), "42501");
    for switch in [
        "SET ROLE rates_writer",
        "SET ROLE NONE",
        "SELECT set_config('role', 'rates_writer', false)",
        "DO $$ BEGIN EXECUTE 'SET ROLE rates_writer'; END $$",
    ] {
        assert_eq!(
            code(alice.simple_query(switch).await.unwrap_err()),
            "42501",
            "{switch}"
        );
    }
    alice
        .simple_query("SELECT count(*) FROM ports")
        .await
        .unwrap();

    // Built at run time, the switch is not seen by the proxy; the server refuses it: the
    // session's login role is its grant's own and a member of the reader's role only.
    let err = alice
        .simple_query("DO $$ BEGIN EXECUTE 'SET ' || 'ROLE ' || 'rates_writer'; END $$")
        .await
        .unwrap_err();
    assert_eq!(code(err), "42501");
    assert_eq!(code(alice.simple_query(write).await.unwrap_err()), "42501");
    // Ending the writer grant leaves this session (the reader grant's) as it was.
    let control = stack.cluster.connect("dbgw").await.unwrap();
    let target = stack.cluster.connect("postgres").await.unwrap();
    grants::revoke(&control, &target, writer.id, "dana@example.com", "review")
        .await
        .unwrap();
    assert_ne!(writer.db_user, reader.db_user);
    alice
        .simple_query("SELECT count(*) FROM ports")
        .await
        .expect("the reader grant's session goes on");
    stack.stop().await;
}

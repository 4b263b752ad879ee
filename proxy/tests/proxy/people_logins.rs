//! People's database passwords are useless outside the proxy (issue 17). Locally every
//! process is on 127.0.0.1, so the server cannot tell the proxy from a person's own psql by
//! address: pg_hba admits people's roles (members of `dbgw_people`) only with a client
//! certificate from a CA of their own, which only the proxy and the rotation function hold.
//! The attacker here is the person (or anyone) holding the password from the secret store.

use crate::common::{Options, Stack};

use dev_idp::DevIdp;
use secret_store::DbCredentials;

const ALICE: &str = "alice@example.com";

/// The database server itself, with the proxy's TLS settings but no client certificate:
/// what a person's own tokio-postgres would use.
fn direct(stack: &Stack) -> pg_connect::Target {
    pg_connect::Target {
        host: stack.cluster.host().into(),
        port: stack.cluster.port(),
        tls: pg_connect::TlsMode::VerifyFull,
        ca_file: Some(stack.ca.clone()),
        connect_timeout: std::time::Duration::from_secs(10),
        client_cert: None,
    }
}

/// psql straight to the server as `creds` (no client certificate anywhere it looks).
fn psql_direct(stack: &Stack, creds: &DbCredentials, home: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(dbgw_db::cluster::pg_bin("psql").unwrap())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .envs(stack.cluster.libpq_env(creds))
        .args(["-X", "-A", "-t", "-d", "rates", "-c", "SELECT session_user"])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The SQLSTATE of a refused connection.
fn refusal(result: Result<tokio_postgres::Client, pg_connect::ConnectError>) -> String {
    match result {
        Ok(_) => panic!("the server let the person's password in without the proxy"),
        Err(e) => e
            .postgres()
            .and_then(|p| p.code())
            .map(|c| c.code().to_string())
            .unwrap_or_else(|| format!("no SQLSTATE: {e}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persons_password_from_the_secret_store_is_refused_outside_the_proxy() {
    let idp = DevIdp::start().unwrap();
    let stack = Stack::with(Options {
        oidc_issuer: Some(idp.issuer().to_string()),
        ..Options::default()
    })
    .await;
    let grant = stack.grant(ALICE, "rates_reader").await;
    // What a person (or whoever reads the secret) holds: the role's current password.
    let creds = stack
        .ctx
        .secrets
        .db_credentials(&grants::person_secret(&grant.db_user))
        .await
        .unwrap();
    assert_eq!(creds.username, grant.db_user);

    // psql with the password, TLS verified: refused for want of the certificate.
    let home = tempfile::tempdir().unwrap();
    let (ok, stderr) = psql_direct(&stack, &creds, home.path());
    assert!(!ok, "psql logged in as the person around the proxy");
    assert!(
        stderr.contains("certificate"),
        "refused for another reason: {stderr}"
    );

    // tokio-postgres: over TLS without a certificate, and over plain TCP.
    let target = direct(&stack);
    assert_eq!(
        refusal(target.connect("rates", &creds, "attacker").await),
        "28000"
    );
    let plain = pg_connect::Target {
        tls: pg_connect::TlsMode::Disable,
        ..target.clone()
    };
    assert_eq!(
        refusal(plain.connect("rates", &creds, "attacker").await),
        "28000"
    );

    // A certificate from the server CA (the proxy's listening certificate, on the same
    // machine) is not the client CA's: refused too.
    let (cert_file, key_file) = stack
        .cluster
        .issue_cert(&["localhost"], stack.dir.path(), "server-ca-client")
        .unwrap();
    let wrong_ca = pg_connect::Target {
        client_cert: Some(pg_connect::ClientCert {
            cert_file,
            key_file,
        }),
        ..target.clone()
    };
    assert!(wrong_ca.connect("rates", &creds, "attacker").await.is_err());

    // The password itself is right: with the client CA's certificate (which only the proxy
    // and the rotation function hold) the same login works.
    let with_cert = pg_connect::Target {
        client_cert: Some(stack.cluster.client_cert()),
        ..target.clone()
    };
    with_cert
        .connect("rates", &creds, "proxy-stand-in")
        .await
        .expect("the person's password with the client certificate");

    // A service's login is not a person's: it still logs in without the certificate.
    target
        .connect("rates", &stack.app, "rates-api")
        .await
        .expect("rates_api logs in directly");

    // Through the proxy, the person gets in, as the grant's role.
    let token = idp.token(ALICE).unwrap();
    let mut psql = stack.libpq_command("psql", &stack.app);
    psql.env("PGUSER", ALICE)
        .env("PGPASSWORD", &token)
        .env("HOME", home.path())
        .args(["-X", "-A", "-t", "-c", "SELECT session_user"]);
    let out = psql.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        grant.db_user.as_str()
    );
}

/// A role that holds the marker cannot lose it through the approvals app's interface (a
/// role without it would match pg_hba's password lines again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_marker_is_never_taken_away_from_a_persons_role() {
    let stack = Stack::start().await;
    let grant = stack.grant(ALICE, "rates_reader").await;
    let target = stack.cluster.connect("postgres").await.unwrap();
    let err = target
        .query_one(
            "SELECT dbgw_provision.revoke_role($1, 'dbgw_people')",
            &[&grant.db_user],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err:?}");
    let marked: bool = target
        .query_one(
            "SELECT pg_has_role($1, 'dbgw_people', 'MEMBER')",
            &[&grant.db_user],
        )
        .await
        .unwrap()
        .get(0);
    assert!(marked);
    // And the marker is not a catalogue role anyone could be granted.
    let grantable: bool = target
        .query_one("SELECT dbgw_provision.grantable('dbgw_people')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!grantable);
}

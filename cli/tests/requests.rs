//! `dbgw request`, `dbgw extend` and `dbgw status` against a real approvals app (in this
//! process, on a throwaway PostgreSQL cluster) and the development identity provider, with
//! the stand-in browser (idp/dev-browser.js) signing in through the app's CLI hand-off.

// A panic is how a test reports a failure.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use approvals::oidc::User;
use approvals::status::Decision;
use approvals::workflow::Actor;
use approvals::{App, Application, Settings};
use dev_idp::DevIdp;
use secrecy::SecretString;
use testkit::{Served, TestDb};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

struct Stack {
    _db: TestDb,
    idp: DevIdp,
    app: App,
    base: String,
    served: Served<anyhow::Result<()>>,
    cache: tempfile::TempDir,
}

impl Stack {
    async fn start() -> Stack {
        let db = TestDb::start().await;
        db.login("dbgw_approvals", "dbgw/approvals-db").await;
        let client_secret = secret_store::generate_password();
        db.store
            .put(
                "dbgw/approvals-oidc",
                &SecretString::from(
                    serde_json::json!({ "client_secret": client_secret }).to_string(),
                ),
            )
            .await
            .unwrap();
        let idp = DevIdp::start_with(&[("IDP_APPROVALS_CLIENT_SECRET", &client_secret)])
            .expect("start the development identity provider (npm ci --prefix idp?)");
        let port = dbgw_db::cluster::free_port().unwrap();
        let mut settings = Settings {
            listen: format!("127.0.0.1:{port}"),
            public_url: format!("http://127.0.0.1:{port}"),
            shutdown_grace_secs: 5,
            ..Settings::default()
        };
        for d in [&mut settings.control, &mut settings.target] {
            d.port = db.cluster.port();
            d.ca_file = db.cluster.ca_cert();
            d.pool_size = 4;
        }
        settings.oidc.issuer = idp.issuer().to_string();
        settings.secrets.dir = db.dir.path().join("secrets");
        settings.scheduler.interval_ms = 60_000;
        let application = Application::build(settings).await.expect("build the app");
        let app = application.app();
        let served = Served::spawn(|stop| application.run_until_stopped(stop));
        Stack {
            _db: db,
            idp,
            app,
            base: format!("http://127.0.0.1:{port}"),
            served,
            cache: tempfile::tempdir().unwrap(),
        }
    }

    /// Runs `dbgw <args>` as `email` (the stand-in browser signs in as them when asked).
    async fn dbgw(&self, email: &str, args: &[&str]) -> (bool, String, String) {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dbgw"));
        cmd.args(args)
            .env("DBGW_ISSUER", self.idp.issuer())
            .env("DBGW_APPROVALS_URL", &self.base)
            .env("DBGW_CACHE_DIR", self.cache.path())
            .env("DBGW_LOGIN_TIMEOUT_SECS", "60")
            .env(
                "BROWSER",
                format!("node {}", repo().join("idp/dev-browser.js").display()),
            )
            .env("DEV_BROWSER_EMAIL", email);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    fn token_file(&self) -> PathBuf {
        self.cache.path().join("approvals-token.json")
    }
}

fn dana() -> Actor {
    Actor::new(
        User {
            email: "dana@example.com".into(),
            subject: "c9d8e7f6-1a2b-4c3d-8e9f-da7a00000003".into(),
            name: "Dana Security".into(),
            groups: vec!["data-security".into()],
        },
        "data-security",
    )
}

/// The first number after `prefix` in `text`.
fn number_after(text: &str, prefix: &str) -> i64 {
    let at = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no `{prefix}` in {text}"));
    text[at + prefix.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_extend_and_status_from_the_terminal() {
    let stack = Stack::start().await;
    let alice = "alice@example.com";

    // Ask: the CLI signs in through the app (browser) and caches the app's token.
    let (ok, out, err) = stack
        .dbgw(
            alice,
            &["request", "read-only", "--for", "1h", "--why", "incident 9"],
        )
        .await;
    assert!(ok, "{out}\n{err}");
    assert!(
        err.contains("Signed in to the approvals app as alice@example.com"),
        "{err}"
    );
    let id = number_after(&out, "request ");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(stack.token_file())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let control = stack.app.control.get().await.unwrap();
    let (justification, duration): (String, i64) = {
        let r = control
            .query_one(
                "SELECT justification, duration_secs FROM access_requests WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((justification.as_str(), duration), ("incident 9", 3600));

    // status: the request pending (the cached token: no second browser sign-in), also
    // before `dbgw login` and after it.
    let (ok, out, err) = stack.dbgw(alice, &["status"]).await;
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("not signed in"), "{out}");
    assert!(
        out.contains(&format!("pending: request {id} rates read-only")),
        "{out}"
    );
    let (ok, _, err) = stack.dbgw(alice, &["login"]).await;
    assert!(ok, "{err}");
    let (ok, out, err) = stack.dbgw(alice, &["status"]).await;
    assert!(ok, "{out}\n{err}");
    assert!(
        !err.contains("open this URL"),
        "the cached token is used: {err}"
    );
    assert!(
        out.contains(&format!("pending: request {id} rates read-only")),
        "{out}"
    );

    // Approved: status says when it ends.
    approvals::workflow::decide(&stack.app, &dana(), id, Decision::Approve, "ok")
        .await
        .unwrap();
    let end = || async {
        let r = control
            .query_one(
                "SELECT g.id, g.expires_at FROM grants g JOIN access_requests r \
                 ON r.grant_id = g.id WHERE r.id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (
            r.get::<_, i64>(0),
            r.get::<_, chrono::DateTime<chrono::Utc>>(1),
        )
    };
    let (grant_id, first_end) = end().await;
    let shown = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    let (ok, out, err) = stack.dbgw(alice, &["status"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!(
            "active: request {id} rates read-only, ends {}",
            shown(first_end)
        )),
        "{out}"
    );

    // Extend (her only active access, so no id needed); status shows it pending.
    let (ok, out, err) = stack
        .dbgw(
            alice,
            &["extend", "--by", "2h", "--why", "the incident runs long"],
        )
        .await;
    assert!(ok, "{out}\n{err}");
    let ext = number_after(&out, "extension ");
    let (ok, out, _) = stack.dbgw(alice, &["status"]).await;
    assert!(ok);
    let to = first_end + chrono::Duration::hours(2);
    assert!(
        out.contains(&format!("pending: extension {ext} to {}", shown(to))),
        "{out}"
    );
    // Over the level's cap: refused with the app's reason.
    let (ok, _, err) = stack
        .dbgw(
            alice,
            &["extend", &id.to_string(), "--by", "8d", "--why", "x"],
        )
        .await;
    assert!(!ok);
    assert!(err.contains("at most"), "{err}");

    approvals::extension::decide(&stack.app, &dana(), ext, Decision::Approve, "ok")
        .await
        .unwrap();
    assert_eq!(end().await, (grant_id, to));
    let (ok, out, _) = stack.dbgw(alice, &["status"]).await;
    assert!(ok);
    assert!(
        out.contains(&format!(
            "active: request {id} rates read-only, ends {}",
            shown(to)
        )),
        "{out}"
    );

    // Another extension, withdrawn from the terminal: the end stays, status shows nothing
    // pending.
    let (ok, out, err) = stack
        .dbgw(alice, &["extend", "--by", "1h", "--why", "maybe longer"])
        .await;
    assert!(ok, "{out}\n{err}");
    let second = number_after(&out, "extension ");
    let (ok, out, err) = stack.dbgw(alice, &["extend", "--withdraw"]).await;
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains(&format!(
            "extension {second} of request {id} withdrawn: access still ends {}",
            shown(to)
        )),
        "{out}"
    );
    let state: String = control
        .query_one("SELECT state FROM extensions WHERE id = $1", &[&second])
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, "withdrawn");
    assert_eq!(end().await, (grant_id, to));
    let (ok, out, _) = stack.dbgw(alice, &["status"]).await;
    assert!(ok);
    assert!(!out.contains("pending: extension"), "{out}");
    let (ok, _, err) = stack.dbgw(alice, &["extend", "--withdraw"]).await;
    assert!(!ok);
    assert!(err.contains("no pending extension"), "{err}");

    // The app's token is refused (revoked at the provider): the CLI says so and signs in
    // again, then it works.
    let mut cached: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(stack.token_file()).unwrap()).unwrap();
    cached["access_token"] = serde_json::json!("revoked-token");
    std::fs::write(stack.token_file(), cached.to_string()).unwrap();
    let (ok, out, err) = stack.dbgw(alice, &["status"]).await;
    assert!(ok, "{out}\n{err}");
    assert!(
        err.contains("no longer accepts your sign-in as alice@example.com"),
        "{err}"
    );
    assert!(err.contains("Signed in to the approvals app"), "{err}");
    drop(control);
    stack.served.stop().await.unwrap();
}

/// The app issues the CLI no refresh token (its token is the provider's access token of a
/// confidential client): when it has expired, the CLI says so and whom it was for, and signs
/// in again; `dbgw status` without any sign-in says so instead of opening a browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_app_token_is_named_and_signed_in_again() {
    let stack = Stack::start().await;
    let alice = "alice@example.com";
    let (ok, out, err) = stack
        .dbgw(
            alice,
            &["request", "read-only", "--for", "1h", "--why", "x"],
        )
        .await;
    assert!(ok, "{out}\n{err}");
    let id = number_after(&out, "request ");
    approvals::workflow::decide(&stack.app, &dana(), id, Decision::Approve, "ok")
        .await
        .unwrap();
    let expire = || {
        let mut cached: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(stack.token_file()).unwrap()).unwrap();
        cached["expires_at"] = serde_json::json!("2026-01-02T03:04:05Z");
        std::fs::write(stack.token_file(), cached.to_string()).unwrap();
    };

    // Not signed in for psql either: status names the expired sign-in, no browser.
    expire();
    let (ok, out, err) = stack.dbgw(alice, &["status"]).await;
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("approvals sign-in of alice@example.com expired at 2026-01-02T03:04:05+00:00"),
        "{out}"
    );
    assert!(!err.contains("open this URL"), "{err}");

    // A command that needs the app: the reason, then the sign-in, then the answer.
    let (ok, out, err) = stack
        .dbgw(alice, &["extend", "--by", "1h", "--why", "y"])
        .await;
    assert!(ok, "{out}\n{err}");
    let said = err
        .find("Your approvals sign-in as alice@example.com expired at 2026-01-02 03:04:05 UTC; sign in again.")
        .unwrap_or_else(|| panic!("{err}"));
    let url = err.find("open this URL").unwrap_or_else(|| panic!("{err}"));
    assert!(said < url, "{err}");
    assert!(
        err.contains("Signed in to the approvals app as alice@example.com"),
        "{err}"
    );
    assert!(out.contains("extension "), "{out}");
    // The new token is cached: the next command needs no sign-in.
    let (ok, _, err) = stack.dbgw(alice, &["status"]).await;
    assert!(ok);
    assert!(
        !err.contains("sign in again") && !err.contains("open this URL"),
        "{err}"
    );
    stack.served.stop().await.unwrap();
}

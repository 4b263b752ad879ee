//! The whole path in a real browser (headless Chromium through Debian's chromedriver), against
//! the real app, identity provider, database and proxy: alice asks for read-only access to
//! rates; dana approves; alice's `psql` through the proxy with her token runs a SELECT, and
//! the audit names her, the grant, the request and dana; dana revokes; alice's open session
//! is closed and a new connection is refused.
//!
//! Screenshots of each page go to `target/approvals-screenshots/`; with
//! `UPDATE_SCREENSHOTS=docs/screenshots` (from the workspace root) they refresh the ones
//! the docs show.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::common::{eventually, Options, Stack};

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn chromedriver() -> (Driver, String) {
    let port = dbgw_db::cluster::free_port().unwrap();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (apt-get install chromium chromium-driver; make test-deps)");
    let url = format!("http://127.0.0.1:{port}");
    eventually(
        "chromedriver listens",
        Duration::from_secs(20),
        async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await;
    (Driver(child), url)
}

/// A fresh headless browser: its own profile, so its own cookies.
async fn browser(driver: &str, profile: &tempfile::TempDir) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": [
            "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--window-size=1000,760",
            format!("--user-data-dir={}", profile.path().display()),
        ]}),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver)
        .await
        .expect("a chromium session");
    client
}

struct Shots {
    dirs: Vec<PathBuf>,
}

impl Shots {
    fn new() -> Shots {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut dirs = vec![root.join("target/approvals-screenshots")];
        if let Ok(dir) = std::env::var("UPDATE_SCREENSHOTS") {
            dirs.push(root.join(dir));
        }
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        Shots { dirs }
    }

    async fn take(&self, client: &Client, name: &str) {
        let png = client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{name} is not a PNG");
        for d in &self.dirs {
            std::fs::write(d.join(format!("{name}.png")), &png).unwrap();
        }
    }
}

async fn sign_in(client: &Client, base: &str, email: &str) {
    client.goto(base).await.unwrap();
    click(
        client,
        Locator::LinkText("Sign in with your company account"),
    )
    .await;
    let email_field = client
        .wait()
        .for_element(Locator::Css("input[name=email]"))
        .await
        .unwrap();
    email_field.send_keys(email).await.unwrap();
    type_into(client, Locator::Css("input[name=password]"), "dev").await;
    click(client, Locator::Css("button[type=submit]")).await;
    client
        .wait()
        .for_element(Locator::Css("button.link"))
        .await
        .unwrap();
    assert!(client
        .current_url()
        .await
        .unwrap()
        .as_str()
        .starts_with(base));
    assert!(client.source().await.unwrap().contains(email));
}

async fn click(client: &Client, at: Locator<'_>) {
    client.find(at).await.unwrap().click().await.unwrap();
}

async fn type_into(client: &Client, at: Locator<'_>, text: &str) {
    client
        .wait()
        .for_element(at)
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

/// Runs a client program off the runtime's thread (the proxy serves on that runtime).
async fn run(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

async fn text_of(client: &Client) -> String {
    client
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn request_approve_use_revoke_in_a_browser() {
    let stack = Stack::with(Options {
        proxy: true,
        scheduler_ms: 1000,
        ..Options::default()
    })
    .await;
    let base = stack.base.clone();
    let shots = Shots::new();
    let (_driver, driver_url) = chromedriver().await;
    let (alice_profile, dana_profile) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let alice = browser(&driver_url, &alice_profile).await;
    let dana = browser(&driver_url, &dana_profile).await;

    // alice signs in and asks for read-only access to rates.
    alice.goto(&base).await.unwrap();
    shots.take(&alice, "approvals-signed-out").await;
    sign_in(&alice, &base, "alice@example.com").await;
    alice.goto(&format!("{base}/requests/new")).await.unwrap();
    alice
        .find(Locator::Id("access"))
        .await
        .unwrap()
        .select_by_value("rates/read-only")
        .await
        .unwrap();
    type_into(
        &alice,
        Locator::Id("justification"),
        "Check the January rates for the audit report",
    )
    .await;
    let duration = alice.find(Locator::Id("duration")).await.unwrap();
    duration.clear().await.unwrap();
    duration.send_keys("2").await.unwrap();
    shots.take(&alice, "approvals-request-form").await;
    click(&alice, Locator::Css("form button[type=submit]:not(.link)")).await;
    alice
        .wait()
        .for_element(Locator::Css("p.flash"))
        .await
        .unwrap();
    let url = alice.current_url().await.unwrap();
    let id: i64 = url.path().rsplit('/').next().unwrap().parse().unwrap();
    assert!(text_of(&alice).await.contains("pending"));
    shots.take(&alice, "approvals-request-pending").await;

    // dana signs in, finds it in the queue, approves.
    sign_in(&dana, &base, "dana@example.com").await;
    dana.goto(&format!("{base}/queue")).await.unwrap();
    assert!(text_of(&dana).await.contains("alice@example.com"));
    shots.take(&dana, "approvals-queue").await;
    click(&dana, Locator::LinkText(&format!("#{id}"))).await;
    dana.wait()
        .for_element(Locator::Id("comment"))
        .await
        .unwrap()
        .send_keys("Fine for the audit report")
        .await
        .unwrap();
    shots.take(&dana, "approvals-decide").await;
    click(&dana, Locator::Css("button[value=approve]")).await;
    dana.wait()
        .for_element(Locator::Css("p.flash"))
        .await
        .unwrap();
    assert!(
        text_of(&dana).await.contains("the access is in place"),
        "{}",
        text_of(&dana).await
    );
    assert_eq!(stack.status(id).await, "active");
    alice.goto(&base).await.unwrap();
    assert!(text_of(&alice).await.contains("active"));
    shots.take(&alice, "approvals-my-access").await;

    // alice's psql through the proxy with her token.
    let proxy = stack.proxy.as_ref().unwrap();
    let ca = stack.cluster.ca_cert();
    let token = stack.token("alice@example.com");
    let mut psql = proxy.psql(&ca, "alice@example.com", &token);
    psql.args(["-c", "SELECT count(*) FROM ports"]);
    let out = run(psql).await;
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<i64>()
            .unwrap()
            > 0
    );
    let grant_id: i64 = stack
        .control()
        .await
        .query_one("SELECT grant_id FROM access_requests WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    let records = proxy.records();
    let statement = records
        .iter()
        .find(|r| {
            r["type"] == "statement"
                && r["identity"]["email"] == "alice@example.com"
                && r["statement"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("FROM ports")
        })
        .unwrap_or_else(|| panic!("no statement record for alice: {records:?}"));
    assert_eq!(statement["identity"]["grant_id"], grant_id, "{statement}");
    assert_eq!(statement["identity"]["request_id"], id, "{statement}");
    assert_eq!(
        statement["identity"]["approved_by"],
        json!(["dana@example.com"]),
        "{statement}"
    );

    // What alice ran is on the request's page, from the audit, verified (records() above
    // flushed the proxy's log).
    alice.goto(&format!("{base}/requests/{id}")).await.unwrap();
    let shown = text_of(&alice).await;
    assert!(shown.contains("Activity under this access"), "{shown}");
    assert!(shown.contains("SELECT count(*) FROM ports"), "{shown}");
    assert!(shown.contains("Audit chain: verified"), "{shown}");
    // The fragment scrolls the section into view for the screenshot.
    alice
        .goto(&format!("{base}/requests/{id}#activity"))
        .await
        .unwrap();
    shots.take(&alice, "approvals-activity").await;

    // An open session of alice's, then dana revokes.
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(proxy.addr.port())
        .user("alice@example.com")
        .password(token.clone())
        .dbname("rates")
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let (session, conn) = config
        .connect(tls_config::postgres_connector(Some(&ca)).unwrap())
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    session.query_one("SELECT 1", &[]).await.unwrap();
    dana.goto(&format!("{base}/grants")).await.unwrap();
    shots.take(&dana, "approvals-active").await;
    dana.goto(&format!("{base}/requests/{id}")).await.unwrap();
    type_into(&dana, Locator::Id("reason"), "Report delivered").await;
    click(&dana, Locator::Css("button.danger")).await;
    dana.wait()
        .for_element(Locator::Css("p.flash"))
        .await
        .unwrap();
    assert!(text_of(&dana).await.contains("revoked"));
    shots.take(&dana, "approvals-revoked").await;
    assert_eq!(stack.status(id).await, "ended");

    eventually(
        "alice's open session is closed",
        Duration::from_secs(10),
        async || session.query_one("SELECT 1", &[]).await.is_err(),
    )
    .await;
    let mut psql = proxy.psql(&ca, "alice@example.com", &token);
    psql.args(["-c", "SELECT 1"]);
    let refused = run(psql).await;
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("revoked"), "{why}");

    dana.goto(&format!("{base}/history")).await.unwrap();
    assert!(text_of(&dana).await.contains("access.ended"));
    shots.take(&dana, "approvals-history").await;
    alice.close().await.unwrap();
    dana.close().await.unwrap();
    stack.stop().await;
}

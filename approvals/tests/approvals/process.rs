//! The binary as operators run it: configured from the environment, ready when its
//! database and identity provider are, signed-in sessions surviving a restart (they live in
//! PostgreSQL), a clean exit 0 on SIGTERM, and no secret in its logs. It also proves the
//! binary starts with exactly one TLS crypto provider (two would panic at the first HTTPS or
//! TLS client it builds).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::common::{eventually, Browser, Stack};

pub(crate) struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn start(stack: &Stack, port: u16, log: &std::fs::File) -> Guard {
    start_with(stack, port, log, &[])
}

/// The binary with the stack's settings and `env` on top.
pub(crate) fn start_with(
    stack: &Stack,
    port: u16,
    log: &std::fs::File,
    env: &[(&str, &str)],
) -> Guard {
    let ca = stack.cluster.ca_cert().display().to_string();
    let child = Command::new(env!("CARGO_BIN_EXE_approvals"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APPROVALS_LISTEN", format!("127.0.0.1:{port}"))
        .env("APPROVALS_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("APPROVALS_CONTROL__PORT", stack.cluster.port().to_string())
        .env("APPROVALS_CONTROL__CA_FILE", &ca)
        .env("APPROVALS_TARGET__PORT", stack.cluster.port().to_string())
        .env("APPROVALS_TARGET__CA_FILE", &ca)
        .env("APPROVALS_OIDC__ISSUER", stack.idp.issuer())
        .env("APPROVALS_SECRETS__DIR", stack.dir.path().join("secrets"))
        .env("APPROVALS_LOG__LEVEL", "debug")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.try_clone().unwrap())
        .spawn()
        .unwrap();
    Guard(child)
}

pub(crate) async fn wait_ready(base: &str) {
    let http = reqwest::Client::new();
    eventually("the binary becomes ready", Duration::from_secs(30), async || {
        matches!(http.get(format!("{base}/health/ready")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
}

fn sigterm_and_wait(child: &mut Guard) -> std::process::ExitStatus {
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
    testkit::eventually_blocking(
        "the binary exits after SIGTERM",
        Duration::from_secs(10),
        || child.0.try_wait().unwrap(),
    )
}

#[tokio::test]
async fn the_binary_serves_keeps_sessions_across_a_restart_and_stops_cleanly() {
    let help = Command::new(env!("CARGO_BIN_EXE_approvals"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("APPROVALS_<SECTION>__<KEY>"));

    let stack = Stack::start().await;
    let port = dbgw_db::cluster::free_port().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = start(&stack, port, log.as_file());
    wait_ready(&base).await;

    let alice = Browser::new(&base);
    alice.sign_in("alice@example.com").await;
    let id = alice.request("read-only", 30).await;
    assert_eq!(sigterm_and_wait(&mut child).code(), Some(0));

    // Restarted: the same browser is still signed in and sees its request.
    let mut child = start(&stack, port, log.as_file());
    wait_ready(&base).await;
    let home = alice.get("/").await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("alice@example.com"), "{}", home.body);
    assert!(
        home.body.contains(&format!("/requests/{id}")),
        "{}",
        home.body
    );
    assert_eq!(sigterm_and_wait(&mut child).code(), Some(0));

    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(text.contains("SIGTERM"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(
        !text.contains(stack.app_login.password.expose_secret()),
        "the database password is in the logs"
    );
    let client_secret = stack
        .store
        .get(crate::common::CLIENT_SECRET_ID)
        .await
        .unwrap();
    let client_secret: serde_json::Value =
        serde_json::from_str(client_secret.expose_secret()).unwrap();
    assert!(
        !text.contains(client_secret["client_secret"].as_str().unwrap()),
        "the client secret is in the logs"
    );
    stack.stop().await;
}

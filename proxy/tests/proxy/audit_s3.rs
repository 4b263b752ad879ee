//! The audit read where it lives: the production shipper (deploy/audit-shipper/ship.sh)
//! ships a real session's audit files to S3 (moto), and `proxy audit session` /
//! `verify` read them there with the same results as from the local directory; a new
//! version of one object with an unrelated record altered reads as TAMPERED.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use testkit::eventually_blocking;

use crate::audit_session::golden_session;
use crate::common::{audit_cli, Options, Stack};
use dev_idp::DevIdp;
use proxy::settings::Plaintext;
use testkit::Moto;

const BUCKET: &str = "dbgw-audit";

pub(crate) fn s3_client(moto: &Moto) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(&moto.endpoint)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .http_client(secret_store::aws::http_client())
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Runs the shipper once through: starts it, waits for its first round to end (its
/// heartbeat), then stops it as ECS would (SIGTERM; the proxy's admin port is closed, so it
/// ships once more and exits). It must exit 0: every upload succeeded.
pub(crate) fn ship(moto: &Moto, audit: &Path, task: &str, approvals_head: &Path) {
    let state = tempfile::tempdir().unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/audit-shipper/ship.sh");
    let mut child = Command::new("sh")
        .arg(script)
        .env("AUDIT_DIR", audit)
        .env("AUDIT_BUCKET", BUCKET)
        .env("AUDIT_PREFIX", "audit")
        .env("TASK_ID", task)
        .env("STATE_DIR", state.path())
        .env("SHIP_INTERVAL_SECS", "1")
        // Nothing listens there: the proxy has stopped.
        .env("SHIP_PROXY_ADMIN_URL", "http://127.0.0.1:9")
        .env("S3_ENDPOINT_URL", &moto.endpoint)
        .env("SHIP_APPROVALS_HEAD_FILE", approvals_head)
        .envs(aws_env())
        .spawn()
        .expect("sh runs the shipper");
    let heartbeat = state.path().join("heartbeat");
    eventually_blocking(
        "the shipper's first round ends",
        Duration::from_secs(120),
        || {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the shipper stopped early"
            );
            heartbeat.exists()
        },
    );
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = eventually_blocking("the shipper stops", Duration::from_secs(120), || {
        child.try_wait().unwrap()
    });
    assert!(status.success(), "the shipper failed: {status}");
}

/// Credentials for the emulator (it takes any), and no metadata service.
fn aws_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

/// `proxy audit ARGS...` reading S3 at moto.
pub(crate) fn audit_s3(moto: &Moto, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_proxy"))
        .arg("audit")
        .args(args)
        .env("AWS_ENDPOINT_URL_S3", &moto.endpoint)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap()
}

pub(crate) async fn create_bucket(moto: &Moto) {
    s3_client(moto)
        .create_bucket()
        .bucket(BUCKET)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .expect("moto creates the bucket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_audit_in_s3_reads_as_the_local_one_and_a_replaced_object_as_tampered() {
    let moto = Moto::start().await;
    create_bucket(&moto).await;
    let idp = DevIdp::start().unwrap();
    let audit = tempfile::tempdir().unwrap();
    let stack = Stack::with(Options {
        oidc_issuer: Some(idp.issuer().to_string()),
        plaintext: Plaintext::Loopback,
        audit_dir: Some(audit.path().to_path_buf()),
        configure: Box::new(|s| {
            s.fleet.replica = "golden".into();
            s.audit.max_file_bytes = 1500;
        }),
        ..Options::default()
    })
    .await;
    let login = golden_session(&stack, &idp).await;
    let id = login["session"].as_str().unwrap().to_string();
    // Stopped: the files and the head are final, as when a task ends.
    stack.stop().await;
    // The approvals history's head, as `approvals events head` writes it for the shipper.
    let approvals_head = tempfile::NamedTempFile::new().unwrap();
    let head_json = format!("{{\"head\":\"7:{}\"}}\n", "ab".repeat(32));
    std::fs::write(approvals_head.path(), &head_json).unwrap();
    ship(&moto, audit.path(), "task-1", approvals_head.path());
    let shipped = s3_client(&moto)
        .get_object()
        .bucket(BUCKET)
        .key("audit/approvals/head.json")
        .send()
        .await
        .expect("the approvals head is shipped beside the audit's")
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert_eq!(shipped, head_json.as_bytes());

    let local = audit_cli(&["session", &id], &[audit.path()]);
    assert!(local.status.success(), "{local:?}");
    let remote = audit_s3(&moto, &["session", &id, &format!("s3://{BUCKET}/audit")]);
    assert!(
        remote.status.success(),
        "{}",
        String::from_utf8_lossy(&remote.stderr)
    );
    assert_eq!(
        String::from_utf8(remote.stdout).unwrap(),
        String::from_utf8(local.stdout).unwrap()
    );

    // The listing too, filtered as an auditor would.
    let args = ["sessions", "--email", crate::audit_session::ALICE];
    let local = audit_cli(&args, &[audit.path()]);
    let remote = audit_s3(
        &moto,
        &[&args[..], &[&format!("s3://{BUCKET}/audit")]].concat(),
    );
    assert!(
        local.status.success() && remote.status.success(),
        "{remote:?}"
    );
    assert_eq!(remote.stdout, local.stdout);

    // verify, anchored to the head the shipper put beside the files.
    let verified = audit_s3(
        &moto,
        &[
            "verify",
            &format!("s3://{BUCKET}/audit/task-1"),
            "--head-file",
            &format!("s3://{BUCKET}/audit/task-1/head.json"),
        ],
    );
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(
        verified.status.success() && text.contains("reaches the anchored head"),
        "{text}{}",
        String::from_utf8_lossy(&verified.stderr)
    );

    // Object Lock keeps every version, but a reader reads the current one: a new version
    // with an unrelated earlier record altered must not pass.
    let client = s3_client(&moto);
    let mut replaced = false;
    for f in proxy::audit::source::audit_files(audit.path()).unwrap() {
        let text = std::fs::read_to_string(&f).unwrap();
        if text.contains("SELECT 'unrelated'") {
            let key = format!("audit/task-1/{}", f.file_name().unwrap().to_string_lossy());
            client
                .put_object()
                .bucket(BUCKET)
                .key(key)
                .body(
                    text.replacen("SELECT 'unrelated'", "SELECT 'UNRELATED'", 1)
                        .into_bytes()
                        .into(),
                )
                .send()
                .await
                .unwrap();
            replaced = true;
            break;
        }
    }
    assert!(replaced);
    let out = audit_s3(&moto, &["session", &id, &format!("s3://{BUCKET}/audit")]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let verdict = stdout.lines().last().unwrap();
    assert!(
        verdict.starts_with(
            "TAMPERED: [golden] the chain breaks at s3://dbgw-audit/audit/task-1/audit-"
        ) && verdict.contains("was altered"),
        "{verdict}"
    );
}

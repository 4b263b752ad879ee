//! Write-ahead and fail-closed: when the audit log cannot be written, nothing executes, and
//! the proxy recovers by itself once it can write again. Also: the database going away.

use crate::common;

use std::path::PathBuf;
use std::process::Command;

use crate::common::{Options, Stack};
use proxy::audit::Durability;

/// A tiny tmpfs: a real filesystem that really fills up. Unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CAP_SYS_ADMIN)"
        );
        SmallDisk { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Fills the disk to the last byte.
    fn fill(&self) {
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=4096"])
            .arg(format!("of={}", self.dir.path().join("filler").display()))
            .stderr(std::process::Stdio::null())
            .status();
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=1", "oflag=append", "conv=notrunc"])
            .arg(format!("of={}", self.dir.path().join("filler").display()))
            .stderr(std::process::Stdio::null())
            .status();
    }

    fn free(&self) {
        std::fs::remove_file(self.dir.path().join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

async fn count(stack: &Stack, body: &str) -> i64 {
    let admin = stack.cluster.connect("rates").await.unwrap();
    admin
        .query_one("SELECT count(*) FROM notes WHERE body = $1", &[&body])
        .await
        .unwrap()
        .get(0)
}

async fn ready(stack: &Stack) -> u16 {
    let mut s = tokio::net::TcpStream::connect(stack.admin).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out[9..12].parse().unwrap()
}

async fn disk_full_refuses_statements(durability: Durability) {
    let disk = SmallDisk::new("512k");
    let audit_dir = disk.path().join("audit");
    let stack = Stack::with(Options {
        durability,
        audit_dir: Some(audit_dir.clone()),
        reserve_bytes: 64 * 1024,
        ..Options::default()
    })
    .await;
    let db = stack.connect(&stack.writer).await;
    db.execute("INSERT INTO notes (body) VALUES ('before')", &[])
        .await
        .unwrap();
    stack.flush();

    disk.fill();
    // Space already reserved for the audit log keeps serving: statements run while their
    // records fit in it, and the first one whose record does not fit must not run.
    let mut ran = Vec::new();
    let refused = loop {
        let body = format!("while full {}", ran.len());
        match db
            .batch_execute(&format!("INSERT INTO notes (body) VALUES ('{body}')"))
            .await
        {
            Ok(_) => ran.push(body),
            Err(e) => break (body, e),
        }
        assert!(ran.len() < 2000, "the disk never filled up");
    };
    let (refused_body, err) = refused;
    let db_err = err.as_db_error().expect("a clear error from the proxy");
    assert_eq!(db_err.code().code(), "58030");
    assert!(
        db_err.message().contains("audit log unavailable"),
        "{}",
        db_err.message()
    );
    assert!(
        db_err.message().contains("not executed"),
        "{}",
        db_err.message()
    );
    assert_eq!(
        count(&stack, &refused_body).await,
        0,
        "the statement must never reach the database"
    );
    assert_eq!(
        ready(&stack).await,
        503,
        "readiness reports the broken audit log"
    );

    // New logins are refused too: a login is audited before it is allowed.
    let tls = tls_config::postgres_connector(Some(&stack.ca)).unwrap();
    let refused = stack
        .pg_config(&stack.writer)
        .connect(tls)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.as_db_error().unwrap().code().code(), "58030");

    // Space again: the proxy recovers without a restart, and readiness says so.
    disk.free();
    testkit::eventually(
        "the audit log recovers (readiness 200)",
        std::time::Duration::from_secs(10),
        async || match ready(&stack).await {
            200 => Ok(()),
            status => Err(status),
        },
    )
    .await;
    let db = stack.connect(&stack.writer).await;
    db.execute("INSERT INTO notes (body) VALUES ('after')", &[])
        .await
        .unwrap();
    assert_eq!(count(&stack, "after").await, 1);
    assert_eq!(ready(&stack).await, 200);

    // Every record on disk is whole and chained; the refused statement is not there.
    let records = stack.records();
    assert!(records
        .iter()
        .any(|r| r["statement"] == "INSERT INTO notes (body) VALUES ('before')"));
    assert!(records
        .iter()
        .any(|r| r["statement"] == "INSERT INTO notes (body) VALUES ('after')"));
    // Every statement that ran is in the log, with its parameters; the refused one is not.
    let logged: Vec<&str> = records
        .iter()
        .filter_map(|r| r["statement"].as_str())
        .filter(|s| s.contains("while full"))
        .collect();
    let expected: Vec<String> = ran
        .iter()
        .map(|b| format!("INSERT INTO notes (body) VALUES ('{b}')"))
        .collect();
    assert_eq!(logged, expected);
    for body in &ran {
        assert_eq!(count(&stack, body).await, 1);
    }
    common::assert_chain_verifies(&audit_dir);
    drop(db);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_buffered() {
    disk_full_refuses_statements(Durability::Buffered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_fsync() {
    disk_full_refuses_statements(Durability::Fsync).await;
}

/// The durable promise: in `fsync` durability a statement reaches the database only after
/// an `fdatasync` covered its record. Seen from the client: when a statement's answer
/// arrives, the writer's synced sequence number already covers the statement's record, and
/// sequential statements need a sync each (group commit shares a sync only between
/// statements waiting at the same time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_forwards_a_statement_only_after_its_record_is_synced() {
    let stack = Stack::with(Options {
        durability: Durability::Fsync,
        ..Options::default()
    })
    .await;
    let db = stack.connect(&stack.writer).await;
    let syncs_before = stack.ctx.metrics.audit.syncs.get();
    const N: usize = 40;
    let mut synced_at_answer = Vec::new();
    for k in 0..N {
        db.batch_execute(&format!("INSERT INTO notes (body) VALUES ('durable {k}')"))
            .await
            .unwrap();
        synced_at_answer.push(stack.ctx.audit.synced());
    }
    let syncs = stack.ctx.metrics.audit.syncs.get() - syncs_before;
    let records = stack.records();
    for (k, synced) in synced_at_answer.iter().enumerate() {
        let text = format!("INSERT INTO notes (body) VALUES ('durable {k}')");
        let seq = records
            .iter()
            .find(|r| r["type"] == "statement" && r["statement"] == text.as_str())
            .and_then(|r| r["seq"].as_u64())
            .unwrap_or_else(|| panic!("no record of statement {k}"));
        assert!(
            *synced >= seq,
            "statement {k} (record {seq}) was answered when only records up to {synced} were synced"
        );
    }
    assert!(
        syncs >= N as u64,
        "{N} sequential statements were covered by {syncs} syncs"
    );
    drop(db);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_audit_directory_stops_the_proxy_from_starting() {
    let disk = SmallDisk::new("64k");
    Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(disk.path())
        .status()
        .unwrap();
    let mut settings = proxy::settings::Settings {
        listen: "127.0.0.1:0".into(),
        admin_listen: "127.0.0.1:0".into(),
        ..Default::default()
    };
    settings.audit.dir = disk.path().join("audit");
    settings.tls.plaintext = proxy::settings::Plaintext::Loopback;
    let err = proxy::server::Server::bind(settings)
        .await
        .err()
        .expect("must not start");
    assert!(format!("{err:#}").contains("audit"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_and_restarted_mid_session() {
    let stack = Stack::start().await;
    let db = stack.connect(&stack.app).await;
    db.query_one("SELECT 1", &[]).await.unwrap();

    stack.cluster.stop().unwrap();
    assert!(
        db.query_one("SELECT 1", &[]).await.is_err(),
        "the session ends with the database"
    );

    // While the database is down, logins fail fast with a clear error.
    let tls = tls_config::postgres_connector(Some(&stack.ca)).unwrap();
    let err = stack
        .pg_config(&stack.app)
        .connect(tls)
        .await
        .err()
        .unwrap();
    assert_eq!(err.as_db_error().unwrap().code().code(), "08006");
    assert!(err.as_db_error().unwrap().message().contains("unavailable"));

    stack.cluster.restart().unwrap();
    let again = stack.connect(&stack.app).await;
    again.query_one("SELECT 1", &[]).await.unwrap();

    let disconnects: Vec<String> = stack
        .records()
        .iter()
        .filter(|r| r["type"] == "disconnect")
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect();
    assert!(
        disconnects.iter().any(|r| r.contains("database closed")),
        "{disconnects:?}"
    );
    drop((db, again));
    common::assert_chain_verifies(&stack.audit_dir());
    stack.stop().await;
}

//! The audit chain: it runs on across rotations and restarts, and `proxy audit verify` names
//! the first record that was altered, removed, inserted or reordered.

use crate::common;

use std::path::{Path, PathBuf};

use crate::common::verify;
use proxy::audit::source::audit_files;
use proxy::audit::writer::AuditMetrics;
use proxy::audit::{AuditLog, AuditSettings};

/// Writes `n` records through the real writer, with small files so that it rotates, and
/// restarts the writer halfway (a new file that continues the chain).
async fn write_log(dir: &Path, n: usize) {
    let settings = AuditSettings {
        dir: dir.to_path_buf(),
        max_file_bytes: 2_000,
        ..AuditSettings::default()
    };
    for half in 0..2 {
        let log = AuditLog::open(settings.clone(), "test", AuditMetrics::default()).unwrap();
        for i in 0..n / 2 {
            let body =
                format!("\"ts\":\"t\",\"type\":\"statement\",\"statement\":\"SELECT {half}{i}\"");
            if i % 2 == 0 {
                log.accept(&[body]).await.unwrap();
            } else {
                log.record(body);
            }
            // Write now (the writer thread would within its interval): files rotate here.
            log.flush().unwrap();
        }
        log.close().unwrap();
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

/// A copy of the log directory to tamper with.
fn copy(dir: &Path, name: &str) -> (tempfile::TempDir, Vec<PathBuf>) {
    let to = tempfile::Builder::new().prefix(name).tempdir().unwrap();
    for f in audit_files(dir).unwrap() {
        std::fs::copy(&f, to.path().join(f.file_name().unwrap())).unwrap();
    }
    let files = audit_files(to.path()).unwrap();
    (to, files)
}

fn assert_tampered(dir: &Path, expect: &str) {
    let out = verify(&[dir]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "verify must fail: {stdout}");
    assert!(
        stdout.contains("TAMPERED") && stdout.contains(expect),
        "expected {expect:?} in: {stdout}"
    );
}

#[tokio::test]
async fn chain_spans_rotations_and_restarts_and_catches_every_kind_of_tampering() {
    let original = tempfile::tempdir().unwrap();
    write_log(original.path(), 60).await;
    let files = audit_files(original.path()).unwrap();
    assert!(files.len() >= 4, "small files rotate: {files:?}");

    let out = verify(&[original.path()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    // 60 statements, 2 log_opened records, and one rotate record per rotation.
    let total: usize = files.iter().map(|f| lines(f).len()).sum();
    assert!(
        stdout.contains(&format!("OK: {total} records, seq 1..{total}")),
        "{stdout}"
    );
    assert!(stdout.contains("from the start of the chain"));

    // Edited: one character of a statement changed.
    let (d, f) = copy(original.path(), "edited");
    let mut l = lines(&f[1]);
    l[2] = l[2].replacen("SELECT", "DELETE", 1);
    write_lines(&f[1], &l);
    assert_tampered(d.path(), "was altered");

    // Deleted: one line removed from the middle.
    let (d, f) = copy(original.path(), "deleted");
    let mut l = lines(&f[1]);
    l.remove(1);
    write_lines(&f[1], &l);
    assert_tampered(d.path(), "records removed");

    // Inserted: a valid record copied to another place.
    let (d, f) = copy(original.path(), "inserted");
    let mut l = lines(&f[2]);
    let dup = lines(&f[0])[1].clone();
    l.insert(1, dup);
    write_lines(&f[2], &l);
    assert_tampered(d.path(), "out of place");

    // Swapped: two neighbouring lines exchanged.
    let (d, f) = copy(original.path(), "swapped");
    let mut l = lines(&f[1]);
    l.swap(1, 2);
    write_lines(&f[1], &l);
    assert_tampered(d.path(), "records removed");

    // A whole file deleted from the middle of the chain.
    let (d, f) = copy(original.path(), "file-removed");
    std::fs::remove_file(&f[1]).unwrap();
    assert_tampered(d.path(), "records removed");

    // Re-hashed forgery: the attacker fixes the record's own hash, the next record's
    // `prev` still gives it away.
    let (d, f) = copy(original.path(), "rehashed");
    let mut l = lines(&f[1]);
    let forged = l[2].replacen("SELECT", "UPDATE", 1);
    let cut = forged.rfind(",\"hash\":\"").unwrap();
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        &forged.as_bytes()[..cut],
    ));
    l[2] = format!("{},\"hash\":\"{hash}\"}}", &forged[..cut]);
    write_lines(&f[1], &l);
    assert_tampered(d.path(), "does not chain");

    // A truncated last line.
    let (d, f) = copy(original.path(), "truncated");
    let last = f.last().unwrap();
    let text = std::fs::read_to_string(last).unwrap();
    std::fs::write(last, &text[..text.len() - 10]).unwrap();
    assert_tampered(d.path(), "incomplete");
}

#[tokio::test]
async fn a_single_file_from_mid_chain_verifies_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 40).await;
    let files = audit_files(dir.path()).unwrap();
    let out = verify(&[&files[2]]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("continues from earlier files"), "{stdout}");
    // Files given out of order fail.
    let out = verify(&[&files[2], &files[1]]);
    assert_eq!(out.status.code(), Some(1));
}

fn assert_truncated(dir: &Path, extra: &[&str], expect: &str) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_proxy"))
        .args(["audit", "verify"])
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "verify must fail: {stdout}");
    assert!(
        stdout.contains("TRUNCATED") && stdout.contains(expect),
        "expected {expect:?} in: {stdout}"
    );
}

#[tokio::test]
async fn a_cut_tail_is_detected_against_the_published_head_and_refused_on_restart() {
    let original = tempfile::tempdir().unwrap();
    write_log(original.path(), 60).await;
    let head_file = original.path().join("head.json");
    let head = proxy::audit::head::Head::read(&head_file)
        .unwrap()
        .expect("published at close");
    let files = audit_files(original.path()).unwrap();
    let total: usize = files.iter().map(|f| lines(f).len()).sum();
    assert_eq!(
        head.seq as usize, total,
        "the head is the last record written"
    );
    let anchor = ["--head".to_string(), format!("{}:{}", head.seq, head.hash)];
    let anchor: Vec<&str> = anchor.iter().map(String::as_str).collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_proxy"))
        .args(["audit", "verify"])
        .arg(original.path())
        .args(&anchor)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("reaches the anchored head"),
        "{stdout}"
    );

    // The last records cut off: the chain itself still verifies, the head does not.
    let (d, f) = copy(original.path(), "tail-cut");
    let last = f.last().unwrap();
    let mut l = lines(last);
    l.truncate(l.len() - 1);
    write_lines(last, &l);
    assert!(
        verify(&[d.path()]).status.success(),
        "undetectable without a head"
    );
    assert_truncated(d.path(), &anchor, "before the anchored head");
    // ... and the writer will not continue it.
    std::fs::copy(&head_file, d.path().join("head.json")).unwrap();
    let settings = AuditSettings {
        dir: d.path().to_path_buf(),
        ..AuditSettings::default()
    };
    let refused = AuditLog::open(settings, "test", AuditMetrics::default())
        .err()
        .expect("refused");
    assert!(
        refused.to_string().contains("records were removed"),
        "{refused}"
    );

    // The last file removed: the file before it names it.
    let (d, f) = copy(original.path(), "last-file-removed");
    std::fs::remove_file(f.last().unwrap()).unwrap();
    assert_truncated(d.path(), &[], "which is missing");

    // A record replaced where the head points.
    let (d, f) = copy(original.path(), "head-replaced");
    let last = f.last().unwrap();
    let mut l = lines(last);
    let forged = l.last().unwrap().replacen("SELECT", "DELETE", 1);
    let cut = forged.rfind(",\"hash\":\"").unwrap();
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        &forged.as_bytes()[..cut],
    ));
    *l.last_mut().unwrap() = format!("{},\"hash\":\"{hash}\"}}", &forged[..cut]);
    write_lines(last, &l);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_proxy"))
        .args(["audit", "verify"])
        .arg(d.path())
        .args(&anchor)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn a_record_larger_than_the_reserve_is_accepted_and_read_back_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let settings = AuditSettings {
        dir: dir.path().to_path_buf(),
        reserve_bytes: 64 * 1024,
        ..AuditSettings::default()
    };
    let big = "x".repeat(3 << 20);
    let log = AuditLog::open(settings.clone(), "test", AuditMetrics::default()).unwrap();
    let body = format!("\"ts\":\"t\",\"type\":\"statement\",\"statement\":\"{big}\"");
    let seq = log
        .accept(&[body])
        .await
        .expect("a 3 MiB record fits once space is reserved");
    log.close().unwrap();
    // The last record is larger than the restart's read chunk (1 MiB).
    let log = AuditLog::open(settings, "test", AuditMetrics::default()).unwrap();
    log.close().unwrap();
    let records = common::read_records(dir.path());
    assert_eq!(
        records[seq as usize - 1]["statement"]
            .as_str()
            .unwrap()
            .len(),
        big.len()
    );
    assert_eq!(records.last().unwrap()["type"], "log_opened");
    assert!(verify(&[dir.path()]).status.success());
}

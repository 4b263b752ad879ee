//! `proxy audit evidence` over a real session (the golden session of audit_session.rs, with
//! pgaudit on), an approvals history exported as `approvals events export` does, and
//! secrets in Secrets Manager (moto): the bundle holds each part, its manifest verifies,
//! a second run gives a byte-identical bundle, and an altered file fails the verification.
//!
//! `DBGW_EVIDENCE_SAMPLE=DIR` keeps a copy of the bundle there (docs' screenshot).

use std::path::Path;
use std::process::{Command, Output};

use crate::audit_session::{golden_session, ALICE};
use crate::common::{Options, Stack};
use dev_idp::DevIdp;
use proxy::settings::Plaintext;
use serde_json::{json, Value};
use testkit::Moto;

/// Copies the files of `from` into `to` (flat directories).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// Every file under `dir`, by relative path, with its bytes.
fn tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// `tree` without what moto makes up at each read: its `ListSecretVersionIds` answers with
/// the time of the call as every version's `CreatedDate` (AWS answers with the version's
/// creation), so versions' `created` in secrets.json, and that file's manifest line, are
/// left out of the comparison; everything else must be the same bytes.
fn moto_stable(
    mut files: std::collections::BTreeMap<String, Vec<u8>>,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut secrets: Value = serde_json::from_slice(&files["secrets.json"]).unwrap();
    for secret in secrets["secrets"].as_array_mut().unwrap() {
        for version in secret["versions"].as_array_mut().unwrap() {
            version["created"] = Value::Null;
        }
    }
    files.insert("secrets.json".into(), secrets.to_string().into_bytes());
    let manifest = String::from_utf8(files["MANIFEST"].clone()).unwrap();
    let kept: String = manifest
        .lines()
        .filter(|l| !l.ends_with("  secrets.json"))
        .map(|l| format!("{l}\n"))
        .collect();
    files.insert("MANIFEST".into(), kept.into_bytes());
    files
}

/// The approvals app's record of request 4242 (the golden session's grant): the request,
/// both approvals, the access starting; sealed by the database's trigger.
async fn approvals_history(stack: &Stack) -> tokio_postgres::Client {
    let control = stack.cluster.connect("dbgw").await.unwrap();
    control
        .execute(
            "INSERT INTO access_requests (id, email, subject, database, level, role, \
             approvals_needed, justification, duration_secs, status) OVERRIDING SYSTEM VALUE VALUES \
             (4242, $1, 'sub-alice', 'rates', 'read-write', 'rates_writer', 2, \
             'month-end correction of the notes table', 3600, 'active')",
            &[&ALICE],
        )
        .await
        .unwrap();
    for (actor, kind, data) in [
        (
            ALICE,
            "request.created",
            json!({"database": "rates", "level": "read-write",
                   "justification": "month-end correction of the notes table"}),
        ),
        ("dana@example.com", "decision.approve", json!({})),
        ("sam@example.com", "decision.approve", json!({})),
        ("approvals", "request.approved", json!({})),
    ] {
        control
            .execute(
                "INSERT INTO events (request_id, actor, kind, data) \
                 VALUES (4242, $1, $2, $3::text::jsonb)",
                &[&actor, &kind, &data.to_string()],
            )
            .await
            .unwrap();
    }
    control
}

fn evidence(moto: &Moto, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_proxy"))
        .args(["audit", "evidence"])
        .args(args)
        .envs(moto.env("PROXY_"))
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evidence_bundle_holds_each_part_verifies_is_reproducible_and_shows_an_altered_file() {
    let moto = Moto::start().await;
    moto.rotated_secret(
        "dbgw/rates-api",
        &json!({"username": "rates_api", "password": "x"}),
    )
    .await;
    moto.client()
        .create_secret()
        .name("dbgw/not-rotated")
        .secret_string("{}")
        .send()
        .await
        .unwrap();
    let idp = DevIdp::start().unwrap();
    let inputs = tempfile::tempdir().unwrap();
    let stack = Stack::with(Options {
        oidc_issuer: Some(idp.issuer().to_string()),
        plaintext: Plaintext::Loopback,
        pgaudit: true,
        configure: Box::new(|s| {
            s.fleet.replica = "golden".into();
            s.audit.max_file_bytes = 1500;
        }),
        ..Options::default()
    })
    .await;
    let since = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    let login = golden_session(&stack, &idp).await;
    let id = login["session"].as_str().unwrap().to_string();
    let control = approvals_history(&stack).await;
    let events = inputs.path().join("events.jsonl");
    let mut file = std::fs::File::create(&events).unwrap();
    grants::history::export(&control, &mut file).await.unwrap();
    // The head kept elsewhere, as `approvals events head` prints it.
    let mut chain = grants::history::Chain::default();
    grants::history::for_each(&control, |e| chain.push(&e, None))
        .await
        .unwrap();
    let head = chain.finish(None).unwrap().head.unwrap().to_string();
    let head_file = inputs.path().join("approvals-head.json");
    std::fs::write(&head_file, json!({ "head": head }).to_string()).unwrap();
    // A snapshot of the inputs: the running stack's logs would go on growing.
    let (audit, pgaudit) = (inputs.path().join("audit"), inputs.path().join("pgaudit"));
    copy_dir(&stack.audit_dir(), &audit);
    copy_dir(&stack.pgaudit_dir(), &pgaudit);
    stack.stop().await;
    let until = (chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339();

    let out = tempfile::tempdir().unwrap();
    let build_from = |name: &str, audit: &Path| {
        let dir = out.path().join(name);
        let o = evidence(
            &moto,
            &[
                "--out",
                dir.to_str().unwrap(),
                "--since",
                &since,
                "--until",
                &until,
                "--pgaudit",
                pgaudit.to_str().unwrap(),
                "--approvals-events",
                events.to_str().unwrap(),
                "--approvals-head-file",
                head_file.to_str().unwrap(),
                "--secrets-prefix",
                "dbgw/",
                "--generated-at",
                "2026-12-06 (test)",
                audit.to_str().unwrap(),
            ],
        );
        (dir, o)
    };
    let build = |name: &str| {
        let (dir, o) = build_from(name, &audit);
        assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        dir
    };
    let first = build("first");
    let read = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(first.join(name)).unwrap()).unwrap()
    };

    // Each part is there and says what happened.
    let chains = read("chains.json");
    assert_eq!(chains["chains"][0]["replica"], "golden");
    assert_eq!(chains["chains"][0]["status"], "ok");
    assert_eq!(read("crosscheck.json")["differences"], json!([]));
    let verification = read("approvals-verification.json");
    assert_eq!(verification["ok"], true, "{verification}");
    assert_eq!(verification["events"], 4);
    let accesses = read("accesses.json");
    let access = &accesses[0];
    assert_eq!(access["email"], ALICE);
    assert_eq!(access["request_id"], 4242);
    assert_eq!(
        access["approved_by"],
        json!(["dana@example.com", "sam@example.com"])
    );
    assert_eq!(access["request"]["requested_by"], ALICE);
    assert_eq!(
        access["request"]["justification"],
        "month-end correction of the notes table"
    );
    let session = &access["sessions"][0];
    assert_eq!(session["session"], id.as_str());
    assert_eq!(session["verified"], true);
    let transcript =
        std::fs::read_to_string(first.join(session["transcript_file"].as_str().unwrap())).unwrap();
    assert!(
        transcript.contains("COPY notes (body, n) FROM STDIN"),
        "{transcript}"
    );
    let secrets = read("secrets.json");
    let names: Vec<&str> = secrets["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dbgw/not-rotated", "dbgw/rates-api"]);
    assert_eq!(secrets["secrets"][1]["rotation_enabled"], true);
    assert!(!secrets["secrets"][1]["versions"]
        .as_array()
        .unwrap()
        .is_empty());
    let controls = read("controls.json");
    assert_eq!(controls.as_array().unwrap().len(), 9);
    assert!(
        controls
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["missing"] == json!([])),
        "{controls}"
    );
    let index = std::fs::read_to_string(first.join("index.html")).unwrap();
    assert!(
        index.contains("month-end correction of the notes table") && !index.contains("<script")
    );

    // The manifest verifies; the same inputs give the same bytes.
    let verify = |dir: &Path| evidence(&moto, &["--verify", dir.to_str().unwrap()]);
    assert!(verify(&first).status.success());
    let second = build("second");
    let (one, two) = (moto_stable(tree(&first)), moto_stable(tree(&second)));
    for (name, bytes) in &one {
        assert!(
            two.get(name) == Some(bytes),
            "the same inputs gave another {name}:\n{}\n---\n{}",
            String::from_utf8_lossy(bytes),
            two.get(name)
                .map(|b| String::from_utf8_lossy(b))
                .unwrap_or_default()
        );
    }
    assert_eq!(
        one.keys().collect::<Vec<_>>(),
        two.keys().collect::<Vec<_>>()
    );
    if let Some(keep) = std::env::var_os("DBGW_EVIDENCE_SAMPLE") {
        for (name, bytes) in tree(&first) {
            let path = Path::new(&keep).join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
    }

    // Over an audit with an earlier, unrelated record altered, the bundle is still made,
    // records the broken chain and the unproven session, and the exit status says so.
    let altered_audit = inputs.path().join("altered-audit");
    copy_dir(&audit, &altered_audit);
    let mut altered = false;
    for f in proxy::audit::source::audit_files(&altered_audit).unwrap() {
        let text = std::fs::read_to_string(&f).unwrap();
        if text.contains("SELECT 'unrelated'") {
            std::fs::write(
                &f,
                text.replacen("SELECT 'unrelated'", "SELECT 'UNRELATED'", 1),
            )
            .unwrap();
            altered = true;
            break;
        }
    }
    assert!(altered);
    let (broken, o) = build_from("broken", &altered_audit);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let chains: Value =
        serde_json::from_slice(&std::fs::read(broken.join("chains.json")).unwrap()).unwrap();
    assert_eq!(chains["chains"][0]["status"], "tampered");
    let accesses: Value =
        serde_json::from_slice(&std::fs::read(broken.join("accesses.json")).unwrap()).unwrap();
    assert_eq!(accesses[0]["sessions"][0]["verified"], false);
    let index = std::fs::read_to_string(broken.join("index.html")).unwrap();
    assert!(
        index.contains("Overall: <span class=bad>PROBLEM</span>"),
        "{index}"
    );
    assert!(
        verify(&broken).status.success(),
        "its own manifest still holds"
    );

    // One byte changed in one file: the verification names it and fails.
    let altered = first.join("accesses.json");
    let text = std::fs::read_to_string(&altered).unwrap();
    std::fs::write(&altered, text.replace("sam@example.com", "bob@example.com")).unwrap();
    let o = verify(&first);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "ALTERED: accesses.json: its SHA-256 is not the manifest's\n"
    );
}

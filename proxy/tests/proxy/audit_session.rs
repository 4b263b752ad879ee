//! `proxy audit session` and `proxy audit sessions` over a real session through the proxy:
//! a person's session with simple and extended queries, a COPY, an error inside a
//! transaction and a refused statement, in audit files that rotate while it runs, ended by
//! revoking the grant. Its transcript must be exactly the golden file (volatile values
//! masked); with an unrelated earlier record altered, it must say TAMPERED and exit 1.
//!
//! `DBGW_UPDATE_GOLDEN=1` rewrites the golden file from the run (then read the diff).

use std::path::PathBuf;

use crate::common::wire::{bind_text, execute, msg, parse, sync};
use crate::common::{audit_cli, query_msg, Options, RawClient, Stack};
use dev_idp::DevIdp;
use proxy::settings::Plaintext;
use serde_json::Value;

pub(crate) const ALICE: &str = "alice@example.com";
const GOLDEN: &str = "tests/proxy/golden/audit_session.txt";

/// Sends `bytes` and reads up to the next ReadyForQuery.
async fn run(c: &mut RawClient, bytes: &[u8]) {
    c.send(bytes).await.unwrap();
    c.until(b'Z').await.expect("ReadyForQuery");
}

/// The session the golden file holds; returns its login record.
pub(crate) async fn golden_session(stack: &Stack, idp: &DevIdp) -> Value {
    let grant = stack.grant(ALICE, "rates_writer").await;
    // As the approvals app records an approved request's grant.
    let control = stack.cluster.connect("dbgw").await.unwrap();
    control
        .execute(
            "UPDATE grants SET request_id = 4242, \
             approved_by = ARRAY['dana@example.com', 'sam@example.com'] WHERE id = $1",
            &[&grant.id],
        )
        .await
        .unwrap();

    // An unrelated session first: the tampering below alters one of its records.
    let app = stack.connect(&stack.app).await;
    app.simple_query("SELECT 'unrelated'").await.unwrap();
    drop(app);
    stack.sessions_ended().await;

    let token = idp.token(ALICE).unwrap();
    let mut c = RawClient::login_person(stack, ALICE, &token, "golden").await;
    run(&mut c, &query_msg("SELECT 1 AS one")).await;
    run(&mut c, &query_msg("SELECT 2 AS two; SELECT 3 AS three")).await;
    // Extended: unnamed statement with a parameter, then a named one bound separately.
    let answer = [
        parse("", "SELECT $1::int + 1 AS answer"),
        bind_text("", "", &["41"]),
        execute(),
        sync(),
    ];
    run(&mut c, &answer.concat()).await;
    run(
        &mut c,
        &[parse("by_n", "SELECT body FROM notes WHERE n = $1"), sync()].concat(),
    )
    .await;
    // COPY, its data sent after the server asked for it.
    c.send(&query_msg("COPY notes (body, n) FROM STDIN"))
        .await
        .unwrap();
    c.until(b'G').await.expect("CopyInResponse");
    run(
        &mut c,
        &[msg(b'd', b"copied\t1\n"), msg(b'c', &[])].concat(),
    )
    .await;
    run(
        &mut c,
        &[bind_text("", "by_n", &["1"]), execute(), sync()].concat(),
    )
    .await;
    // An error inside a transaction: what follows fails until the rollback.
    for sql in [
        "BEGIN",
        "INSERT INTO notes (body, n) VALUES ('in a transaction', 2)",
        "SELECT 1/0",
        "SELECT 'after the error'",
        "ROLLBACK",
    ] {
        run(&mut c, &query_msg(sql)).await;
    }
    // Refused by the proxy (a person may not set their role's password), and redacted.
    run(
        &mut c,
        &query_msg(
            "DO $$ BEGIN EXECUTE format('ALTER ROLE %I PASSWORD %L', current_user, 'hijack-1'); END $$",
        ),
    )
    .await;

    // Revoked while the session is open: the proxy closes it.
    let target = stack.cluster.connect("postgres").await.unwrap();
    grants::revoke(
        &control,
        &target,
        grant.id,
        "dana@example.com",
        "access review",
    )
    .await
    .unwrap();
    while c.recv().await.is_some() {}
    stack.sessions_ended().await;

    let records = stack.records();
    records
        .into_iter()
        .find(|r| r["type"] == "auth" && r["application"] == "golden")
        .expect("the session's login")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reads_as_its_golden_transcript_and_an_altered_log_as_tampered() {
    let idp = DevIdp::start().unwrap();
    let stack = Stack::with(Options {
        oidc_issuer: Some(idp.issuer().to_string()),
        plaintext: Plaintext::Loopback,
        configure: Box::new(|s| {
            s.fleet.replica = "golden".into();
            // Small files: the writer rotates several times during the session.
            s.audit.max_file_bytes = 1500;
        }),
        ..Options::default()
    })
    .await;
    let login = golden_session(&stack, &idp).await;
    let id = login["session"].as_str().unwrap().to_string();
    let dir = stack.audit_dir();

    // Every record the proxy wrote reads back through the typed reader as the same JSON.
    for f in proxy::audit::source::audit_files(&dir).unwrap() {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let typed = proxy::audit::read::parse(line.as_bytes()).unwrap();
            let original: Value = serde_json::from_str(line).unwrap();
            assert_eq!(serde_json::to_value(&typed).unwrap(), original, "{line}");
        }
    }

    let out = audit_cli(&["session", &id], &[&dir]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = files_spanned(&stdout);
    assert!(files >= 2, "the session spans a rotation: {stdout}");
    let text = |v: &Value| v.as_str().unwrap().to_string();
    let grant = format!("grant {}", login["identity"]["grant_id"]);
    let got = normalize(
        &stdout,
        &[
            (&id, "<session>"),
            (&text(&login["secret_version"]), "<version>"),
            (&text(&login["db_user"]), "<db_user>"),
            (&grant, "grant <id>"),
        ],
    );
    compare_golden(&got);
    // The token is nowhere in the transcript.
    assert!(!stdout.contains(&idp.token(ALICE).unwrap()[20..60]));

    // The listing finds the session by what an auditor knows.
    let listed = |args: &[&str]| {
        let mut all = vec!["sessions"];
        all.extend(args);
        let out = audit_cli(&all, &[&dir]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let by_email = listed(&["--email", ALICE]);
    assert_eq!(by_email.lines().count(), 1, "{by_email}");
    assert!(
        by_email.contains(&id) && by_email.contains("access revoked"),
        "{by_email}"
    );
    assert!(listed(&["--request", "4242", "--statement-like", "copy notes%"]).contains(&id));
    assert!(!listed(&["--request", "4243"]).contains(&id));
    assert!(!listed(&["--statement-like", "%hijack-1%"]).contains(&id));
    let all = listed(&[]);
    assert!(all.contains("service rates_api"), "{all}");

    // One unrelated record, earlier in the chain, altered: the session is no longer proven.
    let copy = tempfile::tempdir().unwrap();
    let mut altered = false;
    for f in proxy::audit::source::audit_files(&dir).unwrap() {
        let mut text = std::fs::read_to_string(&f).unwrap();
        if !altered && text.contains("SELECT 'unrelated'") {
            text = text.replacen("SELECT 'unrelated'", "SELECT 'UNRELATED'", 1);
            altered = true;
        }
        std::fs::write(copy.path().join(f.file_name().unwrap()), text).unwrap();
    }
    assert!(altered);
    let out = audit_cli(&["session", &id], &[copy.path()]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let verdict = stdout.lines().last().unwrap();
    assert!(
        verdict.starts_with("TAMPERED: [golden] the chain breaks at ")
            && verdict.contains("was altered"),
        "{verdict}"
    );
    let out = audit_cli(&["sessions", "--email", ALICE], &[copy.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("TAMPERED "));
    stack.stop().await;
}

/// How many files the transcript's header says the session's records are in.
fn files_spanned(transcript: &str) -> usize {
    let header = transcript
        .lines()
        .find(|l| l.starts_with("records: "))
        .unwrap();
    let (_, rest) = header.split_once(" in ").unwrap();
    rest.split(' ').next().unwrap().parse().unwrap()
}

fn compare_golden(got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    if std::env::var_os("DBGW_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "the transcript differs from {} (DBGW_UPDATE_GOLDEN=1 rewrites it):\n{}",
        path.display(),
        diff(&want, got)
    );
}

/// The lines that differ, for the failure message.
fn diff(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let mut out = String::new();
    for i in 0..w.len().max(g.len()) {
        let (a, b) = (w.get(i), g.get(i));
        if a != b {
            out.push_str(&format!("line {}:\n- {:?}\n+ {:?}\n", i + 1, a, b));
        }
    }
    out
}

/// Masks what changes from run to run: times, sequence numbers, ports, process ids,
/// durations, sizes, file names, and the `known` values (ids).
fn normalize(text: &str, known: &[(&String, &str)]) -> String {
    let mut t = text.to_string();
    for (value, mask) in known {
        t = t.replace(value.as_str(), mask);
    }
    let lines: Vec<String> = t
        .lines()
        .map(|l| {
            if l.starts_with("records: ") {
                return "records: <records in files>".to_string();
            }
            let mut l = mask_timestamps(l);
            for prefix in ["#", "127.0.0.1:", "server process ", "seq "] {
                l = mask_after(&l, prefix);
            }
            for suffix in [" ms", " s;", " bytes from the client", " to it"] {
                l = mask_before(&l, suffix);
            }
            l
        })
        .collect();
    lines.join("\n") + "\n"
}

fn is_number(c: char) -> bool {
    c.is_ascii_digit() || c == '.'
}

/// `<prefix>123` → `<prefix><n>`.
fn mask_after(line: &str, prefix: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find(prefix) {
        let after = &rest[i + prefix.len()..];
        let n = after.len() - after.trim_start_matches(is_number).len();
        out.push_str(&rest[..i + prefix.len()]);
        if n > 0 {
            out.push_str("<n>");
        }
        rest = &after[n..];
    }
    out + rest
}

/// `123<suffix>` → `<n><suffix>`.
fn mask_before(line: &str, suffix: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find(suffix) {
        let before = &rest[..i];
        let n = before.len() - before.trim_end_matches(is_number).len();
        out.push_str(&before[..i - n]);
        if n > 0 {
            out.push_str("<n>");
        }
        out.push_str(suffix);
        rest = &rest[i + suffix.len()..];
    }
    out + rest
}

/// `2026-12-06T08:00:00.123456Z` → `<ts>`; `2026-12-06 08:40 UTC` (a revocation's time in
/// its reason) → `<time> UTC`.
fn mask_timestamps(line: &str) -> String {
    let shapes = [
        ("dddd-dd-ddTdd:dd:dd.ddddddZ", "<ts>"),
        ("dddd-dd-dd dd:dd UTC", "<time> UTC"),
    ];
    let fits = |shape: &str, s: &[u8]| {
        s.len() >= shape.len()
            && shape.bytes().zip(s).all(|(p, &c)| match p {
                b'd' => c.is_ascii_digit(),
                p => p == c,
            })
    };
    let bytes = line.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    'scan: while i < bytes.len() {
        for (shape, mask) in shapes {
            if fits(shape, &bytes[i..]) {
                out.push_str(mask);
                i += shape.len();
                continue 'scan;
            }
        }
        let c = line[i..].chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out
}

#[test]
fn normalizing_masks_only_volatile_values() {
    let line = "  #12  2026-12-06T08:00:00.123456Z  connect from 127.0.0.1:5123, 0.412 ms";
    assert_eq!(
        normalize(line, &[]),
        "  #<n>  <ts>  connect from 127.0.0.1:<n>, <n> ms\n"
    );
    assert_eq!(
        mask_timestamps("revoked at 2026-12-06 08:40 UTC: review"),
        "revoked at <time> UTC: review"
    );
    assert_eq!(mask_after("SELECT 1", "#"), "SELECT 1");
}

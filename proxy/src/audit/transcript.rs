//! `proxy audit session ID`: one session as a transcript a person can read, in chain order
//! (connect, login, every statement with its parameters and outcomes, the end), and whether
//! the chain vouches for every record shown.
//!
//! It reads every chain given through [`super::verify::Walk`], verify's own logic, so what it
//! shows is what it verified: a record of the session at or after the first break of its
//! chain, or after the anchored head, makes it say TAMPERED (and where) and exit 1. The
//! session may span file rotations; several replicas' directories may be given (a session
//! lives on one replica; the others' chains are verified as they are read).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use super::head::Head;
use super::read::{self, AuthResult, Body, Identity, Param, Status};
use super::verify::{self, Broken, Report, Trust, Walk};

/// `proxy audit session`.
#[derive(Debug, clap::Args)]
pub struct SessionArgs {
    /// The session's id: the `session` member of its records (`proxy audit sessions` lists
    /// them).
    pub id: String,
    /// Audit files or directories, or the shipped copy (`s3://bucket/prefix`). Give every
    /// replica's directory to find the session wherever it ran.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// A published head (`head.json`, e.g. the copy in write-once storage, `s3://...`), once per
    /// replica: each anchors the chain holding the file it names. A session record after
    /// it is reported, as nothing outside the log vouches for it.
    #[arg(long)]
    pub head_file: Vec<PathBuf>,
}

/// A record of the session and where it is.
#[derive(Debug)]
pub struct Shown {
    pub record: read::Record,
    pub replica: String,
    /// The file's name and the line in it.
    pub file: String,
    pub line: u64,
    pub trust: Trust,
}

/// The verification of a chain that holds records of the session.
#[derive(Debug)]
pub struct Checked {
    pub replica: String,
    pub anchor: Option<Head>,
    pub result: Result<Report, Broken>,
}

/// Everything `session` found: the session's records in chain order, and their chains.
#[derive(Debug, Default)]
pub struct Found {
    pub records: Vec<Shown>,
    pub chains: Vec<Checked>,
}

pub fn run(args: &SessionArgs) -> ExitCode {
    let found = read_heads(&args.head_file).and_then(|heads| find(&args.paths, &heads, &args.id));
    let found = match found {
        Ok(f) if f.records.is_empty() => {
            eprintln!(
                "proxy: no records of session {} in the files given",
                args.id
            );
            return ExitCode::from(2);
        }
        Ok(f) => f,
        Err(e) => {
            eprintln!("proxy: {e:#}");
            return ExitCode::from(2);
        }
    };
    print!("{}", render(&found));
    let verdict = verdict(&found);
    for line in &verdict.lines {
        println!("{line}");
    }
    if verdict.tampered {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

pub fn read_heads(paths: &[PathBuf]) -> anyhow::Result<Vec<Head>> {
    paths
        .iter()
        .map(|p| Head::read(p)?.ok_or_else(|| anyhow::anyhow!("{} does not exist", p.display())))
        .collect()
}

/// Reads every chain of `paths`, keeping the records of session `id`.
pub fn find(paths: &[PathBuf], heads: &[Head], id: &str) -> anyhow::Result<Found> {
    // Every record of a session names it this way (outcomes too): most lines are skipped
    // without being parsed.
    let needle = format!("\"session\":{}", serde_json::to_string(id)?);
    let mut all = find_where(
        paths,
        heads,
        |text| contains(text, needle.as_bytes()),
        |s| s == id,
    )?;
    Ok(all.remove(id).unwrap_or_default())
}

/// Reads every chain of `paths` once, keeping the records of each session in `ids`.
pub fn find_many(
    paths: &[PathBuf],
    heads: &[Head],
    ids: &BTreeSet<String>,
) -> anyhow::Result<BTreeMap<String, Found>> {
    find_where(
        paths,
        heads,
        |text| contains(text, b"\"session\":"),
        |s| ids.contains(s),
    )
}

/// The records of the sessions `wanted` keeps, by session; `maybe` skips lines cheaply.
fn find_where(
    paths: &[PathBuf],
    heads: &[Head],
    maybe: impl Fn(&[u8]) -> bool,
    wanted: impl Fn(&str) -> bool,
) -> anyhow::Result<BTreeMap<String, Found>> {
    let chains = verify::chains(paths)?;
    let anchors = verify::anchors(&chains, heads)?;
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    for (chain, anchor) in chains.iter().zip(&anchors) {
        let mut walk = Walk::new(&chain.files, anchor.as_ref());
        let mut here: BTreeMap<String, Vec<Shown>> = BTreeMap::new();
        while let Some(step) = walk.next_record()? {
            if !maybe(step.text) {
                continue;
            }
            let record = match read::parse(step.text) {
                Ok(r) => r,
                // A broken part of the chain may hold anything; the break is reported.
                Err(_) if step.trust == Trust::Broken => continue,
                Err(e) => anyhow::bail!("{}:{}: {e}", step.file, step.line),
            };
            let Some(id) = record.body.session().filter(|s| wanted(s)) else {
                continue;
            };
            here.entry(id.to_string()).or_default().push(Shown {
                record,
                replica: chain.replica.clone(),
                file: step.file.name(),
                line: step.line,
                trust: step.trust,
            });
        }
        let result = walk.finish()?;
        for (id, mut records) in here {
            let f = found.entry(id).or_default();
            f.records.append(&mut records);
            f.chains.push(Checked {
                replica: chain.replica.clone(),
                anchor: anchor.clone(),
                result: result.clone(),
            });
        }
    }
    Ok(found)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What the chains say about the records shown.
pub struct Verdict {
    pub tampered: bool,
    pub lines: Vec<String>,
}

/// A session record at or after a break, or past the anchored head, is TAMPERED; a chain
/// cut before the session's end too. A break after the session is a note.
pub fn verdict(found: &Found) -> Verdict {
    let mut out = Verdict {
        tampered: false,
        lines: Vec::new(),
    };
    let ended = found.records.iter().any(|s| {
        matches!(
            s.record.body,
            Body::Disconnect { .. }
                | Body::Auth {
                    result: AuthResult::Refused,
                    ..
                }
        )
    });
    for chain in &found.chains {
        let label = replica_label(&chain.replica);
        let mine: Vec<&Shown> = found
            .records
            .iter()
            .filter(|s| s.replica == chain.replica)
            .collect();
        let first_bad = |trust: Trust| mine.iter().find(|s| s.trust == trust);
        let (first, last) = (mine[0].record.seq, mine[mine.len() - 1].record.seq);
        if let (Some(s), Err(b)) = (first_bad(Trust::Broken), &chain.result) {
            out.tampered = true;
            out.lines.push(format!(
                "TAMPERED: {label}the chain breaks at {b}; this session's records from seq {} \
                 ({}:{}) on come at or after the break, so nothing proves them",
                s.record.seq, s.file, s.line
            ));
        } else if let Some(s) = first_bad(Trust::PastHead) {
            out.tampered = true;
            let head = chain.anchor.as_ref().map_or(0, |h| h.seq);
            out.lines.push(format!(
                "TAMPERED: {label}this session's records from seq {} ({}:{}) on lie past the \
                 anchored head (seq {head}): nothing kept outside the log vouches for them \
                 (use a newer head)",
                s.record.seq, s.file, s.line
            ));
        } else {
            match &chain.result {
                Err(b) if b.truncated && !ended => {
                    out.tampered = true;
                    out.lines.push(format!(
                        "TAMPERED: {label}{b}: the chain was cut and this session's end is \
                         not in it"
                    ));
                }
                Err(b) => out.lines.push(format!(
                    "verified: {label}this session's records (seq {first}..{last}) are intact \
                     and chained; note: the chain breaks after them, at {b} (run proxy audit \
                     verify)"
                )),
                Ok(r) => out.lines.push(format!(
                    "verified: {label}chain intact, seq {}..{}{}{}; this session's records are \
                     seq {first}..{last}",
                    r.first_seq,
                    r.last_seq,
                    if r.from_genesis {
                        " from the start of the chain"
                    } else {
                        ""
                    },
                    match &chain.anchor {
                        Some(h) => format!(", reaching the anchored head (seq {})", h.seq),
                        None => String::new(),
                    }
                )),
            }
        }
    }
    out
}

pub(crate) fn replica_label(replica: &str) -> String {
    if replica.is_empty() {
        String::new()
    } else {
        format!("[{replica}] ")
    }
}

/// The transcript: a header, then each record (outcomes under their statement).
pub fn render(found: &Found) -> String {
    let mut out = String::new();
    let first = &found.records[0];
    let id = first.record.body.session().unwrap_or_default();
    let _ = writeln!(
        out,
        "session {id}{}",
        if first.replica.is_empty() {
            String::new()
        } else {
            format!(" on replica {}", first.replica)
        }
    );
    let _ = writeln!(
        out,
        "records: {} in {} file(s), from {}:{} to {}:{}",
        found.records.len(),
        {
            let mut files: Vec<&str> = found.records.iter().map(|s| s.file.as_str()).collect();
            files.dedup();
            files.len()
        },
        first.file,
        first.line,
        found.records[found.records.len() - 1].file,
        found.records[found.records.len() - 1].line,
    );
    out.push('\n');
    // Outcomes go under their statement; an outcome whose statement is not in the files
    // given is shown where it is.
    let statements: std::collections::HashSet<u64> = found
        .records
        .iter()
        .filter(|s| matches!(s.record.body, Body::Statement(_)))
        .map(|s| s.record.seq)
        .collect();
    let mut outcomes: BTreeMap<u64, Vec<&Shown>> = BTreeMap::new();
    for s in &found.records {
        if let Body::Outcome(o) = &s.record.body {
            if statements.contains(&o.of) {
                outcomes.entry(o.of).or_default().push(s);
            }
        }
    }
    for s in &found.records {
        if let Body::Outcome(o) = &s.record.body {
            if statements.contains(&o.of) {
                continue;
            }
        }
        let no_outcomes = Vec::new();
        record(
            &mut out,
            s,
            outcomes.get(&s.record.seq).unwrap_or(&no_outcomes),
        );
    }
    out.push('\n');
    out
}

/// One record: `#seq  time  kind`, then its details indented; `!` in front when the chain
/// does not vouch for it.
fn record(out: &mut String, s: &Shown, outcomes: &[&Shown]) {
    let mark = if s.trust == Trust::Chained { " " } else { "!" };
    let r = &s.record;
    let kind = match &r.body {
        Body::Connect { .. } => "connect".to_string(),
        Body::Auth {
            result: AuthResult::Ok,
            ..
        } => "login".into(),
        Body::Auth { .. } => "login refused".into(),
        Body::Upstream { .. } => "upstream".into(),
        Body::Statement(st) => match &st.via {
            read::Via::Simple { of } if *of > 1 => format!("query ({of} statements)"),
            read::Via::Simple { .. } => "query".into(),
            read::Via::Extended {
                steps,
                prepared,
                portal,
            } => {
                let mut k = format!("extended ({})", steps.join(", "));
                if !prepared.is_empty() {
                    let _ = write!(k, " statement {prepared:?}");
                }
                if !portal.is_empty() {
                    let _ = write!(k, " portal {portal:?}");
                }
                k
            }
        },
        Body::Outcome(o) => format!("outcome of #{}", o.of),
        Body::Disconnect { .. } => "disconnect".into(),
        Body::LogOpened { .. } | Body::FileOpened { .. } | Body::Rotate { .. } | Body::Other => {
            "record".into()
        }
    };
    let _ = writeln!(out, "{mark} #{}  {}  {kind}", r.seq, r.ts);
    let mut line = |text: &str| {
        for l in text.lines() {
            let _ = writeln!(out, "      {l}");
        }
    };
    match &r.body {
        Body::Connect {
            who, tls, startup, ..
        } => {
            line(&format!(
                "client {}{}",
                who.client,
                if *tls { " over TLS" } else { " without TLS" }
            ));
            let params: Vec<String> = startup.iter().map(|(k, v)| format!("{k}={v}")).collect();
            line(&format!("start-up: {}", params.join(" ")));
        }
        Body::Auth {
            who,
            method,
            user,
            requested_database,
            reason,
            ..
        } => match &who.login {
            Some(login) => {
                match &login.identity {
                    Identity::Service { name } => line(&format!("service {name}")),
                    Identity::Person {
                        email,
                        subject,
                        issuer,
                        grant_id,
                        request_id,
                        approved_by,
                    } => {
                        line(&format!(
                            "person {email} (subject {subject}, issuer {issuer})"
                        ));
                        let mut grant = format!("grant {grant_id}");
                        match request_id {
                            Some(id) => {
                                let _ = write!(grant, ", request {id}");
                            }
                            None => grant.push_str(" (an operator's, no request)"),
                        }
                        if !approved_by.is_empty() {
                            let _ = write!(grant, ", approved by {}", approved_by.join(", "));
                        }
                        line(&grant);
                    }
                }
                line(&format!(
                    "database {} as {}, credentials version {}, application {:?}, method {method}",
                    login.database, login.db_user, login.secret_version, login.application
                ));
            }
            None => line(&format!(
                "user {user}, database {requested_database}, method {method}: {}",
                reason.as_deref().unwrap_or("no reason recorded")
            )),
        },
        Body::Upstream {
            backend_pid,
            application_name,
            ..
        } => line(&format!(
            "server process {backend_pid} (application_name {application_name})"
        )),
        Body::Statement(st) => {
            let text = st
                .statement
                .as_deref()
                .unwrap_or("(text unknown to the proxy: prepared or declared with SQL)");
            line(text);
            if st.redacted {
                line("(password literals redacted)");
            }
            for (i, p) in st.params.iter().flatten().enumerate() {
                line(&format!("${} = {}", i + 1, param(p.as_ref())));
            }
            match &st.statements {
                // A query string of several statements: each with its own outcome.
                Some(parts) => {
                    for (i, part) in parts.iter().enumerate() {
                        line(&format!("[{}] {part}", i + 1));
                        for o in outcomes.iter().filter(|o| index_of(o) == Some(i)) {
                            line(&format!("    {}", outcome(o)));
                        }
                    }
                }
                None => {
                    for o in outcomes {
                        line(&outcome(o));
                    }
                }
            }
        }
        Body::Outcome(_) => line(&outcome(s)),
        Body::Disconnect {
            bytes_from_client,
            bytes_to_client,
            statements,
            duration_ms,
            reason,
            ..
        } => {
            line(reason);
            line(&format!(
                "{statements} statement(s) in {:.1} s; {bytes_from_client} bytes from the \
                 client, {bytes_to_client} to it",
                *duration_ms as f64 / 1000.0
            ));
        }
        _ => {}
    }
    if s.trust != Trust::Chained {
        line(&format!(
            "(not vouched for by the chain: {}:{})",
            s.file, s.line
        ));
    }
}

fn index_of(s: &Shown) -> Option<usize> {
    match &s.record.body {
        Body::Outcome(o) => o.index,
        _ => None,
    }
}

/// `-> ok SELECT 1, 1 row(s), 0.412 ms`: how a statement ended.
fn outcome(s: &Shown) -> String {
    let Body::Outcome(o) = &s.record.body else {
        return String::new();
    };
    let took = format!("{:.3} ms", o.duration_us as f64 / 1000.0);
    let mark = if s.trust == Trust::Chained { "" } else { " !" };
    let what = match &o.status {
        Status::Ok { tag, rows } => match rows {
            Some(n) => format!("ok {tag}, {n} row(s), {took}"),
            None => format!("ok {tag}, {took}"),
        },
        Status::Error {
            sqlstate,
            message,
            step,
        } => match step {
            Some(step) => format!("error {sqlstate} at {step}: {message}, {took}"),
            None => format!("error {sqlstate}: {message}, {took}"),
        },
        Status::NotExecuted { reason } => format!("not executed: {reason}"),
        Status::Unknown { reason } => format!("outcome unknown: {reason}"),
        Status::Refused { sqlstate, message } => {
            format!("refused by the proxy {sqlstate}: {message}")
        }
    };
    format!("->{mark} {what}")
}

/// A parameter as SQL would write it; cut and binary values say what they are.
fn param(p: Option<&Param>) -> String {
    let quote = |t: &str| format!("'{}'", t.replace('\'', "''"));
    match p {
        None => "NULL".into(),
        Some(Param::Text(t)) => quote(t),
        Some(Param::Binary { base64, oid }) => format!("binary (type {oid}) base64 {base64}"),
        Some(Param::Cut {
            text,
            base64,
            bytes,
            sha256,
            ..
        }) => {
            let head = match (text, base64) {
                (Some(t), _) => quote(t),
                (None, Some(b)) => format!("base64 {b}"),
                (None, None) => String::new(),
            };
            format!("{head}... ({bytes} bytes in all, sha256 {sha256})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testlog::{alice, alter, service, write_sessions};
    use super::*;

    /// Two replicas' directories; the session `a2` ran on replica b, after `s1`.
    async fn fleet() -> (tempfile::TempDir, Vec<PathBuf>) {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        write_sessions(&a, "proxy-a", &[("a1", alice(), "SELECT 'on a'")]).await;
        write_sessions(
            &b,
            "proxy-b",
            &[
                ("s1", service(), "SELECT 'other'"),
                ("a2", alice(), "SELECT 'mine'"),
            ],
        )
        .await;
        (root, vec![a, b])
    }

    #[tokio::test]
    async fn a_session_is_found_in_its_replicas_chain_across_rotations() {
        let (_root, dirs) = fleet().await;
        let found = find(&dirs, &[], "a2").unwrap();
        assert_eq!(found.records.len(), 6, "{found:#?}");
        assert!(found.records.iter().all(|s| s.replica == "proxy-b"));
        let mut files: Vec<&str> = found.records.iter().map(|s| s.file.as_str()).collect();
        files.dedup();
        assert!(files.len() >= 3, "rotated after every record: {files:?}");
        let text = render(&found);
        for want in [
            "session a2 on replica proxy-b",
            "client 10.0.0.9:4000 over TLS",
            "person alice@example.com (subject sub-alice, issuer https://sso.example.com)",
            "grant 7, request 12, approved by dana@example.com",
            "SELECT 'mine'",
            "-> ok SELECT 1, 1 row(s), 0.010 ms",
            "client closed the connection",
        ] {
            assert!(text.contains(want), "{want:?} in:\n{text}");
        }
        assert!(
            !text.contains("other"),
            "another session's statement:\n{text}"
        );
        let v = verdict(&found);
        assert!(!v.tampered, "{:?}", v.lines);
        assert!(v.lines[0].starts_with("verified: [proxy-b] chain intact"));
        assert!(find(&dirs, &[], "nope").unwrap().records.is_empty());
    }

    #[tokio::test]
    async fn an_altered_record_before_the_session_makes_it_tampered_and_after_it_a_note() {
        let (_root, dirs) = fleet().await;
        // Another session's record, earlier in the same chain.
        alter(&dirs[1], "SELECT 'other'", "SELECT 'OTHER'");
        let v = verdict(&find(&dirs, &[], "a2").unwrap());
        assert!(v.tampered);
        assert!(
            v.lines[0].starts_with("TAMPERED: [proxy-b] the chain breaks at ")
                && v.lines[0].contains("was altered"),
            "{:?}",
            v.lines
        );
        let found = find(&dirs, &[], "a2").unwrap();
        assert!(
            render(&found).contains("! #"),
            "unvouched records are marked"
        );

        // Another replica's chain broken: this session's chain still vouches for it.
        let (_root, dirs) = fleet().await;
        alter(&dirs[0], "SELECT 'on a'", "SELECT 'on A'");
        assert!(!verdict(&find(&dirs, &[], "a2").unwrap()).tampered);
        // ... and a break after the session is a note, not a verdict on it.
        assert!(!verdict(&find(&dirs, &[], "s1").unwrap()).tampered);
        let (_root, dirs) = fleet().await;
        alter(&dirs[1], "SELECT 'mine'", "SELECT 'MINE'");
        let v = verdict(&find(&dirs, &[], "s1").unwrap());
        assert!(!v.tampered && v.lines[0].contains("note: the chain breaks after them"));
    }

    #[tokio::test]
    async fn records_past_the_anchored_head_are_not_vouched_for() {
        let (_root, dirs) = fleet().await;
        let old = Head::read(&dirs[1].join("head.json")).unwrap().unwrap();
        let v = verdict(&find(&dirs, std::slice::from_ref(&old), "a2").unwrap());
        assert!(
            !v.tampered && v.lines[0].contains("reaching the anchored head"),
            "{:?}",
            v.lines
        );
        // The chain goes on after the head was kept: a later session is past it.
        write_sessions(&dirs[1], "proxy-b", &[("a3", alice(), "SELECT 'later'")]).await;
        let v = verdict(&find(&dirs, std::slice::from_ref(&old), "a3").unwrap());
        assert!(
            v.tampered && v.lines[0].contains("past the anchored head"),
            "{:?}",
            v.lines
        );
        // A head of no chain given is an error, not a silent pass.
        let stray = Head {
            file: "audit-nope.jsonl".into(),
            ..old
        };
        assert!(find(&dirs, &[stray], "a2").is_err());
    }
}

//! The pairing ledger against a real server: random extended-protocol sequences (errors,
//! skipped segments, Closes of statements and portals, Describe, Flush, simple queries,
//! COPY both ways), sent through the proxy in random slices. Every statement that succeeds
//! returns its own id, so what the client receives says which text the server ran; the
//! audit's successful executions must name the same texts, in the same order.
//!
//! Then the server is the judge: random sequences, simple Queries anywhere (inside unsynced
//! extended-protocol segments too), are sent to PostgreSQL directly and through the proxy in
//! lockstep. A sequence the server answers without a protocol error must get the very same
//! answers through the proxy, and the proxy's audit must agree with pgaudit's.

use crate::common;

use std::collections::HashMap;

use crate::common::wire::*;
use crate::common::{query_msg, RawClient, Stack};
use proxy::settings::Plaintext;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// What the server ran, as the client saw it: the ids in DataRows and COPY data.
fn ids_in(tag: u8, body: &[u8], seen: &mut Vec<String>) {
    let text = match tag {
        // DataRow: one column: count, length, value.
        b'D' if body.len() > 6 => String::from_utf8_lossy(&body[6..]).into_owned(),
        b'd' => String::from_utf8_lossy(body).trim_end().to_string(),
        _ => return,
    };
    if text.starts_with("id") {
        seen.push(text);
    }
}

/// The ids of the texts the audit says ran successfully, in order.
fn audited(
    records: &[Value],
    outcomes_of: &HashMap<u64, Vec<&Value>>,
    session: &str,
) -> Vec<String> {
    let id_of = |text: &str| -> Option<String> {
        let start = text.find("'id")? + 1;
        let end = start + text[start..].find('\'')?;
        Some(text[start..end].to_string())
    };
    let mut out = Vec::new();
    for s in records
        .iter()
        .filter(|r| r["type"] == "statement" && r["session"] == session)
    {
        let outcomes: Vec<&Value> = outcomes_of
            .get(&s["seq"].as_u64().unwrap())
            .into_iter()
            .flatten()
            .filter(|o| o["status"] == "ok")
            .copied()
            .collect();
        if s["protocol"] == "simple" {
            let parts: Vec<String> = match s["statements"].as_array() {
                Some(p) => p.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
                None => vec![s["statement"].as_str().unwrap_or("").to_string()],
            };
            for o in outcomes {
                let i = o["index"].as_u64().unwrap() as usize;
                if let Some(id) = parts.get(i).and_then(|p| id_of(p)) {
                    out.push(id);
                }
            }
        } else if s["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "execute")
            && !outcomes.is_empty()
        {
            let text = s["statement"]
                .as_str()
                .expect("a successful execution has its text");
            if let Some(id) = id_of(text) {
                out.push(id);
            }
        }
    }
    out
}

struct Gen {
    rng: StdRng,
    next_id: usize,
    /// Extended-protocol messages since the last Sync: the first test closes the segment
    /// before a simple Query (it checks attribution, not acceptance)...
    open: bool,
    /// ...the server-validated one sends the Query where it falls.
    queries_anywhere: bool,
}

impl Gen {
    fn id(&mut self) -> String {
        self.next_id += 1;
        format!("id{}", self.next_id)
    }

    fn name(&mut self, names: &[&'static str]) -> &'static str {
        names[self.rng.random_range(0..names.len())]
    }

    /// One random message (or a COPY exchange).
    fn message(&mut self) -> Vec<u8> {
        let choice = self.rng.random_range(0..20);
        let query = matches!(choice, 16..=18);
        let mut m = if query && self.open && !self.queries_anywhere {
            sync()
        } else {
            Vec::new()
        };
        self.open = match choice {
            14 | 15 | 19 => false,
            13 => self.open,
            _ => !query,
        };
        m.extend(self.one(choice));
        m
    }

    fn one(&mut self, choice: u32) -> Vec<u8> {
        match choice {
            0..=3 => {
                let text = match self.rng.random_range(0..6) {
                    0 => "SELEC 'broken'".to_string(),
                    1 => format!("SELECT '{}'::int", self.id()),
                    _ => format!("SELECT '{}'", self.id()),
                };
                parse(self.name(&["", "", "s1", "s2"]), &text)
            }
            4..=7 => bind_portal(
                self.name(&["", "", "p1"]),
                self.name(&["", "", "s1", "s2", "nope"]),
            ),
            8..=10 => execute_portal(self.name(&["", "", "p1", "nope"]), 0),
            11 => close(
                if self.rng.random_bool(0.5) {
                    b'S'
                } else {
                    b'P'
                },
                self.name(&["", "s1", "s2", "p1"]),
            ),
            12 => {
                let mut b = vec![if self.rng.random_bool(0.5) {
                    b'S'
                } else {
                    b'P'
                }];
                cstr(&mut b, self.name(&["", "s1", "p1"]));
                msg(b'D', &b)
            }
            13 => msg(b'H', &[]),
            14 | 15 => sync(),
            16 => {
                let (a, b) = (self.id(), self.id());
                query_msg(&format!("SELECT '{a}'; SELECT '{b}'"))
            }
            17 => query_msg(&format!("COPY (SELECT '{}') TO STDOUT", self.id())),
            18 => {
                // COPY FROM STDIN, sometimes with a row the server rejects, and sometimes a
                // Sync inside the data (the server ignores it; so does the proxy).
                let mut m = query_msg("COPY cin FROM STDIN");
                m.extend(msg(
                    b'd',
                    if self.rng.random_bool(0.7) {
                        b"1\n"
                    } else {
                        b"x\n"
                    },
                ));
                // (Not when the server judges: whether the server reads that Sync inside
                // COPY, ignored, or after the COPY failed on a row, a real Sync, is a race
                // the proxy settles by dropping it; docs/proxy.md, "Known limits".)
                if !self.queries_anywhere && self.rng.random_bool(0.3) {
                    m.extend(sync());
                }
                m.extend(msg(b'c', &[]));
                m
            }
            _ => parse_bind_execute(&format!("SELECT '{}'", self.id())),
        }
    }
}

fn parse_bind_execute(text: &str) -> Vec<u8> {
    [parse("", text), bind(""), execute(), sync()].concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_pipelines_never_record_a_text_that_did_not_run() {
    let stack = Stack::with(common::Options {
        plaintext: Plaintext::Loopback,
        ..common::Options::default()
    })
    .await;
    let admin = stack.cluster.connect("rates").await.unwrap();
    admin
        .batch_execute("CREATE TABLE cin (a int); GRANT INSERT ON cin TO rates_writer")
        .await
        .unwrap();
    let mut gen = Gen {
        rng: StdRng::seed_from_u64(0x1ed9e),
        next_id: 0,
        open: false,
        queries_anywhere: false,
    };
    // Sessions of several pipelines each; every pipeline ends with a marker query.
    let (sessions, per_session) = (30, 20);
    let mut runs = Vec::new();
    let mut violations = 0;
    for n in 0..sessions {
        let application = format!("pipelines-{n}");
        let mut c = RawClient::login(stack.addr, &stack.writer, &application).await;
        let mut all: Vec<u8> = Vec::new();
        let mut seen = Vec::new();
        for _ in 0..per_session {
            gen.open = false;
            let mut messages: Vec<u8> = Vec::new();
            for _ in 0..gen.rng.random_range(5..25) {
                messages.extend(gen.message());
            }
            messages.extend(sync());
            messages.extend(query_msg("SELECT 'end'"));
            all.extend(&messages);

            // In random slices, so batches and reads split anywhere.
            let mut at = 0;
            while at < messages.len() {
                let n = gen.rng.random_range(1..=messages.len() - at);
                if c.send(&messages[at..at + n]).await.is_err() {
                    break;
                }
                at += n;
                if gen.rng.random_bool(0.2) {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
            }
            let mut ended = false;
            while let Some((tag, body)) = c.recv().await {
                ids_in(tag, &body, &mut seen);
                if tag == b'D' && body.ends_with(b"end") {
                    ended = true;
                }
                if ended && tag == b'Z' {
                    break;
                }
            }
            if !ended {
                // The proxy ended the session rather than guess: counted, and fatal below.
                violations += 1;
                break;
            }
        }
        runs.push((application, seen, all));
    }
    let records = stack.records();
    let mut outcomes_of: HashMap<u64, Vec<&Value>> = HashMap::new();
    for o in records.iter().filter(|o| o["type"] == "outcome") {
        outcomes_of
            .entry(o["ref"].as_u64().unwrap())
            .or_default()
            .push(o);
    }
    let mut checked = 0;
    for (application, seen, all) in &runs {
        let session = records
            .iter()
            .find(|r| r["type"] == "auth" && r["application"] == application.as_str())
            .unwrap()["session"]
            .clone();
        let audited = audited(&records, &outcomes_of, session.as_str().unwrap());
        assert_eq!(
            &audited,
            seen,
            "{application}: the audit's successful executions differ from what the server ran\n{:?}",
            String::from_utf8_lossy(all)
        );
        checked += seen.len();
    }
    eprintln!(
        "{} pipelines, {checked} executions checked, {violations} sessions ended by the proxy",
        sessions * per_session
    );
    assert!(checked > 1200, "too few executions checked: {checked}");
    assert_eq!(
        violations, 0,
        "legal sequences should never end the session"
    );
    stack.stop().await;
}

/// Everything the other end answers up to the ReadyForQuery after the marker query, or up to
/// the end of the connection (`false`). Notices are left out: they are not answers.
async fn answers(c: &mut RawClient) -> (Vec<(u8, Vec<u8>)>, bool) {
    let mut out = Vec::new();
    let mut ended = false;
    while let Some((tag, body)) = c.recv().await {
        if tag == b'N' {
            continue;
        }
        if tag == b'D' && body.ends_with(b"end") {
            ended = true;
        }
        let ready = tag == b'Z';
        out.push((tag, body));
        if ended && ready {
            return (out, true);
        }
    }
    (out, false)
}

/// A protocol error from the server: the sequence is not one PostgreSQL accepts.
fn protocol_error(answers: &[(u8, Vec<u8>)]) -> bool {
    answers
        .iter()
        .any(|(tag, body)| *tag == b'E' && common::sqlstate(body) == "08P01")
}

/// Random extended-protocol sequences, with simple Queries inside unsynced segments, COPY and
/// failures, judged by the server itself: each is sent straight to PostgreSQL and through
/// the proxy, and the proxy must pass every sequence the server accepts with the very same
/// answers, and its audit must agree with pgaudit. (It found a Query skipped inside a failed
/// unsynced segment holding the session; a Sync among copy data after a failed COPY row is
/// still left out: a race the proxy settles by dropping it, docs/proxy.md "Known limits".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_the_server_accepts_pass_through_with_the_same_answers() {
    let stack = Stack::with(common::Options {
        plaintext: Plaintext::Loopback,
        pgaudit: true,
        ..common::Options::default()
    })
    .await;
    let admin = stack.cluster.connect("rates").await.unwrap();
    admin
        .batch_execute("CREATE TABLE cin (a int); GRANT INSERT ON cin TO rates_writer")
        .await
        .unwrap();
    let server = std::net::SocketAddr::from(([127, 0, 0, 1], stack.cluster.port()));
    let mut gen = Gen {
        rng: StdRng::seed_from_u64(env_or("FUZZ_LEDGER_SEED", 0x5e4fe4)),
        next_id: 0,
        open: false,
        queries_anywhere: true,
    };
    // CI's size; `make fuzz-ledger` runs a longer one (docs/proxy.md).
    let (sessions, per_session) = (env_or("FUZZ_LEDGER_SESSIONS", 12) as usize, 12);
    let (mut accepted, mut rejected, mut unsynced_queries) = (0, 0, 0);
    for n in 0..sessions {
        let mut direct = RawClient::login_on(
            RawClient::connect_tls(server, &stack.ca).await,
            &stack.writer,
            &format!("direct-{n}"),
        )
        .await;
        let mut proxied = RawClient::login(stack.addr, &stack.writer, &format!("fuzz-{n}")).await;
        for _ in 0..per_session {
            gen.open = false;
            let mut messages: Vec<u8> = Vec::new();
            for _ in 0..gen.rng.random_range(4..16) {
                let open = gen.open;
                let m = gen.message();
                unsynced_queries += usize::from(open && m.first() == Some(&b'Q'));
                messages.extend(m);
            }
            messages.extend(sync());
            messages.extend(query_msg("SELECT 'end'"));
            direct.send(&messages).await.unwrap();
            let (expected, direct_alive) = answers(&mut direct).await;
            if !direct_alive || protocol_error(&expected) {
                // Not a sequence PostgreSQL accepts: its answer through the proxy is not
                // compared (the session is given up on both sides).
                rejected += 1;
                break;
            }
            if std::env::var_os("FUZZ_TRACE").is_some() {
                eprintln!("sending {:?}", String::from_utf8_lossy(&messages));
            }
            proxied.send(&messages).await.unwrap();
            let (got, proxy_alive) = answers(&mut proxied).await;
            assert!(
                proxy_alive,
                "the proxy ended a session on a sequence PostgreSQL accepts: {:?}\nserver answered {:?}",
                String::from_utf8_lossy(&messages),
                expected.iter().map(|(t, _)| *t as char).collect::<String>()
            );
            assert_eq!(
                got.iter().map(|(t, _)| *t as char).collect::<String>(),
                expected.iter().map(|(t, _)| *t as char).collect::<String>(),
                "different answers through the proxy for {:?}",
                String::from_utf8_lossy(&messages)
            );
            assert_eq!(got, expected, "different answer bodies through the proxy");
            accepted += 1;
        }
    }
    eprintln!("{accepted} sequences accepted by the server and passed through identically, {rejected} refused by the server, {unsynced_queries} simple Queries inside unsynced segments");
    assert!(accepted >= 100, "too few sequences compared: {accepted}");
    assert!(
        unsynced_queries >= 20,
        "too few Queries inside unsynced segments: {unsynced_queries}"
    );

    // The proxy's audit and pgaudit agree, once the direct sessions (the judge's own, not
    // through the proxy by design) are left out of the witness.
    crate::crosscheck::server_log_settled(&stack, "fuzz-settled").await;
    let witness = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(stack.pgaudit_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let kept: String = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .filter(|l| {
                let v: Value = serde_json::from_str(l).unwrap_or(Value::Null);
                !v["application_name"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("direct-"))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(witness.path().join(path.file_name().unwrap()), kept).unwrap();
    }
    stack.flush();
    // FUZZ_LEDGER_KEEP=DIR keeps both sides for `proxy audit crosscheck DIR/audit
    // --pgaudit DIR/pgaudit` when a difference needs reading.
    if let Some(keep) = std::env::var_os("FUZZ_LEDGER_KEEP") {
        let keep = std::path::Path::new(&keep);
        for (from, to) in [
            (stack.audit_dir(), "audit"),
            (witness.path().into(), "pgaudit"),
        ] {
            std::fs::create_dir_all(keep.join(to)).unwrap();
            for entry in std::fs::read_dir(&from).unwrap() {
                let path = entry.unwrap().path();
                std::fs::copy(&path, keep.join(to).join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    let (code, report, text) = crate::crosscheck::crosscheck(&stack.audit_dir(), witness.path());
    eprintln!("{}", text.lines().next().unwrap_or(""));
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("OK: 0 difference(s)"), "{text}");
    assert!(
        report["summary"]["matched_statements"].as_u64().unwrap() >= 200,
        "{text}"
    );
    stack.stop().await;
}

/// A number from the environment (decimal), or `default`.
fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

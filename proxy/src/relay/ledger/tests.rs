//! The ledger alone: client messages in, server messages in, the records and outcomes
//! it decides. (Against a real server: `tests/proxy/ledger.rs`.)
use super::*;

fn cstr(b: &mut Vec<u8>, s: &str) {
    b.extend(s.as_bytes());
    b.push(0);
}

/// A session's ledger with records numbered from 1, and the outcomes it emitted.
struct T {
    l: Ledger,
    next_seq: u64,
    outcomes: Vec<(u64, Option<usize>, String)>,
}

impl T {
    fn new() -> T {
        T {
            l: Ledger::new(Caller::Service, 1024, b'I'),
            next_seq: 1,
            outcomes: Vec::new(),
        }
    }

    fn send(&mut self, tag: u8, body: Vec<u8>) -> Action {
        self.l.client(tag, &body, Instant::now()).unwrap()
    }

    /// Accepts the batch: returns the records' (steps, text, params) in order.
    fn commit(&mut self) -> Vec<(String, Option<String>, Option<String>)> {
        let out = self
            .l
            .intents()
            .iter()
            .map(|i| match i {
                Intent::Query { text, .. } => ("query".to_string(), Some(text.to_string()), None),
                Intent::Extended {
                    steps,
                    prepared,
                    params,
                    ..
                } => (
                    steps.names().collect::<Vec<_>>().join("+"),
                    prepared.text.as_deref().map(str::to_string),
                    params.as_deref().map(str::to_string),
                ),
                Intent::Refused { text, .. } => {
                    ("refused".to_string(), Some(text.to_string()), None)
                }
            })
            .collect::<Vec<_>>();
        self.l.commit(self.next_seq);
        self.next_seq += out.len() as u64;
        out
    }

    fn reply(&mut self, tag: u8, body: &[u8]) -> Result<(), Violation> {
        let outcomes = &mut self.outcomes;
        self.l.server(tag, body, Instant::now(), &mut |f| {
            let what = match f.outcome {
                Outcome::Ok { tag, rows } => format!("ok {tag} {rows:?}"),
                Outcome::Error { code, step, .. } => format!("error {code} {step:?}"),
                Outcome::NotExecuted { .. } => "not_executed".into(),
                Outcome::Unknown { .. } => "unknown".into(),
                Outcome::Refused { code, .. } => format!("refused {code}"),
            };
            outcomes.push((f.seq, f.index, what));
        })
    }

    fn ok(&mut self, tag: u8, body: &[u8]) {
        self.reply(tag, body).unwrap()
    }
}

fn parse(name: &str, sql: &str, types: &[u32]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name);
    cstr(&mut b, sql);
    b.extend((types.len() as i16).to_be_bytes());
    for t in types {
        b.extend(t.to_be_bytes());
    }
    b
}

fn bind(portal: &str, statement: &str, binary: &[&[u8]]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    cstr(&mut b, statement);
    b.extend(1i16.to_be_bytes());
    b.extend(1i16.to_be_bytes());
    b.extend((binary.len() as i16).to_be_bytes());
    for v in binary {
        b.extend((v.len() as i32).to_be_bytes());
        b.extend(*v);
    }
    b.extend(0i16.to_be_bytes());
    b
}

fn execute(portal: &str, rows: i32) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    b.extend(rows.to_be_bytes());
    b
}

fn query(sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, sql);
    b
}

fn tag(t: &str) -> Vec<u8> {
    query(t)
}

fn error(code: &str, severity: &str) -> Vec<u8> {
    let mut b = vec![b'S'];
    cstr(&mut b, severity);
    b.push(b'C');
    cstr(&mut b, code);
    b.push(b'M');
    cstr(&mut b, "boom");
    b.push(0);
    b
}

/// asyncpg's `prepare()` then `execute()`: Parse + Describe + Flush, then a simple
/// Query before any Sync. The server runs the Query (and drops the unnamed statement);
/// the named statement stays usable.
#[test]
fn a_query_after_a_flushed_segment_runs_and_drops_the_unnamed_statement() {
    let mut t = T::new();
    t.send(fe::PARSE, parse("", "SELECT 'unnamed'", &[]));
    t.send(fe::PARSE, parse("s1", "SELECT $1::int + 1", &[]));
    let mut d = vec![b'S'];
    cstr(&mut d, "s1");
    t.send(fe::DESCRIBE, d);
    t.send(fe::FLUSH, vec![]);
    t.commit();
    t.ok(be::PARSE_COMPLETE, &[]);
    t.ok(be::PARSE_COMPLETE, &[]);
    t.ok(be::PARAMETER_DESCRIPTION, &[0, 1, 0, 0, 0, 23]);
    t.ok(be::ROW_DESCRIPTION, &[]);
    assert_eq!(t.send(fe::QUERY, query("SELECT 1")), Action::Forward);
    t.commit();
    t.ok(be::ROW_DESCRIPTION, &[]);
    t.ok(be::DATA_ROW, &[]);
    t.ok(be::COMMAND_COMPLETE, &tag("SELECT 1"));
    t.ok(be::READY_FOR_QUERY, b"I");
    assert!(t.l.statements.get("").is_none(), "the Query dropped it");
    t.send(fe::BIND, bind("", "s1", &[&7i32.to_be_bytes()]));
    t.send(fe::EXECUTE, execute("", 0));
    t.send(fe::SYNC, vec![]);
    let recs = t.commit();
    assert_eq!(
        recs,
        [(
            "bind+execute".into(),
            Some("SELECT $1::int + 1".into()),
            Some("[\"7\"]".into())
        )]
    );
    t.ok(be::BIND_COMPLETE, &[]);
    t.ok(be::DATA_ROW, &[]);
    t.ok(be::COMMAND_COMPLETE, &tag("SELECT 1"));
    t.ok(be::READY_FOR_QUERY, b"I");
    assert!(t.l.idle());
    assert_eq!(
        t.outcomes,
        [
            (1, None, "ok PARSE None".into()),
            (2, None, "ok PARSE None".into()),
            (3, Some(0), "ok SELECT 1 Some(1)".into()),
            (4, None, "ok SELECT 1 Some(1)".into()),
        ]
    );
}

/// After an error in an unsynced segment the server ignores a simple Query without a
/// word (ignore_till_sync): it is recorded as not executed, and the Sync answers.
#[test]
fn a_query_behind_a_failed_unsynced_message_is_skipped_silently() {
    let mut t = T::new();
    t.send(fe::PARSE, parse("", "SELEC 1", &[]));
    t.send(fe::FLUSH, vec![]);
    t.commit();
    t.send(fe::QUERY, query("SELECT 2"));
    let p = parse("", "SELECT 3", &[]);
    assert_eq!(
        t.l.client(fe::PARSE, &p, Instant::now()).unwrap(),
        Action::Wait,
        "held behind the Query"
    );
    t.send(fe::SYNC, vec![]);
    t.commit();
    t.ok(be::ERROR_RESPONSE, &error(sqlstate::SYNTAX_ERROR, "ERROR"));
    assert!(
        !t.l.probe(fe::PARSE, &p).unwrap(),
        "the skipped Query releases what waited"
    );
    t.ok(be::READY_FOR_QUERY, b"I");
    assert!(t.l.idle());
    assert_eq!(
        t.outcomes,
        [
            (1, None, "error 42601 Some(\"parse\")".into()),
            (2, Some(0), "not_executed".into()),
        ]
    );
}

#[test]
fn a_parse_its_bind_and_execute_share_one_record_and_one_outcome() {
    let mut t = T::new();
    assert_eq!(
        t.send(fe::PARSE, parse("", "SELECT $1", &[23])),
        Action::Forward
    );
    t.send(fe::BIND, bind("", "", &[&7i32.to_be_bytes()]));
    t.send(fe::DESCRIBE, vec![b'P', 0]);
    t.send(fe::EXECUTE, execute("", 0));
    t.send(fe::SYNC, vec![]);
    let records = t.commit();
    assert_eq!(
        records,
        [(
            "parse+bind+execute".into(),
            Some("SELECT $1".into()),
            Some("[\"7\"]".into())
        )]
    );
    for (tg, body) in [
        (be::PARSE_COMPLETE, vec![]),
        (be::BIND_COMPLETE, vec![]),
        (be::ROW_DESCRIPTION, vec![]),
        (be::DATA_ROW, vec![]),
        (be::COMMAND_COMPLETE, tag("SELECT 1")),
        (be::READY_FOR_QUERY, vec![b'I']),
    ] {
        t.ok(tg, &body);
    }
    assert_eq!(t.outcomes, [(1, None, "ok SELECT 1 Some(1)".into())]);
    assert!(t.l.idle());
}

#[test]
fn after_an_error_the_rest_of_the_segment_is_skipped_and_reported_once() {
    let mut t = T::new();
    t.send(fe::PARSE, parse("", "SELEC 1", &[]));
    t.send(fe::BIND, bind("", "", &[]));
    t.send(fe::EXECUTE, execute("", 0));
    t.send(fe::PARSE, parse("s2", "SELECT 2", &[]));
    t.send(fe::SYNC, vec![]);
    t.send(fe::QUERY, query("SELECT 3"));
    t.commit();
    t.ok(be::ERROR_RESPONSE, &error(sqlstate::SYNTAX_ERROR, "ERROR"));
    t.ok(be::READY_FOR_QUERY, b"I");
    t.ok(be::ROW_DESCRIPTION, &[]);
    t.ok(be::COMMAND_COMPLETE, &tag("SELECT 1"));
    t.ok(be::READY_FOR_QUERY, b"I");
    assert_eq!(
        t.outcomes,
        [
            (1, None, "error 42601 Some(\"parse\")".into()),
            (2, None, "not_executed".into()),
            (3, Some(0), "ok SELECT 1 Some(1)".into()),
        ]
    );
    assert!(
        t.l.statements.get("s2").is_none(),
        "the skipped Parse made nothing"
    );
}

#[test]
fn a_bind_behind_a_sync_waits_for_an_unanswered_parse_of_its_statement() {
    let mut t = T::new();
    t.send(fe::PARSE, parse("s", "SELECT 'new'", &[]));
    t.send(fe::SYNC, vec![]);
    t.commit();
    let b = bind("", "s", &[]);
    assert_eq!(
        t.l.client(fe::BIND, &b, Instant::now()).unwrap(),
        Action::Wait
    );
    assert!(t.l.probe(fe::BIND, &b).unwrap());
    // The server rejects the Parse: "s" keeps what it was (nothing).
    t.ok(
        be::ERROR_RESPONSE,
        &error(sqlstate::DUPLICATE_PREPARED_STATEMENT, "ERROR"),
    );
    t.ok(be::READY_FOR_QUERY, b"I");
    assert!(!t.l.probe(fe::BIND, &b).unwrap());
    assert_eq!(t.send(fe::BIND, b), Action::Forward);
    let records = t.commit();
    assert_eq!(
        records[0].1, None,
        "the text is not known: the proxy does not guess"
    );
}

#[test]
fn a_query_holds_back_the_next_message_until_it_is_answered() {
    let mut t = T::new();
    t.send(fe::QUERY, query("COPY t FROM STDIN"));
    let p = parse("", "SELECT 1", &[]);
    assert_eq!(
        t.l.client(fe::PARSE, &p, Instant::now()).unwrap(),
        Action::Wait
    );
    assert_eq!(t.send(fe::SYNC, vec![]), Action::Forward);
    assert_eq!(t.send(fe::COPY_DATA, vec![]), Action::Forward);
    // Inside copy data: a Sync is dropped, anything else ends the session.
    assert_eq!(t.send(fe::SYNC, vec![]), Action::Drop);
    assert!(t.l.client(fe::PARSE, &p, Instant::now()).is_err());
    t.send(fe::COPY_DONE, vec![]);
    t.commit();
    t.ok(be::COPY_IN_RESPONSE, &[]);
    t.ok(be::COMMAND_COMPLETE, &tag("COPY 1"));
    t.ok(be::READY_FOR_QUERY, b"I");
    assert!(t.l.idle(), "the Sync before the data was read and ignored");
    assert_eq!(t.outcomes, [(1, Some(0), "ok COPY 1 Some(1)".into())]);
}

#[test]
fn a_message_held_while_the_server_waits_for_copy_data_ends_the_session() {
    let mut t = T::new();
    t.send(fe::QUERY, query("COPY t FROM STDIN"));
    let p = parse("", "SELECT 1", &[]);
    assert_eq!(
        t.l.client(fe::PARSE, &p, Instant::now()).unwrap(),
        Action::Wait
    );
    t.commit();
    t.ok(be::COPY_IN_RESPONSE, &[]);
    // The client sent this before any copy data: it would wait for the COPY, and the
    // COPY for data behind it.
    assert!(t.l.probe(fe::PARSE, &p).is_err());
    assert!(!t.l.probe(fe::COPY_DATA, &[]).unwrap());
}

#[test]
fn fetches_of_a_suspended_portal_are_one_execution() {
    let mut t = T::new();
    t.send(fe::PARSE, parse("", "SELECT generate_series(1, 5)", &[]));
    t.send(fe::BIND, bind("c", "", &[]));
    t.send(fe::EXECUTE, execute("c", 2));
    t.send(fe::SYNC, vec![]);
    t.commit();
    for (tg, body) in [
        (be::PARSE_COMPLETE, vec![]),
        (be::BIND_COMPLETE, vec![]),
        (be::DATA_ROW, vec![]),
        (be::DATA_ROW, vec![]),
        (be::PORTAL_SUSPENDED, vec![]),
        (be::READY_FOR_QUERY, vec![b'T']),
    ] {
        t.ok(tg, &body);
    }
    t.send(fe::EXECUTE, execute("c", 0));
    t.send(fe::SYNC, vec![]);
    assert!(t.commit().is_empty(), "a fetch adds no record");
    for (tg, body) in [
        (be::DATA_ROW, vec![]),
        (be::DATA_ROW, vec![]),
        (be::DATA_ROW, vec![]),
        (be::COMMAND_COMPLETE, tag("SELECT 3")),
        (be::READY_FOR_QUERY, vec![b'T']),
    ] {
        t.ok(tg, &body);
    }
    assert_eq!(t.outcomes, [(1, None, "ok SELECT 3 Some(5)".into())]);
}

#[test]
fn described_types_render_binary_parameters() {
    let mut t = T::new();
    t.send(fe::PARSE, parse("s", "SELECT $1", &[]));
    t.send(fe::DESCRIBE, vec![b'S', b's', 0]);
    t.send(fe::SYNC, vec![]);
    t.commit();
    let mut types = 1i16.to_be_bytes().to_vec();
    types.extend(20i32.to_be_bytes());
    t.ok(be::PARSE_COMPLETE, &[]);
    t.ok(be::PARAMETER_DESCRIPTION, &types);
    t.ok(be::ROW_DESCRIPTION, &[]);
    t.ok(be::READY_FOR_QUERY, b"I");
    t.send(fe::BIND, bind("", "s", &[&42i64.to_be_bytes()]));
    t.send(fe::EXECUTE, execute("", 0));
    assert_eq!(t.commit()[0].2.as_deref(), Some("[\"42\"]"));
}

#[test]
fn what_cannot_be_paired_is_a_violation() {
    let mut t = T::new();
    assert!(matches!(
        t.reply(be::BIND_COMPLETE, &[]),
        Err(Violation::Unpaired('2'))
    ));
    // The server ending the session is not.
    assert!(t
        .reply(
            be::ERROR_RESPONSE,
            &error(sqlstate::ADMIN_SHUTDOWN, "FATAL")
        )
        .is_ok());
    t.send(fe::PARSE, parse("", "SELECT 1", &[]));
    t.send(fe::SYNC, vec![]);
    t.commit();
    assert!(
        t.reply(be::CLOSE_COMPLETE, &[]).is_err(),
        "CloseComplete answers no Parse"
    );
    let mut t = T::new();
    t.send(fe::QUERY, query("SELECT 1"));
    t.commit();
    let mut status = Vec::new();
    cstr(&mut status, "standard_conforming_strings");
    cstr(&mut status, "off");
    assert!(matches!(
        t.reply(be::PARAMETER_STATUS, &status),
        Err(Violation::Setting { .. })
    ));
}

#[test]
fn a_failed_commit_at_sync_is_paired() {
    let mut t = T::new();
    t.send(fe::PARSE, parse("", "INSERT INTO t VALUES (1)", &[]));
    t.send(fe::BIND, bind("", "", &[]));
    t.send(fe::EXECUTE, execute("", 0));
    t.send(fe::SYNC, vec![]);
    t.commit();
    t.ok(be::PARSE_COMPLETE, &[]);
    t.ok(be::BIND_COMPLETE, &[]);
    t.ok(be::COMMAND_COMPLETE, &tag("INSERT 0 1"));
    t.ok(
        be::ERROR_RESPONSE,
        &error(sqlstate::UNIQUE_VIOLATION, "ERROR"),
    );
    t.ok(be::READY_FOR_QUERY, b"I");
    assert!(t.l.idle());
    // The insert's own outcome, then the commit that undid it.
    let whats: Vec<&str> = t.outcomes.iter().map(|o| o.2.as_str()).collect();
    assert_eq!(
        whats,
        [
            "ok INSERT 0 1 Some(1)".to_string(),
            format!("error {} Some(\"commit\")", sqlstate::UNIQUE_VIOLATION)
        ],
        "{:?}",
        t.outcomes
    );
    assert_eq!(t.outcomes[0].0, t.outcomes[1].0);
}

#[test]
fn a_session_that_ends_leaves_unknown_outcomes() {
    let mut t = T::new();
    t.send(fe::QUERY, query("SELECT 1; SELECT 2"));
    t.commit();
    t.ok(be::ROW_DESCRIPTION, &[]);
    t.ok(be::COMMAND_COMPLETE, &tag("SELECT 1"));
    let outcomes = &mut t.outcomes;
    t.l.abort(Instant::now(), &mut |f| {
        outcomes.push((f.seq, f.index, format!("{:?}", f.outcome)))
    });
    assert_eq!(t.outcomes.len(), 2);
    assert!(t.outcomes[1].2.starts_with("Unknown"), "{:?}", t.outcomes);
    assert_eq!(t.outcomes[1].1, Some(1));
}

#[test]
fn a_query_sent_while_the_server_skips_holds_nothing_behind_it() {
    // Parse fails; the client, not yet at its Sync, sends a Query (skipped by the server
    // without a word), another Parse, then the Sync. Holding the Parse until the Query is
    // answered would hold the Sync too, and the server answers nothing before it.
    let mut t = T::new();
    t.send(fe::PARSE, parse("", "SELEC 1", &[]));
    t.commit();
    t.ok(be::ERROR_RESPONSE, &error(sqlstate::SYNTAX_ERROR, "ERROR"));
    assert_eq!(t.send(fe::QUERY, query("SELECT 2")), Action::Forward);
    let p = parse("s", "SELECT 3", &[]);
    assert!(!t.l.probe(fe::PARSE, &p).unwrap(), "the Parse would wait");
    assert_eq!(t.send(fe::PARSE, p), Action::Forward);
    assert_eq!(t.send(fe::SYNC, vec![]), Action::Forward);
    t.commit();
    t.ok(be::READY_FOR_QUERY, b"I");
    assert_eq!(
        t.outcomes,
        [
            (1, None, "error 42601 Some(\"parse\")".into()),
            (2, Some(0), "not_executed".into()),
            (3, None, "not_executed".into()),
        ]
    );
    assert!(t.l.idle());
    // After the Sync the server runs what comes: a Query is waited for again.
    assert_eq!(t.send(fe::QUERY, query("SELECT 4")), Action::Forward);
    t.commit();
    assert!(t.l.probe(fe::PARSE, &parse("", "SELECT 5", &[])).unwrap());
}

/// A read-only session: what follows a Sync waits for its ReadyForQuery (the settings the
/// server reports come before it), a reported `default_transaction_read_only = off` ends
/// the session, and an Execute after a transaction-ending one before the Sync is refused.
#[test]
fn a_read_only_session_waits_behind_a_sync_and_ends_when_read_only_is_off() {
    let mut t = T::new();
    t.l.set_read_only();
    t.send(fe::PARSE, parse("", "SELECT f()", &[]));
    t.send(fe::BIND, bind("", "", &[]));
    t.send(fe::EXECUTE, execute("", 0));
    assert_eq!(t.send(fe::SYNC, vec![]), Action::Forward);
    assert_eq!(
        t.send(fe::PARSE, parse("", "DELETE FROM t", &[])),
        Action::Wait
    );
    t.commit();
    t.ok(be::PARSE_COMPLETE, &[]);
    t.ok(be::BIND_COMPLETE, &[]);
    t.ok(be::COMMAND_COMPLETE, &tag("SELECT 1"));
    let mut status = Vec::new();
    cstr(&mut status, "default_transaction_read_only");
    cstr(&mut status, "off");
    assert!(matches!(
        t.reply(be::PARAMETER_STATUS, &status),
        Err(Violation::Setting { .. })
    ));
    // A session that is not read-only does not wait, and the setting is its own.
    let mut t = T::new();
    t.send(fe::SYNC, vec![]);
    assert_eq!(t.send(fe::QUERY, query("SELECT 1")), Action::Forward);
    t.commit();
    t.ok(be::PARAMETER_STATUS, &status);

    let mut t = T::new();
    t.l.set_read_only();
    t.send(fe::PARSE, parse("", "COMMIT", &[]));
    t.send(fe::BIND, bind("", "", &[]));
    t.send(fe::EXECUTE, execute("", 0));
    t.send(fe::PARSE, parse("", "DELETE FROM t", &[]));
    t.send(fe::BIND, bind("", "", &[]));
    assert!(matches!(
        t.l.client(fe::EXECUTE, &execute("", 0), Instant::now()),
        Err(Violation::Refused(
            sql::Refusal::ReadOnlyAfterTransactionEnd
        ))
    ));
}

/// An Execute that continues the open Bind record runs what that Bind bound (not an earlier
/// Bind of the same portal, not another portal's): in a read-only session a bound COMMIT
/// ends the transaction for what follows before the Sync.
#[test]
fn an_execute_after_its_bind_runs_what_that_bind_bound() {
    let prepared = || {
        let mut t = T::new();
        t.l.set_read_only();
        t.send(fe::PARSE, parse("a", "SELECT 1", &[]));
        t.send(fe::PARSE, parse("c", "COMMIT", &[]));
        t.send(fe::SYNC, vec![]);
        t.commit();
        for tg in [be::PARSE_COMPLETE, be::PARSE_COMPLETE] {
            t.ok(tg, &[]);
        }
        t.ok(be::READY_FOR_QUERY, b"I");
        t
    };
    let refused = |t: &mut T, portal: &str| {
        t.send(fe::BIND, bind(portal, "a", &[]));
        matches!(
            t.l.client(fe::EXECUTE, &execute(portal, 0), Instant::now()),
            Err(Violation::Refused(
                sql::Refusal::ReadOnlyAfterTransactionEnd
            ))
        )
    };

    let mut t = prepared();
    t.send(fe::BIND, bind("p", "a", &[]));
    t.send(fe::EXECUTE, execute("p", 0));
    t.send(fe::BIND, bind("p", "c", &[]));
    t.send(fe::DESCRIBE, vec![b'P', b'p', 0]);
    t.send(fe::EXECUTE, execute("p", 0));
    assert!(refused(&mut t, "q"), "the second Execute of p runs COMMIT");

    // The open Bind is another portal's: the Execute of an unbound portal runs nothing known.
    let mut t = prepared();
    t.send(fe::BIND, bind("p", "c", &[]));
    t.send(fe::EXECUTE, execute("q", 0));
    assert!(!refused(&mut t, "r"), "q is not p");
}

/// A record's `steps` array is a constant per combination: the same as the names, in JSON.
#[test]
fn steps_json_lists_the_names() {
    for bits in 0..8u8 {
        let steps = Steps {
            parse: bits & 1 != 0,
            bind: bits & 2 != 0,
            execute: bits & 4 != 0,
        };
        let names: Vec<String> = serde_json::from_str(steps.json()).unwrap();
        assert_eq!(names, steps.names().collect::<Vec<_>>(), "{steps:?}");
    }
}

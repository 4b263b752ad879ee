//! Audit record bodies. A body is the JSON members of a record without its braces and chain
//! fields; the writer wraps it as `{"seq":..,"prev":..,<body>,"hash":..}`. Bodies are built
//! on the session's task, outside the writer's lock.
//!
//! Record types (`type`):
//! - `connect`, `auth`, `upstream`, `disconnect`: connection events (`upstream`: the proxy's
//!   session with the database is open; its `backend_pid` links the server's own logs);
//! - `statement`: written *before* a statement is forwarded (the intent);
//! - `outcome`: written after the server answered; `ref` is the `seq` of its `statement`;
//! - `log_opened`, `rotate`: the writer's own bookkeeping.

use std::fmt::Write as _;

use serde::Serialize;

/// Who is behind a session.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Identity {
    /// An application logging in with database credentials held by the proxy.
    Service { name: String },
    /// A person signed in with the company's identity provider.
    Person {
        email: String,
        subject: String,
        issuer: String,
        grant_id: i64,
        /// The approvals app's request behind the grant and who approved it: an auditor
        /// goes from a statement to the approval in one step. Absent for operators' grants.
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<i64>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        approved_by: Vec<String>,
        /// When the grant ends: the session is closed then even if the control plane cannot
        /// be reached. Not part of the audit record (the grant id is).
        #[serde(skip)]
        grant_expires_at: chrono::DateTime<chrono::Utc>,
        /// The grant's session controls (idle and age limits, read-only, fresh MFA).
        #[serde(skip)]
        policy: grants::SessionPolicy,
    },
}

impl Identity {
    pub fn name(&self) -> &str {
        match self {
            Identity::Service { name } => name,
            Identity::Person { email, .. } => email,
        }
    }
}

/// The facts every record of a session repeats, serialized once per session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub session: String,
    pub client: String,
    /// `"session":..,"client":..` plus identity and database members once logged in.
    prefix: String,
    /// `"session":..`, as outcome records carry it.
    session_member: String,
}

impl SessionInfo {
    pub fn new(session: String, client: String) -> Self {
        let mut session_member = String::new();
        member_str(&mut session_member, "session", &session);
        let mut prefix = session_member.clone();
        prefix.push(',');
        member_str(&mut prefix, "client", &client);
        SessionInfo {
            session,
            client,
            prefix,
            session_member,
        }
    }

    /// Adds who logged in where; later records carry it.
    pub fn logged_in(
        &mut self,
        identity: &Identity,
        database: &str,
        db_user: &str,
        secret_version: &str,
        application: &str,
    ) {
        self.prefix.push_str(",\"identity\":");
        self.prefix
            .push_str(&serde_json::to_string(identity).expect("identity serializes"));
        self.prefix.push(',');
        member_str(&mut self.prefix, "database", database);
        self.prefix.push(',');
        member_str(&mut self.prefix, "db_user", db_user);
        self.prefix.push(',');
        member_str(&mut self.prefix, "secret_version", secret_version);
        self.prefix.push(',');
        member_str(&mut self.prefix, "application", application);
    }
}

/// Appends `"name":"<escaped value>"`.
pub fn member_str(out: &mut String, name: &str, value: &str) {
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
    push_json_str(out, value);
}

/// Whether `value` is a JSON string as it is (nothing to escape).
pub fn is_plain(value: &str) -> bool {
    value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// Appends `value` as a JSON string. Most audit text needs no escaping: copy it whole.
pub fn push_json_str(out: &mut String, value: &str) {
    push_json_str_known(out, value, is_plain(value));
}

/// [`push_json_str`] when whether `value` needs escaping is already known ([`is_plain`]):
/// a prepared statement's text is checked once, at Parse, not at every Execute.
fn push_json_str_known(out: &mut String, value: &str, plain: bool) {
    if plain {
        out.reserve(value.len() + 2);
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(value).expect("string serializes"));
    }
}

fn head(kind: &str, session: &SessionInfo) -> String {
    let mut b = String::with_capacity(512);
    head_into(&mut b, kind, session);
    b
}

fn head_into(b: &mut String, kind: &str, session: &SessionInfo) {
    push_ts(b);
    b.push_str(",\"type\":\"");
    b.push_str(kind);
    b.push_str("\",");
    b.push_str(&session.prefix);
}

/// Appends `"ts":"2026-11-28T03:00:00.123456Z"`. The date and time of the current second are
/// formatted once per second per thread; only the microseconds change in between. The clock
/// is read as a plain duration since the epoch: a `chrono::Utc::now` per record built a
/// calendar date only to throw it away.
pub fn push_ts(out: &mut String) {
    use std::cell::RefCell;
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    SECOND.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != secs {
            let second = i64::try_from(secs)
                .ok()
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .unwrap_or_default();
            *cache = (
                secs,
                second.format("\"ts\":\"%Y-%m-%dT%H:%M:%S").to_string(),
            );
        }
        out.push_str(&cache.1);
        // `.123456Z"` by hand: this runs twice per statement and `write!` is slower.
        let mut micros = now.subsec_micros();
        let mut tail = *b".000000Z\"";
        for digit in tail[1..7].iter_mut().rev() {
            *digit = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        push_ascii(out, &tail);
    });
}

/// A client connected and sent its start-up parameters (all of them, as sent).
pub fn connect(session: &SessionInfo, tls: bool, params: &[(String, String)]) -> String {
    let mut b = head("connect", session);
    let _ = write!(b, ",\"tls\":{tls},\"startup\":{{");
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            b.push(',');
        }
        push_json_str(&mut b, k);
        b.push(':');
        push_json_str(&mut b, v);
    }
    b.push('}');
    b
}

/// An authentication result; `reason` says why it failed (never contains a secret).
pub fn auth(
    session: &SessionInfo,
    method: &str,
    user: &str,
    database: &str,
    result: Result<(), &str>,
) -> String {
    let mut b = head("auth", session);
    b.push(',');
    member_str(&mut b, "method", method);
    b.push(',');
    member_str(&mut b, "user", user);
    b.push(',');
    member_str(&mut b, "requested_database", database);
    match result {
        Ok(()) => b.push_str(",\"result\":\"ok\""),
        Err(reason) => {
            b.push_str(",\"result\":\"refused\",");
            member_str(&mut b, "reason", reason);
        }
    }
    b
}

/// Adds to an `auth` record how and when the person signed in, as their ID token says:
/// `amr` (methods) and `auth_time` (RFC 3339), when the token has them.
pub fn with_sign_in(mut record: String, amr: &[String], auth_time: Option<i64>) -> String {
    if !amr.is_empty() {
        record.push_str(",\"amr\":");
        record.push_str(&serde_json::to_string(amr).unwrap_or_else(|_| "[]".into()));
    }
    if let Some(at) = auth_time.and_then(|t| chrono::DateTime::from_timestamp(t, 0)) {
        record.push(',');
        member_str(
            &mut record,
            "auth_time",
            &at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
    }
    record
}

/// The proxy's session with the database is open: the server process serving it
/// (`backend_pid`, from BackendKeyData) and the application name the proxy gave it.
pub fn upstream(session: &SessionInfo, backend_pid: i32, application_name: &str) -> String {
    let mut b = head("upstream", session);
    let _ = write!(b, ",\"backend_pid\":{backend_pid},");
    member_str(&mut b, "application_name", application_name);
    b
}

/// Counters a session reports when it ends.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub bytes_from_client: u64,
    pub bytes_to_client: u64,
    pub statements: u64,
}

pub fn disconnect(
    session: &SessionInfo,
    totals: &Totals,
    duration_ms: u64,
    reason: &str,
) -> String {
    let mut b = head("disconnect", session);
    let _ = write!(
        b,
        ",\"bytes_from_client\":{},\"bytes_to_client\":{},\"statements\":{},\"duration_ms\":{}",
        totals.bytes_from_client, totals.bytes_to_client, totals.statements, duration_ms
    );
    b.push(',');
    member_str(&mut b, "reason", reason);
    b
}

/// How a statement reached the server.
#[derive(Debug, Clone, Copy)]
pub enum Via<'a> {
    /// A Query message: its whole text; `statements` are its parts, as byte ranges.
    Simple {
        statements: &'a [std::ops::Range<usize>],
    },
    /// Parse, Bind and/or Execute (`steps`); names as the client gave them ("" is unnamed).
    Extended {
        /// The JSON array of the steps the record covers, e.g. `["bind","execute"]`.
        steps: &'static str,
        statement: &'a str,
        portal: &'a str,
    },
}

/// A statement about to be forwarded (or refused). `text` is `None` when the proxy does
/// not know it (a statement prepared with SQL). `params` is the JSON array of
/// [`super::params::to_json`].
pub fn statement(
    session: &SessionInfo,
    via: Via,
    text: Option<&str>,
    redacted: bool,
    params: Option<&str>,
) -> String {
    let mut b = String::with_capacity(512);
    let text = text.map(|text| Text {
        text,
        plain: is_plain(text),
    });
    statement_into(&mut b, session, via, text, redacted, params);
    b
}

/// A statement's text and whether it needs JSON escaping ([`is_plain`]).
#[derive(Debug, Clone, Copy)]
pub struct Text<'a> {
    pub text: &'a str,
    pub plain: bool,
}

/// [`statement`] appended to `b` (a buffer the session reuses).
pub fn statement_into(
    b: &mut String,
    session: &SessionInfo,
    via: Via,
    text: Option<Text>,
    redacted: bool,
    params: Option<&str>,
) {
    statement_head_into(b, session);
    statement_middle_into(b, via, text, redacted);
    params_into(b, params);
}

/// A statement record's first part: the time, the type and the session's members.
pub fn statement_head_into(b: &mut String, session: &SessionInfo) {
    head_into(b, "statement", session);
}

/// A statement record's middle part: how it came (protocol, steps, names) and its text.
/// It depends only on its arguments, so a session may keep it for a prepared statement
/// executed again the same way ([`statement_into`] is head, middle, parameters).
pub fn statement_middle_into(b: &mut String, via: Via, text: Option<Text>, redacted: bool) {
    match via {
        Via::Simple { statements } => {
            let _ = write!(b, ",\"protocol\":\"simple\",\"of\":{}", statements.len());
        }
        Via::Extended {
            steps,
            statement,
            portal,
        } => {
            b.push_str(",\"protocol\":\"extended\",\"steps\":");
            b.push_str(steps);
            b.push(',');
            member_str(b, "prepared", statement);
            b.push(',');
            member_str(b, "portal", portal);
        }
    }
    match text {
        Some(Text { text, plain }) => {
            b.push_str(",\"statement\":");
            push_json_str_known(b, text, plain);
            // The parts of a query string, so a reader sees what each outcome refers to.
            if let Via::Simple { statements } = via {
                if statements.len() > 1 {
                    b.push_str(",\"statements\":[");
                    for (i, r) in statements.iter().enumerate() {
                        if i > 0 {
                            b.push(',');
                        }
                        push_json_str(b, &text[r.clone()]);
                    }
                    b.push(']');
                }
            }
        }
        None => b.push_str(",\"statement\":null"),
    }
    if redacted {
        b.push_str(",\"redacted\":true");
    }
}

/// A statement record's last part: its parameters' JSON array, if it has parameters.
pub fn params_into(b: &mut String, params: Option<&str>) {
    if let Some(p) = params {
        b.push_str(",\"params\":");
        b.push_str(p);
    }
}

/// How a statement ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<'a> {
    Ok {
        tag: &'a str,
        rows: Option<u64>,
    },
    Error {
        code: &'a str,
        message: &'a str,
        /// Which message of a record that joins several failed (`parse`, `bind`,
        /// `execute`), or `commit` when the implicit transaction's commit failed.
        step: Option<&'static str>,
    },
    /// Never ran: an earlier message in the same batch failed, or the session ended first.
    NotExecuted {
        reason: &'static str,
    },
    /// Forwarded, but the session ended before the server's answer was seen.
    Unknown {
        reason: &'static str,
    },
    /// Never forwarded: the proxy refused it.
    Refused {
        code: &'a str,
        message: &'a str,
    },
}

/// The outcome of the statement record `seq` (of its statement `index` for a query string).
pub fn outcome(
    session: &SessionInfo,
    seq: u64,
    index: Option<usize>,
    outcome: &Outcome,
    duration_us: u64,
) -> String {
    let mut b = String::with_capacity(320);
    let kept = &mut KeptOk::default();
    outcome_into(&mut b, session, seq, index, outcome, duration_us, kept);
    b
}

/// [`outcome`] appended to `b` (a buffer the session's thread reuses), with the status part
/// of an `ok` outcome taken from `kept` when its tag and row count are the last ones.
pub fn outcome_into(
    b: &mut String,
    session: &SessionInfo,
    seq: u64,
    index: Option<usize>,
    outcome: &Outcome,
    duration_us: u64,
    kept: &mut KeptOk,
) {
    push_ts(b);
    b.push_str(",\"type\":\"outcome\",");
    b.push_str(&session.session_member);
    b.push_str(",\"ref\":");
    push_u64(b, seq);
    if let Some(i) = index {
        b.push_str(",\"index\":");
        push_u64(b, i as u64);
    }
    match outcome {
        Outcome::Ok { tag, rows } => kept.push(b, tag, *rows),
        Outcome::Error {
            code,
            message,
            step,
        } => {
            b.push_str(",\"status\":\"error\",");
            member_str(b, "sqlstate", code);
            b.push(',');
            member_str(b, "message", message);
            if let Some(step) = step {
                b.push(',');
                member_str(b, "step", step);
            }
        }
        Outcome::NotExecuted { reason } => {
            b.push_str(",\"status\":\"not_executed\",");
            member_str(b, "reason", reason);
        }
        Outcome::Unknown { reason } => {
            b.push_str(",\"status\":\"unknown\",");
            member_str(b, "reason", reason);
        }
        Outcome::Refused { code, message } => {
            b.push_str(",\"status\":\"refused\",");
            member_str(b, "sqlstate", code);
            b.push(',');
            member_str(b, "message", message);
        }
    }
    b.push_str(",\"duration_us\":");
    push_u64(b, duration_us);
}

/// The status part of the last `ok` outcome (`,"status":"ok","tag":"SELECT 1","rows":1`)
/// and what it was built from. A session runs the same kind of statement again and again,
/// so the next outcome's tag and row count are usually the same: compared, not encoded.
#[derive(Debug, Default)]
pub struct KeptOk {
    tag: String,
    rows: Option<u64>,
    json: String,
}

impl KeptOk {
    /// A tag longer than this (none that PostgreSQL sends) is encoded each time, not kept.
    const TAG_MAX: usize = 64;

    fn push(&mut self, b: &mut String, tag: &str, rows: Option<u64>) {
        if tag.len() > Self::TAG_MAX {
            return ok_status_into(b, tag, rows);
        }
        if self.json.is_empty() || self.rows != rows || self.tag != tag {
            self.tag.clear();
            self.tag.push_str(tag);
            self.rows = rows;
            self.json.clear();
            ok_status_into(&mut self.json, tag, rows);
        }
        b.push_str(&self.json);
    }
}

fn ok_status_into(b: &mut String, tag: &str, rows: Option<u64>) {
    b.push_str(",\"status\":\"ok\",");
    member_str(b, "tag", tag);
    if let Some(rows) = rows {
        b.push_str(",\"rows\":");
        push_u64(b, rows);
    }
}

/// Appends `n` in decimal (as `{n}` formats it) without `core::fmt`.
fn push_u64(out: &mut String, n: u64) {
    let mut buf = [0; 20];
    push_ascii(out, super::line::decimal(n, &mut buf));
}

/// Appends ASCII bytes the caller made (digits, a timestamp's tail) without a UTF-8
/// check of each short piece (`str::from_utf8` costs ~50 instructions a call here).
fn push_ascii(out: &mut String, ascii: &[u8]) {
    debug_assert!(ascii.is_ascii());
    out.extend(ascii.iter().map(|&b| char::from(b)));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Readers of a live fsync file stop at the first NUL byte (`source::written`): no text
    /// a client sends (SQL, parameters, names) may put one in a record.
    #[test]
    fn a_nul_from_a_client_never_reaches_a_record() {
        let mut b = String::new();
        push_json_str(&mut b, "SELECT 'a\0b'");
        assert!(!b.as_bytes().contains(&0), "{b:?}");
        assert_eq!(serde_json::from_str::<String>(&b).unwrap(), "SELECT 'a\0b'");
    }

    #[test]
    fn strings_are_escaped_only_when_needed() {
        for s in [
            "plain text",
            "quote \" and \\ backslash",
            "tab\tnewline\n",
            "ünïcødé",
            "\u{1}",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s);
        }
        let mut ts = String::from("{");
        push_ts(&mut ts);
        ts.push('}');
        let v: serde_json::Value = serde_json::from_str(&ts).unwrap();
        let parsed = chrono::DateTime::parse_from_rfc3339(v["ts"].as_str().unwrap()).unwrap();
        assert!(
            (chrono::Utc::now() - parsed.with_timezone(&chrono::Utc))
                .num_seconds()
                .abs()
                < 5
        );
    }

    #[test]
    fn bodies_are_json_members() {
        let mut s = SessionInfo::new("s1".into(), "127.0.0.1:5000".into());
        s.logged_in(
            &Identity::Service { name: "app".into() },
            "rates",
            "app",
            "0123abcd",
            "psql \"x\"",
        );
        let body = statement(
            &s,
            Via::Simple {
                statements: std::slice::from_ref(&(0..10)),
            },
            Some("select '\"'"),
            false,
            None,
        );
        let v: serde_json::Value = serde_json::from_str(&format!("{{{body}}}")).unwrap();
        assert_eq!(v["identity"]["kind"], "service");
        assert_eq!(v["application"], "psql \"x\"");
        assert_eq!(v["secret_version"], "0123abcd");
        assert_eq!(v["statement"], "select '\"'");
        let o = outcome(
            &s,
            7,
            None,
            &Outcome::Ok {
                tag: "SELECT 1",
                rows: Some(1),
            },
            12,
        );
        let v: serde_json::Value = serde_json::from_str(&format!("{{{o}}}")).unwrap();
        assert_eq!((v["ref"].as_u64(), v["rows"].as_u64()), (Some(7), Some(1)));
    }

    /// The relay keeps the last `ok` status part for the thread's sessions: whatever came
    /// before (nothing, at first), each outcome reads as if built from scratch.
    #[test]
    fn a_kept_ok_status_never_stands_for_another_outcome() {
        let s = SessionInfo::new("s1".into(), "127.0.0.1:5000".into());
        let long = "SELECT ".to_string() + &"9".repeat(70);
        let ok = |tag, rows| Outcome::Ok { tag, rows };
        let outcomes = [
            // What an empty kept part was built from: still built, not taken.
            ok("", None),
            ok("SELECT 1", Some(1)),
            ok("SELECT 1", Some(1)),
            ok("SELECT 1", Some(2)),
            ok("SELECT 1", None),
            ok("SELECT 1", Some(1)),
            ok("INSERT 0 1", Some(1)),
            ok("tag \"quoted\"", None),
            ok(&long, Some(9)),
            Outcome::Error {
                code: "42P01",
                message: "no such table",
                step: None,
            },
            ok("SELECT 1", Some(1)),
            ok("SELECT 2", Some(1)),
            ok(&long, Some(9)),
            ok("SELECT 2", Some(1)),
        ];
        let mut kept = KeptOk::default();
        let after_ts = |b: &str| b.split_once(',').map(|(_, rest)| rest.to_string());
        for (i, o) in outcomes.iter().enumerate() {
            let mut b = String::new();
            outcome_into(&mut b, &s, i as u64, None, o, 5, &mut kept);
            assert_eq!(
                after_ts(&b),
                after_ts(&outcome(&s, i as u64, None, o, 5)),
                "{o:?}"
            );
            let v: serde_json::Value = serde_json::from_str(&format!("{{{b}}}")).unwrap();
            if let Outcome::Ok { tag, rows } = o {
                assert_eq!(v["status"], "ok", "{b}");
                assert_eq!(v["tag"].as_str(), Some(*tag), "{b}");
                assert_eq!(v["rows"].as_u64(), *rows, "{b}");
            }
        }
    }

    #[test]
    fn timestamps_are_rfc3339_with_microseconds_and_current() {
        let before = chrono::Utc::now();
        let mut out = String::new();
        push_ts(&mut out);
        let after = chrono::Utc::now();
        let v: serde_json::Value = serde_json::from_str(&format!("{{{out}}}")).unwrap();
        let text = v["ts"].as_str().unwrap();
        assert_eq!(text.len(), "2026-11-28T03:00:00.123456Z".len(), "{text}");
        let ts = chrono::DateTime::parse_from_rfc3339(text).unwrap();
        let truncated = |t: chrono::DateTime<chrono::Utc>| t.timestamp_micros();
        assert!(
            truncated(before) <= ts.timestamp_micros(),
            "{text} before {before}"
        );
        assert!(
            ts.timestamp_micros() <= truncated(after),
            "{text} after {after}"
        );
    }
}

//! "Activity under this access": the sessions and statements the proxy's audit log holds
//! for one request's grant, read with the proxy's own reader and verifier (`proxy::audit`:
//! `verify::Walk` checks the chain as it streams, `read` types the records), never a second
//! reader. One pass over the log, in bounded memory: only the newest [`MAX_SESSIONS`]
//! sessions and the first [`MAX_STATEMENTS`] statements of each are kept, with counts of
//! what was left out. Blocking (files, S3): callers run it off the async threads.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;

use proxy::audit::head::Head;
use proxy::audit::read::{self, Body, Identity, Status};
use proxy::audit::source;
use proxy::audit::verify::{self, Trust, Walk};
use proxy::audit::{transcript, verify::Broken};

use crate::settings::AuditSettings;

/// Sessions a page shows at most (the newest).
pub const MAX_SESSIONS: usize = 50;
/// Statements shown per session at most (the first).
pub const MAX_STATEMENTS: usize = 200;

/// What the chains say about what is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Every chain is intact and ends at (or after) its anchored head.
    Verified,
    /// Every chain is intact, but no published head anchors it: a cut tail would not show.
    NoHead,
    /// The first problem: where and what.
    Tampered(String),
}

impl Verification {
    pub fn text(&self) -> String {
        match self {
            Verification::Verified => "verified".into(),
            Verification::NoHead => "verified (chain intact; no head anchored)".into(),
            Verification::Tampered(at) => format!("TAMPERED: {at}"),
        }
    }

    pub fn class(&self) -> &'static str {
        match self {
            Verification::Verified | Verification::NoHead => "verified",
            Verification::Tampered(_) => "tampered",
        }
    }

    fn word(&self) -> &'static str {
        match self {
            Verification::Verified => "verified",
            Verification::NoHead => "no_head",
            Verification::Tampered(_) => "tampered",
        }
    }
}

/// One request's activity, as a page shows it.
#[derive(Debug, Clone)]
pub struct Activity {
    pub status: Verification,
    /// Oldest first.
    pub sessions: Vec<SessionView>,
    /// Older sessions not shown (over [`MAX_SESSIONS`]).
    pub sessions_left_out: usize,
    /// Where the log was read (for the command to check it).
    pub location: String,
    pub head: Option<String>,
}

impl Activity {
    pub fn statements(&self) -> usize {
        self.sessions.iter().map(|s| s.statements.len()).sum()
    }

    /// What an `audit.read` event says was read.
    pub fn event_data(&self) -> serde_json::Value {
        serde_json::json!({
            "what": "activity",
            "location": self.location,
            "sessions": self.sessions.len(),
            "statements": self.statements(),
            "verification": self.status.word(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct SessionView {
    pub id: String,
    pub replica: String,
    pub started: String,
    pub client: String,
    pub db_user: String,
    pub application: String,
    /// When and why it ended; `None`: no disconnect record (yet).
    pub ended: Option<(String, String)>,
    pub statements: Vec<StatementView>,
    pub statements_left_out: usize,
}

#[derive(Debug, Clone)]
pub struct StatementView {
    pub seq: u64,
    pub file: String,
    pub ts: String,
    pub text: String,
    /// Bound parameters as the audit holds them (JSON), empty when none.
    pub params: String,
    /// How it ended (one entry per outcome record).
    pub outcome: String,
    pub rows: Option<u64>,
    pub duration_us: u64,
    pub trust: &'static str,
}

impl StatementView {
    pub fn duration_text(&self) -> String {
        if self.duration_us < 1000 {
            format!("{} µs", self.duration_us)
        } else {
            format!("{:.1} ms", self.duration_us as f64 / 1000.0)
        }
    }
}

fn trust_word(t: Trust) -> &'static str {
    match t {
        Trust::Chained => "chained",
        Trust::PastHead => "after the anchored head",
        Trust::Broken => "after the break: unverified",
    }
}

/// The request a record's session runs under, if it names one.
fn request_of(body: &Body) -> Option<(i64, i64)> {
    match &body.who()?.login.as_ref()?.identity {
        Identity::Person {
            grant_id,
            request_id: Some(r),
            ..
        } => Some((*r, *grant_id)),
        _ => None,
    }
}

fn outcome_text(s: &Status) -> String {
    match s {
        Status::Ok { tag, .. } => format!("ok {tag}"),
        Status::Error {
            sqlstate, message, ..
        } => format!("error {sqlstate}: {message}"),
        Status::NotExecuted { reason } => format!("not executed: {reason}"),
        Status::Unknown { reason } => format!("unknown: {reason}"),
        Status::Refused { sqlstate, message } => format!("refused {sqlstate}: {message}"),
    }
}

struct Config {
    paths: Vec<PathBuf>,
    heads: Vec<Head>,
    location: String,
    head: Option<String>,
}

fn config(settings: &AuditSettings) -> anyhow::Result<Option<Config>> {
    let Some(location) = settings.location.clone() else {
        return Ok(None);
    };
    let heads = match &settings.head {
        Some(h) => transcript::read_heads(std::slice::from_ref(h))?,
        None => Vec::new(),
    };
    Ok(Some(Config {
        location: location.display().to_string(),
        head: settings.head.as_ref().map(|h| h.display().to_string()),
        paths: vec![location],
        heads,
    }))
}

/// The overall verdict of the chains walked.
fn verdict(results: &[(Result<verify::Report, Broken>, bool)]) -> Verification {
    for (r, _) in results {
        if let Err(b) = r {
            return Verification::Tampered(b.to_string());
        }
    }
    let anchored = |(r, given): &(Result<verify::Report, Broken>, bool)| {
        *given && r.as_ref().is_ok_and(|report| report.anchored)
    };
    if !results.is_empty() && results.iter().all(anchored) {
        Verification::Verified
    } else {
        Verification::NoHead
    }
}

/// Reads request `request_id`'s activity; `None` when no audit location is configured.
pub fn read(settings: &AuditSettings, request_id: i64) -> anyhow::Result<Option<Activity>> {
    let Some(cfg) = config(settings)? else {
        return Ok(None);
    };
    // A local directory the proxy has not written to yet holds nothing to show, which is
    // not a failure to read.
    let location = &cfg.paths[0];
    if location.is_dir() && source::audit_files(location)?.is_empty() {
        return Ok(Some(Activity {
            status: Verification::NoHead,
            sessions: Vec::new(),
            sessions_left_out: 0,
            location: cfg.location,
            head: cfg.head,
        }));
    }
    let chains = verify::chains(&cfg.paths)?;
    let anchors = verify::anchors(&chains, &cfg.heads)?;
    // Records of this request name it in their identity; outcomes name only the session.
    let needle = format!("\"request_id\":{request_id}");
    let mut sessions: BTreeMap<String, SessionView> = BTreeMap::new();
    let mut order: VecDeque<String> = VecDeque::new();
    let mut dropped: BTreeSet<String> = BTreeSet::new();
    let mut results = Vec::new();
    for (chain, anchor) in chains.iter().zip(&anchors) {
        let mut walk = Walk::new(&chain.files, anchor.as_ref());
        while let Some(step) = walk.next_record()? {
            let text = step.text;
            let outcome = contains(text, b"\"type\":\"outcome\"");
            if !outcome && !contains(text, needle.as_bytes()) {
                continue;
            }
            let Ok(record) = read::parse(text) else {
                // An unreadable line is the chain's problem, reported by the walk.
                continue;
            };
            let Some(session) = record.body.session().map(str::to_string) else {
                continue;
            };
            if let Body::Outcome(o) = &record.body {
                if let Some(s) = sessions.get_mut(&session) {
                    if let Some(st) = s.statements.iter_mut().rev().find(|st| st.seq == o.of) {
                        if !st.outcome.is_empty() {
                            st.outcome.push_str("; ");
                        }
                        st.outcome.push_str(&outcome_text(&o.status));
                        if let Status::Ok { rows: Some(n), .. } = o.status {
                            st.rows = Some(st.rows.unwrap_or(0) + n);
                        }
                        st.duration_us += o.duration_us;
                    }
                }
                continue;
            }
            if request_of(&record.body).map(|(r, _)| r) != Some(request_id)
                || dropped.contains(&session)
            {
                continue;
            }
            if !sessions.contains_key(&session) {
                let who = record.body.who().expect("request_of found it");
                let login = who.login.as_ref().expect("request_of found it");
                sessions.insert(
                    session.clone(),
                    SessionView {
                        id: session.clone(),
                        replica: chain.replica.clone(),
                        started: record.ts.clone(),
                        client: who.client.clone(),
                        db_user: login.db_user.clone(),
                        application: login.application.clone(),
                        ended: None,
                        statements: Vec::new(),
                        statements_left_out: 0,
                    },
                );
                order.push_back(session.clone());
                // Bounded memory: the oldest session goes when there are too many.
                if order.len() > MAX_SESSIONS {
                    let old = order.pop_front().expect("over the cap");
                    sessions.remove(&old);
                    dropped.insert(old);
                }
            }
            let s = sessions.get_mut(&session).expect("inserted above");
            match &record.body {
                Body::Statement(st) => {
                    if s.statements.len() >= MAX_STATEMENTS {
                        s.statements_left_out += 1;
                        continue;
                    }
                    let params = st
                        .params
                        .as_ref()
                        .map(|p| serde_json::to_string(p).unwrap_or_default())
                        .unwrap_or_default();
                    s.statements.push(StatementView {
                        seq: record.seq,
                        file: step.file.name(),
                        ts: record.ts.clone(),
                        text: st
                            .statement
                            .clone()
                            .unwrap_or_else(|| "(text not known to the proxy)".into()),
                        params,
                        outcome: String::new(),
                        rows: None,
                        duration_us: 0,
                        trust: trust_word(step.trust),
                    });
                }
                Body::Disconnect {
                    reason,
                    duration_ms,
                    ..
                } => {
                    let secs = *duration_ms as f64 / 1000.0;
                    s.ended = Some((record.ts.clone(), format!("{reason} after {secs:.1} s")));
                }
                _ => {}
            }
        }
        results.push((walk.finish()?, anchor.is_some()));
    }
    let mut shown: Vec<SessionView> = order
        .into_iter()
        .filter_map(|id| sessions.remove(&id))
        .collect();
    shown.sort_by(|a, b| a.started.cmp(&b.started));
    Ok(Some(Activity {
        status: verdict(&results),
        sessions: shown,
        sessions_left_out: dropped.len(),
        location: cfg.location,
        head: cfg.head,
    }))
}

/// One record and its place in its chain.
#[derive(Debug, Clone)]
pub struct Place {
    pub replica: String,
    pub file: String,
    pub line: u64,
    pub seq: u64,
    pub session: String,
    pub hash: String,
    pub prev: String,
    pub text: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub trust: &'static str,
    pub status: Verification,
    pub location: String,
    pub head: Option<String>,
}

impl Place {
    /// The command that prints the record's session from the log, verified.
    pub fn command(&self) -> String {
        let head = self
            .head
            .as_ref()
            .map(|h| format!(" --head-file {h}"))
            .unwrap_or_default();
        format!(
            "proxy audit session {} {}{head}",
            self.session, self.location
        )
    }
}

/// Record `seq` of audit file `file`, when it is a record of request `request_id`'s
/// sessions (anything else is `None`, as if it did not exist); `Err` when no audit location
/// is configured is left to the caller ([`read`] says so first).
pub fn record(
    settings: &AuditSettings,
    request_id: i64,
    file: &str,
    seq: u64,
) -> anyhow::Result<Option<Place>> {
    let Some(cfg) = config(settings)? else {
        return Ok(None);
    };
    let chains = verify::chains(&cfg.paths)?;
    let anchors = verify::anchors(&chains, &cfg.heads)?;
    for (chain, anchor) in chains.iter().zip(&anchors) {
        if !chain.files.iter().any(|f| f.name() == file) {
            continue;
        }
        let mut walk = Walk::new(&chain.files, anchor.as_ref());
        let mut before: Option<String> = None;
        let mut found: Option<Place> = None;
        while let Some(step) = walk.next_record()? {
            let text = String::from_utf8_lossy(step.text).into_owned();
            if let Some(place) = found.as_mut() {
                if place.after.is_none() {
                    place.after = Some(text);
                }
                continue;
            }
            if step.file.name() == file && step.chain.seq == seq {
                let record = read::parse(step.text).ok();
                let belongs = record
                    .as_ref()
                    .and_then(|r| request_of(&r.body))
                    .is_some_and(|(r, _)| r == request_id);
                if !belongs {
                    return Ok(None);
                }
                let session = record
                    .as_ref()
                    .and_then(|r| r.body.session())
                    .unwrap_or_default()
                    .to_string();
                found = Some(Place {
                    replica: chain.replica.clone(),
                    file: file.to_string(),
                    line: step.line,
                    seq,
                    session,
                    hash: step.chain.hash.clone(),
                    prev: step.chain.prev.clone(),
                    text,
                    before: before.take(),
                    after: None,
                    trust: trust_word(step.trust),
                    status: Verification::NoHead,
                    location: cfg.location.clone(),
                    head: cfg.head.clone(),
                });
                continue;
            }
            before = Some(text);
        }
        let result = walk.finish()?;
        if let Some(mut place) = found {
            place.status = verdict(&[(result, anchor.is_some())]);
            return Ok(Some(place));
        }
    }
    Ok(None)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

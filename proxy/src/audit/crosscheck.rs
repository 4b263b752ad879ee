//! `proxy audit crosscheck`: compares the proxy's audit log with the database server's own
//! statement log written by pgaudit, an independent witness of what ran.
//!
//! **The link.** The proxy records, per session, the server process that serves it (the
//! `upstream` record's `backend_pid`, from BackendKeyData) and names the upstream session
//! `dbgw:<session id>` (`application_name`, for people reading the server log; a client can
//! change it with `SET`, so nothing relies on it). Every jsonlog line carries `session_id`
//! (`<backend start time, hex>.<pid, hex>`), unique per server process: a server process is
//! a proxy session's when its pid is the session's `backend_pid` and it started between the
//! session's `connect` and `upstream` records (give or take the allowed clock skew).
//!
//! **What is compared.** Per linked session, in order:
//! - every execution the proxy saw succeed (`outcome` status `ok`) has a pgaudit entry with
//!   the same text (the whole query string for the simple protocol, which is what pgaudit
//!   logs for each statement of it; the Parse text for the extended protocol), and every
//!   pgaudit statement (a statement id; its nested substatements belong to it) has such a
//!   proxy execution;
//! - every execution the proxy saw fail (status `error`) has the server's ERROR line with the
//!   same SQLSTATE (pgaudit itself logs a failed statement only when it failed after the
//!   executor started: not for parse, analysis or planning errors), and every ERROR line has
//!   such a proxy execution; a pgaudit entry for a failed execution is taken when present;
//! - the server process's login user and database are the session's `db_user` and
//!   `database`.
//!
//! Statements the proxy refused or never ran (`refused`, `not_executed`) never reached the
//! server: a pgaudit entry for one is a difference like any entry without a record.
//! `ROLLBACK` (also the answer to a `COMMIT` of a failed transaction) may have no entry:
//! pgaudit logs nothing in an aborted transaction. An `unknown` outcome may have either.
//!
//! Statements the server runs while binding (pgaudit lines with `ps` `BIND`: domain checks,
//! input functions, a SELECT's portal start) pair with the record holding that Bind.
//!
//! **Bypass.** A pgaudit statement of a server process no proxy session explains, logged in
//! as a database user the proxy's sessions use, went around the proxy: reported. Except the
//! rotation function's test logins ([`RotationWitness`]): a server process that the
//! function's log names (pid, user, database, time), from its network, running exactly
//! [`ROTATION_TEST_STATEMENT`] and nothing else, is listed apart, not as a difference.
//!
//! Proxy records whose text the proxy does not know (`statement: null`) match any entry;
//! redacted records are compared with the server's text redacted the same way. pgaudit
//! redacts role statements with a password itself (the text up to the first `password`, then
//! ` <REDACTED>`): only that prefix is compared. Parameters are not compared.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use super::source::AuditFile;

use serde::Serialize;
use serde_json::Value;

/// What `crosscheck` compares and how tolerant it is.
#[derive(Debug, Clone)]
pub struct Options {
    /// Allowed difference between the proxy's clock and the database server's, seconds.
    pub max_clock_skew_secs: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_clock_skew_secs: 5,
        }
    }
}

/// The rotation function's own logins, to tell from bypasses: its log and where it connects
/// from. Without both, every login outside the proxy is a bypass.
/// The same two options on `proxy audit crosscheck` and `proxy audit evidence`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RotationWitness {
    /// The rotation function's log (its JSON lines), to tell its test logins from
    /// bypasses (docs/proxy.md, "The rotation function's test logins").
    #[arg(
        id = "rotation_log",
        long = "rotation-log",
        value_name = "FILE_OR_DIR",
        requires = "rotation_source"
    )]
    pub logs: Vec<PathBuf>,
    /// A network the rotation function connects from (CIDR; repeatable; its subnets,
    /// locally loopback).
    #[arg(
        id = "rotation_source",
        long = "rotation-source",
        value_name = "CIDR",
        requires = "rotation_log"
    )]
    pub sources: Vec<ipnet::IpNet>,
}

/// The one statement the rotation function's test login runs (`rotation::strategy::
/// TEST_STATEMENT`): its current user and the server process, which it logs.
pub const ROTATION_TEST_STATEMENT: &str = "SELECT current_user::text, pg_backend_pid()";

/// The message of the rotation function's log line for each test login.
pub const ROTATION_TEST_LOGIN: &str = "rotation test login";

/// How long after its server process started a test login's log line may be written
/// (connect, TLS, SCRAM, one statement), on top of the allowed clock skew.
const ROTATION_LOGIN_SECS: i64 = 30;

/// The kinds of difference, as printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The proxy saw a statement succeed; pgaudit has no entry for it.
    MissingInPgaudit,
    /// pgaudit logged a statement in a proxy session; the proxy has no record of it.
    MissingInProxy,
    /// The proxy saw a statement fail; the server logged no such error.
    ErrorMissingInServerLog,
    /// The server logged an error in a proxy session; the proxy has no failed statement.
    ErrorMissingInProxy,
    /// The server process's login user or database is not the session's.
    IdentityMismatch,
    /// A proxy session ran statements but names no server process (or none was found).
    SessionNotInServerLog,
    /// A statement by a proxy database user outside every proxy session.
    BypassedProxy,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::MissingInPgaudit => "MISSING_IN_PGAUDIT",
            Kind::MissingInProxy => "MISSING_IN_PROXY_AUDIT",
            Kind::ErrorMissingInServerLog => "ERROR_MISSING_IN_SERVER_LOG",
            Kind::ErrorMissingInProxy => "ERROR_MISSING_IN_PROXY_AUDIT",
            Kind::IdentityMismatch => "IDENTITY_MISMATCH",
            Kind::SessionNotInServerLog => "SESSION_NOT_IN_SERVER_LOG",
            Kind::BypassedProxy => "BYPASSED_PROXY",
        }
    }
}

/// One difference, with where each side has it.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub kind: Kind,
    /// The proxy session, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The server process (pgaudit's `session_id`) and its pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The statement text concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub detail: String,
    /// `file:line` of the record or log line.
    pub at: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.kind.label())?;
        if let Some(s) = &self.session {
            write!(f, " session {s}")?;
        }
        if let Some(b) = &self.backend {
            write!(f, " backend {b}")?;
        }
        if let Some(p) = self.pid {
            write!(f, " pid {p}")?;
        }
        if let Some(u) = &self.user {
            write!(f, " user {u}")?;
        }
        write!(f, ": {}", self.detail)?;
        if let Some(t) = &self.text {
            write!(f, ": {}", short(t))?;
        }
        write!(f, " ({})", self.at)
    }
}

/// Counts for the summary.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Summary {
    pub proxy_files: usize,
    pub pgaudit_files: usize,
    pub proxy_sessions: usize,
    /// Proxy sessions with a server process found in the pgaudit log.
    pub linked_sessions: usize,
    /// Executions the proxy recorded as reaching the server (ok, error, unknown).
    pub proxy_executions: usize,
    pub server_processes: usize,
    /// pgaudit statements (statement ids) in all.
    pub pgaudit_statements: usize,
    /// pgaudit statements paired with a proxy execution.
    pub matched_statements: usize,
    /// pgaudit statements of server processes of users the proxy does not log in as.
    pub other_users_statements: usize,
    /// Logins outside the proxy recognised as the rotation function's test logins.
    pub rotation_test_logins: usize,
    /// Server errors of a failed name lookup (no such portal or prepared statement, no
    /// statement text) that no proxy record explains: a Describe or Close of a name the
    /// server did not have, which ran nothing. Informational, not differences.
    pub lookup_errors: usize,
    /// pgaudit statements the server ran while binding a recorded Bind's parameters (a
    /// domain's CHECK, an input function), paired with that Bind (and counted as paired).
    pub bind_time_statements: usize,
}

/// A login outside the proxy that is the rotation function's test login: informational, not
/// a difference.
#[derive(Debug, Clone, Serialize)]
pub struct RotationLogin {
    /// The secret rotated, the rotation's version and the step (`testSecret`, or
    /// `setSecret` proving the current credentials), as the rotation log says.
    pub secret: String,
    pub version: String,
    pub step: String,
    pub user: String,
    /// The server process (pgaudit's `session_id`), its pid and client address.
    pub backend: String,
    pub pid: i32,
    pub remote_host: String,
    pub text: String,
    /// `file:line` of the pgaudit entry, and of the rotation log line.
    pub at: String,
    pub log_at: String,
}

impl RotationLogin {
    pub fn label(&self) -> &'static str {
        "ROTATION_TEST_LOGIN"
    }
}

impl std::fmt::Display for RotationLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} secret {} ({}, version {}) backend {} pid {} user {} from {}: the rotation \
             function's test login, one statement: {} ({}; rotation log {})",
            self.label(),
            self.secret,
            self.step,
            self.version,
            self.backend,
            self.pid,
            self.user,
            self.remote_host,
            short(&self.text),
            self.at,
            self.log_at
        )
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    pub differences: Vec<Difference>,
    /// Logins outside the proxy recognised as the rotation function's test logins
    /// (informational: they are not differences).
    pub rotation_logins: Vec<RotationLogin>,
    pub summary: Summary,
}

impl Report {
    pub fn clean(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Expands pgaudit log directories into their JSON log files (`*.json`, by name, which is
/// by time); files are taken as given.
pub fn collect_pgaudit(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "json"))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    anyhow::ensure!(!out.is_empty(), "no pgaudit log files (*.json) given");
    Ok(out)
}

/// Compares the proxy audit `proxy_files` (every file given, in order; several replicas'
/// chains may be mixed) with the server's JSON log files `pgaudit_files`, telling the
/// rotation function's test logins (`rotation`; empty: none expected) from bypasses.
pub fn crosscheck(
    proxy_files: &[AuditFile],
    pgaudit_files: &[PathBuf],
    options: &Options,
    rotation: &RotationWitness,
) -> anyhow::Result<Report> {
    let proxy = read_proxy(proxy_files)?;
    let server = read_server(pgaudit_files)?;
    let rotation_logins = read_rotation_log(&rotation.logs)?;
    let mut claimed = vec![false; rotation_logins.len()];
    let mut report = Report::default();
    report.summary.proxy_files = proxy_files.len();
    report.summary.pgaudit_files = pgaudit_files.len();
    report.summary.proxy_sessions = proxy.sessions.len();
    report.summary.server_processes = server.len();
    report.summary.pgaudit_statements = server.values().map(|b| b.groups.len()).sum();

    // Link server processes to proxy sessions.
    let mut by_pid: HashMap<i32, Vec<&str>> = HashMap::new();
    for (id, s) in &proxy.sessions {
        if let Some(pid) = s.backend_pid {
            by_pid.entry(pid).or_default().push(id.as_str());
        }
    }
    let mut linked: HashMap<&str, &Backend> = HashMap::new();
    let mut unlinked: Vec<&Backend> = Vec::new();
    for backend in server.values() {
        let skew = options.max_clock_skew_secs;
        let candidate = by_pid
            .get(&backend.pid)
            .into_iter()
            .flatten()
            .filter(|id| !linked.contains_key(*id))
            .filter_map(|id| {
                let s = &proxy.sessions[*id];
                let from = s.connect_secs.or(s.upstream_secs)? - skew;
                let to = s.upstream_secs? + skew;
                (from <= backend.start_secs && backend.start_secs <= to)
                    .then(|| (s.upstream_secs.map(|u| (u - backend.start_secs).abs()), *id))
            })
            .min();
        match candidate {
            Some((_, id)) => {
                linked.insert(id, backend);
            }
            None => unlinked.push(backend),
        }
    }
    report.summary.linked_sessions = linked.len();

    for (id, session) in &proxy.sessions {
        report.summary.proxy_executions += session
            .executions
            .iter()
            .filter(|e| e.audit != Expect::No || e.error.is_some())
            .count();
        match linked.get(id.as_str()) {
            Some(backend) => compare(id, session, backend, &mut report),
            None => {
                let must = session
                    .executions
                    .iter()
                    .filter(|e| e.audit == Expect::Must || e.error_must())
                    .count();
                if must > 0 {
                    report.differences.push(Difference {
                        kind: Kind::SessionNotInServerLog,
                        session: Some(id.clone()),
                        backend: None,
                        pid: session.backend_pid,
                        user: session.db_user.clone(),
                        text: None,
                        detail: match session.backend_pid {
                            Some(_) => format!(
                                "{must} execution(s) reached the server, but the server log \
                                 has no process with this pid that started with the session"
                            ),
                            None => format!(
                                "{must} execution(s) reached the server, but the session has \
                                 no `upstream` record naming its server process"
                            ),
                        },
                        at: session.at.clone(),
                    });
                }
            }
        }
    }

    // Whatever a proxy database user ran outside every proxy session bypassed the proxy,
    // unless it is the rotation function's test login: named by its log, from its network,
    // one known statement and nothing else.
    for backend in unlinked {
        if !proxy.db_users.contains(&backend.user) {
            report.summary.other_users_statements += backend.groups.len();
            continue;
        }
        let skew = options.max_clock_skew_secs;
        let claim = (0..rotation_logins.len()).find(|&i| {
            let r = &rotation_logins[i];
            !claimed[i]
                && r.backend_pid == backend.pid
                && r.user == backend.user
                && backend.start_secs <= r.secs + skew
                && r.secs - skew - ROTATION_LOGIN_SECS <= backend.start_secs
        });
        let why_not = match claim {
            None => None,
            Some(i) => {
                claimed[i] = true;
                let r = &rotation_logins[i];
                match rotation_login(backend, r, &rotation.sources) {
                    Ok(group) => {
                        report.rotation_logins.push(RotationLogin {
                            secret: r.secret.clone(),
                            version: r.version.clone(),
                            step: r.step.clone(),
                            user: backend.user.clone(),
                            backend: backend.session_id.clone(),
                            pid: backend.pid,
                            remote_host: backend.remote_host.clone(),
                            text: group.text().to_string(),
                            at: group.at.clone(),
                            log_at: r.at.clone(),
                        });
                        report.summary.rotation_test_logins += 1;
                        continue;
                    }
                    Err(why) => Some(format!(
                        "; the rotation log names this login ({} of secret {}, {}), but {why}",
                        r.step, r.secret, r.at
                    )),
                }
            }
        };
        for group in &backend.groups {
            report.differences.push(Difference {
                kind: Kind::BypassedProxy,
                session: None,
                backend: Some(backend.session_id.clone()),
                pid: Some(backend.pid),
                user: Some(backend.user.clone()),
                text: Some(group.text().to_string()),
                detail: format!(
                    "statement {} ({}){} by a user the proxy logs in as, outside every proxy \
                     session (database {}, application_name {:?}, from {}){}",
                    group.statement_id,
                    group.command(),
                    group.nested(),
                    backend.dbname,
                    backend.application_name,
                    if backend.remote_host.is_empty() {
                        "?"
                    } else {
                        &backend.remote_host
                    },
                    why_not.as_deref().unwrap_or("")
                ),
                at: group.at.clone(),
            });
        }
    }
    Ok(report)
}

/// Whether `backend`, which the rotation log line `r` names, is that test login and only
/// that: the secret's database, a client address in `sources`, one statement, the known
/// one, no error. Its one statement, or why not.
fn rotation_login<'a>(
    backend: &'a Backend,
    r: &RotationLogEntry,
    sources: &[ipnet::IpNet],
) -> Result<&'a Group, String> {
    if backend.dbname != r.database {
        return Err(format!(
            "it logged in to database {}, not {}",
            backend.dbname, r.database
        ));
    }
    let from = backend.remote_host.parse::<std::net::IpAddr>().ok();
    if !from.is_some_and(|ip| sources.iter().any(|n| n.contains(&ip))) {
        return Err(format!(
            "it came from {:?}, outside the rotation function's networks (--rotation-source)",
            backend.remote_host
        ));
    }
    if !backend.errors.is_empty() {
        return Err(format!("it had {} error(s)", backend.errors.len()));
    }
    match backend.groups.as_slice() {
        [group]
            if group
                .entries
                .iter()
                .all(|e| e.text == ROTATION_TEST_STATEMENT) =>
        {
            Ok(group)
        }
        [_] => Err("its statement is not the test login's".into()),
        groups => Err(format!(
            "it ran {} statements; a test login runs one",
            groups.len()
        )),
    }
}

/// Pairs one session's executions with its server process's entries, in order.
fn compare(id: &str, session: &Session, backend: &Backend, report: &mut Report) {
    let diff = |kind: Kind, text: Option<&str>, detail: String, at: &str| Difference {
        kind,
        session: Some(id.to_string()),
        backend: Some(backend.session_id.clone()),
        pid: Some(backend.pid),
        user: Some(backend.user.clone()),
        text: text.map(str::to_string),
        detail,
        at: at.to_string(),
    };
    if session.db_user.as_deref() != Some(backend.user.as_str())
        || session.database.as_deref() != Some(backend.dbname.as_str())
    {
        report.differences.push(diff(
            Kind::IdentityMismatch,
            None,
            format!(
                "the proxy logged in as {:?} to {:?}; the server process is {:?} on {:?}",
                session.db_user.as_deref().unwrap_or("?"),
                session.database.as_deref().unwrap_or("?"),
                backend.user,
                backend.dbname
            ),
            &session.at,
        ));
    }
    let (mut g, mut e) = (0usize, 0usize);
    // The entries May executions paired with, the last few: a Bind recorded apart from its
    // Execute (portals bound in turn, then executed in later messages) pairs with the entry
    // pgaudit logged at the Bind, and the Execute's record finds it taken.
    let mut taken_by_may: std::collections::VecDeque<usize> = Default::default();
    // Substatement entries (group, entry) executions have paired with.
    let mut claimed = std::collections::HashSet::new();
    let execs = &session.executions;
    for (i, exec) in execs.iter().enumerate() {
        // Statements the server ran while converting a Bind's parameters are logged during
        // the Bind, before its own entry: entries at the cursor logged while binding that
        // neither it nor the executions that follow explain are the Bind's.
        if exec.converts {
            while backend.groups.get(g).is_some_and(|grp| {
                grp.at_bind
                    && !grp.ran_past_bind
                    && !exec.matches(grp)
                    && !execs[i + 1..]
                        .iter()
                        .take(LOOKAHEAD)
                        .any(|next| next.matches(grp))
            }) {
                report.summary.matched_statements += 1;
                report.summary.bind_time_statements += 1;
                g += 1;
            }
        }
        match exec.audit {
            // A Query behind a portal bound and not executed is logged as a substatement of
            // the bound statement, the entry just paired: there before anywhere ahead.
            Expect::Must
                if !backend.groups.get(g).is_some_and(|grp| exec.matches(grp))
                    && claim_substatement(exec, &backend.groups[..g], 1, &mut claimed) =>
            {
                report.summary.matched_statements += 1;
            }
            Expect::Must => {
                // The entry at the cursor, or a later one if pairing there agrees better with
                // what follows than taking this execution as missing (a repeated text must not
                // pull the pairing past the entry it belongs to).
                let later = (g..backend.groups.len())
                    .find(|&j| exec.matches(&backend.groups[j]))
                    .filter(|&j| {
                        j == g
                            || 1 + agreeing(&execs[i + 1..], &backend.groups[j + 1..], LOOKAHEAD)
                                > agreeing(&execs[i + 1..], &backend.groups[g..], LOOKAHEAD + 1)
                    });
                // Its Bind's entry, already paired, before a later entry of the same text.
                // (The Bind's own entry is its group's first; the latest such Bind.)
                let bound = taken_by_may
                    .iter()
                    .rposition(|&t| exec.same_text(backend.groups[t].text()));
                match later.filter(|&j| j == g || bound.is_none()) {
                    Some(j) => {
                        for skipped in &backend.groups[g..j] {
                            report.differences.push(unrecorded(&diff, skipped));
                        }
                        report.summary.matched_statements += 1;
                        g = j + 1;
                    }
                    None if bound.is_some() => {
                        taken_by_may.remove(bound.unwrap_or_default());
                    }
                    // pgaudit numbers a statement that runs while an earlier statement's
                    // portal is still open (a cursor fetched in parts, then COMMIT; a portal
                    // bound and not yet executed, then a Query) as a substatement of it: the
                    // entry is in a group already passed, not yet claimed.
                    None if claim_substatement(
                        exec,
                        &backend.groups[..g],
                        LOOKAHEAD,
                        &mut claimed,
                    ) =>
                    {
                        report.summary.matched_statements += 1;
                    }
                    None => report.differences.push(diff(
                        Kind::MissingInPgaudit,
                        exec.text.as_deref(),
                        format!(
                            "record seq {}{} ran ({}) but pgaudit has no entry for it",
                            exec.seq,
                            exec.index.map(|i| format!(" part {i}")).unwrap_or_default(),
                            exec.result
                        ),
                        &exec.at,
                    )),
                }
            }
            Expect::May => {
                // Without a text (a portal or statement the server did not have) it cannot
                // be told apart from any entry: it pairs with none. With one, at the cursor,
                // or later only when what follows agrees better from there: not pairing a
                // May execution is no difference, while skipping entries makes each one a
                // difference, so pairing it is no reason of its own to skip.
                let later = exec
                    .text
                    .as_ref()
                    .and_then(|_| {
                        (g..backend.groups.len()).find(|&j| exec.matches(&backend.groups[j]))
                    })
                    .filter(|&j| {
                        j == g
                            || 1 + agreeing(&execs[i + 1..], &backend.groups[j + 1..], LOOKAHEAD)
                                > agreeing(&execs[i + 1..], &backend.groups[g..], LOOKAHEAD + 1)
                    });
                if let Some(j) = later {
                    for skipped in &backend.groups[g..j] {
                        report.differences.push(unrecorded(&diff, skipped));
                    }
                    report.summary.matched_statements += 1;
                    taken_by_may.push_back(j);
                    if taken_by_may.len() > LOOKAHEAD {
                        taken_by_may.pop_front();
                    }
                    g = j + 1;
                }
            }
            Expect::No => {}
        }
        match &exec.error {
            Some((code, true)) => {
                match (e..backend.errors.len()).find(|&k| exec.matches_error(code, &backend.errors[k])) {
                    Some(k) => {
                        for skipped in &backend.errors[e..k] {
                            unrecorded_error(&diff, skipped, report);
                        }
                        e = k + 1;
                    }
                    None => report.differences.push(diff(
                        Kind::ErrorMissingInServerLog,
                        exec.text.as_deref(),
                        format!(
                            "record seq {}{} failed with {code} but the server logged no such error",
                            exec.seq,
                            exec.index.map(|i| format!(" part {i}")).unwrap_or_default(),
                        ),
                        &exec.at,
                    )),
                }
            }
            Some((code, false))
                if backend
                    .errors
                    .get(e)
                    .is_some_and(|err| exec.matches_error(code, err)) =>
            {
                e += 1;
            }
            Some((_, false)) | None => {}
        }
    }
    for group in &backend.groups[g..] {
        report.differences.push(unrecorded(&diff, group));
    }
    for err in &backend.errors[e..] {
        unrecorded_error(&diff, err, report);
    }
}

/// Pairs `exec` with a substatement entry of its text in one of the last `back` groups
/// passed (newest first) that no execution has claimed yet.
fn claim_substatement(
    exec: &Execution,
    passed: &[Group],
    back: usize,
    claimed: &mut std::collections::HashSet<(usize, usize)>,
) -> bool {
    let from = passed.len().saturating_sub(back);
    let found = (from..passed.len()).rev().find_map(|gi| {
        (1..passed[gi].entries.len())
            .find(|&ei| {
                !claimed.contains(&(gi, ei)) && exec.same_text(&passed[gi].entries[ei].text)
            })
            .map(|ei| (gi, ei))
    });
    found.is_some_and(|at| claimed.insert(at))
}

/// How many of the next executions pair with the next entries without a difference, up to
/// `cap` of them. Staying counts one further than jumping ahead: when both reach
/// [`LOOKAHEAD`] nothing says jumping agrees better, and `1 + 16 > 16` jumped past the
/// entry of a Bind-only record whose text was bound again two records later.
fn agreeing(execs: &[Execution], groups: &[Group], cap: usize) -> usize {
    let (mut g, mut n) = (0usize, 0usize);
    for exec in execs {
        if n >= cap {
            break;
        }
        // An Execute of a portal bound apart pairs with its Bind's entry or one of its own:
        // it says nothing about which way the next entries go.
        if exec.bound_apart {
            continue;
        }
        let here = groups.get(g).is_some_and(|grp| exec.matches(grp))
            && (exec.audit == Expect::Must || exec.text.is_some());
        match exec.audit {
            // A substatement of the entry just paired (see `compare`): agrees.
            Expect::Must
                if !here
                    && g > 0
                    && groups[g - 1].entries[1..]
                        .iter()
                        .any(|e| exec.same_text(&e.text)) =>
            {
                n += 1;
            }
            // One that pairs nowhere ahead is a difference (or a substatement of a group
            // passed) whichever way: it does not decide between the two.
            Expect::Must
                if !here
                    && !groups[g.min(groups.len())..]
                        .iter()
                        .take(LOOKAHEAD)
                        .any(|grp| exec.matches(grp)) => {}
            Expect::Must if !here => break,
            Expect::Must | Expect::May if here => {
                g += 1;
                n += 1;
            }
            _ => {}
        }
    }
    n
}

/// How far ahead the pairing looks to decide between "missing here" and "extra there".
const LOOKAHEAD: usize = 16;

fn unrecorded(
    diff: &impl Fn(Kind, Option<&str>, String, &str) -> Difference,
    group: &Group,
) -> Difference {
    diff(
        Kind::MissingInProxy,
        Some(group.text()),
        format!(
            "pgaudit statement {} ({}){} has no proxy record",
            group.statement_id,
            group.command(),
            group.nested()
        ),
        &group.at,
    )
}

fn unrecorded_error(
    diff: &impl Fn(Kind, Option<&str>, String, &str) -> Difference,
    err: &ServerError,
    report: &mut Report,
) {
    // The proxy records statements, not Describe or Close messages: their failed lookups
    // ran nothing, and are counted, not reported.
    if err.statement.is_none() && matches!(err.code.as_str(), "26000" | "34000") {
        report.summary.lookup_errors += 1;
        return;
    }
    report.differences.push(diff(
        Kind::ErrorMissingInProxy,
        err.statement.as_deref(),
        format!(
            "the server logged error {} ({}) that no proxy record explains",
            err.code, err.message
        ),
        &err.at,
    ));
}

// ---- The proxy's side -------------------------------------------------------------------

/// What pgaudit puts after `PASSWORD` in a role statement, in place of the rest.
const PGAUDIT_REDACTED: &str = " <REDACTED>";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The server ran it: pgaudit must have it.
    Must,
    /// pgaudit may have it.
    May,
    /// It never reached the server's executor.
    No,
}

#[derive(Debug)]
struct Execution {
    seq: u64,
    index: Option<usize>,
    /// What pgaudit logs for it (the whole query string for a simple Query); `None` when
    /// the proxy does not know the text.
    text: Option<String>,
    redacted: bool,
    audit: Expect,
    /// The SQLSTATE of a failure, and whether the server's ERROR line must be there.
    error: Option<(String, bool)>,
    /// The outcome, for messages.
    result: String,
    /// A Bind converting parameters (see [`Pending`]).
    converts: bool,
    /// An Execute of a portal bound in an earlier record: pgaudit logged a SELECT's entry
    /// at that Bind, anything else's now.
    bound_apart: bool,
    at: String,
}

impl Execution {
    fn error_must(&self) -> bool {
        matches!(self.error, Some((_, true)))
    }

    fn same_text(&self, server: &str) -> bool {
        let Some(text) = &self.text else {
            return true;
        };
        // pgaudit's own redaction of CREATE/ALTER ROLE ... PASSWORD: the text up to the first
        // `password` (any case), then ` <REDACTED>`. Only that prefix can be compared.
        if let Some(prefix) = server.strip_suffix(PGAUDIT_REDACTED) {
            if prefix.to_ascii_lowercase().ends_with("password") {
                return text.starts_with(prefix);
            }
        }
        if self.redacted {
            return match crate::sql::redact::redact(server) {
                crate::sql::Redaction::Clean => server == text,
                crate::sql::Redaction::Redacted(r) | crate::sql::Redaction::Ambiguous(r) => {
                    &r == text
                }
            };
        }
        server == text
    }

    fn matches(&self, group: &Group) -> bool {
        group
            .entries
            .iter()
            .any(|entry| self.same_text(&entry.text))
    }

    fn matches_error(&self, code: &str, err: &ServerError) -> bool {
        (code.is_empty() || err.code == code)
            && err.statement.as_deref().is_none_or(|s| self.same_text(s))
    }
}

#[derive(Debug, Default)]
struct Session {
    db_user: Option<String>,
    database: Option<String>,
    backend_pid: Option<i32>,
    connect_secs: Option<i64>,
    upstream_secs: Option<i64>,
    executions: Vec<Execution>,
    /// Where the session's first record is.
    at: String,
}

struct Proxy {
    sessions: BTreeMap<String, Session>,
    db_users: HashSet<String>,
}

/// A statement record waiting for its outcomes.
struct Pending {
    session: String,
    seq: u64,
    text: Option<String>,
    redacted: bool,
    /// Simple: the number of statements; extended: `None`.
    of: Option<usize>,
    executes: bool,
    /// It has a Bind (the server may have started a SELECT's executor there).
    binds: bool,
    /// A Bind with parameters: converting them may run SQL (a domain's CHECK, an input
    /// function), which pgaudit logs as statements of their own.
    converts: bool,
    at: String,
    outcomes: BTreeMap<Option<usize>, Value>,
}

fn read_proxy(files: &[AuditFile]) -> anyhow::Result<Proxy> {
    let mut sessions: BTreeMap<String, Session> = BTreeMap::new();
    let mut db_users = HashSet::new();
    let mut pending: Vec<Pending> = Vec::new();
    let mut by_ref: HashMap<(String, u64), usize> = HashMap::new();
    for_each_json(files, |v, at| {
        let Some(session_id) = v["session"].as_str() else {
            return Ok(());
        };
        let kind = v["type"].as_str().unwrap_or("");
        let session = sessions.entry(session_id.to_string()).or_default();
        if session.at.is_empty() {
            session.at = at.to_string();
        }
        if let (Some(user), Some(db)) = (v["db_user"].as_str(), v["database"].as_str()) {
            session.db_user = Some(user.to_string());
            session.database = Some(db.to_string());
            db_users.insert(user.to_string());
        }
        let secs = || {
            v["ts"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp())
        };
        match kind {
            "connect" => session.connect_secs = secs(),
            "upstream" => {
                session.upstream_secs = secs();
                session.backend_pid = v["backend_pid"]
                    .as_i64()
                    .and_then(|p| i32::try_from(p).ok());
            }
            "statement" => {
                let seq = v["seq"]
                    .as_u64()
                    .ok_or_else(|| anyhow::anyhow!("{at}: no seq"))?;
                let simple = v["protocol"] == "simple";
                let has = |step: &str| {
                    v["steps"]
                        .as_array()
                        .is_some_and(|s| s.iter().any(|x| x == step))
                };
                let executes = simple || has("execute");
                let binds = has("bind");
                by_ref.insert((session_id.to_string(), seq), pending.len());
                pending.push(Pending {
                    session: session_id.to_string(),
                    seq,
                    text: v["statement"].as_str().map(str::to_string),
                    redacted: v["redacted"] == true,
                    of: simple.then(|| v["of"].as_u64().unwrap_or(1) as usize),
                    executes,
                    binds,
                    converts: binds && v["params"].as_array().is_some_and(|p| !p.is_empty()),
                    at: at.to_string(),
                    outcomes: BTreeMap::new(),
                });
            }
            "outcome" => {
                let Some(seq) = v["ref"].as_u64() else {
                    return Ok(());
                };
                if let Some(&i) = by_ref.get(&(session_id.to_string(), seq)) {
                    let index = v["index"].as_u64().map(|i| i as usize);
                    pending[i].outcomes.insert(index, v.clone());
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    for p in pending {
        let Some(session) = sessions.get_mut(&p.session) else {
            continue;
        };
        let indexes: Vec<Option<usize>> = match p.of {
            Some(of) => (0..of).map(Some).collect(),
            None => vec![None],
        };
        for index in indexes {
            // An outcome of the record as a whole stands for each of its parts.
            let outcome = p.outcomes.get(&index).or_else(|| p.outcomes.get(&None));
            let (audit, error, result) = expectation(outcome, p.executes, p.binds);
            session.executions.push(Execution {
                seq: p.seq,
                index: p.of.filter(|&n| n > 1).and(index),
                text: p.text.clone(),
                redacted: p.redacted,
                audit,
                error,
                result,
                converts: p.converts,
                bound_apart: p.executes && !p.binds && p.of.is_none(),
                at: p.at.clone(),
            });
        }
    }
    Ok(Proxy { sessions, db_users })
}

/// What the server log must or may have for an outcome.
fn expectation(
    outcome: Option<&Value>,
    executes: bool,
    binds: bool,
) -> (Expect, Option<(String, bool)>, String) {
    let Some(o) = outcome else {
        // No outcome at all (the proxy stopped): it may or may not have run.
        return (Expect::May, None, "no outcome recorded".into());
    };
    let status = o["status"].as_str().unwrap_or("");
    let code = o["sqlstate"].as_str().unwrap_or("").to_string();
    match status {
        "ok" => {
            let tag = o["tag"].as_str().unwrap_or("");
            let audit = if tag == "EMPTY" || !(executes || binds) {
                Expect::No
            } else if !executes {
                // A Bind without an Execute: the server starts a SELECT's executor at Bind,
                // and pgaudit logs it then.
                Expect::May
            } else if tag.starts_with("ROLLBACK") {
                // pgaudit logs nothing in an aborted transaction, where COMMIT and ROLLBACK
                // both answer ROLLBACK.
                Expect::May
            } else {
                Expect::Must
            };
            (audit, None, format!("ok, {tag}"))
        }
        "error" => (
            Expect::May,
            Some((code.clone(), true)),
            format!("error {code}"),
        ),
        "unknown" => (Expect::May, Some((String::new(), false)), "unknown".into()),
        // The server starts a SELECT's executor at Bind (pgaudit logs it then): a Bind that
        // ran before a later message of its segment failed is logged, its Execute skipped.
        "not_executed" if binds => (Expect::May, None, "not_executed".into()),
        other => (Expect::No, None, other.to_string()),
    }
}

// ---- The server's side ------------------------------------------------------------------

#[derive(Debug)]
struct Entry {
    text: String,
    class: String,
    command: String,
}

/// One pgaudit statement (a statement id) with its substatements.
#[derive(Debug)]
struct Group {
    statement_id: u64,
    entries: Vec<Entry>,
    /// Logged while the server was binding (jsonlog's `ps` is `BIND`).
    at_bind: bool,
    /// Started at a Bind with entries logged after it: a portal that then ran (a function
    /// it called), not SQL run while converting a Bind's parameters.
    ran_past_bind: bool,
    at: String,
}

impl Group {
    /// The top-level statement's text (substatement 1), else the first entry's.
    fn text(&self) -> &str {
        self.entries.first().map(|e| e.text.as_str()).unwrap_or("")
    }

    fn command(&self) -> String {
        self.entries
            .first()
            .map(|e| format!("{} {}", e.class, e.command))
            .unwrap_or_default()
    }

    /// What else pgaudit logged under this statement (a function's, procedure's or
    /// trigger's statements), for messages: empty when nothing.
    fn nested(&self) -> String {
        let Some(rest) = self.entries.get(1..).filter(|r| !r.is_empty()) else {
            return String::new();
        };
        let mut commands: Vec<String> = Vec::new();
        for e in rest {
            let c = format!("{} {}", e.class, e.command);
            if !commands.contains(&c) {
                commands.push(c);
            }
        }
        format!(
            ", which ran {} nested statement(s): {},",
            rest.len(),
            commands.join(", ")
        )
    }
}

#[derive(Debug)]
struct ServerError {
    code: String,
    message: String,
    statement: Option<String>,
    at: String,
}

/// One server process (pgaudit's `session_id`).
#[derive(Debug)]
struct Backend {
    session_id: String,
    pid: i32,
    start_secs: i64,
    user: String,
    dbname: String,
    application_name: String,
    /// The client's address as the server saw it (`[local]` for a Unix socket).
    remote_host: String,
    groups: Vec<Group>,
    errors: Vec<ServerError>,
}

fn read_server(files: &[PathBuf]) -> anyhow::Result<BTreeMap<String, Backend>> {
    let mut backends: BTreeMap<String, Backend> = BTreeMap::new();
    let files: Vec<AuditFile> = files.iter().cloned().map(AuditFile::Local).collect();
    for_each_json(&files, |v, at| {
        if v["backend_type"] != "client backend" {
            return Ok(());
        }
        let (Some(session_id), Some(pid)) = (v["session_id"].as_str(), v["pid"].as_i64()) else {
            return Ok(());
        };
        let start_secs = session_id
            .split('.')
            .next()
            .and_then(|h| i64::from_str_radix(h, 16).ok())
            .ok_or_else(|| anyhow::anyhow!("{at}: session_id {session_id:?} is not <hex>.<hex>"))?;
        let backend = backends
            .entry(session_id.to_string())
            .or_insert_with(|| Backend {
                session_id: session_id.to_string(),
                pid: pid as i32,
                start_secs,
                user: String::new(),
                dbname: String::new(),
                application_name: String::new(),
                remote_host: String::new(),
                groups: Vec::new(),
                errors: Vec::new(),
            });
        if let Some(u) = v["user"].as_str() {
            backend.user = u.to_string();
        }
        if let Some(d) = v["dbname"].as_str() {
            backend.dbname = d.to_string();
        }
        if let Some(a) = v["application_name"].as_str() {
            backend.application_name = a.to_string();
        }
        if let Some(h) = v["remote_host"].as_str() {
            backend.remote_host = h.to_string();
        }
        let message = v["message"].as_str().unwrap_or("");
        let severity = v["error_severity"].as_str().unwrap_or("");
        if let Some(csv) = message.strip_prefix("AUDIT: ") {
            let fields = parse_csv(csv);
            // AUDIT_TYPE,STATEMENT_ID,SUBSTATEMENT_ID,CLASS,COMMAND,OBJECT_TYPE,OBJECT_NAME,
            // STATEMENT,PARAMETER
            if fields.len() < 8 || fields[0] != "SESSION" {
                return Ok(());
            }
            let statement_id: u64 = fields[1]
                .parse()
                .map_err(|_| anyhow::anyhow!("{at}: bad pgaudit statement id {:?}", fields[1]))?;
            let mut text = fields[7].clone();
            // pgaudit numbers a statement whose portal starts while another portal is still
            // open as a substatement of that one; logged at Bind with a text of its own, it
            // is a statement of its own (a portal bound, not SQL run by a function).
            let at_bind = v["ps"] == "BIND";
            let same = backend.groups.last().is_some_and(|g| {
                g.statement_id == statement_id
                    && !(at_bind
                        && fields[2] != "1"
                        && g.entries.first().is_some_and(|e| e.text != fields[7]))
            });
            if text == "<previously logged>" {
                if let Some(prev) = backend
                    .groups
                    .last()
                    .filter(|_| same)
                    .and_then(|g| g.entries.first())
                {
                    text = prev.text.clone();
                }
            }
            let entry = Entry {
                text,
                class: fields[3].clone(),
                command: fields[4].clone(),
            };
            if same {
                if let Some(g) = backend.groups.last_mut() {
                    g.ran_past_bind |= g.at_bind && !at_bind;
                    g.entries.push(entry);
                }
            } else {
                backend.groups.push(Group {
                    statement_id,
                    entries: vec![entry],
                    at_bind,
                    ran_past_bind: false,
                    at: at.to_string(),
                });
            }
        } else if severity == "ERROR" {
            backend.errors.push(ServerError {
                code: v["state_code"].as_str().unwrap_or("").to_string(),
                message: message.to_string(),
                statement: v["statement"].as_str().map(str::to_string),
                at: at.to_string(),
            });
        }
        Ok(())
    })?;
    Ok(backends)
}

// ---- The rotation function's side ------------------------------------------------------

/// One `rotation test login` line of the rotation function's log.
#[derive(Debug)]
struct RotationLogEntry {
    secret: String,
    version: String,
    step: String,
    user: String,
    database: String,
    backend_pid: i32,
    secs: i64,
    at: String,
}

/// The test logins in the rotation function's log: files, or directories (every file in
/// them, by name). Lines that are not JSON, or not a test login, are skipped: the log holds
/// the function's other lines too.
fn read_rotation_log(paths: &[PathBuf]) -> anyhow::Result<Vec<RotationLogEntry>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file())
                .collect();
            inside.sort();
            files.extend(inside);
        } else {
            files.push(p.clone());
        }
    }
    let mut out = Vec::new();
    for path in &files {
        let file = std::fs::File::open(path)
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["message"] != ROTATION_TEST_LOGIN {
                continue;
            }
            let at = format!("{}:{}", display(path), i + 1);
            let text = |k: &str| {
                v[k].as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow::anyhow!("{at}: a test login line without {k:?}"))
            };
            let secs = v["timestamp"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp())
                .ok_or_else(|| anyhow::anyhow!("{at}: a test login line without a timestamp"))?;
            let backend_pid = v["backend_pid"]
                .as_i64()
                .and_then(|p| i32::try_from(p).ok())
                .ok_or_else(|| anyhow::anyhow!("{at}: a test login line without backend_pid"))?;
            out.push(RotationLogEntry {
                secret: text("secret")?,
                version: text("version")?,
                step: text("step")?,
                user: text("user")?,
                database: text("database")?,
                backend_pid,
                secs,
                at,
            });
        }
    }
    Ok(out)
}

/// pgaudit's CSV: fields separated by commas, quoted with `"` (doubled inside) when needed.
fn parse_csv(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
        } else if c == ',' {
            out.push(std::mem::take(&mut field));
            at_start = true;
            continue;
        } else if c == '"' && at_start {
            quoted = true;
        } else {
            field.push(c);
        }
        at_start = false;
    }
    out.push(field);
    out
}

/// Calls `f` with every line of `files` as JSON and its `file:line`.
fn for_each_json(
    files: &[AuditFile],
    mut f: impl FnMut(&Value, &str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for path in files {
        for (i, line) in path.open()?.lines().enumerate() {
            let line = line.map_err(|e| anyhow::anyhow!("reading {path}: {e}"))?;
            if line.trim().is_empty() {
                continue;
            }
            let at = format!("{path}:{}", i + 1);
            let v: Value = serde_json::from_str(&line)
                .map_err(|e| anyhow::anyhow!("{at}: not a JSON line: {e}"))?;
            f(&v, &at)?;
        }
    }
    Ok(())
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// A statement text on one line, cut at 160 characters.
fn short(text: &str) -> String {
    let one: String = text.chars().take(160).collect();
    let more = if text.chars().count() > 160 {
        "..."
    } else {
        ""
    };
    format!("{:?}{more}", one)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgaudit_csv_fields() {
        let f = parse_csv(
            r#"SESSION,3,1,READ,SELECT,,,"select 1; insert into t values (1,'x'), (2, ""y"")","41,hi""#,
        );
        assert_eq!(f.len(), 9);
        assert_eq!(f[7], r#"select 1; insert into t values (1,'x'), (2, "y")"#);
        assert_eq!(f[8], "41,hi");
        let exec = Execution {
            seq: 1,
            index: None,
            text: Some("ALTER USER bob PASSWORD '[REDACTED]'".into()),
            redacted: true,
            audit: Expect::Must,
            error: None,
            result: String::new(),
            converts: false,
            bound_apart: false,
            at: String::new(),
        };
        assert!(exec.same_text("ALTER USER bob PASSWORD <REDACTED>"));
        assert!(exec.same_text("ALTER USER bob PASSWORD 'secret'"));
        assert!(!exec.same_text("ALTER USER eve PASSWORD <REDACTED>"));
        assert!(!exec.same_text("ALTER USER bob PASSWORD 'secret' VALID UNTIL 'x'"));
        let f = parse_csv("SESSION,1,1,MISC,BEGIN,,,begin;,<none>");
        assert_eq!((f[4].as_str(), f[7].as_str()), ("BEGIN", "begin;"));
    }

    /// A call whose record is missing, in front of a Bind with parameters: its SELECT was
    /// logged at Bind, the function's INSERT at Execute. It is no statement run while
    /// binding the next record's parameters, and stays reported.
    #[test]
    fn a_call_that_ran_past_its_bind_is_not_taken_as_run_while_binding() {
        let dir = tempfile::tempdir().unwrap();
        let line = |ps: &str, audit: &str| {
            serde_json::json!({
                "backend_type": "client backend", "session_id": "6750a000.1f4", "pid": 500,
                "user": "rates_writer", "dbname": "rates", "ps": ps,
                "message": format!("AUDIT: SESSION,{audit},<not logged>"),
            })
            .to_string()
        };
        let log = |select_ran: &str| {
            [
                line("BIND", "1,1,READ,SELECT,,,SELECT log_call($1)"),
                line(
                    select_ran,
                    "1,2,WRITE,INSERT,,,INSERT INTO call_log (v) VALUES (v)",
                ),
                line("CALL", "2,1,WRITE,CALL,,,CALL log_proc($1)"),
            ]
            .join("\n")
        };
        let session = Session {
            db_user: Some("rates_writer".into()),
            database: Some("rates".into()),
            executions: vec![Execution {
                seq: 2,
                index: None,
                text: Some("CALL log_proc($1)".into()),
                redacted: false,
                audit: Expect::Must,
                error: None,
                result: String::new(),
                converts: true,
                bound_apart: false,
                at: String::new(),
            }],
            ..Default::default()
        };
        let differences = |select_ran: &str| {
            let path = dir.path().join(format!("{select_ran}.json"));
            std::fs::write(&path, log(select_ran)).unwrap();
            let server = read_server(&[path]).unwrap();
            let mut report = Report::default();
            compare("s", &session, &server["6750a000.1f4"], &mut report);
            (report.differences, report.summary.bind_time_statements)
        };
        let (found, bind_time) = differences("SELECT");
        assert_eq!(bind_time, 0);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, Kind::MissingInProxy);
        assert!(found[0]
            .detail
            .contains("1 nested statement(s): WRITE INSERT"));
        // All of it logged while binding (each text a statement of its own): SQL a domain's
        // check ran while the CALL's parameter was converted.
        let (found, bind_time) = differences("BIND");
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(bind_time, 2);
    }

    #[test]
    fn outcomes_say_what_the_server_log_must_have() {
        let ok = serde_json::json!({"status":"ok","tag":"SELECT 1"});
        assert_eq!(expectation(Some(&ok), true, false).0, Expect::Must);
        assert_eq!(expectation(Some(&ok), false, false).0, Expect::No);
        let rb = serde_json::json!({"status":"ok","tag":"ROLLBACK"});
        assert_eq!(expectation(Some(&rb), true, false).0, Expect::May);
        let err = serde_json::json!({"status":"error","sqlstate":"22012"});
        assert_eq!(
            expectation(Some(&err), true, false).1,
            Some(("22012".to_string(), true))
        );
        let refused = serde_json::json!({"status":"refused","sqlstate":"0A000"});
        assert_eq!(
            expectation(Some(&refused), true, false),
            (Expect::No, None, "refused".into())
        );
        // A skipped Execute: its Bind may have started the executor (and pgaudit logged it).
        let skipped = serde_json::json!({"status":"not_executed"});
        assert_eq!(expectation(Some(&skipped), true, true).0, Expect::May);
        assert_eq!(expectation(Some(&skipped), true, false).0, Expect::No);
    }
}

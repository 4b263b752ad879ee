//! The ledger: which audit record each server response belongs to. A pure state machine (no
//! I/O, no clock but the instants handed in), shared by the relay's two loops under one lock.
//!
//! **Client side** ([`Ledger::client`]): for each message the client sends, decide what is
//! recorded before it is forwarded (an [`Intent`]), and what the server will owe for it (a
//! [`Sent`] entry). A Query is recorded whole; a Parse with its text; a Bind with its
//! parameters; an Execute with the text and parameters it runs. A Parse, the Bind of that
//! statement and the Execute of that portal, sent together, share one record.
//!
//! **Server side** ([`Ledger::server`]): every server message is paired, in order, with the
//! entry at the front of the queue, following PostgreSQL's rules: after an error in the
//! extended protocol everything up to the next Sync is skipped; a rejected or skipped Bind
//! creates no portal; during COPY FROM STDIN the server reads the client's copy messages and
//! ignores Syncs. The server's prepared statements and portals are known only from what it
//! confirmed (ParseComplete, BindComplete, CloseComplete). A message that pairs with nothing
//! is a [`Violation`]: the relay ends the session, it never guesses.
//!
//! **Attribution.** The text recorded for a Bind or Execute is what the client side expects
//! the server to run: the server's confirmed statement, plus the changes still in flight.
//! Those changes can fail, so a Bind or Execute whose name has a change in flight *behind a
//! Sync* waits until the server has answered it ([`Action::Wait`]); within one pipeline
//! segment a failure skips the Bind too. When a BindComplete arrives, the statement the
//! server bound is compared with the one recorded; a difference is a violation.
//!
//! **COPY.** A message that can start COPY FROM STDIN (every Query, an Execute of a COPY)
//! holds back the client's next non-copy message until the server has answered it, so the
//! server's reading of copy messages is never ambiguous; a non-copy message in the middle of
//! copy data ends the session, and a Sync there is dropped (the server ignores it).

mod client;
mod server;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::audit::params;
use crate::audit::record::Outcome;
use crate::protocol::backend as be;
use crate::protocol::frontend::{self as fe, Target};
use crate::protocol::sqlstate;
use crate::protocol::ProtocolError;
use crate::sql::{self, Caller, Touches};

/// A prepared statement as the client defined it with Parse.
#[derive(Debug)]
pub struct Prepared {
    /// Unique in the session; 0 for a statement whose text the proxy does not know (made by
    /// SQL `PREPARE`, or possibly changed by SQL since).
    pub id: u64,
    /// The text as recorded (secrets redacted); `None` when not known.
    pub text: Option<Arc<str>>,
    /// The text needs no JSON escaping: checked once here, not at every Execute's record.
    pub plain: bool,
    pub redacted: bool,
    /// Parameter types: from the Parse, completed by the server's ParameterDescription.
    pub param_types: Vec<u32>,
    /// Starts with COPY.
    pub copy: bool,
    /// Runs SQL-level PREPARE/DEALLOCATE/DECLARE/CLOSE/DISCARD.
    pub touches: Touches,
}

impl Prepared {
    fn unknown() -> Arc<Prepared> {
        thread_local! {
            static UNKNOWN: Arc<Prepared> = Arc::new(Prepared {
                id: 0,
                text: None,
                plain: true,
                redacted: false,
                param_types: Vec::new(),
                copy: false,
                touches: Touches::default(),
            });
        }
        UNKNOWN.with(Arc::clone)
    }
}

/// A name as the ledger keeps it; the unnamed statement and portal (what most drivers use
/// for everything) cost no allocation.
fn name(n: &str) -> Arc<str> {
    static EMPTY: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));
    if n.is_empty() {
        EMPTY.clone()
    } else {
        Arc::from(n)
    }
}

/// How many entries in flight name each statement or portal; the unnamed one apart.
#[derive(Debug, Default)]
struct Counts {
    unnamed: u32,
    named: Names<u32>,
}

impl Counts {
    fn contains(&self, n: &str) -> bool {
        if n.is_empty() {
            self.unnamed > 0
        } else {
            !self.named.is_empty() && self.named.contains_key(n)
        }
    }

    fn add(&mut self, n: &str) {
        if n.is_empty() {
            self.unnamed += 1;
        } else if let Some(c) = self.named.get_mut(n) {
            *c += 1;
        } else {
            self.named.insert(Arc::from(n), 1);
        }
    }

    fn remove(&mut self, n: &str) {
        if n.is_empty() {
            self.unnamed = self.unnamed.saturating_sub(1);
        } else if let Some(c) = self.named.get_mut(n) {
            *c -= 1;
            if *c == 0 {
                self.named.remove(n);
            }
        }
    }
}

/// A portal as bound.
#[derive(Debug, Clone)]
pub struct Portal {
    pub statement: Arc<str>,
    pub prepared: Arc<Prepared>,
    /// The parameters' JSON.
    pub params: Arc<str>,
    /// The record of its execution, once executed.
    pub execution: Option<u64>,
}

/// What the client side asks the relay to record before forwarding.
#[derive(Debug, Clone)]
pub enum Intent {
    /// A Query message, recorded whole.
    Query {
        text: Arc<str>,
        redacted: bool,
        statements: Vec<std::ops::Range<usize>>,
    },
    /// One or more of Parse, Bind, Execute.
    Extended {
        steps: Steps,
        statement: Arc<str>,
        portal: Arc<str>,
        prepared: Arc<Prepared>,
        /// With Bind or Execute.
        params: Option<Arc<str>>,
    },
    /// Refused by the proxy: recorded, never forwarded.
    Refused {
        text: Arc<str>,
        redacted: bool,
        refusal: sql::Refusal,
    },
}

/// Which extended-protocol messages a record covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Steps {
    pub parse: bool,
    pub bind: bool,
    pub execute: bool,
}

impl Steps {
    const PARSE: Steps = Steps {
        parse: true,
        bind: false,
        execute: false,
    };

    /// The steps as the record's JSON array, e.g. `["bind","execute"]`: a constant per
    /// combination, not built for every statement.
    pub fn json(self) -> &'static str {
        match (self.parse, self.bind, self.execute) {
            (false, false, false) => "[]",
            (true, false, false) => r#"["parse"]"#,
            (false, true, false) => r#"["bind"]"#,
            (false, false, true) => r#"["execute"]"#,
            (true, true, false) => r#"["parse","bind"]"#,
            (true, false, true) => r#"["parse","execute"]"#,
            (false, true, true) => r#"["bind","execute"]"#,
            (true, true, true) => r#"["parse","bind","execute"]"#,
        }
    }

    /// The step names one by one: the tests' reference for [`Steps::json`].
    #[cfg(test)]
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        [
            (self.parse, "parse"),
            (self.bind, "bind"),
            (self.execute, "execute"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
    }
}

/// Where an intent's record is: its index in the batch being built, then its sequence
/// number once the batch is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rec {
    Batch(usize),
    Seq(u64),
}

impl Rec {
    fn seq(self) -> u64 {
        match self {
            Rec::Seq(s) => s,
            Rec::Batch(_) => unreachable!("a batch is resolved before it is queued"),
        }
    }
}

/// The record a message belongs to; `last` on the message whose answer ends the record.
#[derive(Debug, Clone, Copy)]
struct Part {
    rec: Rec,
    last: bool,
}

/// A forwarded message the server still owes an answer for (or will consume silently).
#[derive(Debug)]
enum Sent {
    Query {
        rec: Rec,
        count: usize,
        next: usize,
        since: Instant,
        rows: u64,
        touches: Touches,
    },
    Parse {
        name: Arc<str>,
        prepared: Arc<Prepared>,
        part: Part,
    },
    Bind {
        portal: Arc<str>,
        statement: Arc<str>,
        /// The statement the record says this binds (by `Prepared::id`).
        expect: u64,
        params: Arc<str>,
        part: Part,
    },
    Describe {
        statement: Option<Arc<str>>,
    },
    Execute {
        portal: Arc<str>,
        part: Part,
        since: Instant,
        rows: u64,
        /// A later fetch of an execution already recorded.
        fetch: bool,
        copy: bool,
        touches: Touches,
    },
    Close {
        statement: bool,
        name: Arc<str>,
    },
    Sync,
    /// One or more CopyData messages in a row.
    CopyData,
    /// CopyDone or CopyFail.
    CopyEnd,
    /// A message the proxy refused itself: it answers ErrorResponse and ReadyForQuery when
    /// this reaches the front.
    Refused {
        code: &'static str,
        message: &'static str,
    },
}

impl Sent {
    /// Whether the server may answer this by reading COPY data from the client.
    fn may_copy(&self) -> bool {
        matches!(self, Sent::Query { .. } | Sent::Execute { copy: true, .. })
    }

    fn statement_name(&self) -> Option<&str> {
        match self {
            Sent::Parse { name, .. } => Some(name),
            Sent::Close {
                statement: true,
                name,
            } => Some(name),
            _ => None,
        }
    }

    fn portal_name(&self) -> Option<&str> {
        match self {
            Sent::Bind { portal, .. } | Sent::Execute { portal, .. } => Some(portal),
            Sent::Close {
                statement: false,
                name,
            } => Some(name),
            _ => None,
        }
    }

    fn touches(&self) -> Touches {
        match self {
            Sent::Query { touches, .. } | Sent::Execute { touches, .. } => *touches,
            _ => Touches::default(),
        }
    }
}

/// A hasher for the names a session gives its statements and portals: a few multiplies per
/// name instead of SipHash's rounds. The names come from the session's own (authenticated)
/// client and the map is the session's own, so crafted collisions slow only that session.
#[derive(Default, Clone, Copy)]
struct NameHasher(u64);

impl std::hash::Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0xf135_7aea_2e62_a9c5;
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            h = (h.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
        self.0 = h;
    }

    fn write_u8(&mut self, b: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0xf135_7aea_2e62_a9c5);
    }

    fn finish(&self) -> u64 {
        // hashbrown takes its control bits from the top: fold the well-mixed high bits down.
        self.0.rotate_left(26)
    }
}

type Names<T> = HashMap<Arc<str>, T, std::hash::BuildHasherDefault<NameHasher>>;

/// Statements or portals by name, the unnamed one kept apart (most drivers use only it).
#[derive(Debug)]
struct ByName<T> {
    unnamed: Option<T>,
    named: Names<T>,
}

impl<T> Default for ByName<T> {
    fn default() -> Self {
        ByName {
            unnamed: None,
            named: Names::default(),
        }
    }
}

impl<T> ByName<T> {
    fn get(&self, name: &str) -> Option<&T> {
        match name {
            "" => self.unnamed.as_ref(),
            _ => self.named.get(name),
        }
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut T> {
        match name {
            "" => self.unnamed.as_mut(),
            _ => self.named.get_mut(name),
        }
    }

    /// The entry of `name`, with the name as this map keeps it.
    fn get_with_key(&self, name: &str) -> Option<(Arc<str>, &T)> {
        match name {
            "" => self.unnamed.as_ref().map(|v| (self::name(""), v)),
            _ => self.named.get_key_value(name).map(|(k, v)| (k.clone(), v)),
        }
    }

    /// `n` as this map keeps it, so a name used again is not allocated again.
    fn key(&self, n: &str) -> Arc<str> {
        self.get_with_key(n).map_or_else(|| name(n), |(k, _)| k)
    }

    /// Forgets every entry, keeping the map's memory (a portal map empties at every
    /// ReadyForQuery outside a transaction).
    fn clear(&mut self) {
        self.unnamed = None;
        if !self.named.is_empty() {
            self.named.clear();
        }
    }

    fn set(&mut self, name: &Arc<str>, value: Option<T>) {
        match (name.is_empty(), value) {
            (true, v) => self.unnamed = v,
            (false, Some(v)) => {
                self.named.insert(name.clone(), v);
            }
            (false, None) => {
                self.named.remove(name);
            }
        }
    }
}

/// What the relay does with a client message.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Forward,
    /// Hold this message (and everything after it) until the server has answered what it
    /// depends on; then ask again.
    Wait,
    /// Do not forward it (a Sync inside COPY data, which the server would ignore).
    Drop,
    /// Not forwarded: the proxy answers it itself, in its turn.
    Refuse,
}

/// The session cannot go on: the proxy cannot tell what the server runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("{0}")]
    Protocol(String),
    #[error("the proxy could not pair a {0} message from the database with a request")]
    Unpaired(char),
    #[error("the database bound statement {statement:?} differently from what was recorded")]
    Attribution { statement: String },
    #[error("the database reported {name} = {value}; dbgw pins it and ends the session")]
    Setting { name: String, value: String },
    /// A refused statement that could not be answered in its turn.
    #[error("{}", .0.message())]
    Refused(sql::Refusal),
    /// A FunctionCall that could not be refused in its turn.
    #[error("{FUNCTION_CALL_REFUSED}")]
    FunctionCall,
    /// A client message over `limits.max_message_bytes`.
    #[error("{0}")]
    TooLarge(crate::protocol::frame::FrameError),
}

impl Violation {
    /// The SQLSTATE the client's FATAL carries.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Violation::Refused(r) => r.sqlstate(),
            Violation::FunctionCall | Violation::Setting { .. } => sqlstate::FEATURE_NOT_SUPPORTED,
            Violation::TooLarge(_) => sqlstate::PROGRAM_LIMIT_EXCEEDED,
            Violation::Protocol(_) | Violation::Unpaired(_) | Violation::Attribution { .. } => {
                sqlstate::PROTOCOL_VIOLATION
            }
        }
    }
}

impl From<crate::protocol::frame::FrameError> for Violation {
    fn from(e: crate::protocol::frame::FrameError) -> Self {
        match e {
            crate::protocol::frame::FrameError::TooLarge { .. } => Violation::TooLarge(e),
            other => Violation::Protocol(other.to_string()),
        }
    }
}

impl From<ProtocolError> for Violation {
    fn from(e: ProtocolError) -> Self {
        Violation::Protocol(e.0)
    }
}

/// How a recorded statement ended, for an outcome record.
#[derive(Debug)]
pub struct Finished<'a> {
    pub seq: u64,
    /// The statement's index in a Query string.
    pub index: Option<usize>,
    pub outcome: Outcome<'a>,
    pub since: Instant,
}

/// Progress through the answer to the entry at the front.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    #[default]
    Start,
    /// A Query's statement sent RowDescription; DataRows follow.
    Rows,
    /// A Describe of a statement sent ParameterDescription; RowDescription or NoData next.
    Described,
    CopyIn,
    CopyOut,
}

/// One execution (an Execute and its later fetches), from the moment it is queued until
/// its outcome is recorded.
#[derive(Debug, Clone)]
struct Run {
    since: Instant,
    rows: u64,
    /// Execute messages of it still in the queue.
    pending: u32,
    /// The server has answered at least one of them (suspended).
    started: bool,
    /// It completed (this tag) while a later Execute of the portal was still in flight.
    completed: Option<String>,
}

/// Executions in flight or suspended, by record: a handful at most, so a small vector
/// beats hashing on the hot path.
#[derive(Debug, Default)]
struct Runs(Vec<(u64, Run)>);

impl Runs {
    fn contains_key(&self, seq: &u64) -> bool {
        self.0.iter().any(|(s, _)| s == seq)
    }

    fn get_mut(&mut self, seq: &u64) -> Option<&mut Run> {
        self.0.iter_mut().find(|(s, _)| s == seq).map(|(_, r)| r)
    }

    fn insert(&mut self, seq: u64, run: Run) {
        match self.get_mut(&seq) {
            Some(r) => *r = run,
            None => self.0.push((seq, run)),
        }
    }

    fn remove(&mut self, seq: &u64) -> Option<Run> {
        let i = self.0.iter().position(|(s, _)| s == seq)?;
        Some(self.0.swap_remove(i).1)
    }

    fn iter(&self) -> impl Iterator<Item = (&u64, &Run)> {
        self.0.iter().map(|(s, r)| (s, r))
    }

    fn drain(&mut self) -> impl Iterator<Item = (u64, Run)> + '_ {
        self.0.drain(..)
    }
}

/// What an Execute will run, as the client side expects it.
#[derive(Debug)]
enum Expected {
    /// A bound portal not executed yet (or executed to its end).
    Bound(Portal),
    /// An execution that may return more rows (`copy`: it may read COPY data): the same
    /// record.
    Running { rec: Rec, copy: bool },
    /// A portal the proxy did not see bound (a SQL cursor) or whose content is unknown.
    Unknown,
}

/// Pairing state of one session.
#[derive(Debug)]
pub struct Ledger {
    caller: Caller,
    param_cap: usize,
    /// Where a Bind's parameters are rendered as JSON before one copy into their `Arc<str>`.
    params_buf: String,
    next_id: u64,
    // What the server has confirmed.
    statements: ByName<Arc<Prepared>>,
    portals: ByName<Portal>,
    runs: Runs,
    status: u8,
    // What is in flight: the queue (forwarded) and the batch (being recorded).
    queue: VecDeque<Sent>,
    batch: Vec<Sent>,
    intents: Vec<Intent>,
    /// The record the next Bind or Execute may join: (index in `intents`, its steps).
    open: Option<(usize, Steps)>,
    /// How many queued or batched entries name each statement / portal, or touch names.
    in_flight_statements: Counts,
    in_flight_portals: Counts,
    in_flight_touches: u32,
    /// Entries that may read COPY data, queued or batched: copy data the client sends while
    /// one is in flight is a copy stream.
    in_flight_copies: u32,
    /// Query messages (and, read-only, Syncs) in flight: the next message that is not copy
    /// data waits for them ([`Ledger::holds_back`]).
    in_flight_queries: u32,
    // Server side.
    phase: Phase,
    /// After an error in the extended protocol, the server skips messages until a Sync.
    skipping: bool,
    /// The record whose failure was just reported: the skip after it does not report it
    /// again.
    failed: Option<u64>,
    // Client side.
    /// The client is sending CopyData for a message that may be copying.
    copy_stream: bool,
    /// The last execution that completed since the last ReadyForQuery, and when: a failed
    /// commit at Sync is recorded as its outcome.
    last_executed: Option<(u64, Instant)>,
    /// The session is read-only ([`sql::read_only`]): a Sync holds back what follows it
    /// until its ReadyForQuery (and the settings reported before it) is seen, and nothing
    /// is executed after a transaction-ending Execute before the next Sync.
    read_only: bool,
    /// A transaction-ending statement was executed since the last Sync.
    ended_unsynced: bool,
}

impl Ledger {
    pub fn new(caller: Caller, param_cap: usize, status: u8) -> Ledger {
        Ledger {
            caller,
            param_cap,
            params_buf: String::new(),
            next_id: 1,
            statements: ByName::default(),
            portals: ByName::default(),
            runs: Runs::default(),
            status,
            queue: VecDeque::new(),
            batch: Vec::new(),
            intents: Vec::new(),
            open: None,
            in_flight_statements: Counts::default(),
            in_flight_portals: Counts::default(),
            in_flight_touches: 0,
            in_flight_copies: 0,
            in_flight_queries: 0,
            phase: Phase::Start,
            skipping: false,
            failed: None,
            copy_stream: false,
            last_executed: None,
            read_only: false,
            ended_unsynced: false,
        }
    }

    /// Makes the session read-only (see [`sql::read_only`]).
    pub fn set_read_only(&mut self) {
        self.read_only = true;
    }

    /// Whether `s` holds back the messages after it until it is answered: a Query (it may
    /// read COPY data), and in a read-only session a Sync (a new transaction starts after
    /// it; the server reports a changed default only at its ReadyForQuery).
    fn holds_back(&self, s: &Sent) -> bool {
        matches!(s, Sent::Query { .. }) || (self.read_only && matches!(s, Sent::Sync))
    }

    /// Transaction status of the last ReadyForQuery.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// Nothing is owed by the server and nothing is being recorded.
    pub fn idle(&self) -> bool {
        self.queue.is_empty() && self.batch.is_empty()
    }
}

pub const FUNCTION_CALL_REFUSED: &str =
    "FunctionCall messages are refused: they carry no SQL text to audit";

fn printable(tag: u8) -> char {
    crate::protocol::frame::printable(tag)
}

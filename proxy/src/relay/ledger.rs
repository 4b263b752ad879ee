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
    named: HashMap<Arc<str>, u32>,
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

/// Statements or portals by name, the unnamed one kept apart (most drivers use only it).
#[derive(Debug)]
struct ByName<T> {
    unnamed: Option<T>,
    named: HashMap<Arc<str>, T>,
}

impl<T> Default for ByName<T> {
    fn default() -> Self {
        ByName {
            unnamed: None,
            named: HashMap::new(),
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

    /// `n` as this map keeps it, so a name used again is not allocated again.
    fn key(&self, n: &str) -> Arc<str> {
        if n.is_empty() {
            return name(n);
        }
        match self.named.get_key_value(n) {
            Some((k, _)) => k.clone(),
            None => name(n),
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
    /// Query messages in flight: the next message that is not copy data waits for them.
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
}

impl Ledger {
    pub fn new(caller: Caller, param_cap: usize, status: u8) -> Ledger {
        Ledger {
            caller,
            param_cap,
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
        }
    }

    /// Transaction status of the last ReadyForQuery.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// Nothing is owed by the server and nothing is being recorded.
    pub fn idle(&self) -> bool {
        self.queue.is_empty() && self.batch.is_empty()
    }

    // ---------------------------------------------------------------- client side

    /// Decides what to do with one complete client message (`tag`, `body`). After
    /// [`Action::Wait`] nothing has changed: ask again once the server has answered more.
    pub fn client(&mut self, tag: u8, body: &[u8], now: Instant) -> Result<Action, Violation> {
        if self.copy_stream {
            return match tag {
                fe::COPY_DATA | fe::FLUSH | fe::TERMINATE => Ok(Action::Forward),
                fe::COPY_DONE | fe::COPY_FAIL => {
                    self.copy_stream = false;
                    self.push(Sent::CopyEnd);
                    Ok(Action::Forward)
                }
                // Ignored by a server that is copying; never sent, so never ambiguous.
                fe::SYNC => Ok(Action::Drop),
                other => Err(Violation::Protocol(format!(
                    "message {:?} sent in the middle of COPY data",
                    printable(other)
                ))),
            };
        }
        match tag {
            fe::COPY_DATA => {
                self.copy_stream = self.in_flight_copies > 0;
                if !matches!(self.last(), Some(Sent::CopyData)) {
                    self.push(Sent::CopyData);
                }
                return Ok(Action::Forward);
            }
            fe::COPY_DONE | fe::COPY_FAIL => {
                self.push(Sent::CopyEnd);
                return Ok(Action::Forward);
            }
            fe::FLUSH | fe::TERMINATE => return Ok(Action::Forward),
            fe::SYNC => {
                self.open = None;
                self.push(Sent::Sync);
                return Ok(Action::Forward);
            }
            _ => {}
        }
        // Anything else waits until the Queries in flight are answered: one may be reading
        // COPY data. (A Query behind an unfinished extended-protocol segment whose earlier
        // message failed is skipped by the server without a word; the error's skip ends it
        // here too, so what waits behind it is released then.)
        if self.in_flight_queries > 0 {
            return Ok(Action::Wait);
        }
        match tag {
            fe::QUERY => self.query(fe::query(body)?, now),
            fe::PARSE => {
                let p = fe::parse(body)?;
                self.parse(p.statement, p.sql, p.param_types)
            }
            fe::BIND => self.bind(&fe::bind(body)?),
            fe::EXECUTE => self.execute(fe::execute(body)?.portal, now),
            fe::DESCRIBE => {
                let statement = match fe::target(body, "Describe")? {
                    Target::Statement(n) => Some(name(n)),
                    Target::Portal(_) => None,
                };
                self.push(Sent::Describe { statement });
                Ok(Action::Forward)
            }
            fe::CLOSE => {
                let (statement, name) = match fe::target(body, "Close")? {
                    Target::Statement(n) => (true, n),
                    Target::Portal(n) => (false, n),
                };
                self.open = None;
                self.push(Sent::Close {
                    statement,
                    name: self::name(name),
                });
                Ok(Action::Forward)
            }
            fe::FUNCTION_CALL => {
                // Answered in its turn; behind other work the answer could come out of order.
                if !self.idle() {
                    return Err(Violation::FunctionCall);
                }
                self.push(Sent::Refused {
                    code: sqlstate::FEATURE_NOT_SUPPORTED,
                    message: FUNCTION_CALL_REFUSED,
                });
                Ok(Action::Refuse)
            }
            other => Err(Violation::Protocol(format!(
                "unexpected message type {:?}",
                printable(other)
            ))),
        }
    }

    /// Whether a held message would still [`Action::Wait`], without deciding anything. If
    /// the server meanwhile started COPY FROM STDIN, it waits for copy data that the client
    /// sent (if at all) behind this message: the session cannot go on.
    pub fn probe(&self, tag: u8, body: &[u8]) -> Result<bool, Violation> {
        if self.copy_stream
            || matches!(
                tag,
                fe::COPY_DATA
                    | fe::COPY_DONE
                    | fe::COPY_FAIL
                    | fe::FLUSH
                    | fe::TERMINATE
                    | fe::SYNC
            )
        {
            return Ok(false);
        }
        // (Unless the client already ended the copy: then its end comes.)
        let copy_ended = self
            .queue
            .iter()
            .skip(1)
            .any(|s| matches!(s, Sent::CopyEnd));
        if self.phase == Phase::CopyIn && !copy_ended {
            return Err(Violation::Protocol(format!(
                "message {:?} sent where the database expects COPY data",
                printable(tag)
            )));
        }
        if self.in_flight_queries > 0 {
            return Ok(true);
        }
        Ok(match tag {
            fe::BIND => self.expected_statement(fe::bind(body)?.statement).is_none(),
            fe::EXECUTE => self.expected_portal(fe::execute(body)?.portal).is_none(),
            _ => false,
        })
    }

    fn query(&mut self, text: &str, now: Instant) -> Result<Action, Violation> {
        self.open = None;
        let seen = sql::inspect(text, self.caller);
        let text: Arc<str> = Arc::from(seen.text.as_ref());
        if let Some(refusal) = seen.refuse {
            return self.refuse(text, seen.redacted, refusal);
        }
        let rec = Rec::Batch(self.intents.len());
        let count = seen.statements.len();
        self.intents.push(Intent::Query {
            text,
            redacted: seen.redacted,
            statements: seen.statements,
        });
        self.push(Sent::Query {
            rec,
            count,
            next: 0,
            since: now,
            rows: 0,
            touches: seen.touches,
        });
        Ok(Action::Forward)
    }

    /// Records a refused text. With nothing else in flight and no transaction open, the
    /// proxy answers it and the session goes on; otherwise its answer could not be put in
    /// order, and the session ends.
    fn refuse(
        &mut self,
        text: Arc<str>,
        redacted: bool,
        refusal: sql::Refusal,
    ) -> Result<Action, Violation> {
        self.intents.push(Intent::Refused {
            text,
            redacted,
            refusal,
        });
        if !self.idle() || self.status != b'I' {
            return Err(Violation::Refused(refusal));
        }
        self.push(Sent::Refused {
            code: refusal.sqlstate(),
            message: refusal.message(),
        });
        Ok(Action::Refuse)
    }

    fn parse(&mut self, name: &str, text: &str, types: Vec<u32>) -> Result<Action, Violation> {
        self.open = None;
        let seen = sql::inspect(text, self.caller);
        let recorded: Arc<str> = Arc::from(seen.text.as_ref());
        if let Some(refusal) = seen.refuse {
            return self.refuse(recorded, seen.redacted, refusal);
        }
        let prepared = Arc::new(Prepared {
            id: self.next_id,
            text: Some(recorded),
            redacted: seen.redacted,
            param_types: types,
            copy: seen.copy,
            touches: seen.touches,
        });
        self.next_id += 1;
        let rec = self.intents.len();
        let name = self::name(name);
        let steps = Steps {
            parse: true,
            ..Steps::default()
        };
        self.intents.push(Intent::Extended {
            steps,
            statement: name.clone(),
            portal: self::name(""),
            prepared: prepared.clone(),
            params: None,
        });
        self.push(Sent::Parse {
            name,
            prepared,
            part: Part {
                rec: Rec::Batch(rec),
                last: true,
            },
        });
        self.open = Some((rec, steps));
        Ok(Action::Forward)
    }

    fn bind(&mut self, b: &fe::Bind<'_>) -> Result<Action, Violation> {
        let Some(prepared) = self.expected_statement(b.statement) else {
            return Ok(Action::Wait);
        };
        let portal = self.portals.key(b.portal);
        let statement = self.statements.key(b.statement);
        let params: Arc<str> = Arc::from(params::to_json(
            &b.params,
            &prepared.param_types,
            self.param_cap,
        ));
        // Joins the Parse of the same statement sent just before, if there is one.
        let rec = match self.join(b.statement, |steps| steps == Steps::PARSE) {
            Some(rec) => {
                if let Intent::Extended {
                    steps,
                    portal: p,
                    params: ps,
                    ..
                } = &mut self.intents[rec]
                {
                    steps.bind = true;
                    *p = portal.clone();
                    *ps = Some(params.clone());
                }
                rec
            }
            None => {
                self.intents.push(Intent::Extended {
                    steps: Steps {
                        bind: true,
                        ..Steps::default()
                    },
                    statement: statement.clone(),
                    portal: portal.clone(),
                    prepared: prepared.clone(),
                    params: Some(params.clone()),
                });
                self.intents.len() - 1
            }
        };
        self.push(Sent::Bind {
            portal,
            statement,
            expect: prepared.id,
            params,
            part: Part {
                rec: Rec::Batch(rec),
                last: true,
            },
        });
        if let Intent::Extended { steps, .. } = &self.intents[rec] {
            self.open = Some((rec, *steps));
        }
        Ok(Action::Forward)
    }

    fn execute(&mut self, portal: &str, now: Instant) -> Result<Action, Violation> {
        let Some(expected) = self.expected_portal(portal) else {
            return Ok(Action::Wait);
        };
        let name = self::name(portal);
        let (rec, copy, fetch, touches) = match expected {
            // A fetch of an execution in flight or suspended: the same record.
            Expected::Running { rec, copy } => (rec, copy, true, Touches::default()),
            expected => {
                let copy = matches!(&expected, Expected::Bound(p) if p.prepared.copy);
                let touches = match &expected {
                    Expected::Bound(p) => p.prepared.touches,
                    _ => Touches::default(),
                };
                let rec = match self.join(portal, |steps| steps.bind && !steps.execute) {
                    Some(rec) => {
                        if let Intent::Extended { steps, .. } = &mut self.intents[rec] {
                            steps.execute = true;
                        }
                        rec
                    }
                    None => {
                        let (statement, prepared, params) = match expected {
                            Expected::Bound(p) => (p.statement, p.prepared, Some(p.params)),
                            _ => (self::name(""), Prepared::unknown(), None),
                        };
                        self.intents.push(Intent::Extended {
                            steps: Steps {
                                execute: true,
                                ..Steps::default()
                            },
                            statement,
                            portal: name.clone(),
                            prepared,
                            params,
                        });
                        self.intents.len() - 1
                    }
                };
                (Rec::Batch(rec), copy, false, touches)
            }
        };
        self.open = None;
        self.push(Sent::Execute {
            portal: name,
            part: Part { rec, last: true },
            since: now,
            rows: 0,
            fetch,
            copy,
            touches,
        });
        Ok(Action::Forward)
    }

    /// The open record, if `name` continues it (same statement for a Bind after a Parse,
    /// same portal for an Execute after a Bind) and its steps pass `fits`. The message that
    /// ended it so far no longer does.
    fn join(&mut self, name: &str, fits: impl Fn(Steps) -> bool) -> Option<usize> {
        let (rec, steps) = self.open?;
        let same = match &self.intents[rec] {
            Intent::Extended {
                statement, portal, ..
            } => {
                if steps == Steps::PARSE {
                    **statement == *name
                } else {
                    **portal == *name
                }
            }
            _ => false,
        };
        if !same || !fits(steps) {
            return None;
        }
        for s in self.batch.iter_mut().rev() {
            if let Sent::Parse { part, .. } | Sent::Bind { part, .. } = s {
                if part.rec == Rec::Batch(rec) {
                    part.last = false;
                    break;
                }
            }
        }
        Some(rec)
    }

    /// The statement a Bind of `name` will bind: the server's confirmed one, or the latest
    /// change in flight; `None` while a change in flight behind a Sync is not settled.
    fn expected_statement(&self, name: &str) -> Option<Arc<Prepared>> {
        let named = !name.is_empty();
        let confirmed = || {
            self.statements
                .get(name)
                .cloned()
                .unwrap_or_else(Prepared::unknown)
        };
        if !(self.in_flight_statements.contains(name) || named && self.in_flight_touches > 0) {
            return Some(confirmed());
        }
        let mut behind_sync = false;
        for s in self.batch.iter().rev().chain(self.queue.iter().rev()) {
            if s.statement_name() == Some(name) {
                if behind_sync {
                    return None;
                }
                return Some(match s {
                    Sent::Parse { prepared, .. } => prepared.clone(),
                    _ => Prepared::unknown(),
                });
            }
            if named && s.touches().statements {
                return Some(Prepared::unknown());
            }
            behind_sync |= matches!(s, Sent::Sync);
        }
        Some(confirmed())
    }

    /// The portal an Execute of `name` will run; `None` while a change in flight behind a
    /// Sync is not settled.
    fn expected_portal(&self, name: &str) -> Option<Expected> {
        let named = !name.is_empty();
        let confirmed = || match self.portals.get(name) {
            Some(p) => match p.execution.filter(|seq| self.runs.contains_key(seq)) {
                Some(seq) => Expected::Running {
                    rec: Rec::Seq(seq),
                    copy: p.prepared.copy,
                },
                None => Expected::Bound(p.clone()),
            },
            None => Expected::Unknown,
        };
        if !(self.in_flight_portals.contains(name) || named && self.in_flight_touches > 0) {
            return Some(confirmed());
        }
        let mut behind_sync = false;
        for s in self.batch.iter().rev().chain(self.queue.iter().rev()) {
            if s.portal_name() == Some(name) {
                return match s {
                    // Behind a Sync the transaction (and the portal) may have ended, or the
                    // change may have failed: wait for the answer.
                    _ if behind_sync => None,
                    // An execution in flight in this segment: more rows of the same record.
                    Sent::Execute { part, copy, .. } => Some(Expected::Running {
                        rec: part.rec,
                        copy: *copy,
                    }),
                    Sent::Bind {
                        statement,
                        params,
                        expect,
                        ..
                    } => Some(Expected::Bound(Portal {
                        statement: statement.clone(),
                        prepared: self.prepared_by_id(*expect, statement),
                        params: params.clone(),
                        execution: None,
                    })),
                    _ => Some(Expected::Unknown),
                };
            }
            if named && s.touches().portals {
                return Some(Expected::Unknown);
            }
            behind_sync |= matches!(s, Sent::Sync);
        }
        Some(confirmed())
    }

    /// The statement with `id` as the client side knows it (in flight or confirmed).
    fn prepared_by_id(&self, id: u64, name: &str) -> Arc<Prepared> {
        if let Some(p) = self.statements.get(name).filter(|p| p.id == id) {
            return p.clone();
        }
        for s in self.batch.iter().rev().chain(self.queue.iter().rev()) {
            if let Sent::Parse { prepared, .. } = s {
                if prepared.id == id {
                    return prepared.clone();
                }
            }
        }
        match self.statements.get(name) {
            Some(p) if p.id == id => p.clone(),
            _ => Prepared::unknown(),
        }
    }

    fn last(&self) -> Option<&Sent> {
        self.batch.last().or_else(|| self.queue.back())
    }

    fn push(&mut self, s: Sent) {
        if let Some(n) = s.statement_name() {
            self.in_flight_statements.add(n);
        }
        if let Some(n) = s.portal_name() {
            self.in_flight_portals.add(n);
        }
        let t = s.touches();
        if t.statements || t.portals {
            self.in_flight_touches += 1;
        }
        if s.may_copy() {
            self.in_flight_copies += 1;
        }
        if matches!(s, Sent::Query { .. }) {
            self.in_flight_queries += 1;
        }
        self.batch.push(s);
    }

    /// The records to write for the batch, in order.
    pub fn intents(&self) -> &[Intent] {
        &self.intents
    }

    /// The batch's records were accepted from sequence number `first_seq` on: its entries
    /// join the queue, for the server side.
    pub fn commit(&mut self, first_seq: u64) {
        let resolve = |rec: &mut Rec| {
            if let Rec::Batch(i) = *rec {
                *rec = Rec::Seq(first_seq + i as u64);
            }
        };
        // Drained, not taken: the batch keeps its capacity for the next one.
        let mut batch = std::mem::take(&mut self.batch);
        for mut s in batch.drain(..) {
            match &mut s {
                Sent::Query { rec, .. } => resolve(rec),
                Sent::Parse { part, .. } | Sent::Bind { part, .. } => resolve(&mut part.rec),
                Sent::Execute {
                    part, fetch, since, ..
                } => {
                    resolve(&mut part.rec);
                    let seq = part.rec.seq();
                    match self.runs.get_mut(&seq) {
                        Some(run) => run.pending += 1,
                        None if !*fetch => {
                            self.runs.insert(
                                seq,
                                Run {
                                    since: *since,
                                    rows: 0,
                                    pending: 1,
                                    started: false,
                                    completed: None,
                                },
                            );
                        }
                        // The execution it would fetch from ended meanwhile: the server
                        // answers this one with no rows, and the record has its outcome.
                        None => part.last = false,
                    }
                }
                _ => {}
            }
            self.queue.push_back(s);
        }
        self.batch = batch;
        self.intents.clear();
        self.open = None;
    }

    /// The batch's records were refused by the audit log: nothing of it is forwarded.
    pub fn abandon(&mut self) {
        for s in std::mem::take(&mut self.batch) {
            self.forget(&s);
        }
        self.intents.clear();
        self.open = None;
        self.copy_stream = false;
    }

    /// Undoes the in-flight counts of an entry leaving the batch or the queue.
    fn forget(&mut self, s: &Sent) {
        if let Some(n) = s.statement_name() {
            self.in_flight_statements.remove(n);
        }
        if let Some(n) = s.portal_name() {
            self.in_flight_portals.remove(n);
        }
        let t = s.touches();
        if t.statements || t.portals {
            self.in_flight_touches -= 1;
        }
        if s.may_copy() {
            self.in_flight_copies -= 1;
        }
        if matches!(s, Sent::Query { .. }) {
            self.in_flight_queries -= 1;
        }
    }

    // ---------------------------------------------------------------- server side

    /// Pairs one server message with what it answers; `emit` receives the outcome of every
    /// record that ends.
    pub fn server(
        &mut self,
        tag: u8,
        body: &[u8],
        now: Instant,
        emit: &mut dyn FnMut(Finished<'_>),
    ) -> Result<(), Violation> {
        match tag {
            be::NOTICE_RESPONSE | be::NOTIFICATION_RESPONSE => return Ok(()),
            be::PARAMETER_STATUS => return check_parameter(body),
            _ => {}
        }
        if self.skipping {
            self.skip(now, emit);
        }
        if self.phase != Phase::CopyIn {
            // Copy messages outside COPY are read and ignored.
            while matches!(self.queue.front(), Some(Sent::CopyData | Sent::CopyEnd)) {
                self.pop();
            }
        }
        let unpaired = || Violation::Unpaired(printable(tag));
        let phase = self.phase;
        let Some(front) = self.queue.front_mut() else {
            // The server ending the session (shutdown, terminated backend) owes no request.
            return match tag {
                be::ERROR_RESPONSE if be::error_fields(body)?.is_fatal() => Ok(()),
                _ => Err(unpaired()),
            };
        };
        match (front, tag) {
            // ---- a simple Query: each statement answers, then ReadyForQuery
            (Sent::Query { .. }, be::ROW_DESCRIPTION) if phase == Phase::Start => {
                self.phase = Phase::Rows
            }
            (Sent::Query { rows, .. }, be::DATA_ROW) if phase == Phase::Rows => *rows += 1,
            (
                Sent::Query {
                    rec,
                    next,
                    since,
                    rows,
                    ..
                },
                be::COMMAND_COMPLETE | be::EMPTY_QUERY,
            ) if phase != Phase::Described => {
                let tag_text = command_tag(tag, body)?;
                let total = be::tag_rows(tag_text).map(|t| t.max(*rows));
                emit(Finished {
                    seq: rec.seq(),
                    index: Some(*next),
                    outcome: Outcome::Ok {
                        tag: tag_text,
                        rows: total,
                    },
                    since: *since,
                });
                *next += 1;
                *since = now;
                *rows = 0;
                if phase == Phase::CopyIn {
                    self.consume_copy();
                }
                self.phase = Phase::Start;
            }
            (
                Sent::Query {
                    rec,
                    next,
                    since,
                    count,
                    ..
                },
                be::ERROR_RESPONSE,
            ) => {
                let fields = be::error_fields(body)?;
                let seq = rec.seq();
                // After its last statement, an error is the implicit transaction's commit.
                let (index, step) = if *next >= *count && *count > 0 {
                    (None, Some("commit"))
                } else {
                    (Some(*next), None)
                };
                emit(Finished {
                    seq,
                    index,
                    outcome: Outcome::Error {
                        code: &fields.code,
                        message: &fields.message,
                        step,
                    },
                    since: *since,
                });
                for i in *next + 1..*count {
                    emit(Finished {
                        seq,
                        index: Some(i),
                        outcome: Outcome::NotExecuted {
                            reason: "an earlier statement in the same query string failed",
                        },
                        since: now,
                    });
                }
                *next = (*count).max(*next + 1);
                if phase == Phase::CopyIn {
                    self.consume_copy();
                }
                self.phase = Phase::Start;
            }
            (Sent::Query { .. }, be::READY_FOR_QUERY) if phase == Phase::Start => {
                let Some(Sent::Query {
                    rec,
                    next,
                    count,
                    touches,
                    ..
                }) = self.pop()
                else {
                    unreachable!()
                };
                for i in next..count {
                    emit(Finished {
                        seq: rec.seq(),
                        index: Some(i),
                        outcome: Outcome::NotExecuted {
                            reason: "the server did not run this statement",
                        },
                        since: now,
                    });
                }
                self.apply_touches(touches);
                self.drop_unnamed_statement(emit);
                self.ready(body, emit)?;
            }
            // ---- the extended protocol
            (Sent::Parse { .. }, be::PARSE_COMPLETE) => {
                let Some(Sent::Parse {
                    name,
                    prepared,
                    part,
                }) = self.pop()
                else {
                    unreachable!()
                };
                self.statements.set(&name, Some(prepared));
                if part.last {
                    emit(ok(part.rec.seq(), "PARSE", now));
                }
            }
            (Sent::Bind { .. }, be::BIND_COMPLETE) => {
                let Some(Sent::Bind {
                    portal,
                    statement,
                    expect,
                    params,
                    part,
                }) = self.pop()
                else {
                    unreachable!()
                };
                let prepared = self
                    .statements
                    .get(&statement)
                    .cloned()
                    .unwrap_or_else(Prepared::unknown);
                if prepared.id != expect {
                    return Err(Violation::Attribution {
                        statement: statement.to_string(),
                    });
                }
                self.portals.set(
                    &portal,
                    Some(Portal {
                        statement,
                        prepared,
                        params,
                        execution: None,
                    }),
                );
                if part.last {
                    emit(ok(part.rec.seq(), "BIND", now));
                }
            }
            (
                Sent::Describe {
                    statement: Some(name),
                },
                be::PARAMETER_DESCRIPTION,
            ) if phase == Phase::Start => {
                let name = name.clone();
                let types = be::parameter_types(body)?;
                if let Some(p) = self.statements.get(&name) {
                    let described = Arc::new(Prepared {
                        id: p.id,
                        text: p.text.clone(),
                        redacted: p.redacted,
                        param_types: types,
                        copy: p.copy,
                        touches: p.touches,
                    });
                    self.statements.set(&name, Some(described));
                }
                self.phase = Phase::Described;
            }
            (Sent::Describe { statement }, be::ROW_DESCRIPTION | be::NO_DATA)
                if phase
                    == (if statement.is_some() {
                        Phase::Described
                    } else {
                        Phase::Start
                    }) =>
            {
                self.pop();
                self.phase = Phase::Start;
            }
            (Sent::Execute { rows, .. }, be::DATA_ROW) if phase == Phase::Start => *rows += 1,
            (
                Sent::Execute { .. },
                be::COMMAND_COMPLETE | be::EMPTY_QUERY | be::PORTAL_SUSPENDED,
            ) if phase != Phase::Described
                && (tag != be::PORTAL_SUSPENDED || phase == Phase::Start) =>
            {
                if phase == Phase::CopyIn {
                    self.consume_copy();
                }
                self.phase = Phase::Start;
                let Some(Sent::Execute {
                    portal,
                    part,
                    rows,
                    touches,
                    ..
                }) = self.pop()
                else {
                    unreachable!()
                };
                let seq = part.rec.seq();
                if let Some(p) = self.portals.get_mut(&portal) {
                    p.execution = Some(seq);
                }
                self.last_executed = Some((seq, now));
                self.apply_touches(touches);
                if !part.last {
                    return Ok(());
                }
                let Some(run) = self.runs.get_mut(&seq) else {
                    return Ok(());
                };
                run.rows += rows;
                run.pending -= 1;
                run.started = true;
                let tag_text = command_tag(tag, body)?;
                if tag != be::PORTAL_SUSPENDED && run.completed.is_none() {
                    run.completed = Some(tag_text.to_string());
                }
                if tag == be::PORTAL_SUSPENDED || run.pending > 0 {
                    return Ok(());
                }
                let run = self.runs.remove(&seq).expect("present");
                // A later Execute of a completed portal returns no rows: the first tag
                // says what the execution did.
                let tag_text = run.completed.as_deref().unwrap_or(tag_text);
                let total = be::tag_rows(tag_text)
                    .map(|t| t.max(run.rows))
                    .or((run.rows > 0).then_some(run.rows));
                emit(Finished {
                    seq,
                    index: None,
                    outcome: Outcome::Ok {
                        tag: tag_text,
                        rows: total,
                    },
                    since: run.since,
                });
            }
            (Sent::Close { .. }, be::CLOSE_COMPLETE) => {
                let Some(Sent::Close { statement, name }) = self.pop() else {
                    unreachable!()
                };
                if statement {
                    self.statements.set(&name, None);
                } else {
                    self.portals.set(&name, None);
                }
            }
            (Sent::Sync, be::READY_FOR_QUERY) => {
                self.pop();
                self.ready(body, emit)?;
            }
            // The implicit transaction's commit at Sync failed (a deferred constraint): what
            // ran in it did not last. Recorded as the last execution's outcome (`commit`),
            // as for a query string.
            (Sent::Sync, be::ERROR_RESPONSE) => {
                if let Some((seq, since)) = self.last_executed.take() {
                    let fields = be::error_fields(body)?;
                    emit(Finished {
                        seq,
                        index: None,
                        outcome: Outcome::Error {
                            code: &fields.code,
                            message: &fields.message,
                            step: Some("commit"),
                        },
                        since,
                    });
                }
            }
            // ---- COPY
            (Sent::Query { .. } | Sent::Execute { copy: true, .. }, be::COPY_IN_RESPONSE)
                if matches!(phase, Phase::Start | Phase::Rows) =>
            {
                self.phase = Phase::CopyIn;
                self.start_copy_in(now, emit)?;
            }
            (Sent::Query { .. } | Sent::Execute { .. }, be::COPY_OUT_RESPONSE)
                if phase == Phase::Start =>
            {
                self.phase = Phase::CopyOut
            }
            (Sent::Query { .. } | Sent::Execute { .. }, be::COPY_DATA | be::COPY_DONE)
                if phase == Phase::CopyOut => {}
            // ---- an error ends the message at the front; the server skips to the Sync
            (
                Sent::Parse { .. }
                | Sent::Bind { .. }
                | Sent::Describe { .. }
                | Sent::Execute { .. }
                | Sent::Close { .. },
                be::ERROR_RESPONSE,
            ) => {
                let fields = be::error_fields(body)?;
                if phase == Phase::CopyIn {
                    self.consume_copy();
                }
                self.phase = Phase::Start;
                let front = self.pop().expect("checked");
                self.fail(front, &fields, now, emit);
                self.skipping = true;
                self.skip(now, emit);
            }
            _ => return Err(unpaired()),
        }
        Ok(())
    }

    /// A DataRow, counted without the rest of [`Ledger::server`] when it pairs the common
    /// way (rows of the statement or execution at the front); false when it needs the full
    /// pairing.
    #[inline]
    pub fn data_row(&mut self) -> bool {
        if self.skipping {
            return false;
        }
        match (self.queue.front_mut(), self.phase) {
            (Some(Sent::Execute { rows, .. }), Phase::Start)
            | (Some(Sent::Query { rows, .. }), Phase::Rows) => {
                *rows += 1;
                true
            }
            _ => false,
        }
    }

    /// Refusals now at the front: the proxy's own answers (code, message, status for
    /// ReadyForQuery), for the relay to send in their turn.
    pub fn due_refusals(&mut self) -> Vec<(&'static str, &'static str, u8)> {
        let mut out = Vec::new();
        while let Some(Sent::Refused { .. }) = self.queue.front() {
            if let Some(Sent::Refused { code, message }) = self.pop() {
                out.push((code, message, self.status));
            }
        }
        out
    }

    /// The server began COPY FROM STDIN for the front entry. It reads the Syncs sent before
    /// the first copy data and ignores them. After an Execute, a message other than copy
    /// data is read as a protocol violation: consumed, not run, and the server then skips
    /// to the next Sync. (After a Query no such message was sent: the client side holds
    /// everything but copy data back until the Query is answered.)
    fn start_copy_in(
        &mut self,
        now: Instant,
        emit: &mut dyn FnMut(Finished<'_>),
    ) -> Result<(), Violation> {
        while let Some(s) = self.queue.get(1) {
            match s {
                Sent::Sync => {
                    let s = self.queue.remove(1).expect("present");
                    self.forget(&s);
                }
                Sent::CopyData | Sent::CopyEnd => return Ok(()),
                _ if matches!(self.queue.front(), Some(Sent::Execute { .. })) => {
                    let s = self.queue.remove(1).expect("present");
                    self.forget(&s);
                    let consumed = |seq, index| Finished {
                        seq,
                        index,
                        outcome: Outcome::NotExecuted {
                            reason: "read by the server as a protocol violation during COPY",
                        },
                        since: now,
                    };
                    match s {
                        Sent::Query { rec, count, .. } => {
                            for i in 0..count.max(1) {
                                emit(consumed(rec.seq(), Some(i)));
                            }
                        }
                        Sent::Parse { part, .. } | Sent::Bind { part, .. } if part.last => {
                            emit(consumed(part.rec.seq(), None))
                        }
                        Sent::Execute { part, .. } if part.last => {
                            if let Some(run) = self.runs.get_mut(&part.rec.seq()) {
                                run.pending -= 1;
                                if run.pending == 0 {
                                    self.runs.remove(&part.rec.seq());
                                    emit(consumed(part.rec.seq(), None));
                                }
                            }
                        }
                        _ => {}
                    }
                    return Ok(());
                }
                _ => {
                    return Err(Violation::Protocol(
                        "the database started COPY FROM STDIN, but the client had sent \
                         other messages instead of data"
                            .into(),
                    ))
                }
            }
        }
        Ok(())
    }

    /// COPY FROM STDIN of the front entry ended. The server has read the client's copy
    /// messages up to the CopyDone (or, after an error, ignores the rest as they come): they
    /// are consumed, with the Syncs read among them.
    fn consume_copy(&mut self) {
        while let Some(s) = self.queue.get(1) {
            let end = matches!(s, Sent::CopyEnd);
            if !matches!(s, Sent::CopyData | Sent::CopyEnd | Sent::Sync) {
                break;
            }
            let s = self.queue.remove(1).expect("present");
            self.forget(&s);
            if end {
                break;
            }
        }
    }

    /// The outcome of the message the server rejected, if it ends (or is part of) a record.
    fn fail(
        &mut self,
        front: Sent,
        fields: &be::ErrorFields,
        now: Instant,
        emit: &mut dyn FnMut(Finished<'_>),
    ) {
        let step = match &front {
            Sent::Parse { .. } => "parse",
            Sent::Bind { .. } => "bind",
            Sent::Describe { .. } => "describe",
            Sent::Close { .. } => "close",
            _ => "execute",
        };
        let failed = |seq, since| Finished {
            seq,
            index: None,
            outcome: Outcome::Error {
                code: &fields.code,
                message: &fields.message,
                step: Some(step),
            },
            since,
        };
        // A record that joined several messages ends with its first failure; the rest of it
        // is skipped without a second outcome.
        self.failed = None;
        match front {
            Sent::Parse { part, .. } => {
                emit(failed(part.rec.seq(), now));
                self.failed = Some(part.rec.seq());
            }
            Sent::Bind { part, portal, .. } => {
                // Perhaps made before the error, perhaps not: its content is not known.
                self.portals.set(&portal, None);
                emit(failed(part.rec.seq(), now));
                self.failed = Some(part.rec.seq());
            }
            Sent::Execute { part, touches, .. } => {
                self.apply_touches(touches);
                let seq = part.rec.seq();
                if let Some(run) = self.runs.remove(&seq).filter(|_| part.last) {
                    match run.completed {
                        // The execution had completed; this later Execute of its portal
                        // failed on its own (the portal was gone) and ran nothing.
                        Some(tag) => emit(Finished {
                            seq,
                            index: None,
                            outcome: Outcome::Ok {
                                tag: &tag,
                                rows: Some(run.rows),
                            },
                            since: run.since,
                        }),
                        None => emit(failed(seq, run.since)),
                    }
                    self.failed = Some(seq);
                }
            }
            _ => {}
        }
    }

    /// What the server skips until the next Sync after an error: executions that did not
    /// run, changes that did not happen, whole Query messages.
    fn skip(&mut self, now: Instant, emit: &mut dyn FnMut(Finished<'_>)) {
        let skipped = |seq, index| Finished {
            seq,
            index,
            outcome: Outcome::NotExecuted {
                reason: "an earlier message in the same pipeline failed",
            },
            since: now,
        };
        loop {
            match self.queue.front() {
                None => return,
                Some(Sent::Sync) => {
                    return;
                }
                _ => {}
            }
            match self.pop().expect("checked") {
                Sent::Query { rec, count, .. } => {
                    for i in 0..count.max(1) {
                        emit(skipped(rec.seq(), Some(i)));
                    }
                }
                Sent::Parse { part, .. } | Sent::Bind { part, .. }
                    if part.last && self.failed != Some(part.rec.seq()) =>
                {
                    emit(skipped(part.rec.seq(), None));
                }
                Sent::Execute { part, .. } => {
                    let seq = part.rec.seq();
                    let Some(run) = self.runs.get_mut(&seq).filter(|_| part.last) else {
                        continue;
                    };
                    run.pending -= 1;
                    if run.pending > 0 {
                        continue;
                    }
                    let run = self.runs.remove(&seq).expect("present");
                    if self.failed == Some(seq) {
                        continue;
                    }
                    if run.started {
                        // A later fetch was skipped: the execution ran, with these rows.
                        emit(Finished {
                            seq,
                            index: None,
                            outcome: Outcome::Ok {
                                tag: "PORTAL CLOSED",
                                rows: Some(run.rows),
                            },
                            since: run.since,
                        });
                    } else {
                        emit(skipped(seq, None));
                    }
                }
                _ => {}
            }
        }
    }

    /// ReadyForQuery: the transaction status; portals end with the transaction.
    fn ready(&mut self, body: &[u8], emit: &mut dyn FnMut(Finished<'_>)) -> Result<(), Violation> {
        self.status = be::ready_status(body)?;
        self.skipping = false;
        self.failed = None;
        self.last_executed = None;
        if self.status == b'I' {
            self.portals = ByName::default();
            let ended: Vec<u64> = self
                .runs
                .iter()
                .filter(|(_, r)| r.pending == 0)
                .map(|(s, _)| *s)
                .collect();
            self.close_runs(ended, emit);
        }
        Ok(())
    }

    /// Suspended executions of portals that are gone ended with the rows they returned
    /// (those with an Execute still in flight end with its answer).
    fn close_runs(&mut self, seqs: Vec<u64>, emit: &mut dyn FnMut(Finished<'_>)) {
        for seq in seqs {
            if !self.runs.iter().any(|(s, r)| *s == seq && r.pending == 0) {
                continue;
            }
            let run = self.runs.remove(&seq).expect("present");
            emit(Finished {
                seq,
                index: None,
                outcome: Outcome::Ok {
                    tag: "PORTAL CLOSED",
                    rows: Some(run.rows),
                },
                since: run.since,
            });
        }
    }

    /// A simple Query ran (postgres.c, `exec_simple_query`): the server dropped the unnamed
    /// statement with every portal bound from it, and ran the query in the unnamed portal,
    /// which it dropped at the end. Within a Flush-terminated segment this is all a Query
    /// changes; with a transaction block open, named portals of other statements survive.
    fn drop_unnamed_statement(&mut self, emit: &mut dyn FnMut(Finished<'_>)) {
        self.statements.unnamed = None;
        let mut dropped: Vec<u64> = Vec::new();
        if let Some(p) = self.portals.unnamed.take() {
            dropped.extend(p.execution);
        }
        self.portals.named.retain(|_, p| {
            if p.statement.is_empty() {
                dropped.extend(p.execution);
                return false;
            }
            true
        });
        self.close_runs(dropped, emit);
    }

    /// SQL-level PREPARE, DEALLOCATE, DECLARE, CLOSE or DISCARD ran (or tried to): named
    /// statements or portals may now hold anything.
    fn apply_touches(&mut self, t: Touches) {
        if t.statements {
            for p in self.statements.named.values_mut() {
                *p = Prepared::unknown();
            }
        }
        if t.portals {
            for p in self.portals.named.values_mut() {
                p.prepared = Prepared::unknown();
                p.execution = None;
            }
        }
    }

    fn pop(&mut self) -> Option<Sent> {
        let s = self.queue.pop_front()?;
        self.forget(&s);
        Some(s)
    }

    /// The session ended: what was still owed an answer never got one.
    pub fn abort(&mut self, now: Instant, emit: &mut dyn FnMut(Finished<'_>)) {
        let unknown = |seq, index, since| Finished {
            seq,
            index,
            outcome: Outcome::Unknown {
                reason: "the session ended before the database answered",
            },
            since,
        };
        while let Some(s) = self.pop() {
            match s {
                Sent::Query {
                    rec,
                    next,
                    count,
                    since,
                    ..
                } => {
                    for i in next..count.max(next + 1) {
                        emit(unknown(rec.seq(), Some(i), since));
                    }
                }
                Sent::Parse { part, .. } | Sent::Bind { part, .. } if part.last => {
                    emit(unknown(part.rec.seq(), None, now))
                }
                Sent::Execute { part, .. } if part.last => {
                    if let Some(run) = self.runs.remove(&part.rec.seq()) {
                        emit(unknown(part.rec.seq(), None, run.since));
                    }
                }
                _ => {}
            }
        }
        // Suspended executions end with the session.
        for (seq, run) in self.runs.drain() {
            emit(Finished {
                seq,
                index: None,
                outcome: Outcome::Ok {
                    tag: "PORTAL CLOSED",
                    rows: Some(run.rows),
                },
                since: run.since,
            });
        }
    }
}

pub const FUNCTION_CALL_REFUSED: &str =
    "FunctionCall messages are refused: they carry no SQL text to audit";

fn printable(tag: u8) -> char {
    crate::protocol::frame::printable(tag)
}

fn command_tag(tag: u8, body: &[u8]) -> Result<&str, Violation> {
    match tag {
        be::EMPTY_QUERY => Ok("EMPTY"),
        be::PORTAL_SUSPENDED => Ok("SUSPENDED"),
        _ => Ok(be::command_tag(body)?),
    }
}

fn ok(seq: u64, tag: &'static str, since: Instant) -> Finished<'static> {
    Finished {
        seq,
        index: None,
        outcome: Outcome::Ok { tag, rows: None },
        since,
    }
}

/// ParameterStatus: the settings the proxy lexes by must keep their pinned values.
fn check_parameter(body: &[u8]) -> Result<(), Violation> {
    let (name, value) = be::parameter_status(body)?;
    if sql::keeps_pinned_value(name, value) {
        Ok(())
    } else {
        Err(Violation::Setting {
            name: name.to_string(),
            value: value.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
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
                    Intent::Query { text, .. } => {
                        ("query".to_string(), Some(text.to_string()), None)
                    }
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
}

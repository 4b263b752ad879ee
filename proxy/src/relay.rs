//! The relay: two loops, one per direction, that forward bytes untouched.
//!
//! Client → database: every message header is read; Query, Parse, Bind, Execute and Close
//! are decoded to build the statement records, which are accepted by the audit log *before*
//! the bytes that carry them are forwarded. COPY data streams through without buffering.
//!
//! Database → client: only the messages that end a statement (CommandComplete, ErrorResponse,
//! PortalSuspended, EmptyQueryResponse, ReadyForQuery) are decoded, to write outcome records;
//! DataRows are counted by their headers and never decoded or buffered whole.
//!
//! The two loops share a queue of what the server still owes answers for ([`Pending`]): the
//! client side pushes, in order, before forwarding; the server side pops as answers arrive.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::audit::record::{self, Outcome, Totals, Via};
use crate::audit::SessionInfo;
use crate::protocol::backend as be;
use crate::protocol::frontend as fe;
use crate::protocol::{frame, ProtocolError};
use crate::server::Context;
use crate::sql;
use crate::stream::Split;

const FUNCTION_CALL_REFUSED: &str =
    "FunctionCall messages are refused: they carry no SQL text to audit";

/// Largest server message the relay decodes (errors, command tags); DataRows and COPY data
/// of any size pass through without being buffered.
const MAX_DECODED_SERVER_MESSAGE: usize = 16 * 1024 * 1024;

/// Why a session is being closed by the proxy, sent to the client as a FATAL error.
#[derive(Default)]
pub struct Halt {
    token: CancellationToken,
    why: Mutex<Option<(&'static str, String)>>,
}

impl Halt {
    /// Asks the relay to close the session with this SQLSTATE and message. The first reason
    /// given wins.
    pub fn fire(&self, code: &'static str, message: impl Into<String>) {
        let mut why = self.why.lock().unwrap();
        if why.is_none() {
            *why = Some((code, message.into()));
        }
        drop(why);
        self.token.cancel();
    }

    pub fn reason(&self) -> Option<(&'static str, String)> {
        self.why.lock().unwrap().clone()
    }
}

/// How a session's relay ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The client said goodbye (Terminate) or closed its connection.
    ClientLeft,
    /// The database closed the connection.
    UpstreamClosed,
    /// The proxy closed the session (shutdown, revocation, audit failure, bad input).
    Halted(String),
    /// The client left and the database did not finish in time.
    DrainTimeout,
    Io(String),
}

impl End {
    pub fn describe(&self) -> String {
        match self {
            End::ClientLeft => "client disconnected".into(),
            End::UpstreamClosed => "database closed the connection".into(),
            End::Halted(why) => format!("closed by the proxy: {why}"),
            End::DrainTimeout => "client left; database did not finish in time".into(),
            End::Io(e) => format!("i/o error: {e}"),
        }
    }
}

/// Something the server still owes an answer for.
#[derive(Debug)]
enum Pending {
    /// A Query message; `seqs` are its statements' records, `next` the one running now.
    Simple {
        first: u64,
        count: usize,
        next: usize,
        since: Instant,
        rows: u64,
    },
    /// An Execute; `seq` is the execution's record (shared by the fetches of one portal).
    Execute { seq: u64, since: Instant, rows: u64 },
    /// A Sync: answered by ReadyForQuery.
    Sync,
    /// A message the proxy refused itself: answer ErrorResponse + ReadyForQuery in its turn.
    Refused { message: String },
    /// A Parse or Close of a prepared statement, answered by ParseComplete/CloseComplete.
    Statement(StatementChange),
    /// The client ended a COPY (CopyDone/CopyFail). Syncs sent while the server was copying
    /// are ignored by the server; this marks where that stretch ends.
    CopyEnd,
}

/// A change to a prepared statement that the server has not confirmed yet. The proxy applies
/// it to its own map when the message is sent (later Binds of the same pipeline need it) and
/// undoes it if the server rejects or skips the message.
#[derive(Debug)]
struct StatementChange {
    name: String,
    /// The new statement (Parse), or `None` (Close).
    new: Option<Arc<Prepared>>,
    /// What the name meant before, to restore.
    before: Option<Arc<Prepared>>,
}

/// State both loops see.
struct Shared {
    pending: VecDeque<Pending>,
    /// Executions suspended by a row limit: first start and rows so far.
    suspended: HashMap<u64, (Instant, u64)>,
    /// Transaction status from the last ReadyForQuery.
    status: u8,
    /// Prepared statements as the server has them, or will once it has confirmed the changes
    /// in `pending`.
    statements: ByName<Arc<Prepared>>,
    /// The server is in COPY FROM STDIN and the client has not ended it yet: its Syncs are
    /// ignored by the server, so they are not queued.
    copy_in: bool,
}

impl Shared {
    /// Undoes a statement change the server rejected or skipped.
    ///
    /// The proxy cannot always tell a rejected Parse from a skipped one (the error may come
    /// from a Bind or Describe before it), so it restores the previous statement either way.
    /// Where the server has in fact dropped it (a failed Parse of the unnamed statement), a
    /// later Bind to it fails: a record with the old text then only ever has an error
    /// outcome, never something that ran under a text it does not carry.
    fn undo(&mut self, change: StatementChange) {
        if same(self.statements.get(&change.name), change.new.as_ref()) {
            self.statements.set(&change.name, change.before.clone());
        }
        // Later changes of the same name restore to what the server really has.
        for p in self.pending.iter_mut() {
            if let Pending::Statement(later) = p {
                if later.name == change.name && same(later.before.as_ref(), change.new.as_ref()) {
                    later.before = change.before.clone();
                }
            }
        }
    }

    /// Pops the statement change at the front of `pending`, if there is one, and undoes it.
    fn undo_front(&mut self) -> bool {
        if !matches!(self.pending.front(), Some(Pending::Statement(_))) {
            return false;
        }
        let Some(Pending::Statement(change)) = self.pending.pop_front() else {
            unreachable!()
        };
        self.undo(change);
        true
    }

    /// Pops what the server will never answer on its own: `CopyEnd` marks at the front.
    fn drop_marks(&mut self) {
        while matches!(self.pending.front(), Some(Pending::CopyEnd)) {
            self.pending.pop_front();
        }
    }
}

fn same(a: Option<&Arc<Prepared>>, b: Option<&Arc<Prepared>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// True when statement `name` has a change the server has not answered and a Sync (or
/// Query) was sent after it. Within one pipeline segment the proxy's map is right whatever
/// happens (a failed Parse makes the server skip the rest of the segment); across a Sync,
/// whether the server applied the change is only known from its answer, so a Bind must wait
/// for that answer to know which statement it runs.
fn unsettled(pending: &VecDeque<Pending>, planned: &[Planned], name: &str) -> bool {
    let mut synced = false;
    let check = |change: &StatementChange, synced: bool| synced && change.name == name;
    for p in planned.iter().rev() {
        match p {
            Planned::Sync | Planned::Simple { .. } => synced = true,
            Planned::Statement(c) if check(c, synced) => return true,
            _ => {}
        }
    }
    for p in pending.iter().rev() {
        match p {
            Pending::Sync | Pending::Simple { .. } => synced = true,
            Pending::Statement(c) if check(c, synced) => return true,
            _ => {}
        }
    }
    false
}

/// What the two loops share.
struct Link {
    shared: Mutex<Shared>,
    /// The client side queued a refusal for the server side to answer.
    refused: Notify,
    /// The server side settled a statement change (a Bind may be waiting for it).
    settled: Notify,
    counters: Counters,
}

struct Counters {
    /// Set by the client side when the client has left: nothing more is written to it.
    client_left: AtomicBool,
    from_client: AtomicU64,
    to_client: AtomicU64,
    statements: AtomicU64,
}

/// Runs the relay until the session ends. `status` is the transaction status of the
/// upstream's first ReadyForQuery.
pub async fn run<C, U>(
    ctx: &Context,
    info: &SessionInfo,
    client: C,
    upstream: U,
    status: u8,
    halt: &Halt,
) -> (Totals, End)
where
    C: Split,
    U: Split,
{
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    let link = Link {
        shared: Mutex::new(Shared {
            pending: VecDeque::new(),
            suspended: HashMap::new(),
            status,
            statements: ByName::default(),
            copy_in: false,
        }),
        refused: Notify::new(),
        settled: Notify::new(),
        counters: Counters {
            client_left: AtomicBool::new(false),
            from_client: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
            statements: AtomicU64::new(0),
        },
    };
    let end = {
        let c2u = client_to_upstream(ctx, info, &mut cr, &mut uw, &link);
        let u2c = upstream_to_client(ctx, info, &mut ur, &mut cw, &link, halt);
        tokio::pin!(c2u, u2c);
        tokio::select! {
            end = &mut u2c => end,
            left = &mut c2u => match left {
                Ok(()) => {
                    let drain = Duration::from_secs(ctx.settings.limits.drain_timeout_secs);
                    tokio::time::timeout(drain, &mut u2c).await.unwrap_or(End::DrainTimeout)
                }
                Err(Refusal { code, message, kind }) => {
                    ctx.metrics.error(kind);
                    halt.fire(code, message);
                    tokio::time::timeout(Duration::from_secs(5), &mut u2c)
                        .await
                        .unwrap_or(End::DrainTimeout)
                }
            },
        }
    };
    // Whatever is still owed an answer never got one we saw.
    let counters = link.counters;
    let mut shared = link.shared.into_inner().unwrap();
    while let Some(p) = shared.pending.pop_front() {
        let unknown = Outcome::Unknown {
            reason: "the session ended before the database answered",
        };
        match p {
            Pending::Simple {
                first,
                count,
                next,
                since,
                ..
            } => {
                for i in next..count {
                    emit(ctx, info, first + i as u64, &unknown, since);
                }
            }
            Pending::Execute { seq, since, .. } => emit(ctx, info, seq, &unknown, since),
            Pending::Sync | Pending::Refused { .. } | Pending::Statement(_) | Pending::CopyEnd => {}
        }
    }
    let totals = Totals {
        bytes_from_client: counters.from_client.load(Ordering::Relaxed),
        bytes_to_client: counters.to_client.load(Ordering::Relaxed),
        statements: counters.statements.load(Ordering::Relaxed),
    };
    (totals, end)
}

/// Why the client side stopped the session.
struct Refusal {
    code: &'static str,
    message: String,
    /// Metrics label.
    kind: &'static str,
}

impl From<ProtocolError> for Refusal {
    fn from(e: ProtocolError) -> Self {
        Refusal {
            code: "08P01",
            message: e.0,
            kind: "protocol",
        }
    }
}

/// A prepared statement as the client defined it.
#[derive(Debug)]
struct Prepared {
    sql: Arc<str>,
    redacted: bool,
}

/// A bound portal: its statement and the JSON of its parameters.
struct Portal {
    statement: String,
    prepared: Option<Arc<Prepared>>,
    params: String,
    /// Set at the first Execute: later Executes fetch more rows of the same execution.
    executed: Option<ExecRef>,
}

#[derive(Debug, Clone, Copy)]
enum ExecRef {
    /// Index of a record in the batch being written.
    Batch(usize),
    Seq(u64),
}

/// What the client side queues for one batch, resolved to sequence numbers once the batch's
/// records are accepted.
enum Planned {
    Simple { first: usize, count: usize },
    Execute(ExecRef),
    Sync,
    Statement(StatementChange),
    CopyEnd,
}

/// Statements or portals by name. The unnamed one, which most drivers use for every
/// execution, is kept apart: the common path does no hashing.
struct ByName<T> {
    unnamed: Option<T>,
    named: HashMap<String, T>,
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

    fn insert(&mut self, name: &str, value: T) {
        match name {
            "" => self.unnamed = Some(value),
            _ => {
                self.named.insert(name.to_string(), value);
            }
        }
    }

    fn remove(&mut self, name: &str) -> Option<T> {
        match name {
            "" => self.unnamed.take(),
            _ => self.named.remove(name),
        }
    }

    fn set(&mut self, name: &str, value: Option<T>) {
        match value {
            Some(v) => self.insert(name, v),
            None => {
                self.remove(name);
            }
        }
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.unnamed.iter_mut().chain(self.named.values_mut())
    }
}

/// Client-side protocol state: portals (statements are in [`Shared`]).
#[derive(Default)]
struct Extended {
    portals: ByName<Portal>,
}

/// What decoding a client message led to.
enum Step {
    Done,
    /// A Bind of `statement`, which is not settled yet: stop before it, forward what came
    /// before, and wait for the server's answer.
    Wait {
        statement: String,
    },
}

/// A batch of client messages, decoded.
#[derive(Default)]
struct Batch {
    records: Vec<String>,
    planned: Vec<Planned>,
}

impl Extended {
    /// Decodes one complete client message and adds what it means to `batch`.
    fn message(
        &mut self,
        ctx: &Context,
        info: &SessionInfo,
        sh: &mut Shared,
        tag: u8,
        body: &[u8],
        batch: &mut Batch,
    ) -> Result<Step, Refusal> {
        match tag {
            fe::QUERY => {
                let text = fe::query(body)?;
                let mut statements = sql::split(text);
                if statements.is_empty() {
                    // The server answers EmptyQueryResponse: still one execution.
                    statements.push(text);
                }
                let count = statements.len();
                let first = batch.records.len();
                for (index, stmt) in statements.into_iter().enumerate() {
                    let clean = sql::redact(stmt);
                    let redacted = matches!(clean, std::borrow::Cow::Owned(_));
                    batch.records.push(record::statement(
                        info,
                        Via::Simple { index, count },
                        &clean,
                        redacted,
                        None,
                    ));
                }
                batch.planned.push(Planned::Simple { first, count });
            }
            fe::PARSE => {
                let p = fe::parse(body)?;
                let clean = sql::redact(p.sql);
                let prepared = Arc::new(Prepared {
                    redacted: matches!(clean, std::borrow::Cow::Owned(_)),
                    sql: Arc::from(clean.as_ref()),
                });
                // Applied now, undone if the server refuses it (a named statement that
                // exists: 42P05) or skips it.
                let before = sh.statements.get(p.statement).cloned();
                sh.statements.insert(p.statement, prepared.clone());
                batch.planned.push(Planned::Statement(StatementChange {
                    name: p.statement.to_string(),
                    new: Some(prepared),
                    before,
                }));
            }
            fe::BIND => {
                let b = fe::bind(body)?;
                if unsettled(&sh.pending, &batch.planned, b.statement) {
                    return Ok(Step::Wait {
                        statement: b.statement.to_string(),
                    });
                }
                let portal = Portal {
                    statement: b.statement.to_string(),
                    prepared: sh.statements.get(b.statement).cloned(),
                    params: record::params_json(&b.params, ctx.settings.audit.param_cap_bytes),
                    executed: None,
                };
                if self.portals.named.len() > 10_000 {
                    // Portals die with their transaction, which this side cannot see;
                    // forget them rather than grow without bound.
                    self.portals.named.clear();
                }
                self.portals.insert(b.portal, portal);
            }
            fe::EXECUTE => {
                let e = fe::execute(body)?;
                let exec = match self.portals.get_mut(e.portal) {
                    // More rows of an execution the server has suspended (or not yet
                    // answered): the same record.
                    Some(Portal {
                        executed: Some(r), ..
                    }) if still_running(sh, *r) => *r,
                    Some(portal) if portal.executed.is_none() => {
                        let (text, redacted) = match &portal.prepared {
                            Some(p) => (p.sql.as_ref(), p.redacted),
                            None => ("", false),
                        };
                        let r = ExecRef::Batch(batch.records.len());
                        batch.records.push(record::statement(
                            info,
                            Via::Extended {
                                statement: &portal.statement,
                                portal: e.portal,
                            },
                            text,
                            redacted,
                            Some(&portal.params),
                        ));
                        portal.executed = Some(r);
                        r
                    }
                    // A portal the proxy did not see bound (a SQL cursor), or one whose
                    // execution ended (the name may now be a cursor's): audit the execution
                    // by name.
                    _ => {
                        let r = ExecRef::Batch(batch.records.len());
                        batch.records.push(record::statement(
                            info,
                            Via::Extended {
                                statement: "",
                                portal: e.portal,
                            },
                            "",
                            false,
                            None,
                        ));
                        if let Some(portal) = self.portals.get_mut(e.portal) {
                            portal.executed = Some(r);
                        }
                        r
                    }
                };
                batch.planned.push(Planned::Execute(exec));
            }
            fe::CLOSE => match fe::target(body, "Close")? {
                fe::Target::Statement(name) => {
                    let before = sh.statements.remove(name);
                    batch.planned.push(Planned::Statement(StatementChange {
                        name: name.to_string(),
                        new: None,
                        before,
                    }));
                }
                fe::Target::Portal(name) => {
                    self.portals.remove(name);
                }
            },
            fe::DESCRIBE => {
                fe::target(body, "Describe")?;
            }
            fe::SYNC => batch.planned.push(Planned::Sync),
            fe::COPY_DONE | fe::COPY_FAIL => batch.planned.push(Planned::CopyEnd),
            fe::FLUSH | fe::TERMINATE => {}
            other => {
                return Err(ProtocolError::new(format!(
                    "unexpected message type {:?}",
                    frame::printable(other)
                ))
                .into())
            }
        }
        Ok(Step::Done)
    }

    /// Replaces batch indexes by sequence numbers once the batch is accepted.
    fn resolve(&mut self, first_seq: u64) {
        for portal in self.portals.values_mut() {
            if let Some(ExecRef::Batch(i)) = portal.executed {
                portal.executed = Some(ExecRef::Seq(first_seq + i as u64));
            }
        }
    }
}

/// Whether an execution may still return rows: it is in this batch, not yet answered, or
/// suspended. Once it completed, an Execute of the same portal name is a new execution
/// (the portal may even have been replaced by a cursor of that name).
fn still_running(sh: &Shared, r: ExecRef) -> bool {
    match r {
        ExecRef::Batch(_) => true,
        ExecRef::Seq(seq) => {
            sh.suspended.contains_key(&seq)
                || sh
                    .pending
                    .iter()
                    .any(|p| matches!(p, Pending::Execute { seq: s, .. } if *s == seq))
        }
    }
}

fn seq_of(r: ExecRef, first_seq: u64) -> u64 {
    match r {
        ExecRef::Batch(i) => first_seq + i as u64,
        ExecRef::Seq(s) => s,
    }
}

/// Client → database. Returns `Ok` when the client has left (Terminate forwarded, or its
/// connection closed and Terminate sent on its behalf).
async fn client_to_upstream<R, W>(
    ctx: &Context,
    info: &SessionInfo,
    client: &mut R,
    upstream: &mut W,
    link: &Link,
) -> Result<(), Refusal>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (shared, refused, settled, counters) =
        (&link.shared, &link.refused, &link.settled, &link.counters);
    let max = ctx.settings.limits.max_message_bytes;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut state = Extended::default();
    let mut batch = Batch::default();
    // Bytes of a CopyData message still to pass through.
    let mut streaming = 0usize;
    let io = |e: std::io::Error| Refusal {
        code: "08006",
        message: format!("connection to the database failed: {e}"),
        kind: "io",
    };
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        let n = match client.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return client_gone(upstream, counters).await,
            Ok(n) => n,
        };
        counters.from_client.fetch_add(n as u64, Ordering::Relaxed);
        ctx.metrics.bytes_from_clients.inc_by(n as u64);

        let mut terminated = false;
        loop {
            // Scan complete messages; stop before one the proxy refuses or must wait for.
            let mut pos = streaming.min(buf.len());
            streaming -= pos;
            let mut refuse: Option<usize> = None;
            let mut wait: Option<String> = None;
            {
                let mut sh = shared.lock().unwrap();
                while streaming == 0 {
                    let Some(h) = frame::header(&buf[pos..], max).map_err(|e| Refusal {
                        code: if e.0.contains("over the limit") {
                            "54000"
                        } else {
                            "08P01"
                        },
                        message: e.0,
                        kind: "protocol",
                    })?
                    else {
                        break;
                    };
                    let avail = buf.len() - pos;
                    if h.tag == fe::COPY_DATA {
                        if avail >= h.total {
                            pos += h.total;
                        } else {
                            streaming = h.total - avail;
                            pos = buf.len();
                        }
                        continue;
                    }
                    if avail < h.total {
                        buf.reserve(h.total - avail);
                        break;
                    }
                    if h.tag == fe::FUNCTION_CALL {
                        // Refused with ErrorResponse + ReadyForQuery, which must come after the
                        // answers to everything before it: only done when nothing is owed.
                        if !sh.pending.is_empty() || !batch.planned.is_empty() {
                            return Err(Refusal {
                                code: "0A000",
                                message: FUNCTION_CALL_REFUSED.into(),
                                kind: "refused",
                            });
                        }
                        refuse = Some(h.total);
                        break;
                    }
                    if h.tag == fe::TERMINATE {
                        terminated = true;
                    }
                    let step = state.message(
                        ctx,
                        info,
                        &mut sh,
                        h.tag,
                        &buf[pos + frame::HEADER_LEN..pos + h.total],
                        &mut batch,
                    )?;
                    if let Step::Wait { statement } = step {
                        wait = Some(statement);
                        break;
                    }
                    pos += h.total;
                }
            }

            // Write-ahead: the records of this batch are accepted before its bytes move.
            let first_seq = if batch.records.is_empty() {
                0
            } else {
                let seq = ctx
                    .audit
                    .accept(&batch.records)
                    .await
                    .map_err(|e| Refusal {
                        code: "58030",
                        message: format!("{e}; the statement was not executed"),
                        kind: "audit",
                    })?;
                counters
                    .statements
                    .fetch_add(batch.records.len() as u64, Ordering::Relaxed);
                ctx.metrics.statements.inc_by(batch.records.len() as u64);
                state.resolve(seq);
                seq
            };
            if !batch.planned.is_empty() || refuse.is_some() {
                let now = Instant::now();
                let mut sh = shared.lock().unwrap();
                for p in batch.planned.drain(..) {
                    let pending = match p {
                        Planned::Simple { first, count } => Pending::Simple {
                            first: first_seq + first as u64,
                            count,
                            next: 0,
                            since: now,
                            rows: 0,
                        },
                        Planned::Execute(r) => Pending::Execute {
                            seq: seq_of(r, first_seq),
                            since: now,
                            rows: 0,
                        },
                        // The server ignores Syncs while it copies from the client.
                        Planned::Sync if sh.copy_in => continue,
                        Planned::Sync => Pending::Sync,
                        Planned::Statement(change) => Pending::Statement(change),
                        Planned::CopyEnd if sh.copy_in => {
                            sh.copy_in = false;
                            continue;
                        }
                        Planned::CopyEnd => Pending::CopyEnd,
                    };
                    sh.pending.push_back(pending);
                }
                if refuse.is_some() {
                    sh.pending.push_back(Pending::Refused {
                        message: FUNCTION_CALL_REFUSED.into(),
                    });
                }
            }
            batch.records.clear();

            if pos > 0 {
                upstream.write_all(&buf[..pos]).await.map_err(io)?;
                buf.advance(pos);
            }
            if terminated {
                counters.client_left.store(true, Ordering::Relaxed);
                let _ = upstream.flush().await;
                return Ok(());
            }
            if let Some(name) = wait {
                // The Bind at the front of `buf` waits until the server has answered the
                // statement changes before it (a Sync after them is on its way, so the
                // answer comes). Meanwhile the client is still read, up to a message's
                // worth, so that a client that leaves ends the session.
                loop {
                    let answered = settled.notified();
                    if !unsettled(&shared.lock().unwrap().pending, &[], &name) {
                        break;
                    }
                    tokio::select! {
                        _ = answered => {}
                        read = client.read_buf(&mut buf), if buf.len() < max => match read {
                            Ok(0) | Err(_) => return client_gone(upstream, counters).await,
                            Ok(n) => {
                                counters.from_client.fetch_add(n as u64, Ordering::Relaxed);
                                ctx.metrics.bytes_from_clients.inc_by(n as u64);
                            }
                        },
                    }
                }
                continue;
            }
            match refuse {
                Some(len) => {
                    buf.advance(len);
                    refused.notify_one();
                    // More complete messages may follow the refused one.
                }
                None => break,
            }
        }
    }
}

/// The client has gone: end the upstream session politely.
async fn client_gone<W: AsyncWrite + Unpin>(
    upstream: &mut W,
    counters: &Counters,
) -> Result<(), Refusal> {
    counters.client_left.store(true, Ordering::Relaxed);
    let _ = upstream.write_all(&[fe::TERMINATE, 0, 0, 0, 4]).await;
    let _ = upstream.flush().await;
    Ok(())
}

/// Database → client. Returns when the database closes the connection, or when the session
/// is halted (after telling the client why, at a message boundary).
async fn upstream_to_client<R, W>(
    ctx: &Context,
    info: &SessionInfo,
    upstream: &mut R,
    client: &mut W,
    link: &Link,
    halt: &Halt,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (shared, refused, settled, counters) =
        (&link.shared, &link.refused, &link.settled, &link.counters);
    let mut buf = BytesMut::with_capacity(32 * 1024);
    let mut side = ServerSide::default();
    let mut client_gone = false;
    let mut out = BytesMut::new();
    // Made once, not per read: registering a waiter costs more than the read itself.
    let cancelled = halt.token.cancelled();
    tokio::pin!(cancelled);
    let refusal = refused.notified();
    tokio::pin!(refusal);
    loop {
        if buf.capacity() - buf.len() < 8192 {
            buf.reserve(32 * 1024);
        }
        let read = tokio::select! {
            biased;
            // A halt is delivered only between messages: never inside a half-sent one.
            _ = &mut cancelled, if side.skip == 0 => {
                let (code, message) = halt.reason().unwrap_or(("57P01", "session closed".into()));
                if !client_gone {
                    out.clear();
                    be::error(&mut out, "FATAL", code, &message);
                    let _ = client.write_all(&out).await;
                    let _ = client.flush().await;
                }
                return End::Halted(message);
            }
            _ = &mut refusal => {
                refusal.set(refused.notified());
                None
            }
            r = upstream.read_buf(&mut buf) => Some(r),
        };
        match read {
            None => {}
            Some(Ok(0)) => {
                let left = counters.client_left.load(Ordering::Relaxed);
                if !client_gone && !left && side.skip == 0 && !side.fatal_seen {
                    out.clear();
                    be::error(
                        &mut out,
                        "FATAL",
                        "08006",
                        "the connection to the database was lost",
                    );
                    let _ = client.write_all(&out).await;
                }
                return End::UpstreamClosed;
            }
            Some(Err(e)) => return End::Io(e.to_string()),
            Some(Ok(_)) => {}
        }

        let pos = match side.scan(ctx, info, &mut buf, shared, settled, &mut out) {
            Ok(pos) => pos,
            Err(end) => return end,
        };
        // A client that went away stops receiving, but the outcomes of what still runs
        // belong in the audit: keep reading from the database.
        if !client_gone && pos > 0 && client.write_all(&buf[..pos]).await.is_err() {
            client_gone = true;
        }
        if !client_gone && !out.is_empty() && client.write_all(&out).await.is_err() {
            client_gone = true;
        }
        if pos > 0 {
            counters.to_client.fetch_add(pos as u64, Ordering::Relaxed);
            ctx.metrics.bytes_to_clients.inc_by(pos as u64);
            buf.advance(pos);
        }
    }
}

/// The server side's scanning state, kept between reads.
#[derive(Default)]
struct ServerSide {
    /// Bytes of a message passed through without decoding, still to come.
    skip: usize,
    /// The database's own FATAL already told the client why it is closing.
    fatal_seen: bool,
}

impl ServerSide {
    /// Scans what `buf` holds: pairs the messages that end a statement with what is pending
    /// and counts DataRows. Returns how many bytes may go to the client (whole messages, or
    /// the part of a large one that passes through); `out` receives the proxy's own answers
    /// that are due (refusals). The lock is never held across an await.
    fn scan(
        &mut self,
        ctx: &Context,
        info: &SessionInfo,
        buf: &mut BytesMut,
        shared: &Mutex<Shared>,
        settled: &Notify,
        out: &mut BytesMut,
    ) -> Result<usize, End> {
        let mut pos = self.skip.min(buf.len());
        self.skip -= pos;
        let mut sh = shared.lock().unwrap();
        while self.skip == 0 {
            let h = match frame::header(&buf[pos..], usize::MAX) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => return Err(End::Io(format!("bad message from the database: {e}"))),
            };
            let avail = buf.len() - pos;
            match h.tag {
                be::COMMAND_COMPLETE
                | be::EMPTY_QUERY
                | be::ERROR_RESPONSE
                | be::PORTAL_SUSPENDED
                | be::READY_FOR_QUERY
                | be::PARSE_COMPLETE
                | be::CLOSE_COMPLETE
                | be::COPY_IN_RESPONSE => {
                    if h.total > MAX_DECODED_SERVER_MESSAGE {
                        return Err(End::Io("oversized message from the database".into()));
                    }
                    if avail < h.total {
                        buf.reserve(h.total - avail);
                        break;
                    }
                    let body = &buf[pos + frame::HEADER_LEN..pos + h.total];
                    if h.tag == be::ERROR_RESPONSE && is_fatal(body) {
                        self.fatal_seen = true;
                    }
                    if answered(ctx, info, &mut sh, h.tag, body) {
                        settled.notify_one();
                    }
                    pos += h.total;
                }
                tag => {
                    if tag == be::DATA_ROW {
                        if let Some(Pending::Simple { rows, .. } | Pending::Execute { rows, .. }) =
                            sh.pending.front_mut()
                        {
                            *rows += 1;
                        }
                    }
                    if avail >= h.total {
                        pos += h.total;
                    } else {
                        self.skip = h.total - avail;
                        pos = buf.len();
                    }
                }
            }
        }
        // Refusals whose turn has come (everything before them is answered).
        out.clear();
        while self.skip == 0 && matches!(sh.pending.front(), Some(Pending::Refused { .. })) {
            if let Some(Pending::Refused { message }) = sh.pending.pop_front() {
                be::error(out, "ERROR", "0A000", &message);
                be::ready_for_query(out, sh.status);
            }
        }
        Ok(pos)
    }
}

fn is_fatal(body: &[u8]) -> bool {
    be::error_fields(body)
        .map(|f| f.severity == "FATAL" || f.severity == "PANIC")
        .unwrap_or(false)
}

/// Writes an outcome record for the execution `seq` that started at `since`.
fn emit(ctx: &Context, info: &SessionInfo, seq: u64, outcome: &Outcome, since: Instant) {
    let micros = since.elapsed().as_micros() as u64;
    ctx.audit
        .record(record::outcome(info, seq, outcome, micros));
}

/// Pairs a statement-ending server message with what is pending. Returns true when a
/// statement change was settled (a Bind may be waiting for that).
fn answered(ctx: &Context, info: &SessionInfo, sh: &mut Shared, tag: u8, body: &[u8]) -> bool {
    let now = Instant::now();
    sh.drop_marks();
    match tag {
        be::COMMAND_COMPLETE | be::EMPTY_QUERY => {
            sh.copy_in = false;
            let tag_text = if tag == be::EMPTY_QUERY {
                "EMPTY"
            } else {
                be::command_tag(body).unwrap_or("?")
            };
            let tag_rows = be::tag_rows(tag_text);
            match sh.pending.front_mut() {
                Some(Pending::Simple {
                    first,
                    count,
                    next,
                    since,
                    rows,
                }) if *next < *count => {
                    let total = tag_rows.map(|t| t.max(*rows));
                    let outcome = Outcome::Ok {
                        tag: tag_text,
                        rows: total,
                    };
                    emit(ctx, info, *first + *next as u64, &outcome, *since);
                    *next += 1;
                    *since = now;
                    *rows = 0;
                }
                Some(Pending::Execute { .. }) => {
                    let Some(Pending::Execute { seq, since, rows }) = sh.pending.pop_front() else {
                        unreachable!()
                    };
                    let (start, earlier) = sh.suspended.remove(&seq).unwrap_or((since, 0));
                    let fetched = earlier + rows;
                    let total = tag_rows
                        .map(|t| t.max(fetched))
                        .or((fetched > 0).then_some(fetched));
                    let outcome = Outcome::Ok {
                        tag: tag_text,
                        rows: total,
                    };
                    emit(ctx, info, seq, &outcome, start);
                }
                _ => tracing::debug!(session = %info.session, "unpaired command completion"),
            }
        }
        be::PARSE_COMPLETE | be::CLOSE_COMPLETE => {
            if let Some(Pending::Statement(_)) = sh.pending.front() {
                sh.pending.pop_front();
                return true;
            }
        }
        be::COPY_IN_RESPONSE => {
            // Syncs the client sent after the COPY began and before it ended it are ignored
            // by the server: take them out of the queue.
            let mut i = 1;
            let mut ended = false;
            while i < sh.pending.len() {
                match sh.pending[i] {
                    Pending::Sync => {
                        sh.pending.remove(i);
                    }
                    Pending::CopyEnd => {
                        sh.pending.remove(i);
                        ended = true;
                        break;
                    }
                    _ => i += 1,
                }
            }
            sh.copy_in = !ended;
        }
        be::PORTAL_SUSPENDED => {
            if let Some(Pending::Execute { .. }) = sh.pending.front() {
                let Some(Pending::Execute { seq, since, rows }) = sh.pending.pop_front() else {
                    unreachable!()
                };
                let entry = sh.suspended.entry(seq).or_insert((since, 0));
                entry.1 += rows;
            }
        }
        be::ERROR_RESPONSE => {
            sh.copy_in = false;
            let fields = be::error_fields(body).unwrap_or_default();
            let failed = Outcome::Error {
                code: &fields.code,
                message: &fields.message,
            };
            match sh.pending.front_mut() {
                Some(Pending::Simple {
                    first,
                    count,
                    next,
                    since,
                    ..
                }) if *next < *count => {
                    emit(ctx, info, *first + *next as u64, &failed, *since);
                    let skipped = Outcome::NotExecuted {
                        reason: "an earlier statement in the same query string failed",
                    };
                    for i in *next + 1..*count {
                        emit(ctx, info, *first + i as u64, &skipped, now);
                    }
                    *next = *count;
                    return false;
                }
                Some(Pending::Execute { .. }) => {
                    let Some(Pending::Execute { seq, since, .. }) = sh.pending.pop_front() else {
                        unreachable!()
                    };
                    let start = sh.suspended.remove(&seq).map(|s| s.0).unwrap_or(since);
                    emit(ctx, info, seq, &failed, start);
                }
                Some(Pending::Statement(_)) => {
                    // The Parse failed (or a message before it that the proxy does not track),
                    // and the changes after it were skipped.
                    while sh.undo_front() {}
                    // The execution the client sent it for fails with it: that Execute's
                    // outcome is this error, not "not executed".
                    if let Some(Pending::Execute { .. }) = sh.pending.front() {
                        let Some(Pending::Execute { seq, since, .. }) = sh.pending.pop_front()
                        else {
                            unreachable!()
                        };
                        sh.suspended.remove(&seq);
                        emit(ctx, info, seq, &failed, since);
                    }
                }
                _ => return false,
            }
            // After an error in the extended protocol the server skips everything up to the
            // next Sync.
            skip_to_sync(
                ctx,
                info,
                sh,
                now,
                "an earlier message in the same pipeline failed",
            );
            return true;
        }
        be::READY_FOR_QUERY => {
            if let Ok(status) = be::ready_status(body) {
                sh.status = status;
            }
            // Everything up to the Sync (or Query) this answers is settled.
            let settled = skip_to_sync(ctx, info, sh, now, "the server did not run this");
            match sh.pending.pop_front() {
                Some(Pending::Simple {
                    first, count, next, ..
                }) => {
                    let skipped = Outcome::NotExecuted {
                        reason: "the server did not run this statement",
                    };
                    for i in next..count {
                        emit(ctx, info, first + i as u64, &skipped, now);
                    }
                }
                Some(Pending::Refused { message }) => {
                    // Cannot happen: a refusal is answered as soon as it is at the front.
                    tracing::warn!(%message, "refusal overtaken by ReadyForQuery");
                }
                _ => {}
            }
            if sh.status == b'I' {
                // Portals die with their transaction; suspended executions end with them.
                let stale: Vec<u64> = sh.suspended.keys().copied().collect();
                for seq in stale {
                    let (since, rows) = sh.suspended.remove(&seq).unwrap();
                    let outcome = Outcome::Ok {
                        tag: "PORTAL CLOSED",
                        rows: Some(rows),
                    };
                    emit(ctx, info, seq, &outcome, since);
                }
            }
            return settled;
        }
        _ => {}
    }
    false
}

/// Settles what the server skipped, up to (not including) the next Sync, Query or refusal:
/// executions did not run, statement changes did not happen. Returns true when a statement
/// change was among them.
fn skip_to_sync(
    ctx: &Context,
    info: &SessionInfo,
    sh: &mut Shared,
    now: Instant,
    reason: &'static str,
) -> bool {
    let mut settled = false;
    let skipped = Outcome::NotExecuted { reason };
    loop {
        match sh.pending.front() {
            Some(Pending::Execute { .. }) => {
                let Some(Pending::Execute { seq, .. }) = sh.pending.pop_front() else {
                    unreachable!()
                };
                match sh.suspended.remove(&seq) {
                    // A later fetch was skipped: the execution ran and returned these rows.
                    Some((since, rows)) => {
                        let ended = Outcome::Ok {
                            tag: "PORTAL CLOSED",
                            rows: Some(rows),
                        };
                        emit(ctx, info, seq, &ended, since);
                    }
                    None => emit(ctx, info, seq, &skipped, now),
                }
            }
            Some(Pending::Statement(_)) => settled |= sh.undo_front(),
            Some(Pending::CopyEnd) => {
                sh.pending.pop_front();
            }
            Some(Pending::Sync)
            | Some(Pending::Simple { .. })
            | Some(Pending::Refused { .. })
            | None => return settled,
        }
    }
}

//! The relay: a logged-in session's two byte streams, and what the audit sees of them.
//!
//! - [`ledger`]: the pure pairing state machine: what each client message records, and
//!   which record each server response ends.
//! - [`client`]: client → database. Every message is framed; those that carry SQL or
//!   parameters are decoded and recorded, and the records are *accepted* by the audit log
//!   before the bytes that carry them are forwarded. COPY data streams through.
//! - [`server`]: database → client. Every message is paired with the ledger (by its header;
//!   only the few that carry outcomes are decoded), and forwarded untouched.
//! - [`quiet`]: what a session's timers (idle limits, notices) see of the relay.
//! - [`wakes`]: the two loops and the halt run in one task, each polled only after its own
//!   wake-up.
//! - [`Halt`] (in [`crate::halt`]): how the proxy ends a session (revocation, expiry,
//!   shutdown): it wins over anything either loop is waiting for, including a client that
//!   stopped reading.

mod client;
pub mod ledger;
pub mod quiet;
mod server;
mod wakes;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use crate::audit::record::{self, Outcome, Totals};
use crate::audit::{AuditLog, SessionInfo};
use crate::halt::Halt;
use crate::metrics::ErrorKind;
use crate::metrics::Metrics;
use crate::protocol::backend as be;
use crate::settings::Limits;
use crate::sql::Caller;
use crate::stream::Split;
use ledger::{Finished, Ledger};
use quiet::Quiet;

/// What the relay uses of the proxy.
pub struct Deps<'a> {
    pub audit: &'a AuditLog,
    pub metrics: &'a Metrics,
    pub limits: &'a Limits,
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

/// Why the client side stopped the session: a FATAL for the client, a metrics label.
#[derive(Debug)]
pub(crate) struct Stop {
    pub code: &'static str,
    pub message: String,
    pub kind: ErrorKind,
}

impl From<ledger::Violation> for Stop {
    fn from(v: ledger::Violation) -> Self {
        Stop {
            code: v.sqlstate(),
            message: v.to_string(),
            kind: ErrorKind::Protocol,
        }
    }
}

/// Which branch of the relay's task finished first.
enum First {
    Halted,
    Server(End),
    Client(Result<(), Stop>),
}

/// What the two loops share.
struct Link {
    ledger: Mutex<Ledger>,
    /// The server side answered something a waiting client message depends on.
    settled: Notify,
    /// The client side holds a message back: the server side tells it of every answer.
    waiting: AtomicBool,
    /// The client side queued a refusal for the server side to answer in its turn.
    refused: Notify,
    /// Set by the client side when the client has left: nothing more is written to it.
    client_left: AtomicBool,
    /// The last write to the client ended at a message boundary (a FATAL may follow).
    clean: AtomicBool,
    from_client: AtomicU64,
    to_client: AtomicU64,
    statements: AtomicU64,
    /// Sessions with timers only: the relay tells them when it goes quiet or busy.
    quiet: Option<Arc<Quiet>>,
}

impl Link {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // A panic while holding the lock leaves nothing the audit can trust: end the
        // session instead of reading a half-updated ledger.
        self.ledger
            .lock()
            .expect("the session's ledger is poisoned")
    }
}

/// Runs the relay until the session ends. `status` is the transaction status of the
/// upstream's first ReadyForQuery; `read_only`: the session's grant makes it read-only
/// ([`crate::sql::read_only`]); `quiet`, for a session with timers, what they watch.
#[allow(clippy::too_many_arguments)]
pub async fn run<C, U>(
    deps: &Deps<'_>,
    info: &SessionInfo,
    caller: Caller,
    read_only: bool,
    client: C,
    upstream: U,
    status: u8,
    halt: &Halt,
    quiet: Option<Arc<Quiet>>,
) -> (Totals, End)
where
    C: Split,
    U: Split,
{
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    let mut ledger = Ledger::new(caller, deps.audit.settings().param_cap_bytes, status);
    if read_only {
        ledger.set_read_only();
    }
    let link = Link {
        ledger: Mutex::new(ledger),
        settled: Notify::new(),
        waiting: AtomicBool::new(false),
        refused: Notify::new(),
        client_left: AtomicBool::new(false),
        clean: AtomicBool::new(true),
        from_client: AtomicU64::new(0),
        to_client: AtomicU64::new(0),
        statements: AtomicU64::new(0),
        quiet,
    };
    let stopped = {
        let c2u = client::run(deps, info, &mut cr, &mut uw, &link, halt);
        let u2c = server::run(deps, info, &mut ur, &mut cw, &link);
        let halted = halt.fired_wait();
        tokio::pin!(c2u, u2c, halted);
        // Each side is polled only when its own wake-up fired ([`wakes`]), in this order:
        // a halt wins over whatever either side waits for, a blocked write included.
        let task = wakes::Task::new();
        let (halt_branch, server_branch, client_branch) =
            (task.branch(), task.branch(), task.branch());
        let first = std::future::poll_fn(|cx| {
            task.register(cx);
            if halt_branch.poll(halted.as_mut()).is_ready() {
                return Poll::Ready(First::Halted);
            }
            if let Poll::Ready(end) = server_branch.poll(u2c.as_mut()) {
                return Poll::Ready(First::Server(end));
            }
            client_branch.poll(c2u.as_mut()).map(First::Client)
        })
        .await;
        match first {
            First::Halted => None,
            First::Server(end) => Some(end),
            First::Client(left) => match left {
                Ok(()) => {
                    // The client left: wait for the outcomes of what still runs.
                    let drain = Duration::from_secs(deps.limits.drain_timeout_secs);
                    tokio::select! {
                        _ = halt.fired_wait() => None,
                        end = crate::clock::timeout(drain, &mut u2c) => Some(end.unwrap_or(End::DrainTimeout)),
                    }
                }
                Err(stop) => {
                    deps.metrics.error(stop.kind);
                    let _ = halt.fire(stop.code, stop.message);
                    None
                }
            },
        }
    };
    let end = match stopped {
        Some(end) => end,
        None => {
            let (code, message) = halt.reason();
            // Tell the client why, if the stream is at a message boundary and it still
            // reads; never wait long for a client that does not.
            if link.clean.load(Ordering::Relaxed) && !link.client_left.load(Ordering::Relaxed) {
                let mut out = BytesMut::new();
                be::error(&mut out, "FATAL", code, &message);
                let write = async {
                    cw.write_all(&out).await?;
                    cw.flush().await
                };
                let _ = crate::clock::timeout(Duration::from_millis(500), write).await;
            }
            End::Halted(message)
        }
    };
    // Whatever is still owed an answer never got one we saw.
    let mut ledger = link.ledger.into_inner().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    ledger.abort(now, &mut |f| emit(deps, info, now, f));
    let totals = Totals {
        bytes_from_client: link.from_client.load(Ordering::Relaxed),
        bytes_to_client: link.to_client.load(Ordering::Relaxed),
        statements: link.statements.load(Ordering::Relaxed),
    };
    (totals, end)
}

/// Writes the outcome record of a finished statement, built in a buffer the thread keeps
/// (sessions run on single-threaded runtimes; nothing awaits while it is borrowed). `now`
/// is when the answer was read (the scan's clock reading: no clock read per record).
fn emit(deps: &Deps<'_>, info: &SessionInfo, now: Instant, f: Finished<'_>) {
    use std::cell::RefCell;
    thread_local! {
        static OUTCOME: RefCell<(String, record::KeptOk)> =
            RefCell::new((String::with_capacity(320), record::KeptOk::default()));
    }
    let micros = now.saturating_duration_since(f.since).as_micros() as u64;
    OUTCOME.with_borrow_mut(|(b, kept)| {
        b.clear();
        record::outcome_into(b, info, f.seq, f.index, &f.outcome, micros, kept);
        deps.audit.record_str(b);
        if b.capacity() > 64 * 1024 {
            *b = String::with_capacity(320);
        }
    });
}

/// The outcome of a record the proxy never forwarded.
fn not_forwarded(deps: &Deps<'_>, info: &SessionInfo, seq: u64, outcome: &Outcome<'_>) {
    deps.audit
        .record(record::outcome(info, seq, None, outcome, 0));
}

//! Client → database. Each read is scanned message by message with the ledger; the records
//! it asks for are accepted by the audit log, and only then are the bytes forwarded.
//!
//! A message the ledger holds back ([`Action::Wait`]) stops the scan: what came before it
//! goes out, and the loop waits for the server's answers (still reading the client, so a
//! client that leaves ends the session). A dropped or refused message is cut out of the
//! stream. COPY data streams through without being buffered whole.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ledger::{Action, Intent, Prepared, Steps};
use super::{not_forwarded, Deps, Link, Stop};
use crate::audit::record::{self, Outcome, Text, Via};
use crate::audit::SessionInfo;
use crate::halt::Halt;
use crate::metrics::ErrorKind;
use crate::protocol::sqlstate;
use crate::protocol::{frame, frontend as fe};

/// Returns `Ok` when the client has left (Terminate forwarded, or its connection closed and
/// Terminate sent on its behalf).
pub(super) async fn run<R, W>(
    deps: &Deps<'_>,
    info: &SessionInfo,
    client: &mut R,
    upstream: &mut W,
    link: &Link,
    halt: &Halt,
) -> Result<(), Stop>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let max = deps.limits.max_message_bytes;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut bodies = Bodies::default();
    // Bytes of a CopyData message still to pass through.
    let mut streaming = 0usize;
    let io = |e: std::io::Error| Stop {
        code: sqlstate::CONNECTION_FAILURE,
        message: format!("connection to the database failed: {e}"),
        kind: ErrorKind::Io,
    };
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        match client.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return gone(upstream, link).await,
            Ok(n) => count_in(deps, link, n),
        }
        loop {
            let Scan {
                pos,
                after,
                terminated,
            } = scan(deps, info, link, &mut buf, &mut streaming, max)?;
            // Halted while this was decided: nothing more goes to the database.
            if !accept(deps, info, link, halt, &mut bodies).await? {
                return Ok(());
            }
            if pos > 0 {
                upstream.write_all(&buf[..pos]).await.map_err(io)?;
                buf.advance(pos);
            }
            if terminated {
                link.client_left.store(true, Ordering::Relaxed);
                let _ = upstream.flush().await;
                return Ok(());
            }
            match after {
                After::Read => break,
                After::Skip(len) => {
                    buf.advance(len);
                    link.refused.notify_one();
                }
                After::Wait => {
                    // The message at the front of `buf` waits for the server's answers (the
                    // Sync or Query before it guarantees them). Meanwhile the client is
                    // still read, up to a message's worth, so that one that leaves ends the
                    // session.
                    link.waiting.store(true, Ordering::Relaxed);
                    loop {
                        let answered = link.settled.notified();
                        if !still_waiting(link, &buf, max)? {
                            break;
                        }
                        tokio::select! {
                            _ = answered => {}
                            read = client.read_buf(&mut buf), if buf.len() < max => match read {
                                Ok(0) | Err(_) => return gone(upstream, link).await,
                                Ok(n) => count_in(deps, link, n),
                            },
                        }
                    }
                    link.waiting.store(false, Ordering::Relaxed);
                }
            }
        }
    }
}

fn count_in(deps: &Deps<'_>, link: &Link, n: usize) {
    link.from_client.fetch_add(n as u64, Ordering::Relaxed);
    deps.metrics.bytes_from_clients.inc_by(n as u64);
}

/// What to do after forwarding a scan's bytes.
enum After {
    /// Everything complete was scanned: read more.
    Read,
    /// The next message (this long) is not forwarded.
    Skip(usize),
    /// The next message waits for the server.
    Wait,
}

struct Scan {
    /// Bytes that may be forwarded once the batch's records are accepted.
    pos: usize,
    after: After,
    terminated: bool,
}

/// Scans complete messages with the ledger, stopping before one that is not forwarded now.
fn scan(
    deps: &Deps<'_>,
    info: &SessionInfo,
    link: &Link,
    buf: &mut BytesMut,
    streaming: &mut usize,
    max: usize,
) -> Result<Scan, Stop> {
    let mut pos = (*streaming).min(buf.len());
    *streaming -= pos;
    let mut ledger = link.ledger();
    let now = Instant::now();
    let mut terminated = false;
    let after = loop {
        if *streaming > 0 {
            break After::Read;
        }
        let header = match frame::header(&buf[pos..], max) {
            Ok(Some(h)) => h,
            Ok(None) => break After::Read,
            Err(e) => {
                let stop = Stop::from(super::ledger::Violation::from(e));
                return Err(fail(deps, info, &mut ledger, stop));
            }
        };
        let avail = buf.len() - pos;
        if header.tag == fe::COPY_DATA {
            // The ledger needs only the tag; the data streams through.
            match ledger.client(fe::COPY_DATA, &[], now) {
                Ok(_) => {}
                Err(v) => return Err(fail(deps, info, &mut ledger, v.into())),
            }
            if avail >= header.total {
                pos += header.total;
            } else {
                *streaming = header.total - avail;
                pos = buf.len();
            }
            continue;
        }
        if avail < header.total {
            buf.reserve(header.total - avail);
            break After::Read;
        }
        let body = &buf[pos + frame::HEADER_LEN..pos + header.total];
        match ledger.client(header.tag, body, now) {
            Ok(Action::Forward) => {
                terminated |= header.tag == fe::TERMINATE;
                pos += header.total;
                if terminated {
                    break After::Read;
                }
            }
            Ok(Action::Wait) => break After::Wait,
            Ok(Action::Drop | Action::Refuse) => break After::Skip(header.total),
            Err(v) => return Err(fail(deps, info, &mut ledger, v.into())),
        }
    };
    Ok(Scan {
        pos,
        after,
        terminated,
    })
}

/// Records what the client side decided and the session ends: the batch's records are
/// written (they were never forwarded) before the FATAL goes out.
fn fail(
    deps: &Deps<'_>,
    info: &SessionInfo,
    ledger: &mut super::ledger::Ledger,
    stop: Stop,
) -> Stop {
    let mut bodies = Bodies::default();
    for intent in ledger.intents() {
        bodies.push(info, intent);
    }
    if !bodies.is_empty() {
        // The session ends either way; a log that refuses these records is already failing.
        if let Ok(first) = deps.audit.try_accept(bodies.as_slice()) {
            never_forwarded(deps, info, ledger, first);
        }
    }
    ledger.abandon();
    stop
}

/// The batch's records (accepted from `first` on) end here: their messages were never
/// forwarded. The batch is dropped.
fn never_forwarded(
    deps: &Deps<'_>,
    info: &SessionInfo,
    ledger: &mut super::ledger::Ledger,
    first: u64,
) {
    for (i, intent) in ledger.intents().iter().enumerate() {
        let outcome = match intent {
            Intent::Refused { refusal, .. } => Outcome::Refused {
                code: refusal.sqlstate(),
                message: refusal.message(),
            },
            _ => Outcome::NotExecuted {
                reason: "the proxy closed the session before forwarding this",
            },
        };
        not_forwarded(deps, info, first + i as u64, &outcome);
    }
    ledger.abandon();
}

/// Write-ahead: the batch's records are accepted before its bytes move; then its entries
/// are queued for the server side. False when the session was halted meanwhile: the
/// records say their messages were not forwarded, and nothing is.
async fn accept(
    deps: &Deps<'_>,
    info: &SessionInfo,
    link: &Link,
    halt: &Halt,
    bodies: &mut Bodies,
) -> Result<bool, Stop> {
    bodies.clear();
    for intent in link.ledger().intents() {
        bodies.push(info, intent);
    }
    let first = if bodies.is_empty() {
        0
    } else {
        match deps.audit.accept(bodies.as_slice()).await {
            Ok(first) => first,
            Err(e) => {
                link.ledger().abandon();
                return Err(Stop {
                    code: sqlstate::IO_ERROR,
                    message: format!("{e}; the statement was not executed"),
                    kind: ErrorKind::Audit,
                });
            }
        }
    };
    let mut ledger = link.ledger();
    if halt.fired() {
        never_forwarded(deps, info, &mut ledger, first);
        return Ok(false);
    }
    let statements = ledger
        .intents()
        .iter()
        .filter(|i| !matches!(i, Intent::Refused { .. }))
        .count();
    for (i, intent) in ledger.intents().iter().enumerate() {
        if let Intent::Refused { refusal, .. } = intent {
            let outcome = Outcome::Refused {
                code: refusal.sqlstate(),
                message: refusal.message(),
            };
            not_forwarded(deps, info, first + i as u64, &outcome);
        }
    }
    ledger.commit(first);
    if let Some(q) = link.quiet.as_deref().filter(|q| q.tracks_idle()) {
        if !ledger.idle() {
            q.busy();
        }
    }
    drop(ledger);
    link.statements
        .fetch_add(statements as u64, Ordering::Relaxed);
    deps.metrics.statements.inc_by(statements as u64);
    Ok(true)
}

/// Record bodies of a batch in buffers kept from one batch to the next, so a statement's
/// record allocates nothing.
#[derive(Default)]
struct Bodies {
    bufs: Vec<String>,
    len: usize,
    /// The middle part of the last extended-protocol record with a known statement: a
    /// prepared statement executed again the same way (most drivers' steady state) copies
    /// it instead of encoding it again.
    middle: Option<Middle>,
}

/// What a record's middle part ([`record::statement_middle_into`]) was built from, and
/// the part. `prepared` (a [`Prepared::id`], unique in the session) stands for the text, its
/// redaction and whether it needs escaping; the rest is compared as it is.
struct Middle {
    prepared: u64,
    steps: Steps,
    statement: Arc<str>,
    portal: Arc<str>,
    json: String,
}

impl Middle {
    fn is_for(&self, prepared: &Prepared, steps: Steps, statement: &str, portal: &str) -> bool {
        self.prepared == prepared.id
            && self.steps == steps
            && *self.statement == *statement
            && *self.portal == *portal
    }
}

impl Bodies {
    /// A buffer larger than this (a huge statement's) is not kept for the next batch.
    const KEEP_MAX: usize = 64 * 1024;

    /// An empty buffer for the next body.
    fn next(&mut self) -> &mut String {
        if self.len == self.bufs.len() {
            self.bufs.push(String::with_capacity(512));
        }
        let b = &mut self.bufs[self.len];
        if b.capacity() > Self::KEEP_MAX {
            *b = String::with_capacity(512);
        }
        b.clear();
        self.len += 1;
        b
    }

    /// Adds the record body of an intent.
    fn push(&mut self, info: &SessionInfo, intent: &Intent) {
        fn text(text: &str) -> Option<Text<'_>> {
            Some(Text {
                text,
                plain: record::is_plain(text),
            })
        }
        let (via, text, redacted) = match intent {
            Intent::Query {
                text: t,
                redacted,
                statements,
            } => (Via::Simple { statements }, text(t), *redacted),
            Intent::Extended {
                steps,
                statement,
                portal,
                prepared,
                params,
            } => {
                let middle = self.middle_for(*steps, statement, portal, prepared);
                let b = self.next();
                record::statement_head_into(b, info);
                b.push_str(&middle.json);
                record::params_into(b, params.as_deref());
                // A statement whose text is not known (id 0) is never kept: that text is
                // not the statement's.
                if prepared.id != 0
                    && prepared.text.is_some()
                    && middle.json.len() <= Self::KEEP_MAX
                {
                    self.middle = Some(middle);
                }
                return;
            }
            Intent::Refused {
                text: t, redacted, ..
            } => (Via::Simple { statements: &[] }, text(t), *redacted),
        };
        record::statement_into(self.next(), info, via, text, redacted, None);
    }

    /// The kept middle part if it was built for this execution, else a new one.
    fn middle_for(
        &mut self,
        steps: Steps,
        statement: &Arc<str>,
        portal: &Arc<str>,
        prepared: &Prepared,
    ) -> Middle {
        if let Some(kept) = self
            .middle
            .take()
            .filter(|m| m.is_for(prepared, steps, statement, portal))
        {
            return kept;
        }
        let mut json = String::new();
        record::statement_middle_into(
            &mut json,
            Via::Extended {
                steps: steps.json(),
                statement,
                portal,
            },
            recorded_text(prepared),
            prepared.redacted,
        );
        Middle {
            prepared: prepared.id,
            steps,
            statement: statement.clone(),
            portal: portal.clone(),
            json,
        }
    }

    fn as_slice(&self) -> &[String] {
        &self.bufs[..self.len]
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

/// A prepared statement's text as its records carry it.
fn recorded_text(prepared: &Prepared) -> Option<Text<'_>> {
    prepared.text.as_deref().map(|text| Text {
        text,
        plain: prepared.plain,
    })
}

/// Whether the message at the front of `buf` must still wait.
fn still_waiting(link: &Link, buf: &BytesMut, max: usize) -> Result<bool, Stop> {
    let Ok(Some((h, body))) = frame::complete(buf, max) else {
        return Ok(false);
    };
    // Asking the ledger decides nothing when it says Wait; any other answer is decided
    // again by the next scan, so leave the batch empty here.
    let ledger = link.ledger();
    match ledger.probe(h.tag, body) {
        Ok(wait) => Ok(wait),
        Err(v) => Err(v.into()),
    }
}

/// The client has gone: end the upstream session politely.
async fn gone<W: AsyncWrite + Unpin>(upstream: &mut W, link: &Link) -> Result<(), Stop> {
    link.client_left.store(true, Ordering::Relaxed);
    let _ = upstream.write_all(&[fe::TERMINATE, 0, 0, 0, 4]).await;
    let _ = upstream.flush().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Touches;

    fn prepared(id: u64, text: Option<&str>, redacted: bool) -> Arc<Prepared> {
        Arc::new(Prepared {
            id,
            text: text.map(Arc::from),
            plain: text.is_none_or(record::is_plain),
            redacted,
            param_types: Vec::new(),
            copy: false,
            touches: Touches::default(),
        })
    }

    fn extended(steps: Steps, statement: &str, portal: &str, p: &Arc<Prepared>) -> Intent {
        Intent::Extended {
            steps,
            statement: Arc::from(statement),
            portal: Arc::from(portal),
            prepared: p.clone(),
            params: steps.bind.then(|| Arc::from(r#"["1"]"#)),
        }
    }

    /// The kept middle part is used only for the same statement executed the same way: each
    /// body equals the one built from scratch (its time apart).
    #[test]
    fn a_kept_record_part_never_stands_for_another_statement() {
        let info = SessionInfo::new("s".into(), "127.0.0.1:1".into());
        let run = Steps {
            bind: true,
            execute: true,
            ..Steps::default()
        };
        let parse = Steps {
            parse: true,
            ..Steps::default()
        };
        let select = prepared(1, Some("SELECT $1"), false);
        let again = prepared(2, Some("DELETE FROM t WHERE id = $1"), false);
        let secret = prepared(3, Some("ALTER ROLE a PASSWORD <redacted>"), true);
        let quoted = prepared(4, Some("SELECT '\"'"), false);
        let unknown = prepared(0, None, false);
        let intents = [
            extended(run, "P_0", "", &select),
            extended(run, "P_0", "", &select),
            extended(run, "P_0", "c1", &select),
            extended(parse, "P_0", "", &select),
            // The same name prepared again with another text: a new id.
            extended(run, "P_0", "", &again),
            extended(run, "P_1", "", &again),
            extended(run, "P_1", "", &secret),
            extended(run, "P_1", "", &secret),
            extended(run, "", "", &quoted),
            extended(run, "", "", &quoted),
            extended(run, "P_0", "", &unknown),
            extended(run, "P_0", "", &unknown),
            extended(run, "P_0", "", &select),
        ];
        let mut bodies = Bodies::default();
        for (i, intent) in intents.iter().enumerate() {
            bodies.clear();
            bodies.push(&info, intent);
            let Intent::Extended {
                steps,
                statement,
                portal,
                prepared,
                params,
            } = intent
            else {
                unreachable!()
            };
            let mut fresh = String::new();
            record::statement_into(
                &mut fresh,
                &info,
                Via::Extended {
                    steps: steps.json(),
                    statement,
                    portal,
                },
                recorded_text(prepared),
                prepared.redacted,
                params.as_deref(),
            );
            // Both start with `"ts":"<date>T<time>.<micros>Z",`: compare what follows.
            let after_ts = |b: &str| b[b.find(",\"type\"").unwrap()..].to_string();
            assert_eq!(
                after_ts(&bodies.as_slice()[0]),
                after_ts(&fresh),
                "intent {i}"
            );
        }
    }
}

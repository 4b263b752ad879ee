//! Database → client. Every server message is paired with the ledger by its header; only
//! the few that carry outcomes or settings are decoded (DataRows and COPY data are never
//! buffered whole). Bytes are forwarded untouched, in whole messages where they fit.
//!
//! The proxy's own answers (refusals) are written in their turn, when everything before
//! them has been answered. Its notices (a session's timers) go out only when nothing is in
//! flight, after the answers written with them.

use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ledger::Ledger;
use super::{emit, Deps, End, Link};
use crate::audit::SessionInfo;
use crate::protocol::sqlstate;
use crate::protocol::{backend as be, frame};

/// Largest server message the relay decodes (errors, command tags, settings); DataRows and
/// COPY data of any size pass through without being buffered.
const MAX_DECODED_SERVER_MESSAGE: usize = 16 * 1024 * 1024;

/// Server messages the ledger reads the body of.
fn decoded(tag: u8) -> bool {
    matches!(
        tag,
        be::COMMAND_COMPLETE
            | be::ERROR_RESPONSE
            | be::READY_FOR_QUERY
            | be::PARAMETER_STATUS
            | be::PARAMETER_DESCRIPTION
    )
}

/// Returns when the database closes the connection or a message cannot be paired.
pub(super) async fn run<R, W>(
    deps: &Deps<'_>,
    info: &SessionInfo,
    upstream: &mut R,
    client: &mut W,
    link: &Link,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(32 * 1024);
    let mut side = Side::default();
    let mut out = BytesMut::new();
    let mut client_gone = false;
    let refusal = link.refused.notified();
    tokio::pin!(refusal);
    // Sessions without timers never poll for notices.
    let no_notices = tokio::sync::Notify::new();
    let notices = link.quiet.as_deref().map_or(&no_notices, |q| q.notices());
    let notice = notices.notified();
    tokio::pin!(notice);
    let has_timers = link.quiet.is_some();
    loop {
        if buf.capacity() - buf.len() < 8192 {
            buf.reserve(32 * 1024);
        }
        // The read first, and no random start: a wake-up with bytes to read does not poll
        // the refusal's Notify (nor draw a random number). Refusals queued meanwhile are
        // answered by the scan of those bytes anyway, before anything they answer.
        let read = tokio::select! {
            biased;
            r = upstream.read_buf(&mut buf) => Some(r),
            _ = &mut refusal => {
                refusal.set(link.refused.notified());
                None
            }
            _ = &mut notice, if has_timers => {
                notice.set(notices.notified());
                None
            }
        };
        match read {
            None => {}
            Some(Ok(0)) => {
                let left = link.client_left.load(Ordering::Relaxed);
                if !client_gone && !left && side.skip == 0 && !side.fatal_seen {
                    out.clear();
                    be::error(
                        &mut out,
                        "FATAL",
                        sqlstate::CONNECTION_FAILURE,
                        "the connection to the database was lost",
                    );
                    let _ = client.write_all(&out).await;
                }
                return End::UpstreamClosed;
            }
            Some(Err(e)) => return End::Io(e.to_string()),
            Some(Ok(_)) => {}
        }

        let (pos, unpaired) = side.scan(deps, info, &mut buf, link, &mut out);
        if let Some(why) = &unpaired {
            // What was paired before goes out, then the reason.
            side.fatal.clear();
            be::error(&mut side.fatal, "FATAL", sqlstate::PROTOCOL_VIOLATION, why);
        }
        // A client that went away stops receiving, but the outcomes of what still runs
        // belong in the audit: keep reading from the database.
        let settled = std::mem::take(&mut side.settled);
        if !client_gone
            && (pos > 0 || !out.is_empty() || unpaired.is_some() || !side.notice.is_empty())
        {
            link.clean.store(false, Ordering::Relaxed);
            // The proxy's own answers come first: they answer messages sent before
            // anything these bytes answer.
            let mut written = out.is_empty() || client.write_all(&out).await.is_ok();
            if written && pos > 0 {
                written = client.write_all(&buf[..pos]).await.is_ok();
            }
            if written && unpaired.is_some() {
                written = client.write_all(&side.fatal).await.is_ok();
                let _ = client.flush().await;
            }
            if written && !side.notice.is_empty() {
                written = client.write_all(&side.notice).await.is_ok();
            }
            side.notice.clear();
            client_gone = !written;
            link.clean.store(side.skip == 0, Ordering::Relaxed);
            if written && settled {
                settle(link);
            }
        } else if settled && !client_gone {
            // Nothing left to write: quiet now.
            settle(link);
        }
        if pos > 0 {
            link.to_client.fetch_add(pos as u64, Ordering::Relaxed);
            deps.metrics.bytes_to_clients.inc_by(pos as u64);
            buf.advance(pos);
        }
        if let Some(why) = unpaired {
            // The client has been told; the relay must not tell it again.
            link.client_left.store(true, Ordering::Relaxed);
            return End::Halted(why);
        }
    }
}

/// The server side's scanning state, kept between reads.
#[derive(Default)]
struct Side {
    /// Bytes of a message passed through without decoding, still to come.
    skip: usize,
    /// The database's own FATAL already told the client why it is closing.
    fatal_seen: bool,
    /// The proxy's FATAL when a message could not be paired.
    fatal: BytesMut,
    /// A notice of the session's timers, written after this scan's bytes.
    notice: BytesMut,
    /// This scan left nothing in flight in a session whose timers track idleness.
    settled: bool,
}

impl Side {
    /// Pairs the messages `buf` holds. Returns how many bytes may go to the client (whole
    /// messages, or the part of a large one that passes through); `out` receives the
    /// proxy's own answers now due. The ledger's lock is never held across an await.
    fn scan(
        &mut self,
        deps: &Deps<'_>,
        info: &SessionInfo,
        buf: &mut BytesMut,
        link: &Link,
        out: &mut BytesMut,
    ) -> (usize, Option<String>) {
        let mut pos = self.skip.min(buf.len());
        self.skip -= pos;
        out.clear();
        let mut ledger = link.ledger();
        let now = Instant::now();
        // Refusals are queued only when nothing else is in flight: whatever they follow
        // has been answered, and whatever these bytes answer comes after them.
        answer_refusals(&mut ledger, out);
        let mut unpaired = None;
        while self.skip == 0 {
            let h = match frame::header(&buf[pos..], usize::MAX) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    unpaired = Some(format!("bad message from the database: {e}"));
                    break;
                }
            };
            let avail = buf.len() - pos;
            let body: &[u8] = if decoded(h.tag) {
                if h.total > MAX_DECODED_SERVER_MESSAGE {
                    unpaired = Some("oversized message from the database".into());
                    break;
                }
                if avail < h.total {
                    buf.reserve(h.total - avail);
                    break;
                }
                &buf[pos + frame::HEADER_LEN..pos + h.total]
            } else {
                &[]
            };
            if h.tag == be::ERROR_RESPONSE && is_fatal(body) {
                self.fatal_seen = true;
            }
            let paired = (h.tag == be::DATA_ROW && ledger.data_row())
                || match ledger.server(h.tag, body, now, &mut |f| emit(deps, info, now, f)) {
                    Ok(()) => true,
                    Err(v) => {
                        tracing::warn!(error = %v, "ending the session");
                        unpaired = Some(v.to_string());
                        false
                    }
                };
            if !paired {
                break;
            }
            if avail >= h.total {
                pos += h.total;
            } else {
                self.skip = h.total - avail;
                pos = buf.len();
            }
        }
        if let Some(q) = &link.quiet {
            if self.skip == 0 && unpaired.is_none() && ledger.idle() {
                if q.tracks_idle() && !q.state().quiet() {
                    self.settled = true;
                }
                if q.notice_pending() {
                    if let Some(text) = q.take_notice() {
                        be::notice(&mut self.notice, sqlstate::SUCCESSFUL_COMPLETION, &text);
                    }
                }
            }
        }
        drop(ledger);
        if link.waiting.load(Ordering::Relaxed) {
            link.settled.notify_one();
        }
        (pos, unpaired)
    }
}

/// The answers are with the client: the session is quiet, unless the client sent more
/// meanwhile.
fn settle(link: &Link) {
    if let Some(q) = &link.quiet {
        let ledger = link.ledger();
        if ledger.idle() {
            q.settle(ledger.status());
        }
    }
}

/// The proxy's own answers whose turn has come.
fn answer_refusals(ledger: &mut Ledger, out: &mut BytesMut) {
    for (code, message, status) in ledger.due_refusals() {
        be::error(out, "ERROR", code, message);
        be::ready_for_query(out, status);
    }
}

fn is_fatal(body: &[u8]) -> bool {
    be::error_fields(body).is_ok_and(|f| f.is_fatal())
}

//! What a session's timers see of its relay: whether it is quiet (nothing in flight, no COPY,
//! the last answer written to the client) and the transaction status of its last
//! ReadyForQuery; and the notices they want delivered at the next quiet moment.
//!
//! Only sessions with a timer have one. The relay changes it on state changes of the ledger
//! (busy -> quiet after an answer is written, quiet -> busy when a batch is committed), never
//! per message. Going quiet notes the time (one clock read) but wakes the timer task only
//! when it waits for that or the transaction status changed (the limit may differ): a
//! session's timer sleeps until its own deadline, then looks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Bit 8 of the state: quiet; bits 0..8: the transaction status; bits 9..: how many changes.
const QUIET: u64 = 1 << 8;
const EPOCH: u64 = 1 << 9;

pub struct Quiet {
    state: AtomicU64,
    /// Whether the relay tells of quiet moments at all (a session with only a grant expiry
    /// or an age limit needs notices, not idle tracking).
    tracks_idle: bool,
    /// Wakes the timer task: the session went quiet while it was `parked`, or with another
    /// transaction status.
    went_quiet: Notify,
    /// The timer task found the session busy and waits for the next quiet moment.
    parked: AtomicBool,
    /// When the session last went quiet: nanoseconds after `base`.
    since: AtomicU64,
    base: Instant,
    /// A notice for the client, sent by the relay at the next quiet moment.
    notice: Mutex<Option<String>>,
    notice_pending: AtomicBool,
    /// Wakes the relay's server side to deliver a notice.
    notice_posted: Notify,
}

/// A snapshot of [`Quiet`]: compare two to see whether anything happened in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State(u64);

impl State {
    pub fn quiet(self) -> bool {
        self.0 & QUIET != 0
    }

    /// The transaction status of the last ReadyForQuery (`I`, `T` or `E`).
    pub fn status(self) -> u8 {
        (self.0 & 0xff) as u8
    }
}

impl Quiet {
    /// A session that starts quiet after a ReadyForQuery with `status`.
    pub fn new(tracks_idle: bool, status: u8) -> Quiet {
        Quiet {
            state: AtomicU64::new(QUIET | u64::from(status)),
            tracks_idle,
            went_quiet: Notify::new(),
            parked: AtomicBool::new(false),
            since: AtomicU64::new(0),
            base: Instant::now(),
            notice: Mutex::new(None),
            notice_pending: AtomicBool::new(false),
            notice_posted: Notify::new(),
        }
    }

    pub fn tracks_idle(&self) -> bool {
        self.tracks_idle
    }

    pub fn state(&self) -> State {
        State(self.state.load(Ordering::SeqCst))
    }

    /// When the session last went quiet (at least as late as the state last read).
    pub fn quiet_since(&self) -> Instant {
        self.base + Duration::from_nanos(self.since.load(Ordering::SeqCst))
    }

    /// The timer task is about to look at the state and, if busy, wait for
    /// [`Quiet::went_quiet`]: the next [`Quiet::settle`] wakes it. Call before `state()`, so
    /// that a change in between is not missed.
    pub fn park(&self) {
        self.parked.store(true, Ordering::SeqCst);
    }

    pub fn unpark(&self) {
        self.parked.store(false, Ordering::SeqCst);
    }

    /// Called under the ledger's lock (so the two sides cannot interleave): the ledger has
    /// work in flight.
    pub(super) fn busy(&self) {
        let s = self.state.load(Ordering::Relaxed);
        if s & QUIET != 0 {
            self.state.store(
                (s & !(QUIET | 0xff)) + EPOCH + (s & 0xff),
                Ordering::Release,
            );
        }
    }

    /// Called under the ledger's lock: nothing is in flight and the answers are written.
    pub(super) fn settle(&self, status: u8) {
        let s = self.state.load(Ordering::Relaxed);
        if s & QUIET == 0 {
            let epoch = (s & !(QUIET | 0xff)) + EPOCH;
            let now = self.base.elapsed().as_nanos();
            self.since
                .store(u64::try_from(now).unwrap_or(u64::MAX), Ordering::SeqCst);
            self.state
                .store(epoch | QUIET | u64::from(status), Ordering::SeqCst);
            // A timer that is not parked sleeps until an idle deadline for the last status:
            // a new status (a transaction began or ended) may change the limit.
            let parked = self.parked.swap(false, Ordering::SeqCst);
            if parked || s & 0xff != u64::from(status) {
                self.went_quiet.notify_one();
            }
        }
    }

    /// Resolves after the next time the session goes quiet while parked (or at once if it
    /// did since the last call).
    pub async fn went_quiet(&self) {
        self.went_quiet.notified().await
    }

    /// Queues `text` for the client; the relay sends it when nothing is in flight. A later
    /// notice replaces one not yet sent.
    pub fn post_notice(&self, text: String) {
        *self.notice.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
        self.notice_pending.store(true, Ordering::Release);
        self.notice_posted.notify_one();
    }

    pub(super) fn notice_pending(&self) -> bool {
        self.notice_pending.load(Ordering::Acquire)
    }

    pub(super) fn take_notice(&self) -> Option<String> {
        self.notice_pending.store(false, Ordering::Release);
        self.notice.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Notified when a notice is posted.
    pub(super) fn notices(&self) -> &Notify {
        &self.notice_posted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_change_is_a_new_state() {
        let q = Quiet::new(true, b'I');
        let start = q.state();
        assert!(start.quiet());
        assert_eq!(start.status(), b'I');
        q.busy();
        let busy = q.state();
        assert!(!busy.quiet());
        q.busy();
        assert_eq!(q.state(), busy, "busy twice is one change");
        q.park();
        q.settle(b'T');
        assert!(
            !q.parked.load(Ordering::SeqCst),
            "settling wakes a parked timer"
        );
        let quiet = q.state();
        assert!(q.quiet_since() <= Instant::now());
        assert!(quiet.quiet());
        assert_eq!(quiet.status(), b'T');
        assert_ne!(quiet, start);
        q.settle(b'I');
        assert_eq!(q.state(), quiet, "quiet twice is one change");
    }

    #[test]
    fn a_notice_is_taken_once() {
        let q = Quiet::new(false, b'I');
        assert!(!q.notice_pending());
        q.post_notice("a".into());
        q.post_notice("b".into());
        assert!(q.notice_pending());
        assert_eq!(q.take_notice().as_deref(), Some("b"));
        assert!(!q.notice_pending());
        assert_eq!(q.take_notice(), None);
    }
}

//! A session's timers: the end of a person's grant (which the grant watcher may move), the
//! policy's idle limits and its maximum age. Each warns the client with a NOTICE before it
//! closes the session, and closes it through the session's [`Halt`] with its own SQLSTATE.
//!
//! One task per session that has any; it wakes on its own deadlines, when the relay goes
//! quiet after the task found it busy, and when the grant's end moves: not per statement.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::halt::Halt;
use crate::metrics::{Closed, Metrics};
use crate::protocol::sqlstate;
use crate::relay::quiet::{Quiet, State};
use crate::settings::{ServiceLimits, SessionSettings};

/// The message of the FATAL that ends a session at its grant's end.
pub const GRANT_EXPIRED: &str = "access revoked: the grant has expired";

/// The limits of one session; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub idle: Option<Duration>,
    pub idle_in_transaction: Option<Duration>,
    pub max_session: Option<Duration>,
}

fn secs(v: Option<u32>) -> Option<Duration> {
    v.map(|s| Duration::from_secs(u64::from(s)))
}

impl Limits {
    pub fn of_grant(policy: &grants::SessionPolicy) -> Limits {
        Limits {
            idle: secs(policy.idle_timeout_secs),
            idle_in_transaction: secs(policy.idle_in_transaction_timeout_secs),
            max_session: secs(policy.max_session_secs),
        }
    }

    pub fn of_services(limits: &ServiceLimits) -> Limits {
        Limits {
            idle: secs(limits.idle_timeout_secs),
            idle_in_transaction: secs(limits.idle_in_transaction_timeout_secs),
            max_session: secs(limits.max_session_secs),
        }
    }

    /// Whether the relay must tell the timers when the session goes quiet.
    pub fn tracks_idle(&self) -> bool {
        self.idle.is_some() || self.idle_in_transaction.is_some()
    }

    /// The idle limit after a ReadyForQuery with `status`, and whether it is the one inside
    /// a transaction (`T`, or `E`: failed, still to be rolled back).
    fn idle_after(&self, status: u8) -> Option<(Duration, bool)> {
        let in_transaction = matches!(status, b'T' | b'E');
        match (in_transaction, self.idle_in_transaction) {
            (true, Some(limit)) => Some((limit, true)),
            _ => self.idle.map(|limit| (limit, false)),
        }
    }
}

/// What a session's timer task needs.
pub struct Timers {
    pub limits: Limits,
    pub warn_before: Duration,
    pub approvals_url: String,
    /// A person's grant end, as the grant watcher last saw it.
    pub grant_end: Option<watch::Receiver<DateTime<Utc>>>,
}

impl Timers {
    pub fn new(
        settings: &SessionSettings,
        limits: Limits,
        grant_end: Option<watch::Receiver<DateTime<Utc>>>,
    ) -> Timers {
        Timers {
            limits,
            warn_before: Duration::from_secs(settings.warn_before_secs),
            approvals_url: settings.approvals_url.clone(),
            grant_end,
        }
    }

    /// Whether the session needs a timer task at all.
    pub fn any(&self) -> bool {
        self.grant_end.is_some() || self.limits != Limits::default()
    }

    /// How long before a limit of `length` its warning goes out: `warn_before`, but at most
    /// half the limit.
    fn lead(&self, length: Duration) -> Duration {
        self.warn_before.min(length / 2)
    }
}

#[derive(Debug, Clone, Copy)]
enum Event {
    GrantWarn,
    GrantEnd,
    AgeWarn,
    AgeEnd,
    IdleWarn,
    IdleEnd,
}

/// `lead` before `end`.
fn before(end: Instant, lead: Duration) -> Instant {
    end.checked_sub(lead).unwrap_or(end)
}

/// The instant a wall-clock time falls on (now, if it has passed).
fn instant_of(at: DateTime<Utc>) -> Instant {
    Instant::now() + (at - Utc::now()).to_std().unwrap_or_default()
}

/// Runs until the session is closed (by these timers or anything else).
pub async fn run(
    mut t: Timers,
    started: Instant,
    quiet: Arc<Quiet>,
    halt: Arc<Halt>,
    metrics: Arc<Metrics>,
) {
    let limits = t.limits;
    let tracks_idle = quiet.tracks_idle();
    let age_end = limits.max_session.map(|d| started + d);
    let mut age_warned = false;
    let mut grant = t.grant_end.as_ref().map(|rx| *rx.borrow());
    let mut grant_warned = false;
    // The quiet state the idle clock runs for, and since when.
    let mut idle: Option<(State, Instant)> = None;
    let mut idle_warned = false;
    loop {
        if tracks_idle {
            // Busy: wait for the relay's next quiet moment. Quiet: the idle clock runs from
            // when it went quiet, and the relay need not wake this task again.
            quiet.park();
            let now = quiet.state();
            if !now.quiet() {
                idle = None;
            } else {
                quiet.unpark();
                if idle.map(|(s, _)| s) != Some(now) {
                    idle = Some((now, Instant::from_std(quiet.quiet_since())));
                    idle_warned = false;
                }
            }
        }
        let idle_limit = idle.and_then(|(s, since)| {
            limits
                .idle_after(s.status())
                .map(|(limit, in_tx)| (since + limit, limit, in_tx))
        });
        let grant_at = grant.map(instant_of);

        let mut next: Option<(Instant, Event)> = None;
        let mut consider = |at: Instant, event: Event| {
            if next.is_none_or(|(n, _)| at < n) {
                next = Some((at, event));
            }
        };
        if let (Some(end), Some(length)) = (age_end, limits.max_session) {
            if !age_warned {
                consider(before(end, t.lead(length)), Event::AgeWarn);
            }
            consider(end, Event::AgeEnd);
        }
        if let Some(end) = grant_at {
            if !grant_warned {
                let length = end.saturating_duration_since(started);
                consider(before(end, t.lead(length)), Event::GrantWarn);
            }
            consider(end, Event::GrantEnd);
        }
        if let Some((end, length, _)) = idle_limit {
            if !idle_warned {
                consider(before(end, t.lead(length)), Event::IdleWarn);
            }
            consider(end, Event::IdleEnd);
        }

        let deadline = async {
            match next {
                Some((at, _)) => crate::clock::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let has_grant = t.grant_end.is_some();
        let moved = async {
            match t.grant_end.as_mut() {
                Some(rx) => rx.changed().await.map(|()| *rx.borrow_and_update()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = halt.fired_wait() => return,
            _ = quiet.went_quiet(), if tracks_idle => continue,
            moved = moved, if has_grant => {
                match moved {
                    Ok(end) => {
                        tracing::info!(ends_at = %end, "the grant's end moved");
                        grant = Some(end);
                        grant_warned = false;
                    }
                    // The session is going: its registration (the sender) was dropped.
                    Err(_) => t.grant_end = None,
                }
                continue;
            }
            _ = deadline => {}
        }
        let Some((_, event)) = next else { continue };
        // An idle deadline stands only if nothing happened since the idle clock started.
        let still_idle = idle.is_some_and(|(s, _)| quiet.state() == s);
        match event {
            Event::GrantWarn => {
                grant_warned = true;
                if let Some(end) = grant {
                    let mut text =
                        format!("access ends at {}", end.format("%Y-%m-%d %H:%M:%S UTC"));
                    if !t.approvals_url.is_empty() {
                        text.push_str(&format!("; extend at {}", t.approvals_url));
                    }
                    quiet.post_notice(text);
                }
            }
            Event::GrantEnd => {
                close(
                    &halt,
                    &metrics,
                    Closed::GrantExpired,
                    sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                    GRANT_EXPIRED.into(),
                );
                return;
            }
            Event::AgeWarn => {
                age_warned = true;
                if let Some(length) = limits.max_session {
                    let left = age_end.map_or(Duration::ZERO, |e| {
                        e.saturating_duration_since(Instant::now())
                    });
                    quiet.post_notice(format!(
                        "this session will be closed in {} s: sessions last at most {} s",
                        left.as_secs().max(1),
                        length.as_secs()
                    ));
                }
            }
            Event::AgeEnd => {
                let length = limits.max_session.unwrap_or_default().as_secs();
                close(
                    &halt,
                    &metrics,
                    Closed::MaxSession,
                    sqlstate::ADMIN_SHUTDOWN,
                    format!("terminating connection: the session reached its maximum length of {length} s"),
                );
                return;
            }
            Event::IdleWarn => {
                idle_warned = true;
                if let (true, Some((_, length, in_tx))) = (still_idle, idle_limit) {
                    let what = if in_tx {
                        "idle in a transaction"
                    } else {
                        "idle"
                    };
                    quiet.post_notice(format!(
                        "this session will be closed after {} s {what}",
                        length.as_secs()
                    ));
                }
            }
            Event::IdleEnd => {
                let Some((_, length, in_tx)) = idle_limit.filter(|_| still_idle) else {
                    continue;
                };
                let n = length.as_secs();
                let (reason, code, message) = if in_tx {
                    (
                        Closed::IdleInTransaction,
                        sqlstate::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
                        format!("terminating connection due to idle-in-transaction timeout: idle for {n} s inside a transaction, which is rolled back"),
                    )
                } else {
                    (
                        Closed::Idle,
                        sqlstate::IDLE_SESSION_TIMEOUT,
                        format!(
                            "terminating connection due to idle-session timeout: idle for {n} s"
                        ),
                    )
                };
                close(&halt, &metrics, reason, code, message);
                return;
            }
        }
    }
}

fn close(halt: &Halt, metrics: &Metrics, reason: Closed, code: &'static str, message: String) {
    tracing::info!(reason = reason.label(), %message, "closing the session");
    if halt.fire(code, message) {
        metrics.closed(reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transaction_limit_applies_in_a_transaction_only() {
        let limits = Limits {
            idle: Some(Duration::from_secs(60)),
            idle_in_transaction: Some(Duration::from_secs(5)),
            max_session: None,
        };
        assert_eq!(
            limits.idle_after(b'I'),
            Some((Duration::from_secs(60), false))
        );
        assert_eq!(
            limits.idle_after(b'T'),
            Some((Duration::from_secs(5), true))
        );
        assert_eq!(
            limits.idle_after(b'E'),
            Some((Duration::from_secs(5), true))
        );
        let plain = Limits {
            idle_in_transaction: None,
            ..limits
        };
        assert_eq!(
            plain.idle_after(b'T'),
            Some((Duration::from_secs(60), false))
        );
        assert!(Limits::default().idle_after(b'T').is_none());
        assert!(!Limits::default().tracks_idle());
    }

    #[test]
    fn short_limits_warn_at_half() {
        let t = Timers::new(&SessionSettings::default(), Limits::default(), None);
        assert_eq!(t.lead(Duration::from_secs(4)), Duration::from_secs(2));
        assert_eq!(t.lead(Duration::from_secs(3600)), Duration::from_secs(300));
        assert!(!t.any());
    }
}

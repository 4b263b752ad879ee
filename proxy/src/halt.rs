//! How the proxy ends a session from outside its relay (revocation, expiry, shutdown): a
//! reason, and a signal both relay loops wait on. A leaf: the registry of live sessions and
//! the relay hold it, neither holds the other.

use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

use crate::protocol::sqlstate;

/// Why a session is being closed by the proxy, sent to the client as a FATAL error.
#[derive(Default)]
pub struct Halt {
    token: CancellationToken,
    why: Mutex<Option<(&'static str, String)>>,
}

impl Halt {
    /// Asks the relay to close the session with this SQLSTATE and message. The first reason
    /// given wins: true if it was this one.
    pub fn fire(&self, code: &'static str, message: impl Into<String>) -> bool {
        let first = {
            let mut why = self.why.lock().unwrap_or_else(|e| e.into_inner());
            let first = why.is_none();
            if first {
                *why = Some((code, message.into()));
            }
            first
        };
        self.token.cancel();
        first
    }

    pub fn fired(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once the session is to be closed.
    pub async fn fired_wait(&self) {
        self.token.cancelled().await
    }

    pub fn reason(&self) -> (&'static str, String) {
        self.why
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or((sqlstate::ADMIN_SHUTDOWN, "session closed".into()))
    }
}

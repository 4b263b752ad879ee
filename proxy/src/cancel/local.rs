//! Cancelling what one of this replica's sessions runs: the client's key is looked up and
//! the database's key is sent to the database on a new connection.

use std::sync::Arc;

use super::keys::CancelMap;
use crate::metrics::{CancelRoute, Metrics};
use crate::upstream::Connector;

/// This replica's cancel keys and the way to the database.
pub struct Canceller {
    keys: CancelMap,
    upstream: Arc<Connector>,
    metrics: Arc<Metrics>,
}

impl Canceller {
    pub fn new(keys: CancelMap, upstream: Arc<Connector>, metrics: Arc<Metrics>) -> Canceller {
        Canceller {
            keys,
            upstream,
            metrics,
        }
    }

    /// The keys of this replica's live sessions.
    pub fn keys(&self) -> &CancelMap {
        &self.keys
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Cancels what this replica's session with key (`pid`, `secret`) runs, counted under
    /// `route`; false when no live session here has that key.
    pub async fn cancel(&self, pid: i32, secret: &[u8], route: CancelRoute) -> bool {
        let Some((backend_pid, backend_secret)) = self.keys.lookup(pid, secret) else {
            return false;
        };
        self.metrics.cancel(route);
        if let Err(e) = self.upstream.cancel(backend_pid, &backend_secret).await {
            tracing::warn!(error = %e, "forwarding a cancel request failed");
        }
        true
    }
}

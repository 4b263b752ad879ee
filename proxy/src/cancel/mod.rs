//! Query cancellation. Clients get the proxy's own cancel keys (never the database's, and
//! never an empty one); a CancelRequest arrives on a new connection and is forwarded, with
//! the database's key, to the backend that serves that session.
//!
//! A key is routable in a fleet: the top 7 bits of its 31-bit process id are the owning
//! replica's `fleet.index`, the other 24 bits and the 32-bit secret are random (56 random
//! bits per key). A replica given a key of another index forwards it (see [`crate::fleet`]).

//!
//! - [`keys`]: the key map (a leaf).
//! - [`local`]: [`local::Canceller`], cancels what this replica's session runs; the peer
//!   channel ([`crate::fleet`]) serves forwarded requests with it.
//! - [`route`] (here): a CancelRequest from a client: here, a peer, or nobody.

pub mod keys;
pub mod local;

use crate::fleet::Fleet;
use crate::metrics::CancelRoute;
use local::Canceller;

/// Routes a client's CancelRequest: a key this replica holds goes to the database; any
/// other key goes to the peers, and only the replica holding it acts on it.
pub async fn route(canceller: &Canceller, fleet: &Fleet, pid: i32, secret: &[u8]) {
    if canceller.cancel(pid, secret, CancelRoute::Local).await {
        return;
    }
    let metrics = canceller.metrics();
    if let (Ok(secret), true) = (<[u8; 4]>::try_from(secret), fleet.has_peers()) {
        metrics.cancel(CancelRoute::Forwarded);
        if fleet.forward(pid, secret).await {
            return;
        }
    }
    // As PostgreSQL does: say nothing to the sender of a wrong key.
    metrics.cancel(CancelRoute::Unknown);
    let owner = keys::owner(pid);
    tracing::info!(pid, owner, "cancel request with an unknown key");
}

//! The replica's live sessions (so the proxy can close them: shutdown, revoked access) and
//! its start-up slots per client address. A leaf: sessions register here, the revocation
//! watcher and shutdown read it, and it imports neither.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::audit::Identity;
use crate::halt::Halt;

/// Connections in start-up, by client address: one address cannot hold them all.
#[derive(Default)]
pub struct Handshakes {
    by_address: Mutex<HashMap<std::net::IpAddr, usize>>,
}

/// A start-up slot; dropping it frees the slot.
pub struct Handshake<'a> {
    handshakes: &'a Handshakes,
    address: std::net::IpAddr,
}

impl Handshakes {
    /// A slot for `address`, unless it already holds `limit`.
    pub fn enter(&self, address: std::net::IpAddr, limit: usize) -> Option<Handshake<'_>> {
        let mut map = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(address).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Handshake {
            handshakes: self,
            address,
        })
    }

    /// How many connections from `address` are starting up now.
    pub fn starting(&self, address: std::net::IpAddr) -> usize {
        let map = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&address).copied().unwrap_or(0)
    }
}

impl Drop for Handshake<'_> {
    fn drop(&mut self) {
        let mut map = self
            .handshakes
            .by_address
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.address);
            }
        }
    }
}

/// The end of a person's grant as a live session knows it; the grant watcher moves it
/// when the grant is extended or shortened.
pub type GrantEnd = tokio::sync::watch::Sender<chrono::DateTime<chrono::Utc>>;

struct Live {
    identity: Identity,
    halt: Arc<Halt>,
    grant_end: Option<GrantEnd>,
}

/// Live sessions, so the proxy can close them (shutdown, revoked access).
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Live>>,
}

/// Removes its session from the registry when dropped.
pub struct Registration<'a> {
    sessions: &'a Sessions,
    id: String,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        startup::sync::lock(&self.sessions.live).remove(&self.id);
    }
}

impl Sessions {
    pub fn add(
        &self,
        id: &str,
        identity: Identity,
        halt: Arc<Halt>,
        grant_end: Option<GrantEnd>,
    ) -> Registration<'_> {
        let live = Live {
            identity,
            halt,
            grant_end,
        };
        startup::sync::lock(&self.live).insert(id.to_string(), live);
        Registration {
            sessions: self,
            id: id.to_string(),
        }
    }

    pub fn count(&self) -> usize {
        startup::sync::lock(&self.live).len()
    }

    /// The grants behind the people connected now.
    pub fn grant_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = startup::sync::lock(&self.live)
            .values()
            .filter_map(|live| match live.identity {
                Identity::Person { grant_id, .. } => Some(grant_id),
                Identity::Service { .. } => None,
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Closes every session for which `which` is true; returns how many were not already
    /// being closed.
    pub fn halt_where(
        &self,
        which: impl Fn(&Identity) -> bool,
        code: &'static str,
        message: &str,
    ) -> usize {
        let live = startup::sync::lock(&self.live);
        let mut n = 0;
        for session in live.values() {
            if which(&session.identity) && session.halt.fire(code, message) {
                n += 1;
            }
        }
        n
    }

    /// Tells the sessions of `grant` that it now ends at `end` (later: they stay; earlier:
    /// they end then). Returns how many sessions learnt a new end.
    pub fn set_grant_end(&self, grant: i64, end: chrono::DateTime<chrono::Utc>) -> usize {
        let live = startup::sync::lock(&self.live);
        let mut n = 0;
        for session in live.values() {
            let ours =
                matches!(session.identity, Identity::Person { grant_id, .. } if grant_id == grant);
            if let (true, Some(tx)) = (ours, &session.grant_end) {
                let moved = tx.send_if_modified(|known| {
                    let moved = *known != end;
                    *known = end;
                    moved
                });
                n += usize::from(moved);
            }
        }
        n
    }
}

//! Query cancellation. Clients get the proxy's own cancel keys (never the database's, and
//! never an empty one); a CancelRequest arrives on a new connection and is forwarded, with
//! the database's key, to the backend that serves that session.

use std::collections::HashMap;
use std::sync::Mutex;

use subtle::ConstantTimeEq;

/// Where a key's cancel must go.
#[derive(Debug, Clone)]
struct Target {
    secret: [u8; 4],
    backend_pid: i32,
    backend_secret: Vec<u8>,
}

/// The keys of live sessions.
#[derive(Default)]
pub struct CancelMap {
    sessions: Mutex<HashMap<i32, Target>>,
}

/// A key handed to a client; dropping it unregisters the session.
pub struct Key<'a> {
    map: &'a CancelMap,
    pub pid: i32,
    pub secret: [u8; 4],
}

impl Drop for Key<'_> {
    fn drop(&mut self) {
        startup::sync::lock(&self.map.sessions).remove(&self.pid);
    }
}

impl CancelMap {
    /// Registers a session served by backend `backend_pid` and returns the client's key.
    pub fn register(&self, backend_pid: i32, backend_secret: Vec<u8>) -> Key<'_> {
        let mut sessions = startup::sync::lock(&self.sessions);
        loop {
            // Positive, like real backend pids, so clients that print them are not confused.
            let pid = (rand::random::<u32>() >> 1) as i32;
            if pid == 0 || sessions.contains_key(&pid) {
                continue;
            }
            let secret: [u8; 4] = rand::random();
            sessions.insert(
                pid,
                Target {
                    secret,
                    backend_pid,
                    backend_secret: backend_secret.clone(),
                },
            );
            return Key {
                map: self,
                pid,
                secret,
            };
        }
    }

    /// The database's key for a client's key, if the client's key is valid.
    pub fn lookup(&self, pid: i32, secret: &[u8]) -> Option<(i32, Vec<u8>)> {
        let sessions = startup::sync::lock(&self.sessions);
        let t = sessions.get(&pid)?;
        bool::from(t.secret.as_slice().ct_eq(secret))
            .then(|| (t.backend_pid, t.backend_secret.clone()))
    }

    pub fn len(&self) -> usize {
        startup::sync::lock(&self.sessions).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_backends_and_expire_with_the_session() {
        let map = CancelMap::default();
        let key = map.register(4242, vec![1, 2, 3, 4]);
        assert!(key.pid > 0);
        assert_eq!(
            map.lookup(key.pid, &key.secret),
            Some((4242, vec![1, 2, 3, 4]))
        );
        let mut wrong = key.secret;
        wrong[0] ^= 1;
        assert_eq!(map.lookup(key.pid, &wrong), None);
        let pid = key.pid;
        drop(key);
        assert!(map.lookup(pid, &[0; 4]).is_none());
        assert!(map.is_empty());
    }
}

//! The cancel keys handed to clients: each names its owning replica and maps to the
//! database's key of the backend serving that session.

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

/// The largest `fleet.index`: 7 bits, so process ids stay positive.
pub const MAX_INDEX: u8 = 127;
const RANDOM_BITS: u32 = 24;

/// The `fleet.index` of the replica that handed out the key with process id `pid`.
pub fn owner(pid: i32) -> u8 {
    ((pid as u32) >> RANDOM_BITS) as u8
}

/// The keys of live sessions.
#[derive(Default)]
pub struct CancelMap {
    index: u8,
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
    /// The map of the replica with `fleet.index` `index` (at most [`MAX_INDEX`]).
    pub fn new(index: u8) -> CancelMap {
        assert!(index <= MAX_INDEX, "fleet.index is validated");
        CancelMap {
            index,
            sessions: Mutex::default(),
        }
    }

    /// This replica's `fleet.index`.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// Registers a session served by backend `backend_pid` and returns the client's key.
    pub fn register(&self, backend_pid: i32, backend_secret: Vec<u8>) -> Key<'_> {
        let mut sessions = startup::sync::lock(&self.sessions);
        loop {
            // Positive, like real backend pids, so clients that print them are not confused.
            let random = rand::random::<u32>() >> (32 - RANDOM_BITS);
            let pid = ((u32::from(self.index) << RANDOM_BITS) | random) as i32;
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

    #[test]
    fn keys_name_their_replica_and_stay_positive() {
        for index in [0, 1, 77, MAX_INDEX] {
            let map = CancelMap::new(index);
            for _ in 0..200 {
                let key = map.register(1, vec![0; 4]);
                assert!(key.pid > 0, "{}", key.pid);
                assert_eq!(owner(key.pid), index);
            }
        }
        // Keys of one replica differ in 24 bits of the pid and 32 of the secret.
        let map = CancelMap::new(5);
        let keys: Vec<_> = (0..64).map(|_| map.register(1, vec![])).collect();
        let pids: std::collections::HashSet<i32> = keys.iter().map(|k| k.pid).collect();
        assert_eq!(pids.len(), keys.len());
        assert!(keys.windows(2).any(|w| w[0].secret != w[1].secret));
    }
}

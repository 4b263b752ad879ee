//! Answers kept in memory until the data behind them changes.
//!
//! The rates data changes rarely and is read constantly, so a computed `/rates` answer is
//! kept, keyed by its four parameters, and served again without a query. Correctness comes
//! from invalidation, not from a timer: triggers on `prices`, `ports` and `regions`
//! (migration 0003) send `NOTIFY rates_changed` on every change, and a dedicated connection
//! listening for it clears the cache. While that connection is down, nothing is cached or
//! served from the cache, so an answer is never older than the last notification the
//! database could deliver. An answer computed while an invalidation happened is not kept.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use chrono::NaiveDate;

pub type Key = (NaiveDate, NaiveDate, String, String);

pub struct Cache {
    entries: Mutex<HashMap<Key, Bytes>>,
    /// Bumped by every invalidation.
    generation: AtomicU64,
    /// The listener is connected: the cache may be used.
    live: AtomicBool,
    max_entries: usize,
}

impl Cache {
    pub fn new(max_entries: usize) -> Cache {
        Cache {
            entries: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            live: AtomicBool::new(false),
            max_entries,
        }
    }

    pub fn get(&self, key: &Key) -> Option<Bytes> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        startup::sync::lock(&self.entries).get(key).cloned()
    }

    /// Call before computing an answer; pass the result to [`Cache::put`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps `answer` if nothing was invalidated since `generation` was read.
    pub fn put(&self, key: Key, answer: Bytes, generation: u64) {
        let mut entries = startup::sync::lock(&self.entries);
        // Checked under the lock that invalidation also takes: no stale answer slips in.
        if !self.live.load(Ordering::Acquire) || self.generation() != generation {
            return;
        }
        if entries.len() >= self.max_entries {
            entries.clear();
        }
        entries.insert(key, answer);
    }

    /// The data changed (or may have): forget everything.
    pub fn invalidate(&self) {
        let mut entries = startup::sync::lock(&self.entries);
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    /// Whether invalidations can be received; when not, the cache is empty and unused.
    pub fn set_live(&self, live: bool) {
        if !live {
            self.live.store(false, Ordering::Release);
            self.invalidate();
        } else {
            self.invalidate();
            self.live.store(true, Ordering::Release);
        }
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> Key {
        let d = NaiveDate::from_ymd_opt(2021, 1, n).unwrap();
        (d, d, "A".into(), "B".into())
    }

    #[test]
    fn serves_only_while_live_and_drops_answers_raced_by_an_invalidation() {
        let cache = Cache::new(2);
        let g = cache.generation();
        cache.put(key(1), Bytes::from_static(b"1"), g);
        assert_eq!(cache.get(&key(1)), None, "not live yet: nothing kept");

        cache.set_live(true);
        let g = cache.generation();
        cache.put(key(1), Bytes::from_static(b"1"), g);
        assert_eq!(cache.get(&key(1)).as_deref(), Some(&b"1"[..]));

        let g = cache.generation();
        cache.invalidate();
        cache.put(key(2), Bytes::from_static(b"2"), g);
        assert_eq!(
            cache.get(&key(2)),
            None,
            "computed before the change: not kept"
        );
        assert_eq!(cache.get(&key(1)), None, "cleared");

        let g = cache.generation();
        for n in 1..=3 {
            cache.put(key(n), Bytes::from_static(b"x"), g);
        }
        assert!(startup::sync::lock(&cache.entries).len() <= 2, "bounded");
        cache.set_live(false);
        assert_eq!(cache.get(&key(3)), None);
    }
}

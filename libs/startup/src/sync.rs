//! Taking a `std` lock without `unwrap`. A lock is poisoned when a thread panicked while
//! holding it. The locks dbgw takes this way guard maps and caches that every change
//! replaces entry by entry, so the data is whole after such a panic; going on serves the
//! other sessions, where panicking again would turn one bug into an outage. Locks whose
//! data a panic could leave half-changed (the audit writer's) do not use these: they stop.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

//! The monitor's one locking rule, in one place for every file that locks.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks a mutex, taking the data even if a panicking thread poisoned it: every value
/// behind the monitor's locks is valid after any single update.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

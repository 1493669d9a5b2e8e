//! The one lock-poisoning policy of the project: a poisoned lock is used as it is.
//!
//! Every lock here guards a value that is replaced whole (a configuration, a verified bundle, a cache entry) or a
//! counter updated in one statement, never a structure left half-changed across a panic. A panic while holding
//! one is a bug that has already been reported by the panic itself; refusing every later request (or silently
//! skipping the update, as `if let Ok(..) = lock()` would) turns that one bug into an outage or a stale state.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`, poisoned or not.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-locks `l`, poisoned or not.
pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-locks `l`, poisoned or not.
pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_still_stores_and_yields_the_value() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let l = std::sync::Arc::new(RwLock::new(1));
        let (m2, l2) = (m.clone(), l.clone());
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            let _w = l2.write().unwrap();
            panic!("poison both");
        })
        .join();
        assert!(m.is_poisoned() && l.is_poisoned());
        *lock(&m) = 2;
        *write(&l) = 2;
        assert_eq!((*lock(&m), *read(&l)), (2, 2));
    }
}

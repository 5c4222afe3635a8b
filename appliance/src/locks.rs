//! Locks of the control path that a panic cannot take down.
//!
//! A `std::sync` lock is poisoned when a thread panics while holding it;
//! `lock().expect(..)` then panics in every later caller, so one bug in one
//! RPC handler turned into "every later `bdev_get_bdevs` fails". Every
//! control-path lock of the appliance is taken through [`Recover`]
//! instead: a poisoned lock is logged once, its poison cleared, and the
//! data used as the panicking holder left it. That is sound because every
//! critical section of the appliance's registries keeps its map
//! consistent at each step where it can panic (they check before they
//! mutate, and run callbacks such as a backend's teardown after the lock
//! is released), so what a panic leaves behind is a state some successful
//! sequence of calls could have produced too.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `Mutex::lock` that recovers from poison.
pub trait Recover<T: ?Sized> {
    /// The guard, or the data as a panicking holder left it.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> Recover<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|poisoned| {
            report::<T>();
            self.clear_poison();
            poisoned.into_inner()
        })
    }
}

/// `RwLock` counterparts of [`Recover::locked`].
pub trait RecoverRw<T: ?Sized> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T>;
    fn write_locked(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RecoverRw<T> for RwLock<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|poisoned| {
            report::<T>();
            self.clear_poison();
            PoisonError::into_inner(poisoned)
        })
    }

    fn write_locked(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(|poisoned| {
            report::<T>();
            self.clear_poison();
            PoisonError::into_inner(poisoned)
        })
    }
}

fn report<T: ?Sized>() {
    tracing::error!(
        data = std::any::type_name::<T>(),
        "a task panicked while holding this lock: recovered, the lock serves again"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_mutex_poisoned_by_a_panic_serves_again_with_the_data_left() {
        let map = Mutex::new(BTreeMap::from([(1, "one")]));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut guard = map.locked();
            guard.insert(2, "two");
            panic!("handler bug");
        }));
        assert!(result.is_err());
        assert!(map.is_poisoned());
        assert_eq!(map.locked().len(), 2);
        assert!(!map.is_poisoned(), "poison cleared once recovered");
        map.locked().insert(3, "three");
        assert_eq!(map.locked().len(), 3);
    }

    #[test]
    fn an_rwlock_poisoned_by_a_panic_serves_readers_and_writers_again() {
        let lock = RwLock::new(vec![1]);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = lock.write_locked();
            panic!("handler bug");
        }));
        assert!(result.is_err());
        assert_eq!(*lock.read_locked(), vec![1]);
        lock.write_locked().push(2);
        assert_eq!(*lock.read_locked(), vec![1, 2]);
    }
}

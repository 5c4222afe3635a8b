//! Turns per key: async locks made on demand for the keys in use and
//! dropped with their last holder, so the table holds only the keys that
//! something holds or waits for (bounded by the I/O in flight; entries a
//! cancelled waiter left are swept at [`SWEEP_AT`]).
//!
//! The lvol bdev takes one per logical cluster for a first write, so two
//! first writes to one cluster never both allocate it, while first writes
//! to different clusters fill and write their clusters side by side.

use shoal_appliance::locks::Recover;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Entries at which [`Turns::take`] sweeps the unused ones.
pub const SWEEP_AT: usize = 4096;

pub struct Turns<K> {
    locks: Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
}

impl<K> Default for Turns<K> {
    fn default() -> Self {
        Self {
            locks: Mutex::new(HashMap::new()),
        }
    }
}

/// A held turn; the next waiter for the key goes on when it drops.
pub struct Turn<'a, K: Eq + Hash + Clone> {
    turns: &'a Turns<K>,
    key: K,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<K: Eq + Hash + Clone> Turns<K> {
    /// Waits for `key`'s turn.
    pub async fn take(&self, key: K) -> Turn<'_, K> {
        let lock = {
            let mut locks = self.locks.locked();
            // A waiter dropped before its turn (a cancelled future) leaves
            // its entry behind; sweep such entries before they add up.
            if locks.len() >= SWEEP_AT {
                locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            }
            Arc::clone(locks.entry(key.clone()).or_default())
        };
        let guard = lock.lock_owned().await;
        Turn {
            turns: self,
            key,
            guard: Some(guard),
        }
    }

    /// Keys with a holder or a waiter.
    pub fn len(&self) -> usize {
        self.locks.locked().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Eq + Hash + Clone> Drop for Turn<'_, K> {
    fn drop(&mut self) {
        // Under the table's lock, so no one clones the entry meanwhile:
        // the table's Arc and this guard's are the last two when no one
        // else holds or waits.
        let mut locks = self.turns.locks.locked();
        self.guard.take();
        if let Some(lock) = locks.get(&self.key)
            && Arc::strong_count(lock) == 1
        {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bdev::testing::block_on;

    #[test]
    fn one_holder_per_key_others_side_by_side_and_the_table_empties() {
        block_on(async {
            let turns = Turns::<u32>::default();
            let a = turns.take(1).await;
            let _b = turns.take(2).await;
            assert_eq!(turns.len(), 2);
            let waiter = turns.take(1);
            futures_util::pin_mut!(waiter);
            assert!(
                futures_util::poll!(waiter.as_mut()).is_pending(),
                "key 1 is held"
            );
            drop(a);
            let again = waiter.await;
            drop(again);
            assert_eq!(turns.len(), 1, "only key 2 is still held");
        });
    }
}

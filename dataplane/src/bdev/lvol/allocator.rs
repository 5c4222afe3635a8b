//! The cluster allocator: one bit per data cluster, set while the cluster
//! is used. In memory only: at open it is rebuilt from the owner table (a
//! cluster is used exactly when the table names an owner), so the map on
//! disk and the lvols' extents cannot disagree.
//!
//! Allocation takes the lowest free cluster, so a fresh store fills from
//! the front of the base and the choice is reproducible in tests.

/// Free/used state of every cluster of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterAllocator {
    words: Vec<u64>,
    total: u32,
    used: u32,
    /// No word below this index has a free bit: where the search starts.
    first_free_word: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("cluster {0} is already used")]
    AlreadyUsed(u32),
    #[error("cluster {0} is already free")]
    AlreadyFree(u32),
    #[error("cluster {0} is past the store's {1} clusters")]
    OutOfRange(u32, u32),
}

impl ClusterAllocator {
    /// `total` clusters, all free.
    pub fn new(total: u32) -> Self {
        Self {
            words: vec![0; (total as usize).div_ceil(64)],
            total,
            used: 0,
            first_free_word: 0,
        }
    }

    pub fn total(&self) -> u32 {
        self.total
    }

    pub fn used(&self) -> u32 {
        self.used
    }

    pub fn free(&self) -> u32 {
        self.total - self.used
    }

    pub fn is_used(&self, cluster: u32) -> bool {
        cluster < self.total && self.words[word(cluster)] & bit(cluster) != 0
    }

    /// The lowest free cluster, now used; `None` when the store is full.
    pub fn allocate(&mut self) -> Option<u32> {
        let (index, word) = self
            .words
            .iter()
            .enumerate()
            .skip(self.first_free_word)
            .find(|(_, w)| **w != u64::MAX)?;
        let cluster = (index * 64) as u32 + word.trailing_ones();
        if cluster >= self.total {
            return None;
        }
        self.first_free_word = index;
        self.mark(cluster).expect("found free");
        Some(cluster)
    }

    /// `count` clusters or none: a thick lvol is never half allocated.
    pub fn allocate_many(&mut self, count: u32) -> Option<Vec<u32>> {
        if count > self.free() {
            return None;
        }
        Some(
            (0..count)
                .map(|_| self.allocate().expect("counted free"))
                .collect(),
        )
    }

    /// Marks a given cluster used (rebuilding the map at open).
    pub fn mark(&mut self, cluster: u32) -> Result<(), AllocError> {
        self.check_range(cluster)?;
        let w = &mut self.words[word(cluster)];
        if *w & bit(cluster) != 0 {
            return Err(AllocError::AlreadyUsed(cluster));
        }
        *w |= bit(cluster);
        self.used += 1;
        Ok(())
    }

    pub fn release(&mut self, cluster: u32) -> Result<(), AllocError> {
        self.check_range(cluster)?;
        let w = &mut self.words[word(cluster)];
        if *w & bit(cluster) == 0 {
            return Err(AllocError::AlreadyFree(cluster));
        }
        *w &= !bit(cluster);
        self.used -= 1;
        self.first_free_word = self.first_free_word.min(word(cluster));
        Ok(())
    }

    fn check_range(&self, cluster: u32) -> Result<(), AllocError> {
        if cluster < self.total {
            Ok(())
        } else {
            Err(AllocError::OutOfRange(cluster, self.total))
        }
    }
}

fn word(cluster: u32) -> usize {
    cluster as usize / 64
}

fn bit(cluster: u32) -> u64 {
    1 << (cluster % 64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[derive(Debug, Clone)]
    enum Op {
        Allocate,
        AllocateMany(u32),
        /// Release the n-th used cluster of the model (mod its size).
        Release(usize),
        /// Release or mark a cluster by number, valid or not.
        ReleaseAt(u32),
        MarkAt(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Allocate),
            1 => (0u32..20).prop_map(Op::AllocateMany),
            4 => any::<usize>().prop_map(Op::Release),
            1 => (0u32..200).prop_map(Op::ReleaseAt),
            1 => (0u32..200).prop_map(Op::MarkAt),
        ]
    }

    proptest! {
        /// The bitmap against a set of used clusters: every answer agrees,
        /// no cluster is both free and used, counts add up.
        #[test]
        fn the_bitmap_matches_a_set_model(
            total in 1u32..190,
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            let mut map = ClusterAllocator::new(total);
            let mut used = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Allocate => {
                        let lowest_free = (0..total).find(|c| !used.contains(c));
                        prop_assert_eq!(map.allocate(), lowest_free);
                        used.extend(lowest_free);
                    }
                    Op::AllocateMany(n) => match map.allocate_many(n) {
                        Some(got) => {
                            prop_assert_eq!(got.len() as u32, n);
                            for c in got {
                                prop_assert!(used.insert(c), "cluster {} handed out twice", c);
                            }
                        }
                        None => prop_assert!(n > total - used.len() as u32),
                    },
                    Op::Release(n) if !used.is_empty() => {
                        let c = *used.iter().nth(n % used.len()).unwrap();
                        prop_assert_eq!(map.release(c), Ok(()));
                        used.remove(&c);
                    }
                    Op::Release(_) => {}
                    Op::ReleaseAt(c) => {
                        let want = if c >= total {
                            Err(AllocError::OutOfRange(c, total))
                        } else if used.remove(&c) {
                            Ok(())
                        } else {
                            Err(AllocError::AlreadyFree(c))
                        };
                        prop_assert_eq!(map.release(c), want);
                    }
                    Op::MarkAt(c) => {
                        let want = if c >= total {
                            Err(AllocError::OutOfRange(c, total))
                        } else if used.insert(c) {
                            Ok(())
                        } else {
                            Err(AllocError::AlreadyUsed(c))
                        };
                        prop_assert_eq!(map.mark(c), want);
                    }
                }
                prop_assert_eq!(map.used() as usize, used.len());
                prop_assert_eq!(map.free() + map.used(), total);
                for c in 0..total + 3 {
                    prop_assert_eq!(map.is_used(c), used.contains(&c), "cluster {}", c);
                }
            }
        }
    }

    #[test]
    fn a_full_store_allocates_nothing_and_refills_from_the_lowest_freed() {
        let mut map = ClusterAllocator::new(130);
        assert_eq!(
            map.allocate_many(130).unwrap(),
            (0..130).collect::<Vec<_>>()
        );
        assert_eq!(map.allocate(), None);
        assert_eq!(map.allocate_many(1), None);
        map.release(100).unwrap();
        map.release(3).unwrap();
        assert_eq!(map.allocate(), Some(3));
        assert_eq!(map.allocate(), Some(100));
        assert_eq!(map.allocate(), None);
    }

    #[test]
    fn all_or_nothing() {
        let mut map = ClusterAllocator::new(10);
        map.allocate_many(4).unwrap();
        assert_eq!(map.allocate_many(7), None);
        assert_eq!(map.used(), 4, "a refused request takes nothing");
        assert_eq!(map.allocate_many(6).unwrap(), (4..10).collect::<Vec<_>>());
    }
}

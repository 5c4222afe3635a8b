//! The read path's question: where does logical cluster `n` of an lvol
//! live? In the lvol itself if it owns it, else in the nearest ancestor
//! (snapshot) that does, else nowhere: zeroes. Pure over a lookup of
//! blobs, so it is tested on its own.

use std::collections::BTreeMap;

use uuid::Uuid;

/// What the resolver needs of one blob (an lvol or a snapshot).
pub trait Link {
    fn uuid(&self) -> Uuid;
    fn parent(&self) -> Option<Uuid>;
    /// Logical clusters below this read through the parent.
    fn backed_clusters(&self) -> u64;
    /// The data cluster holding `logical`, if this blob owns it.
    fn cluster_of(&self, logical: u32) -> Option<u32>;
}

/// A plain blob, for tests and callers without a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub uuid: Uuid,
    pub parent: Option<Uuid>,
    pub backed_clusters: u64,
    /// Logical cluster → data cluster, for the clusters this blob owns.
    pub extents: BTreeMap<u32, u32>,
}

impl Link for Blob {
    fn uuid(&self) -> Uuid {
        self.uuid
    }

    fn parent(&self) -> Option<Uuid> {
        self.parent
    }

    fn backed_clusters(&self) -> u64 {
        self.backed_clusters
    }

    fn cluster_of(&self, logical: u32) -> Option<u32> {
        self.extents.get(&logical).copied()
    }
}

/// Where a logical cluster's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// In data cluster `cluster`, owned by blob `owner` (the lvol read, or
    /// the ancestor it reads through).
    Cluster { owner: Uuid, cluster: u32 },
    /// Nowhere in the chain: the cluster reads as zeroes.
    Zeroes,
}

/// Where `logical` of `blob` reads from (the caller checks it is below
/// the blob's size). `lookup` finds a parent; one it cannot find reads as
/// zeroes (the store refuses to open such a chain, so this is defensive).
pub fn resolve<'a, L: Link>(
    blob: &'a L,
    logical: u32,
    lookup: impl Fn(Uuid) -> Option<&'a L>,
) -> Resolved {
    let mut at = blob;
    loop {
        if let Some(cluster) = at.cluster_of(logical) {
            return Resolved::Cluster {
                owner: at.uuid(),
                cluster,
            };
        }
        if u64::from(logical) >= at.backed_clusters() {
            return Resolved::Zeroes;
        }
        match at.parent().and_then(&lookup) {
            Some(parent) => at = parent,
            None => return Resolved::Zeroes,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const DEPTH: usize = 10;
    const SIZE: u64 = 16;

    /// A chain of DEPTH blobs, 0 the oldest snapshot, DEPTH-1 the live
    /// lvol. Blob `i` owns logical clusters `i` and `i + 3` (and the live
    /// one also owns 15), data cluster `100 * i + logical`. Blob 6 was
    /// shrunk to 8 clusters before it was snapshotted and grown back: its
    /// children must not see blobs 0..6 past 8.
    fn chain() -> Vec<Blob> {
        let ids: Vec<Uuid> = (0..DEPTH).map(|_| Uuid::new_v4()).collect();
        (0..DEPTH)
            .map(|i| {
                let mut owned = vec![i as u32, i as u32 + 3];
                if i == DEPTH - 1 {
                    owned.push(15);
                }
                Blob {
                    uuid: ids[i],
                    parent: i.checked_sub(1).map(|p| ids[p]),
                    backed_clusters: match i {
                        0 => 0,
                        6 => 8,
                        _ => SIZE,
                    },
                    extents: owned.into_iter().map(|l| (l, 100 * i as u32 + l)).collect(),
                }
            })
            .collect()
    }

    /// The model: walk down from `from` by hand.
    fn expected(blobs: &[Blob], from: usize, logical: u32) -> Resolved {
        let mut visible = SIZE;
        for i in (0..=from).rev() {
            if u64::from(logical) >= visible {
                return Resolved::Zeroes;
            }
            let owns =
                logical == i as u32 || logical == i as u32 + 3 || (i == DEPTH - 1 && logical == 15);
            if owns {
                return Resolved::Cluster {
                    owner: blobs[i].uuid,
                    cluster: 100 * i as u32 + logical,
                };
            }
            visible = visible.min(blobs[i].backed_clusters);
        }
        Resolved::Zeroes
    }

    #[test]
    fn every_cluster_of_a_ten_deep_chain_resolves_to_its_nearest_owner() {
        let blobs = chain();
        let by_id: HashMap<Uuid, &Blob> = blobs.iter().map(|b| (b.uuid, b)).collect();
        for from in 0..DEPTH {
            for logical in 0..SIZE as u32 {
                assert_eq!(
                    resolve(&blobs[from], logical, |id| by_id.get(&id).copied()),
                    expected(&blobs, from, logical),
                    "blob {from} logical {logical}"
                );
            }
        }
    }

    #[test]
    fn exact_answers_through_the_chain() {
        let blobs = chain();
        let by_id: HashMap<Uuid, &Blob> = blobs.iter().map(|b| (b.uuid, b)).collect();
        let top = &blobs[DEPTH - 1];
        let at = |logical| resolve(top, logical, |id| by_id.get(&id).copied());
        let owned = |i: usize, logical: u32| Resolved::Cluster {
            owner: blobs[i].uuid,
            cluster: 100 * i as u32 + logical,
        };
        // Owned by the top itself.
        assert_eq!(at(9), owned(9, 9));
        assert_eq!(at(12), owned(9, 12));
        assert_eq!(at(15), owned(9, 15));
        // Through the chain, within blob 6's backed range.
        assert_eq!(at(7), owned(7, 7));
        assert_eq!(at(3), owned(3, 3), "blob 0's 3 is hidden by blob 3's");
        assert_eq!(at(0), owned(0, 0), "nine hops down");
        // Past blob 6's backed 8: blobs 7 and 8 still show, older ones not.
        assert_eq!(at(10), owned(7, 10));
        assert_eq!(at(11), owned(8, 11));
        assert_eq!(at(13), Resolved::Zeroes);
        assert_eq!(at(14), Resolved::Zeroes);
        // The oldest snapshot on its own.
        let root = |logical| resolve(&blobs[0], logical, |id| by_id.get(&id).copied());
        assert_eq!(root(3), owned(0, 3));
        assert_eq!(root(1), Resolved::Zeroes);
    }

    #[test]
    fn a_missing_parent_reads_zeroes() {
        let blobs = chain();
        assert_eq!(resolve(&blobs[5], 1, |_| None), Resolved::Zeroes);
        assert_eq!(
            resolve(&blobs[5], 5, |_| None),
            Resolved::Cluster {
                owner: blobs[5].uuid,
                cluster: 505
            }
        );
    }
}

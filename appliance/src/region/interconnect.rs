//! Where the inter-cluster machinery lives in the region: a request ring
//! and a completion ring for every ordered pair of data clusters, then the
//! buffer pool, one arena per cluster.
//!
//! The layout is a pure function of the region size and the cluster count,
//! so every process computes the same one; the supervisor records it in the
//! header and [`SharedRegion::open`](super::SharedRegion::open) refuses a
//! region whose record disagrees.

use super::layout::HEADER_SIZE;
use super::pool::{Arena, ArenaLayout, BUFFER_ALIGN};
use super::ring::{Ring, ring_bytes};

/// Descriptors per ring.
pub const RING_ENTRIES: u32 = 256;
/// Smallest arena worth having: room for a few buffers of each class.
pub const MIN_ARENA_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterconnectLayout {
    pub clusters: u32,
    pub ring_entries: u32,
    pub rings_offset: u64,
    pub pool_offset: u64,
    pub arena_bytes: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "a {region_size}-byte region is too small for {clusters} data clusters: \
     it needs at least {needed} bytes (rings plus a {MIN_ARENA_BYTES}-byte pool arena per cluster)"
)]
pub struct TooSmall {
    pub region_size: u64,
    pub clusters: u32,
    pub needed: u64,
}

impl InterconnectLayout {
    pub fn plan(region_size: u64, clusters: u32) -> Result<Self, TooSmall> {
        let rings_offset = (HEADER_SIZE as u64).next_multiple_of(64);
        let pair_bytes = 2 * ring_bytes(RING_ENTRIES) as u64;
        let pairs = u64::from(clusters) * u64::from(clusters);
        let pool_offset = (rings_offset + pairs * pair_bytes).next_multiple_of(BUFFER_ALIGN);
        let needed = pool_offset + u64::from(clusters) * MIN_ARENA_BYTES;
        if region_size < needed || clusters == 0 {
            return Err(TooSmall {
                region_size,
                clusters,
                needed,
            });
        }
        let arena_bytes =
            ((region_size - pool_offset) / u64::from(clusters)) / BUFFER_ALIGN * BUFFER_ALIGN;
        Ok(Self {
            clusters,
            ring_entries: RING_ENTRIES,
            rings_offset,
            pool_offset,
            arena_bytes,
        })
    }

    fn pair_offset(&self, from: u32, to: u32) -> u64 {
        assert!(
            from < self.clusters && to < self.clusters && from != to,
            "no ring {from} -> {to}"
        );
        let index = u64::from(from) * u64::from(self.clusters) + u64::from(to);
        self.rings_offset + index * 2 * ring_bytes(self.ring_entries) as u64
    }

    /// Offset of the ring carrying requests from cluster `from` to `to`.
    pub fn request_ring_offset(&self, from: u32, to: u32) -> u64 {
        self.pair_offset(from, to)
    }

    /// Offset of the ring carrying `to`'s completions back to `from`.
    pub fn completion_ring_offset(&self, from: u32, to: u32) -> u64 {
        self.pair_offset(from, to) + ring_bytes(self.ring_entries) as u64
    }

    pub fn arena_layout(&self, cluster: u32) -> ArenaLayout {
        assert!(cluster < self.clusters, "no arena for cluster {cluster}");
        ArenaLayout::plan(
            self.pool_offset + u64::from(cluster) * self.arena_bytes,
            self.arena_bytes,
        )
    }

    /// The cluster whose arena holds region offset `offset`, if any.
    pub fn arena_owner(&self, offset: u64) -> Option<u32> {
        let relative = offset.checked_sub(self.pool_offset)?;
        let owner = relative / self.arena_bytes;
        (owner < u64::from(self.clusters)).then_some(owner as u32)
    }
}

impl super::SharedRegion {
    /// The interconnect layout recorded in this region's header.
    pub fn interconnect(&self) -> InterconnectLayout {
        let header = self.header();
        InterconnectLayout {
            clusters: header.cluster_count(),
            ring_entries: header.ring_entries(),
            rings_offset: header.rings_offset(),
            pool_offset: header.pool_offset(),
            arena_bytes: header.arena_bytes(),
        }
    }

    /// The request ring from `from` to `to`.
    ///
    /// # Safety
    /// Only cluster `from` may push and only cluster `to` may pop, one
    /// thread each.
    pub unsafe fn request_ring(&self, from: u32, to: u32) -> Ring {
        let offset = self.interconnect().request_ring_offset(from, to);
        // SAFETY: the layout keeps the ring inside the mapping; the SPSC
        // discipline is the caller's.
        unsafe { Ring::at(self.base_ptr().add(offset as usize), RING_ENTRIES) }
    }

    /// The ring carrying `to`'s completions back to `from`.
    ///
    /// # Safety
    /// Only cluster `to` may push and only cluster `from` may pop.
    pub unsafe fn completion_ring(&self, from: u32, to: u32) -> Ring {
        let offset = self.interconnect().completion_ring_offset(from, to);
        // SAFETY: as above.
        unsafe { Ring::at(self.base_ptr().add(offset as usize), RING_ENTRIES) }
    }

    /// Cluster `cluster`'s pool arena.
    pub fn arena(&self, cluster: u32) -> Arena {
        let layout = self.interconnect().arena_layout(cluster);
        // SAFETY: the layout lies inside the mapping, which outlives the
        // view as long as the caller keeps the region alive.
        unsafe { Arena::at(self.base_ptr(), layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_and_arenas_do_not_overlap() {
        let layout = InterconnectLayout::plan(64 << 20, 4).unwrap();
        let mut spans = Vec::new();
        for from in 0..4 {
            for to in 0..4 {
                if from != to {
                    let r = layout.request_ring_offset(from, to);
                    let c = layout.completion_ring_offset(from, to);
                    spans.push((r, r + ring_bytes(RING_ENTRIES) as u64));
                    spans.push((c, c + ring_bytes(RING_ENTRIES) as u64));
                }
            }
        }
        for cluster in 0..4 {
            let arena = layout.arena_layout(cluster);
            spans.push((arena.heads_offset, arena.end));
            assert_eq!(
                layout.arena_owner(arena.classes[0].buffers_offset),
                Some(cluster)
            );
        }
        spans.sort();
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{pair:?} overlap");
        }
        assert!(spans.last().unwrap().1 <= 64 << 20);
        assert!(spans[0].0 >= HEADER_SIZE as u64);
    }

    #[test]
    fn a_region_too_small_is_refused_with_the_size_needed() {
        let err = InterconnectLayout::plan(2 << 20, 4).unwrap_err();
        assert!(err.needed > 2 << 20);
        assert!(err.to_string().contains("4 data clusters"));
    }
}

//! Regions of a mirrored raid's legs: the unit of the write-intent bitmap
//! and of the background processes (rebuild, resync, check).
//!
//! Each region has one atomic word shared by every reactor:
//! - `DIRTY`: the region's bit is set in the on-disk bitmap. A write may
//!   only reach the legs once its regions are dirty on disk, so after a
//!   crash or a leg failure the bitmap names every region whose legs may
//!   differ. Bits are cleared only while every leg is in sync, after a
//!   region has gone a whole sweep without writes.
//! - `LOCKED`: a process is copying or comparing the region; new writes
//!   wait until it moves on, and the process waits for writes in flight.
//! - `TOUCHED`: written since the last sweep (the sweep's second chance).
//! - `STALE`: dirty when the array was assembled, so its legs may differ:
//!   reads go to one chosen leg until a resync has copied it.
//! - the low bits count writes in flight.

use std::sync::atomic::{AtomicU32, Ordering};

const DIRTY: u32 = 1 << 31;
const LOCKED: u32 = 1 << 30;
const TOUCHED: u32 = 1 << 29;
const STALE: u32 = 1 << 28;
const INFLIGHT: u32 = STALE - 1;

/// Regions per bitmap page: one 4 KiB page of bits.
pub const REGIONS_PER_PAGE: usize = 4096 * 8;

pub struct Regions {
    region_blocks: u64,
    states: Box<[AtomicU32]>,
}

impl Regions {
    /// Regions of `region_blocks` covering `data_blocks` leg blocks.
    pub fn new(data_blocks: u64, region_blocks: u64) -> Self {
        let count = data_blocks.div_ceil(region_blocks).max(1) as usize;
        Self {
            region_blocks,
            states: (0..count).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Never true: there is at least one region.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    pub fn region_blocks(&self) -> u64 {
        self.region_blocks
    }

    /// Regions a request of `blocks` at leg offset `offset` touches.
    pub fn span(&self, offset: u64, blocks: u64) -> std::ops::Range<usize> {
        let first = (offset / self.region_blocks) as usize;
        let last = ((offset + blocks.max(1) - 1) / self.region_blocks) as usize;
        first..(last + 1).min(self.states.len())
    }

    /// Counts a write into `region` unless a process holds it.
    pub fn try_enter(&self, region: usize) -> bool {
        let state = &self.states[region];
        let mut current = state.load(Ordering::Acquire);
        loop {
            if current & LOCKED != 0 {
                return false;
            }
            assert!(current & INFLIGHT < INFLIGHT, "in-flight count overflow");
            match state.compare_exchange_weak(
                current,
                (current + 1) | TOUCHED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }

    pub fn exit(&self, region: usize) {
        let before = self.states[region].fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before & INFLIGHT > 0, "exit without enter");
    }

    pub fn inflight(&self, region: usize) -> u32 {
        self.states[region].load(Ordering::Acquire) & INFLIGHT
    }

    /// Takes `region` for a process: writes that have not entered wait.
    /// Returns false if another process holds it.
    pub fn lock(&self, region: usize) -> bool {
        self.states[region].fetch_or(LOCKED, Ordering::AcqRel) & LOCKED == 0
    }

    pub fn unlock(&self, region: usize) {
        self.states[region].fetch_and(!LOCKED, Ordering::AcqRel);
    }

    pub fn is_dirty(&self, region: usize) -> bool {
        self.states[region].load(Ordering::Acquire) & DIRTY != 0
    }

    pub fn all_dirty(&self, span: std::ops::Range<usize>) -> bool {
        span.into_iter().all(|r| self.is_dirty(r))
    }

    /// Marks regions dirty in memory; the caller has just written (or is
    /// about to write, under the bitmap lock) the pages that hold them.
    pub fn mark_dirty(&self, span: std::ops::Range<usize>) {
        for region in span {
            self.states[region].fetch_or(DIRTY, Ordering::AcqRel);
        }
    }

    pub fn is_stale(&self, region: usize) -> bool {
        self.states[region].load(Ordering::Acquire) & STALE != 0
    }

    pub fn any_stale(&self) -> bool {
        (0..self.len()).any(|r| self.is_stale(r))
    }

    pub fn clear_stale(&self, region: usize) {
        self.states[region].fetch_and(!STALE, Ordering::AcqRel);
    }

    pub fn dirty_count(&self) -> usize {
        (0..self.len()).filter(|&r| self.is_dirty(r)).count()
    }

    /// Loads the on-disk bitmap found at assembly: its regions are dirty
    /// and, since their legs may differ, stale until resynced.
    pub fn load(&self, bitmap: &[u8]) {
        for region in 0..self.len() {
            let byte = bitmap.get(region / 8).copied().unwrap_or(0);
            if byte & (1 << (region % 8)) != 0 {
                self.states[region].fetch_or(DIRTY | STALE, Ordering::AcqRel);
            }
        }
    }

    /// One sweep: regions untouched since the last sweep, with no write in
    /// flight and no process, lose `DIRTY`; the others lose `TOUCHED` (a
    /// second chance). Returns the bitmap pages that changed.
    pub fn sweep(&self) -> Vec<usize> {
        let mut changed = Vec::new();
        for (region, state) in self.states.iter().enumerate() {
            let current = state.load(Ordering::Acquire);
            if current & TOUCHED != 0 {
                state.fetch_and(!TOUCHED, Ordering::AcqRel);
                continue;
            }
            if current & DIRTY == 0 || current & (LOCKED | STALE | INFLIGHT) != 0 {
                continue;
            }
            if state
                .compare_exchange(
                    current,
                    current & !DIRTY,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
            {
                let page = region / REGIONS_PER_PAGE;
                if changed.last() != Some(&page) {
                    changed.push(page);
                }
            }
        }
        changed
    }

    /// How many bitmap pages cover every region.
    pub fn pages(&self) -> usize {
        self.len().div_ceil(REGIONS_PER_PAGE)
    }

    /// The on-disk form of bitmap page `page`, from the `DIRTY` bits now.
    pub fn page_bytes(&self, page: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; REGIONS_PER_PAGE / 8];
        let first = page * REGIONS_PER_PAGE;
        for region in first..(first + REGIONS_PER_PAGE).min(self.len()) {
            if self.is_dirty(region) {
                let bit = region - first;
                bytes[bit / 8] |= 1 << (bit % 8);
            }
        }
        bytes
    }

    /// The pages that hold `span`'s bits.
    pub fn pages_of(span: std::ops::Range<usize>) -> std::ops::RangeInclusive<usize> {
        span.start / REGIONS_PER_PAGE..=(span.end.max(span.start + 1) - 1) / REGIONS_PER_PAGE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_exactly_the_regions_a_request_touches() {
        let regions = Regions::new(1000, 100);
        assert_eq!(regions.len(), 10);
        assert_eq!(regions.span(0, 100), 0..1);
        assert_eq!(regions.span(99, 2), 0..2);
        assert_eq!(regions.span(950, 50), 9..10);
        assert_eq!(regions.span(0, 0), 0..1);
        assert_eq!(Regions::new(1001, 100).len(), 11);
    }

    #[test]
    fn a_locked_region_admits_no_new_write_but_counts_those_in_flight() {
        let regions = Regions::new(300, 100);
        assert!(regions.try_enter(1));
        assert!(regions.lock(1));
        assert!(!regions.lock(1), "one process at a time");
        assert!(!regions.try_enter(1));
        assert_eq!(regions.inflight(1), 1);
        regions.exit(1);
        assert_eq!(regions.inflight(1), 0);
        regions.unlock(1);
        assert!(regions.try_enter(1));
    }

    #[test]
    fn a_sweep_clears_only_regions_idle_for_a_whole_sweep() {
        let regions = Regions::new(300, 100);
        regions.mark_dirty(0..3);
        assert!(regions.try_enter(0));
        regions.exit(0);
        assert!(regions.try_enter(1)); // still in flight
        // Region 2 was never touched: cleared at once. Region 0 was
        // touched: its second chance. Region 1 is in flight.
        assert_eq!(regions.sweep(), vec![0]);
        assert_eq!(
            (0..3).map(|r| regions.is_dirty(r)).collect::<Vec<_>>(),
            [true, true, false]
        );
        assert_eq!(regions.sweep(), vec![0]);
        assert!(!regions.is_dirty(0));
        assert!(regions.is_dirty(1));
        regions.exit(1);
        regions.sweep();
        regions.sweep();
        assert_eq!(regions.dirty_count(), 0);
        assert!(regions.sweep().is_empty());
    }

    #[test]
    fn stale_regions_stay_dirty_until_resynced() {
        let regions = Regions::new(300, 100);
        let mut page = vec![0u8; 4096];
        page[0] = 0b100;
        regions.load(&page);
        assert!(regions.is_stale(2) && regions.is_dirty(2));
        regions.sweep();
        regions.sweep();
        assert!(regions.is_dirty(2), "a stale region is never cleared");
        regions.clear_stale(2);
        regions.sweep();
        assert!(!regions.is_dirty(2));
    }

    #[test]
    fn pages_hold_the_dirty_bits_in_order() {
        let regions = Regions::new(100 * (REGIONS_PER_PAGE as u64 + 10), 100);
        assert_eq!(regions.pages(), 2);
        regions.mark_dirty(3..4);
        regions.mark_dirty(REGIONS_PER_PAGE + 9..REGIONS_PER_PAGE + 10);
        assert_eq!(regions.page_bytes(0)[0], 0b1000);
        assert_eq!(regions.page_bytes(1)[1], 0b10);
        assert_eq!(
            Regions::pages_of(REGIONS_PER_PAGE - 1..REGIONS_PER_PAGE + 1),
            0..=1
        );
        assert_eq!(Regions::pages_of(5..6), 0..=0);
    }
}

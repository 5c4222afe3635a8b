//! The shared buffer pool: I/O buffers inside the region, so a buffer can
//! cross clusters as an offset instead of being copied.
//!
//! Each data cluster owns an arena of the pool; only that cluster's
//! threads allocate and free in it (other clusters read and write the
//! buffers they are lent, by offset). An arena holds [`CLASSES`] size classes,
//! each a lock-free stack of free buffers: the stack head packs a version
//! counter with the top index, so a pop racing a pop-then-push of the same
//! buffer (ABA) fails its compare-and-swap instead of corrupting the list.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Number of size classes.
pub const CLASSES: usize = 4;
/// Buffer sizes, smallest first: a block, a typical NVMe MDTS chunk, the
/// 256 KiB requests nbdcopy and qemu make, and large sequential I/O.
pub const CLASS_SIZES: [u64; CLASSES] = [4 << 10, 64 << 10, 256 << 10, 1 << 20];
/// Share of an arena each class gets, in eighths.
const CLASS_EIGHTHS: [u64; CLASSES] = [1, 2, 3, 2];
/// Alignment of every buffer (O_DIRECT and page granularity).
pub const BUFFER_ALIGN: u64 = 4096;

const EMPTY: u32 = u32::MAX;

/// Where one class lives inside an arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassLayout {
    pub size: u64,
    pub count: u32,
    /// Offset (from the region start) of the class's `next` links.
    pub links_offset: u64,
    /// Offset of the class's first buffer.
    pub buffers_offset: u64,
}

/// Where one cluster's arena lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArenaLayout {
    /// Offset of the class stack heads (one u64 per class, a cache line each).
    pub heads_offset: u64,
    pub classes: [ClassLayout; CLASSES],
    pub end: u64,
}

impl ArenaLayout {
    /// Lays out an arena of `bytes` bytes starting at `start` (4 KiB aligned).
    pub fn plan(start: u64, bytes: u64) -> Self {
        let heads_offset = start;
        let mut cursor = start + CLASSES as u64 * 64;
        let mut classes = [ClassLayout {
            size: 0,
            count: 0,
            links_offset: 0,
            buffers_offset: 0,
        }; CLASSES];
        for (i, (&size, &eighths)) in CLASS_SIZES.iter().zip(&CLASS_EIGHTHS).enumerate() {
            let share = bytes * eighths / 8;
            // Each buffer costs its size plus a 4-byte link.
            let count = (share.saturating_sub(BUFFER_ALIGN) / (size + 4))
                .min(u64::from(u32::MAX - 1)) as u32;
            classes[i].size = size;
            classes[i].count = count;
            classes[i].links_offset = cursor;
            cursor += u64::from(count) * 4;
        }
        for class in &mut classes {
            cursor = cursor.next_multiple_of(BUFFER_ALIGN);
            class.buffers_offset = cursor;
            cursor += u64::from(class.count) * class.size;
        }
        debug_assert!(cursor <= start + bytes, "arena overflows its share");
        Self {
            heads_offset,
            classes,
            end: cursor,
        }
    }
}

/// A buffer handed out by an arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolBuffer {
    /// Offset of the buffer from the region start.
    pub offset: u64,
    /// Capacity (its class size).
    pub size: u64,
    class: u8,
    index: u32,
}

/// One cluster's arena, viewed in mapped memory.
pub struct Arena {
    base: *mut u8,
    layout: ArenaLayout,
}

// SAFETY: all shared state is reached through atomics; buffers are plain
// memory handed to one user at a time by the free lists.
unsafe impl Send for Arena {}
unsafe impl Sync for Arena {}

impl Arena {
    /// Views the arena laid out by `layout` in the region mapped at `base`.
    ///
    /// # Safety
    /// `base` must be the start of a mapping that covers `layout.end` bytes
    /// and outlives the view.
    pub unsafe fn at(base: *mut u8, layout: ArenaLayout) -> Self {
        Self { base, layout }
    }

    pub fn layout(&self) -> &ArenaLayout {
        &self.layout
    }

    fn head(&self, class: usize) -> &AtomicU64 {
        // SAFETY: heads are 64-byte spaced u64s inside the arena.
        unsafe {
            &*self
                .base
                .add(self.layout.heads_offset as usize + class * 64)
                .cast::<AtomicU64>()
        }
    }

    fn link(&self, class: usize, index: u32) -> &AtomicU32 {
        let offset = self.layout.classes[class].links_offset as usize + index as usize * 4;
        // SAFETY: index < count, so the link lies in the class's link array.
        unsafe { &*self.base.add(offset).cast::<AtomicU32>() }
    }

    /// Marks every buffer free. Only while nobody uses the arena: at
    /// region creation, or when its cluster starts over.
    pub fn reset(&self) {
        for (class, layout) in self.layout.classes.iter().enumerate() {
            for index in 0..layout.count {
                let next = if index + 1 < layout.count {
                    index + 1
                } else {
                    EMPTY
                };
                self.link(class, index).store(next, Ordering::Relaxed);
            }
            let top = if layout.count > 0 { 0 } else { EMPTY };
            self.head(class).store(u64::from(top), Ordering::Release);
        }
    }

    /// A free buffer of at least `len` bytes, from the smallest class that
    /// fits and has one; `None` when none does.
    pub fn alloc(&self, len: u64) -> Option<PoolBuffer> {
        let first = CLASS_SIZES.iter().position(|&size| size >= len)?;
        (first..CLASS_SIZES.len()).find_map(|class| self.pop(class))
    }

    fn pop(&self, class: usize) -> Option<PoolBuffer> {
        let head = self.head(class);
        let mut current = head.load(Ordering::Acquire);
        loop {
            let index = current as u32;
            if index == EMPTY {
                return None;
            }
            let next = self.link(class, index).load(Ordering::Relaxed);
            let version = (current >> 32) + 1;
            let new = (version << 32) | u64::from(next);
            match head.compare_exchange_weak(current, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    let layout = &self.layout.classes[class];
                    return Some(PoolBuffer {
                        offset: layout.buffers_offset + u64::from(index) * layout.size,
                        size: layout.size,
                        class: class as u8,
                        index,
                    });
                }
                Err(seen) => current = seen,
            }
        }
    }

    /// Returns a buffer from `alloc` to its free list.
    pub fn free(&self, buffer: PoolBuffer) {
        let class = buffer.class as usize;
        let head = self.head(class);
        let mut current = head.load(Ordering::Acquire);
        loop {
            self.link(class, buffer.index)
                .store(current as u32, Ordering::Relaxed);
            let version = (current >> 32) + 1;
            let new = (version << 32) | u64::from(buffer.index);
            match head.compare_exchange_weak(current, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// Free buffers per class (walks the lists; for statistics only).
    pub fn free_counts(&self) -> [u32; CLASSES] {
        let mut counts = [0; CLASSES];
        for (class, count) in counts.iter_mut().enumerate() {
            let mut index = self.head(class).load(Ordering::Acquire) as u32;
            while index != EMPTY && *count <= self.layout.classes[class].count {
                *count += 1;
                index = self.link(class, index).load(Ordering::Relaxed);
            }
        }
        counts
    }

    /// The class layout a buffer offset falls in, and whether it is a
    /// buffer start: lets a receiver check an offset it was sent.
    pub fn contains(&self, offset: u64, len: u64) -> bool {
        self.layout.classes.iter().any(|c| {
            let end = c.buffers_offset + u64::from(c.count) * c.size;
            offset >= c.buffers_offset && offset.checked_add(len).is_some_and(|e| e <= end)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    fn arena(bytes: u64) -> (Vec<u64>, Arena) {
        let mut memory = vec![0u64; (bytes / 8) as usize + 512];
        let base = memory.as_mut_ptr().cast::<u8>();
        let start = (base as u64).next_multiple_of(4096) - base as u64;
        let layout = ArenaLayout::plan(start, bytes);
        // SAFETY: the vector covers the layout and outlives the arena.
        let arena = unsafe { Arena::at(base, layout) };
        arena.reset();
        (memory, arena)
    }

    #[test]
    fn layout_fits_and_aligns() {
        let layout = ArenaLayout::plan(8192, 16 << 20);
        assert!(layout.end <= 8192 + (16 << 20));
        for class in &layout.classes {
            assert_eq!(class.buffers_offset % BUFFER_ALIGN, 0);
            assert!(class.count > 0, "{layout:?}");
        }
    }

    #[test]
    fn allocations_are_distinct_and_come_back() {
        let (_memory, arena) = arena(8 << 20);
        let total: [u32; CLASSES] = std::array::from_fn(|c| arena.layout().classes[c].count);
        let mut seen = HashSet::new();
        let mut taken = Vec::new();
        while let Some(buffer) = arena.alloc(4096) {
            assert!(seen.insert(buffer.offset), "offset handed out twice");
            taken.push(buffer);
        }
        // Small requests overflow into the larger classes once 4 KiB runs out.
        assert_eq!(taken.len() as u32, total.iter().sum::<u32>());
        assert!(arena.alloc(1).is_none());
        for buffer in taken {
            arena.free(buffer);
        }
        assert_eq!(arena.free_counts(), total);
        assert!(arena.alloc(2 << 20).is_none(), "larger than any class");
        assert_eq!(arena.alloc(65 << 10).unwrap().size, 256 << 10);
    }

    #[test]
    fn concurrent_alloc_and_free_never_share_a_buffer() {
        let (memory, arena) = arena(2 << 20);
        let arena = Arc::new(arena);
        let in_use: Arc<Vec<AtomicU32>> =
            Arc::new((0..(4 << 20) / 4096).map(|_| AtomicU32::new(0)).collect());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let arena = Arc::clone(&arena);
                let in_use = Arc::clone(&in_use);
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        if let Some(buffer) = arena.alloc(4096) {
                            let slot = &in_use[(buffer.offset / 4096) as usize];
                            assert_eq!(
                                slot.swap(1, Ordering::AcqRel),
                                0,
                                "buffer handed out twice"
                            );
                            slot.store(0, Ordering::Release);
                            arena.free(buffer);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let total: [u32; CLASSES] = std::array::from_fn(|c| arena.layout().classes[c].count);
        assert_eq!(arena.free_counts(), total);
        drop(memory);
    }
}

//! This cluster's arena of the shared buffer pool, as the process uses it
//! (SPDK's DMA-able buffer allocator, `spdk_dma_malloc`, in spirit).
//!
//! I/O buffers that may cross to another cluster come from here: they live
//! in the shared region, so a peer can read or write them given only their
//! region offset. The pool is installed once the process has joined the
//! region and opened once the interconnect knows no peer still holds a
//! buffer from this cluster's previous life (see `interconnect`); until then,
//! and whenever the arena is out of buffers of the right size, buffers come
//! from the heap and a remote bdev has to copy them (which it counts).

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};
use shoal_appliance::participant::Participant;
use shoal_appliance::region::pool::{Arena, CLASS_SIZES, PoolBuffer};

static POOL: OnceLock<BufferPool> = OnceLock::new();

pub struct BufferPool {
    /// Keeps the region mapped for as long as any buffer may exist.
    participant: Arc<Participant>,
    arena: Arena,
    open: AtomicBool,
    allocations: AtomicU64,
    /// Requests served from the heap: pool closed, exhausted, or too large.
    heap_fallbacks: AtomicU64,
}

/// Installs the pool of cluster `cluster` (closed). Once per process.
pub fn install(participant: Arc<Participant>, cluster: u32) {
    let arena = participant.region().arena(cluster);
    let pool = BufferPool {
        participant,
        arena,
        open: AtomicBool::new(false),
        allocations: AtomicU64::new(0),
        heap_fallbacks: AtomicU64::new(0),
    };
    if POOL.set(pool).is_err() {
        tracing::warn!("buffer pool installed twice; keeping the first");
    }
}

/// The installed pool, if this process has one.
pub fn get() -> Option<&'static BufferPool> {
    POOL.get()
}

impl BufferPool {
    /// Marks every buffer of the arena free and starts handing them out.
    /// Only when no peer can still touch a buffer of this cluster's earlier
    /// life and this process has not allocated any.
    pub fn reset_and_open(&self) {
        assert!(!self.open.load(Ordering::Acquire), "pool reset while open");
        self.arena.reset();
        self.open.store(true, Ordering::Release);
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// A buffer of at least `len` bytes and its address, or `None` (the
    /// caller falls back to the heap, counted here).
    pub fn alloc(&self, len: usize) -> Option<(NonNull<u8>, PoolBuffer)> {
        let buffer = if self.is_open() {
            self.arena.alloc(len as u64)
        } else {
            None
        };
        let Some(buffer) = buffer else {
            self.heap_fallbacks.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        self.allocations.fetch_add(1, Ordering::Relaxed);
        let Some(ptr) = self.address(buffer.offset, buffer.size) else {
            self.arena.free(buffer);
            return None;
        };
        Some((ptr, buffer))
    }

    pub fn free(&self, buffer: PoolBuffer) {
        self.arena.free(buffer);
    }

    /// Address of `len` bytes at region offset `offset`, if inside the region.
    pub fn address(&self, offset: u64, len: u64) -> Option<NonNull<u8>> {
        NonNull::new(self.participant.region().address_of(offset, len)?)
    }

    /// Counters and free buffers per class, for `interconnect_get_stats`.
    pub fn describe(&self) -> Value {
        let layout = self.arena.layout();
        let free = self.arena.free_counts();
        let classes: Vec<Value> = CLASS_SIZES
            .iter()
            .zip(&layout.classes)
            .zip(free)
            .map(|((size, class), free)| json!({"size": size, "count": class.count, "free": free}))
            .collect();
        json!({
            "open": self.is_open(),
            "allocations": self.allocations.load(Ordering::Relaxed),
            "heap_fallbacks": self.heap_fallbacks.load(Ordering::Relaxed),
            "classes": classes,
        })
    }
}

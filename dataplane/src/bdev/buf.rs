//! I/O buffers: owned, aligned memory handed to a bdev with a request and
//! handed back with its completion, as io_uring and DMA require.
//!
//! A buffer lives on the heap or in the shared buffer pool ([`crate::pool`]);
//! a pool buffer can be lent to another cluster by its region offset.
//! A buffer may be split into views that share its allocation (a raid bdev
//! sends each strip of a request to a different leg without copying). The
//! allocation lives until its last view is dropped, so a view still owned
//! by the kernel never points at freed memory.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;
use std::sync::Arc;

use shoal_appliance::region::pool::PoolBuffer;

/// Alignment of every I/O buffer: enough for O_DIRECT on any block size up
/// to 4 KiB and for page-granular devices.
pub const IO_BUF_ALIGN: usize = 4096;

/// Heap buffers of at least this size are mapped straight from the kernel
/// instead of the allocator: their pages are zero until first touched, so
/// a buffer costs memory only as data actually lands in it (a network
/// write payload as its bytes arrive), and freeing it returns the memory.
/// The allocator would zero all of it up front, touching every page.
pub const MAPPED_MIN_BYTES: usize = 256 * 1024;

/// Where a buffer's memory comes from.
enum Memory {
    /// Process memory: never leaves the cluster.
    Heap { ptr: NonNull<u8>, layout: Layout },
    /// Anonymous pages mapped for this buffer alone (large heap buffers).
    Mapped { ptr: NonNull<u8>, len: usize },
    /// A buffer of this cluster's arena in the shared pool, returned to it
    /// when the last view is dropped.
    Pool {
        ptr: NonNull<u8>,
        buffer: PoolBuffer,
    },
    /// Another cluster's pool buffer, lent for one request; its owner frees it.
    Lent {
        ptr: NonNull<u8>,
        region_offset: u64,
    },
}

struct Allocation(Memory);

// SAFETY: the allocation is plain memory; access discipline is IoBuf's.
unsafe impl Send for Allocation {}
unsafe impl Sync for Allocation {}

impl Allocation {
    fn ptr(&self) -> *mut u8 {
        match &self.0 {
            Memory::Heap { ptr, .. }
            | Memory::Mapped { ptr, .. }
            | Memory::Pool { ptr, .. }
            | Memory::Lent { ptr, .. } => ptr.as_ptr(),
        }
    }

    fn region_offset(&self) -> Option<u64> {
        match &self.0 {
            Memory::Heap { .. } | Memory::Mapped { .. } => None,
            Memory::Pool { buffer, .. } => Some(buffer.offset),
            Memory::Lent { region_offset, .. } => Some(*region_offset),
        }
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        match &self.0 {
            // SAFETY: allocated in IoBuf::new with this exact layout.
            Memory::Heap { ptr, layout } => unsafe { dealloc(ptr.as_ptr(), *layout) },
            // SAFETY: mapped in IoBuf::new with this exact length; no view
            // outlives the allocation.
            Memory::Mapped { ptr, len } => unsafe {
                libc::munmap(ptr.as_ptr().cast(), *len);
            },
            Memory::Pool { buffer, .. } => {
                if let Some(pool) = crate::pool::get() {
                    pool.free(*buffer);
                }
            }
            Memory::Lent { .. } => {}
        }
    }
}

/// An aligned byte buffer, or a view of part of one.
pub struct IoBuf {
    alloc: Arc<Allocation>,
    offset: usize,
    len: usize,
}

impl IoBuf {
    /// A zeroed heap buffer of `len` bytes (at least one page is allocated
    /// so the pointer is always valid and aligned).
    pub fn new(len: usize) -> Self {
        if len >= MAPPED_MIN_BYTES
            && let Some(buf) = Self::mapped(len)
        {
            return buf;
        }
        let layout =
            Layout::from_size_align(len.max(1).next_multiple_of(IO_BUF_ALIGN), IO_BUF_ALIGN)
                .expect("I/O buffer size fits a Layout");
        // SAFETY: layout has non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Self::from_memory(Memory::Heap { ptr, layout }, len)
    }

    /// A zeroed buffer of fresh anonymous pages; `None` if the kernel
    /// refuses the mapping (the caller falls back to the allocator).
    fn mapped(len: usize) -> Option<Self> {
        let mapped_len = len.next_multiple_of(IO_BUF_ALIGN);
        // SAFETY: a new private anonymous mapping aliases nothing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        let ptr = NonNull::new(ptr.cast::<u8>())?;
        Some(Self::from_memory(
            Memory::Mapped {
                ptr,
                len: mapped_len,
            },
            len,
        ))
    }

    /// A buffer for an I/O payload: from the shared pool when it has one
    /// (so the I/O can cross clusters without a copy), else zeroed from the
    /// heap. A pool buffer holds whatever its last user left: the caller
    /// fills it (a write payload) or lets a read overwrite it whole.
    pub fn for_io(len: usize) -> Self {
        match crate::pool::get().and_then(|pool| pool.alloc(len)) {
            Some((ptr, buffer)) => Self::from_memory(Memory::Pool { ptr, buffer }, len),
            None => Self::new(len),
        }
    }

    /// A buffer of this cluster's pool, or `None` when the pool is closed,
    /// exhausted or has no buffer class that large.
    pub fn from_pool(len: usize) -> Option<Self> {
        let (ptr, buffer) = crate::pool::get()?.alloc(len)?;
        Some(Self::from_memory(Memory::Pool { ptr, buffer }, len))
    }

    /// A view of `len` bytes of another cluster's pool buffer at region
    /// offset `region_offset`, mapped at `ptr`.
    ///
    /// # Safety
    /// `ptr` must be valid for `len` bytes for as long as the buffer (and
    /// its views) live, and the lender must not touch the bytes meanwhile.
    pub unsafe fn lent(ptr: NonNull<u8>, region_offset: u64, len: usize) -> Self {
        Self::from_memory(Memory::Lent { ptr, region_offset }, len)
    }

    fn from_memory(memory: Memory, len: usize) -> Self {
        Self {
            alloc: Arc::new(Allocation(memory)),
            offset: 0,
            len,
        }
    }

    /// Where this buffer lies in the shared region, if it does: what a
    /// descriptor carries to a peer instead of the bytes.
    pub fn region_offset(&self) -> Option<u64> {
        Some(self.alloc.region_offset()? + self.offset as u64)
    }

    /// Whether the buffer is in this cluster's own pool arena: the only
    /// buffers a peer accepts from us (a buffer lent to us by a third
    /// cluster, or one off the pool, must be copied before it travels on).
    pub fn in_own_pool(&self) -> bool {
        matches!(self.alloc.0, Memory::Pool { .. })
    }

    /// A buffer holding a copy of `data`.
    pub fn from_slice(data: &[u8]) -> Self {
        let mut buf = Self::new(data.len());
        buf.as_mut_slice().copy_from_slice(data);
        buf
    }

    /// A view of `len` bytes at `offset` sharing this buffer's memory.
    ///
    /// # Safety
    /// While the view lives, nobody may write bytes of the range through
    /// another buffer while this view is read or written, and nobody may
    /// read them while this view is written: views handed to concurrent
    /// I/Os must not overlap unless all of them only read the memory.
    pub unsafe fn view(&self, offset: usize, len: usize) -> IoBuf {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "view out of bounds"
        );
        IoBuf {
            alloc: Arc::clone(&self.alloc),
            offset: self.offset + offset,
            len,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_ptr(&self) -> *const u8 {
        // SAFETY: offset is within the allocation (checked when viewing).
        unsafe { self.alloc.ptr().add(self.offset) }
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        // SAFETY: as above.
        unsafe { self.alloc.ptr().add(self.offset) }
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: valid for len initialised bytes; overlapping writers are
        // excluded by view()'s contract.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self excludes other users of this view.
        unsafe { std::slice::from_raw_parts_mut(self.as_mut_ptr(), self.len) }
    }

    /// Shrinks the visible length (the allocation stays).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoBuf")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_zeroed_and_writable() {
        let mut buf = IoBuf::new(5000);
        assert_eq!(buf.as_ptr() as usize % IO_BUF_ALIGN, 0);
        assert!(buf.as_slice().iter().all(|&b| b == 0));
        buf.as_mut_slice()[4999] = 7;
        assert_eq!(buf.as_slice()[4999], 7);
        buf.truncate(10);
        assert_eq!(buf.len(), 10);
        assert_eq!(IoBuf::new(0).len(), 0);
    }

    #[test]
    fn views_share_memory_and_outlive_the_parent() {
        let parent = IoBuf::from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        // SAFETY: the two views are disjoint and the parent is not used
        // while they are written.
        let (mut low, mut high) = unsafe { (parent.view(0, 4), parent.view(4, 4)) };
        low.as_mut_slice()[0] = 10;
        high.as_mut_slice()[3] = 80;
        drop(parent);
        assert_eq!(low.as_slice(), &[10, 2, 3, 4]);
        assert_eq!(high.as_slice(), &[5, 6, 7, 80]);
    }

    #[test]
    #[should_panic(expected = "view out of bounds")]
    fn a_view_past_the_end_is_refused() {
        let parent = IoBuf::new(8);
        // SAFETY: never reached.
        let _ = unsafe { parent.view(4, 8) };
    }
}

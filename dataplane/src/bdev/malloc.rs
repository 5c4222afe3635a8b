//! `malloc`: a RAM-backed bdev (SPDK's Malloc disk).

use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::Arc;

use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};

use super::{
    BackendChannel, Bdev, BdevBackend, BdevError, BdevRegistry, BdevSpec, IoCompletion, IoFuture,
    IoKind, IoRequest,
};

/// The device's memory: an anonymous mapping, zero-filled by the kernel on
/// first touch, so a large malloc bdev costs nothing until written.
///
/// Like a real device, concurrent overlapping I/O from different reactors
/// leaves unspecified contents in the overlap; it is only ever accessed
/// through raw pointer copies, never through references.
struct Memory {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: see the type's comment: raw copies only, lifetime tied to Arc.
unsafe impl Send for Memory {}
unsafe impl Sync for Memory {}

impl Memory {
    fn new(len: usize) -> Result<Self, BdevError> {
        let length = NonZeroUsize::new(len)
            .ok_or_else(|| BdevError::Invalid("malloc bdev of 0 bytes".into()))?;
        // SAFETY: a fresh private anonymous mapping.
        let base = unsafe {
            mmap_anonymous(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
            )
        }
        .map_err(|errno| BdevError::Io {
            context: format!("cannot allocate {len} bytes"),
            source: errno.into(),
        })?;
        Ok(Self {
            base: base.cast(),
            len,
        })
    }

    /// # Safety
    /// `offset + len` must be within the mapping (the channel checked it).
    unsafe fn range(&self, offset: usize, len: usize) -> *mut u8 {
        debug_assert!(offset + len <= self.len);
        // SAFETY: in bounds per the caller's contract.
        unsafe { self.base.as_ptr().add(offset) }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in new().
        let _ = unsafe { munmap(self.base.cast(), self.len) };
    }
}

struct Malloc {
    memory: Arc<Memory>,
    block_size: u32,
}

/// Creates and registers a malloc bdev.
pub fn create_malloc(registry: &BdevRegistry, spec: BdevSpec) -> Result<Arc<Bdev>, BdevError> {
    spec.validate()?;
    let len = usize::try_from(spec.num_blocks * u64::from(spec.block_size))
        .map_err(|_| BdevError::Invalid("malloc bdev larger than the address space".into()))?;
    let backend = Malloc {
        memory: Arc::new(Memory::new(len)?),
        block_size: spec.block_size,
    };
    registry.register(spec, Box::new(backend))
}

impl BdevBackend for Malloc {
    fn module(&self) -> &'static str {
        "malloc"
    }

    fn product_name(&self) -> &'static str {
        "Malloc disk"
    }

    fn supports(&self, _kind: IoKind) -> bool {
        true
    }

    fn create_channel(&self) -> Box<dyn BackendChannel> {
        Box::new(MallocChannel {
            memory: Arc::clone(&self.memory),
            block_size: self.block_size as usize,
        })
    }
}

struct MallocChannel {
    memory: Arc<Memory>,
    block_size: usize,
}

impl BackendChannel for MallocChannel {
    fn submit(&self, mut io: IoRequest) -> IoFuture {
        let offset = io.offset_blocks as usize * self.block_size;
        let len = io.num_blocks as usize * self.block_size;
        // SAFETY (all arms): the channel layer checked offset + len against
        // the device size and the buffer length against len.
        match (io.kind, io.buf.as_mut()) {
            (IoKind::Read, Some(buf)) => unsafe {
                std::ptr::copy_nonoverlapping(
                    self.memory.range(offset, len),
                    buf.as_mut_ptr(),
                    len,
                );
            },
            (IoKind::Write, Some(buf)) => unsafe {
                std::ptr::copy_nonoverlapping(buf.as_ptr(), self.memory.range(offset, len), len);
            },
            (IoKind::Unmap | IoKind::WriteZeroes, _) => unsafe {
                std::ptr::write_bytes(self.memory.range(offset, len), 0, len);
            },
            _ => {}
        }
        Box::pin(std::future::ready(IoCompletion::new(io.buf, Ok(()))))
    }
}

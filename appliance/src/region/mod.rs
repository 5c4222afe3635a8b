//! The shared region: one file-backed mapping every process of the appliance
//! maps at its own address, on hugetlbfs when hugepages can be had.
//!
//! The supervisor creates it ([`provision`]) and writes its header
//! ([`layout::RegionHeader`]); children map it by path with
//! [`SharedRegion::open`], which refuses a region whose magic, layout version
//! or size does not match. Nothing else is shared between processes. Anything
//! that points into the region is an offset from its start, never a pointer,
//! because each process maps it at a different address.

pub mod interconnect;
pub mod layout;
pub mod pool;
pub mod provision;
pub mod ring;

use std::fs::{File, OpenOptions};
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

use layout::{Backing, HEADER_SIZE, LAYOUT_VERSION, MAX_DATA_CLUSTERS, REGION_MAGIC, RegionHeader};

#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot map {path} ({len} bytes): {errno}")]
    Map {
        path: PathBuf,
        len: usize,
        errno: nix::errno::Errno,
    },
    #[error("{path} is {len} bytes, smaller than the {HEADER_SIZE}-byte region header")]
    TooSmall { path: PathBuf, len: usize },
    #[error("{path} is not a Shoal region (bad magic {found:#018x})")]
    BadMagic { path: PathBuf, found: u64 },
    #[error("{path} has layout version {found}, this program speaks version {LAYOUT_VERSION}")]
    VersionMismatch { path: PathBuf, found: u32 },
    #[error("{path} says it is {claimed} bytes but the file is {actual} bytes")]
    SizeMismatch {
        path: PathBuf,
        claimed: u64,
        actual: u64,
    },
    #[error(
        "region describes {count} data clusters, more than the {MAX_DATA_CLUSTERS} this layout holds"
    )]
    TooManyClusters { count: u32 },
    #[error(transparent)]
    TooSmallForInterconnect(#[from] interconnect::TooSmall),
    #[error("{path}: the recorded interconnect layout differs from the one this program computes")]
    InterconnectMismatch { path: PathBuf },
}

/// Parameters of a region the supervisor is about to publish.
#[derive(Debug, Clone, Copy)]
pub struct RegionSpec {
    pub cluster_count: u32,
    pub page_size: u64,
    pub backing: Backing,
}

/// A mapping of the shared region. Unmapped on drop; the file stays until
/// its owner removes it.
#[derive(Debug)]
pub struct SharedRegion {
    base: NonNull<u8>,
    len: usize,
    path: PathBuf,
}

// SAFETY: the mapping is MAP_SHARED memory owned by this value until drop.
// The header's mutable fields are atomics and its plain fields are written
// only before the region is published, so shared access from any thread is
// sound.
unsafe impl Send for SharedRegion {}
unsafe impl Sync for SharedRegion {}

impl SharedRegion {
    /// Maps `file` (already `len` bytes long) and publishes a fresh header.
    /// Used by the supervisor before any child exists.
    pub fn initialise(
        file: &File,
        path: &Path,
        len: usize,
        spec: RegionSpec,
        populate: bool,
    ) -> Result<Self, RegionError> {
        if len < HEADER_SIZE {
            return Err(RegionError::TooSmall {
                path: path.to_path_buf(),
                len,
            });
        }
        if spec.cluster_count as usize > MAX_DATA_CLUSTERS {
            return Err(RegionError::TooManyClusters {
                count: spec.cluster_count,
            });
        }
        let interconnect = interconnect::InterconnectLayout::plan(len as u64, spec.cluster_count)?;
        let region = Self::map(file, path, len, populate)?;
        let header = RegionHeader {
            magic: 0.into(),
            layout_version: LAYOUT_VERSION,
            cluster_count: spec.cluster_count,
            region_size: len as u64,
            page_size: spec.page_size,
            data_offset: HEADER_SIZE as u64,
            backing: spec.backing as u32,
            supervisor_pid: std::process::id(),
            created_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            ring_entries: interconnect.ring_entries,
            _reserved: 0,
            rings_offset: interconnect.rings_offset,
            pool_offset: interconnect.pool_offset,
            arena_bytes: interconnect.arena_bytes,
            control: Default::default(),
            clusters: std::array::from_fn(|_| Default::default()),
        };
        // SAFETY: the mapping is at least HEADER_SIZE bytes, page aligned
        // (so aligned for the header), and no other process maps it yet.
        unsafe { std::ptr::write(region.base.as_ptr().cast::<RegionHeader>(), header) };
        // Rings start zeroed (a fresh file reads as zeros); arenas start full.
        for cluster in 0..spec.cluster_count {
            region.arena(cluster).reset();
        }
        region.header().magic.store(REGION_MAGIC, Ordering::Release);
        Ok(region)
    }

    /// Maps an existing region and checks that it is one this program can use.
    pub fn open(path: &Path) -> Result<Self, RegionError> {
        let io_err = |source| RegionError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len() as usize;
        if len < HEADER_SIZE {
            return Err(RegionError::TooSmall {
                path: path.to_path_buf(),
                len,
            });
        }
        let region = Self::map(&file, path, len, false)?;
        let header = region.header();
        let magic = header.magic.load(Ordering::Acquire);
        if magic != REGION_MAGIC {
            return Err(RegionError::BadMagic {
                path: path.to_path_buf(),
                found: magic,
            });
        }
        if header.layout_version != LAYOUT_VERSION {
            return Err(RegionError::VersionMismatch {
                path: path.to_path_buf(),
                found: header.layout_version,
            });
        }
        if header.region_size != len as u64 {
            return Err(RegionError::SizeMismatch {
                path: path.to_path_buf(),
                claimed: header.region_size,
                actual: len as u64,
            });
        }
        if header.cluster_count as usize > MAX_DATA_CLUSTERS {
            return Err(RegionError::TooManyClusters {
                count: header.cluster_count,
            });
        }
        let expected = interconnect::InterconnectLayout::plan(len as u64, header.cluster_count)?;
        if region.interconnect() != expected {
            return Err(RegionError::InterconnectMismatch {
                path: path.to_path_buf(),
            });
        }
        Ok(region)
    }

    fn map(file: &File, path: &Path, len: usize, populate: bool) -> Result<Self, RegionError> {
        let length = NonZeroUsize::new(len).ok_or_else(|| RegionError::TooSmall {
            path: path.to_path_buf(),
            len,
        })?;
        let mut flags = MapFlags::MAP_SHARED;
        if populate {
            // Fault every page in now: on hugetlbfs a shortage then shows up
            // here as an error instead of as SIGBUS in a dataplane later.
            flags |= MapFlags::MAP_POPULATE;
        }
        // SAFETY: a fresh shared mapping of a file we hold open; no Rust
        // reference aliases it yet.
        let base = unsafe {
            mmap(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                flags,
                file.as_fd(),
                0,
            )
        }
        .map_err(|errno| RegionError::Map {
            path: path.to_path_buf(),
            len,
            errno,
        })?;
        Ok(Self {
            base: base.cast(),
            len,
            path: path.to_path_buf(),
        })
    }

    pub fn header(&self) -> &RegionHeader {
        // SAFETY: the mapping is at least HEADER_SIZE bytes and page aligned.
        unsafe { &*self.base.as_ptr().cast::<RegionHeader>() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The mapping's first byte; region offsets are relative to it.
    pub fn base_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// The address of region offset `offset`, if `offset + len` lies
    /// inside the mapping.
    pub fn address_of(&self, offset: u64, len: u64) -> Option<*mut u8> {
        let end = offset.checked_add(len)?;
        // SAFETY: offset is within the mapping (checked just above).
        (end <= self.len as u64).then(|| unsafe { self.base.as_ptr().add(offset as usize) })
    }

    /// The region offset of `ptr` if it points inside the mapping.
    pub fn offset_of(&self, ptr: *const u8) -> Option<u64> {
        let offset = (ptr as usize).checked_sub(self.base.as_ptr() as usize)?;
        (offset < self.len).then_some(offset as u64)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly what mmap returned and nothing
        // borrowed from the mapping outlives self.
        if let Err(errno) = unsafe { munmap(self.base.cast(), self.len) } {
            tracing::warn!(path = %self.path.display(), %errno, "munmap of shared region failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::layout::SlotStatus;

    fn sized_file(dir: &Path, len: u64) -> (File, PathBuf) {
        let path = dir.join("test.region");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        file.set_len(len).unwrap();
        (file, path)
    }

    const SPEC: RegionSpec = RegionSpec {
        cluster_count: 4,
        page_size: 4096,
        backing: Backing::SharedMemory,
    };

    #[test]
    fn a_second_mapping_sees_the_published_header_and_heartbeats() {
        let dir = tempfile::tempdir().unwrap();
        let (file, path) = sized_file(dir.path(), 8 << 20);
        let owner = SharedRegion::initialise(&file, &path, 8 << 20, SPEC, false).unwrap();
        let generation = owner.header().cluster_slot(2).unwrap().prepare_spawn();

        let child = SharedRegion::open(&path).unwrap();
        assert_eq!(child.header().cluster_count(), 4);
        assert_eq!(child.header().backing(), Some(Backing::SharedMemory));
        let slot = child.header().cluster_slot(2).unwrap();
        assert_eq!(slot.generation(), generation);
        slot.claim(4242);
        slot.set_status(SlotStatus::Running);
        slot.beat(123);

        let seen = owner.header().cluster_slot(2).unwrap();
        assert_eq!(seen.pid(), 4242);
        assert_eq!(seen.status(), Some(SlotStatus::Running));
        assert_eq!(seen.last_heartbeat_ns(), 123);
        assert_eq!(seen.heartbeat_count(), 1);
        assert!(child.header().cluster_slot(4).is_none());
    }

    #[test]
    fn open_refuses_foreign_or_truncated_files() {
        let dir = tempfile::tempdir().unwrap();
        let (_file, path) = sized_file(dir.path(), 1 << 16);
        assert!(matches!(
            SharedRegion::open(&path),
            Err(RegionError::BadMagic { .. })
        ));

        let small = dir.path().join("small.region");
        std::fs::write(&small, [0u8; 100]).unwrap();
        assert!(matches!(
            SharedRegion::open(&small),
            Err(RegionError::TooSmall { .. })
        ));
    }

    #[test]
    fn open_refuses_a_region_whose_file_was_resized() {
        let dir = tempfile::tempdir().unwrap();
        let (file, path) = sized_file(dir.path(), 8 << 20);
        let _owner = SharedRegion::initialise(&file, &path, 8 << 20, SPEC, false).unwrap();
        file.set_len(9 << 20).unwrap();
        assert!(matches!(
            SharedRegion::open(&path),
            Err(RegionError::SizeMismatch { .. })
        ));
    }
}

//! Byte layout of the shared region's header.
//!
//! The header sits at offset 0 of the region and is the only structure every
//! process of the appliance reads. It is `repr(C)` with explicit padding so a
//! dataplane built from the same layout version agrees on every offset; any
//! change to it must bump [`LAYOUT_VERSION`]. Fields that change after the
//! supervisor publishes the header are atomics; everything else is written
//! once before `magic` is stored with release ordering, so a reader that sees
//! the magic (acquire) sees a complete header.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// "SHOALRGN" in little-endian byte order.
pub const REGION_MAGIC: u64 = u64::from_le_bytes(*b"SHOALRGN");
/// Version of this layout; a process refuses a region of another version.
pub const LAYOUT_VERSION: u32 = 3;
/// Most data clusters one region describes (and so one appliance runs).
pub const MAX_DATA_CLUSTERS: usize = 64;
/// Slots are cache-line aligned so one cluster's heartbeat never shares a
/// line with another's.
pub const CACHE_LINE: usize = 64;

/// How the region's memory is backed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[repr(u32)]
pub enum Backing {
    Hugetlbfs = 1,
    SharedMemory = 2,
}

impl Backing {
    pub fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Hugetlbfs),
            2 => Some(Self::SharedMemory),
            _ => None,
        }
    }
}

/// Lifecycle a process reports in its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[repr(u32)]
pub enum SlotStatus {
    /// The supervisor prepared the slot and spawned (or is spawning) the process.
    Spawned = 0,
    /// The process mapped the region and is initialising.
    Starting = 1,
    /// The process serves and heartbeats.
    Running = 2,
    /// The process received a stop request and is shutting down.
    Stopping = 3,
    /// The process finished its clean shutdown.
    Stopped = 4,
    /// The supervisor reaped the process (it may have crashed).
    Exited = 5,
}

impl SlotStatus {
    pub fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            0 => Self::Spawned,
            1 => Self::Starting,
            2 => Self::Running,
            3 => Self::Stopping,
            4 => Self::Stopped,
            5 => Self::Exited,
            _ => return None,
        })
    }
}

/// Liveness of one process (the control cluster or a data cluster).
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct ParticipantSlot {
    /// Incremented on every heartbeat.
    heartbeat_count: AtomicU64,
    /// [`crate::clock::monotonic_ns`] at the last heartbeat; 0 = none yet.
    heartbeat_ns: AtomicU64,
    /// Bumped by the supervisor before each spawn, so a stale writer can be told apart.
    generation: AtomicU64,
    pid: AtomicU32,
    status: AtomicU32,
}

impl ParticipantSlot {
    /// Supervisor side: reset before spawning a new process into this slot.
    pub fn prepare_spawn(&self) -> u64 {
        self.heartbeat_ns.store(0, Ordering::Relaxed);
        self.heartbeat_count.store(0, Ordering::Relaxed);
        self.pid.store(0, Ordering::Relaxed);
        self.status
            .store(SlotStatus::Spawned as u32, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Release) + 1
    }

    /// Child side: record who owns the slot now.
    pub fn claim(&self, pid: u32) {
        self.pid.store(pid, Ordering::Relaxed);
        self.set_status(SlotStatus::Starting);
    }

    pub fn set_status(&self, status: SlotStatus) {
        self.status.store(status as u32, Ordering::Release);
    }

    pub fn beat(&self, now_ns: u64) {
        self.heartbeat_count.fetch_add(1, Ordering::Relaxed);
        self.heartbeat_ns.store(now_ns, Ordering::Release);
    }

    pub fn last_heartbeat_ns(&self) -> u64 {
        self.heartbeat_ns.load(Ordering::Acquire)
    }

    pub fn heartbeat_count(&self) -> u64 {
        self.heartbeat_count.load(Ordering::Relaxed)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Relaxed)
    }

    /// `None` when the slot holds a value no known process writes (corruption).
    pub fn status(&self) -> Option<SlotStatus> {
        SlotStatus::from_raw(self.status.load(Ordering::Acquire))
    }
}

/// The header at offset 0 of the region.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct RegionHeader {
    /// [`REGION_MAGIC`] once the header is complete.
    pub(super) magic: AtomicU64,
    pub(super) layout_version: u32,
    pub(super) cluster_count: u32,
    /// Bytes mapped, header included.
    pub(super) region_size: u64,
    /// Page size of the backing memory.
    pub(super) page_size: u64,
    /// Offset of the first byte after this header, cache-line aligned; later
    /// layouts place rings and the buffer pool from here on.
    pub(super) data_offset: u64,
    pub(super) backing: u32,
    pub(super) supervisor_pid: u32,
    pub(super) created_unix_ms: u64,
    /// Interconnect layout (see `interconnect`), recorded so a reader can
    /// check it computes the same one.
    pub(super) ring_entries: u32,
    pub(super) _reserved: u32,
    pub(super) rings_offset: u64,
    pub(super) pool_offset: u64,
    pub(super) arena_bytes: u64,
    pub(super) control: ParticipantSlot,
    pub(super) clusters: [ParticipantSlot; MAX_DATA_CLUSTERS],
}

/// Bytes the header occupies; every region is at least this large.
pub const HEADER_SIZE: usize = std::mem::size_of::<RegionHeader>();

const _: () = assert!(std::mem::size_of::<ParticipantSlot>() == CACHE_LINE);
const _: () = assert!(HEADER_SIZE.is_multiple_of(CACHE_LINE));

impl RegionHeader {
    pub fn layout_version(&self) -> u32 {
        self.layout_version
    }
    pub fn cluster_count(&self) -> u32 {
        self.cluster_count
    }
    pub fn region_size(&self) -> u64 {
        self.region_size
    }
    pub fn page_size(&self) -> u64 {
        self.page_size
    }
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }
    pub fn backing(&self) -> Option<Backing> {
        Backing::from_raw(self.backing)
    }
    pub fn supervisor_pid(&self) -> u32 {
        self.supervisor_pid
    }
    pub fn created_unix_ms(&self) -> u64 {
        self.created_unix_ms
    }
    pub fn ring_entries(&self) -> u32 {
        self.ring_entries
    }
    pub fn rings_offset(&self) -> u64 {
        self.rings_offset
    }
    pub fn pool_offset(&self) -> u64 {
        self.pool_offset
    }
    pub fn arena_bytes(&self) -> u64 {
        self.arena_bytes
    }
    /// The control cluster's slot (management service).
    pub fn control_slot(&self) -> &ParticipantSlot {
        &self.control
    }
    /// The slot of data cluster `index`, if the region has that cluster.
    pub fn cluster_slot(&self, index: u32) -> Option<&ParticipantSlot> {
        if index < self.cluster_count {
            self.clusters.get(index as usize)
        } else {
            None
        }
    }
}

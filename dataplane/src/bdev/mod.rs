//! The block device layer, after SPDK's bdev.
//!
//! A [`Bdev`] is a named block device with a block size, a block count and
//! a UUID. Its module (malloc, null, uring, raid, ...) implements
//! [`BdevBackend`]. I/O is never submitted to the bdev itself but to an
//! [`IoChannel`](channel::IoChannel): one per bdev per reactor, created on
//! first use and owned by that reactor, so the I/O path shares nothing
//! between threads. Requests own their buffer ([`IoBuf`]) and get it back
//! with the completion.
//!
//! Virtual bdevs (raid) *claim* their base bdevs: a claimed bdev cannot be
//! claimed again nor deleted, and neither can an exported one. Parts share
//! one claim on their base; a claimed bdev is not exported writable.

pub mod buf;
pub mod channel;
pub mod lvol;
pub mod malloc;
pub mod null;
pub mod part;
pub mod raid;
pub mod registry;
pub mod remote;
pub mod stats;
#[cfg(test)]
pub(crate) mod testing;
pub mod uring;
pub mod zeroing;

use shoal_appliance::locks::Recover;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

pub use buf::IoBuf;
pub use channel::IoChannel;
pub use registry::BdevRegistry;

/// Kinds of I/O, SPDK's `spdk_bdev_io_type` subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IoKind {
    Read,
    Write,
    Flush,
    Unmap,
    WriteZeroes,
    Reset,
}

impl IoKind {
    pub const ALL: [IoKind; 6] = [
        IoKind::Read,
        IoKind::Write,
        IoKind::Flush,
        IoKind::Unmap,
        IoKind::WriteZeroes,
        IoKind::Reset,
    ];

    /// Whether the request carries a data buffer.
    pub fn has_data(self) -> bool {
        matches!(self, IoKind::Read | IoKind::Write)
    }
}

/// One I/O request. `buf` is present (and exactly `num_blocks` blocks long)
/// for reads and writes.
#[derive(Debug)]
pub struct IoRequest {
    pub kind: IoKind,
    pub offset_blocks: u64,
    pub num_blocks: u64,
    pub buf: Option<IoBuf>,
    /// Force unit access: the write is durable when it completes.
    pub fua: bool,
}

impl IoRequest {
    pub fn read(offset_blocks: u64, buf: IoBuf, block_size: u32) -> Self {
        Self::with_buf(IoKind::Read, offset_blocks, buf, block_size)
    }

    pub fn write(offset_blocks: u64, buf: IoBuf, block_size: u32) -> Self {
        Self::with_buf(IoKind::Write, offset_blocks, buf, block_size)
    }

    fn with_buf(kind: IoKind, offset_blocks: u64, buf: IoBuf, block_size: u32) -> Self {
        Self {
            kind,
            offset_blocks,
            num_blocks: (buf.len() / block_size as usize) as u64,
            buf: Some(buf),
            fua: false,
        }
    }

    /// A request without data (flush, unmap, write zeroes, reset).
    pub fn range(kind: IoKind, offset_blocks: u64, num_blocks: u64) -> Self {
        Self {
            kind,
            offset_blocks,
            num_blocks,
            buf: None,
            fua: false,
        }
    }
}

/// Why an I/O failed. Each maps to the errno NBD and NVMe front-ends report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IoError {
    #[error("I/O error")]
    Io,
    #[error("blocks {offset}..{end} are beyond the device's {num_blocks} blocks")]
    OutOfRange {
        offset: u64,
        end: u64,
        num_blocks: u64,
    },
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    #[error("operation not supported by this device")]
    NotSupported,
    #[error("device is being removed")]
    Removed,
    /// The storage under the device is full (the file system of a file
    /// bdev, or a quota): the write may succeed once space is freed.
    #[error("no space left on the device's storage")]
    NoSpace,
}

impl IoError {
    pub fn errno(&self) -> Errno {
        match self {
            IoError::Io => Errno::EIO,
            IoError::OutOfRange { .. } | IoError::Invalid(_) => Errno::EINVAL,
            IoError::NotSupported => Errno::EOPNOTSUPP,
            IoError::Removed => Errno::ESHUTDOWN,
            IoError::NoSpace => Errno::ENOSPC,
        }
    }
}

/// A finished request: the buffer comes back with the result.
#[derive(Debug)]
pub struct IoCompletion {
    pub buf: Option<IoBuf>,
    pub result: Result<(), IoError>,
}

impl IoCompletion {
    pub fn new(buf: Option<IoBuf>, result: Result<(), IoError>) -> Self {
        Self { buf, result }
    }
}

/// The future of one I/O; runs on the reactor that submitted it.
pub type IoFuture = Pin<Box<dyn Future<Output = IoCompletion>>>;

/// What a bdev module implements.
pub trait BdevBackend: Send + Sync + 'static {
    /// The module's name ("malloc", "null", "uring", "raid"); delete RPCs
    /// refuse a bdev of another module.
    fn module(&self) -> &'static str;

    /// SPDK's `product_name`, e.g. "Malloc disk".
    fn product_name(&self) -> &'static str;

    fn supports(&self, kind: IoKind) -> bool;

    /// Creates this module's per-reactor state. Called on the reactor that
    /// will use it.
    fn create_channel(&self) -> Box<dyn BackendChannel>;

    /// Module details for `bdev_get_bdevs`, under `driver_specific`.
    fn driver_specific(&self) -> Option<(&'static str, Value)> {
        None
    }

    /// Bdevs this one is built on (virtual bdevs), released on delete.
    fn base_bdevs(&self) -> Vec<Arc<Bdev>> {
        Vec::new()
    }

    /// Called once when the bdev leaves the registry, after its claims on
    /// the base bdevs were given back: a module frees what it reserved.
    fn unregistered(&self) {}

    /// Makes room for the bdev to grow to `blocks` (then [`Bdev::grow`]
    /// raises its size). Modules that cannot grow in place refuse.
    fn prepare_growth(&self, _blocks: u64) -> Result<(), BdevError> {
        Err(BdevError::Invalid(format!(
            "a {} bdev cannot grow",
            self.module()
        )))
    }

    /// The size a virtual bdev could grow to from its bases as they are
    /// now (`None`: it cannot grow by itself).
    fn growth_room(&self) -> Option<u64> {
        None
    }

    /// Payload bytes this bdev copied to move I/O between clusters (only
    /// the remote bdev moves any; zero-copy keeps it at 0).
    fn bytes_copied(&self) -> u64 {
        0
    }

    /// The module's own type, for module RPCs that change a live bdev
    /// (`bdev_remote_set_target`); modules without such RPCs keep `None`.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// A module's per-reactor I/O path. `submit` is only called with requests
/// the generic layer validated (in range, buffer sized, kind supported).
pub trait BackendChannel {
    fn submit(&self, io: IoRequest) -> IoFuture;
}

/// Failures of bdev management, reported over JSON-RPC as `-errno`.
#[derive(Debug, thiserror::Error)]
pub enum BdevError {
    #[error("bdev {0} already exists")]
    Exists(String),
    #[error("bdev {0} not found")]
    NotFound(String),
    #[error("bdev {name} is in use by {user}")]
    Busy { name: String, user: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl BdevError {
    pub fn errno(&self) -> Errno {
        match self {
            BdevError::Exists(_) => Errno::EEXIST,
            BdevError::NotFound(_) => Errno::ENODEV,
            BdevError::Busy { .. } => Errno::EBUSY,
            BdevError::Invalid(_) => Errno::EINVAL,
            BdevError::Io { source, .. } => {
                source.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
            }
        }
    }
}

impl From<BdevError> for shoal_appliance::jsonrpc::RpcError {
    fn from(error: BdevError) -> Self {
        shoal_appliance::jsonrpc::RpcError::errno(error.errno(), error.to_string())
    }
}

/// Geometry and identity every bdev has.
#[derive(Debug, Clone)]
pub struct BdevSpec {
    pub name: String,
    pub uuid: Option<Uuid>,
    pub block_size: u32,
    pub num_blocks: u64,
}

/// Largest supported block size.
pub const MAX_BLOCK_SIZE: u32 = 64 * 1024;

impl BdevSpec {
    /// Checks the geometry: a power-of-two block size from 512 bytes to
    /// 64 KiB, at least one block, a usable name.
    pub fn validate(&self) -> Result<(), BdevError> {
        if self.name.is_empty()
            || self.name.len() > 255
            || self.name.chars().any(|c| c.is_control() || c == '/')
        {
            return Err(BdevError::Invalid(format!(
                "bdev name {:?} must be 1 to 255 characters without '/' or control characters",
                self.name
            )));
        }
        if !self.block_size.is_power_of_two() || !(512..=MAX_BLOCK_SIZE).contains(&self.block_size)
        {
            return Err(BdevError::Invalid(format!(
                "block_size {} must be a power of two from 512 to {MAX_BLOCK_SIZE}",
                self.block_size
            )));
        }
        if self.num_blocks == 0 {
            return Err(BdevError::Invalid("num_blocks must be at least 1".into()));
        }
        if self
            .num_blocks
            .checked_mul(u64::from(self.block_size))
            .is_none()
        {
            return Err(BdevError::Invalid(
                "num_blocks x block_size overflows 64 bits".into(),
            ));
        }
        Ok(())
    }
}

/// A claim on a bdev by a virtual bdev (or, shared, by a module's parts).
#[derive(Debug)]
struct Claim {
    owner: String,
    shared: bool,
    holders: u32,
}

#[derive(Debug, Default)]
struct Users {
    claim: Option<Claim>,
    /// Export names (e.g. "nbd export vol0") and whether they write.
    exports: Vec<(String, bool)>,
}

/// A registered block device.
pub struct Bdev {
    id: u64,
    name: String,
    uuid: Uuid,
    block_size: u32,
    /// Only ever grows (`grow_to`), so a range checked against it stays
    /// valid; read on every I/O.
    num_blocks: std::sync::atomic::AtomicU64,
    backend: Box<dyn BdevBackend>,
    /// Who holds this bdev: the virtual bdev(s) built on it and the
    /// front-end exports serving it, under one lock so a claim and a
    /// writable export can never both be granted.
    users: Mutex<Users>,
    /// Statistics of channels already released.
    retired: Mutex<stats::IoStats>,
    /// Other names it is found by (SPDK's aliases, e.g. an lvol's
    /// `lvs/lvol`); unique across the registry, which sets them.
    aliases: Mutex<Vec<String>>,
}

impl std::fmt::Debug for Bdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bdev")
            .field("name", &self.name)
            .field("block_size", &self.block_size)
            .field("num_blocks", &self.num_blocks())
            .finish()
    }
}

impl Bdev {
    fn new(id: u64, spec: BdevSpec, backend: Box<dyn BdevBackend>) -> Self {
        Self {
            id,
            name: spec.name,
            uuid: spec.uuid.unwrap_or_else(Uuid::new_v4),
            block_size: spec.block_size,
            num_blocks: std::sync::atomic::AtomicU64::new(spec.num_blocks),
            backend,
            users: Mutex::new(Users::default()),
            retired: Mutex::new(stats::IoStats::default()),
            aliases: Mutex::new(Vec::new()),
        }
    }

    pub fn aliases(&self) -> Vec<String> {
        self.aliases.locked().clone()
    }

    pub fn id(&self) -> u64 {
        self.id
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }
    pub fn block_size(&self) -> u32 {
        self.block_size
    }
    pub fn num_blocks(&self) -> u64 {
        self.num_blocks.load(std::sync::atomic::Ordering::Acquire)
    }
    pub fn size_bytes(&self) -> u64 {
        self.num_blocks() * u64::from(self.block_size)
    }

    /// Grows the bdev to `blocks`, once its module made room. A bdev
    /// never shrinks: front-ends that checked a range keep it valid.
    pub fn grow(&self, blocks: u64) -> Result<(), BdevError> {
        if blocks > self.num_blocks() {
            self.backend.prepare_growth(blocks)?;
        }
        self.grow_to(blocks)
    }

    fn grow_to(&self, blocks: u64) -> Result<(), BdevError> {
        let current = self.num_blocks();
        if blocks < current {
            return Err(BdevError::Invalid(format!(
                "bdev {} has {current} blocks; it cannot shrink to {blocks}",
                self.name
            )));
        }
        if blocks.checked_mul(u64::from(self.block_size)).is_none() {
            return Err(BdevError::Invalid(
                "num_blocks x block_size overflows 64 bits".into(),
            ));
        }
        self.num_blocks
            .fetch_max(blocks, std::sync::atomic::Ordering::AcqRel);
        if blocks > current {
            tracing::info!(bdev = self.name, from = current, to = blocks, "bdev grew");
        }
        Ok(())
    }
    pub fn supports(&self, kind: IoKind) -> bool {
        self.backend.supports(kind)
    }
    pub fn backend(&self) -> &dyn BdevBackend {
        self.backend.as_ref()
    }

    /// Claims this bdev for `owner` (a virtual bdev) alone. Refused while
    /// another claim holds it or a front-end writes to it.
    pub fn claim(&self, owner: &str) -> Result<(), BdevError> {
        self.claim_as(owner, false)
    }

    /// Claims this bdev for one more user of module `owner`: many parts of
    /// one base share it (SPDK's shared write claim), nobody else may
    /// claim it meanwhile.
    pub fn claim_shared(&self, owner: &str) -> Result<(), BdevError> {
        self.claim_as(owner, true)
    }

    fn claim_as(&self, owner: &str, shared: bool) -> Result<(), BdevError> {
        let mut users = self.users.locked();
        match &mut users.claim {
            Some(claim) if shared && claim.shared && claim.owner == owner => {
                claim.holders += 1;
                return Ok(());
            }
            Some(claim) => {
                return Err(BdevError::Busy {
                    name: self.name.clone(),
                    user: format!("bdev {}", claim.owner),
                });
            }
            None => {}
        }
        if let Some((export, _)) = users.exports.iter().find(|(_, writable)| *writable) {
            return Err(BdevError::Busy {
                name: self.name.clone(),
                user: export.clone(),
            });
        }
        users.claim = Some(Claim {
            owner: owner.to_string(),
            shared,
            holders: 1,
        });
        Ok(())
    }

    /// Gives back one claim (the last holder of a shared claim frees it).
    pub fn release_claim(&self) {
        let mut users = self.users.locked();
        if let Some(claim) = &mut users.claim {
            claim.holders -= 1;
            if claim.holders == 0 {
                users.claim = None;
            }
        }
    }

    pub fn claimed_by(&self) -> Option<String> {
        let users = self.users.locked();
        users.claim.as_ref().map(|c| c.owner.clone())
    }

    /// Records that a front-end serves this bdev; deletion is refused until
    /// the export is removed. A writable export of a claimed bdev is
    /// refused: it would write under the virtual bdev that owns the blocks.
    pub fn add_export(&self, export: &str, writable: bool) -> Result<(), BdevError> {
        let mut users = self.users.locked();
        if writable && let Some(claim) = &users.claim {
            return Err(BdevError::Busy {
                name: self.name.clone(),
                user: format!("bdev {}", claim.owner),
            });
        }
        users.exports.push((export.to_string(), writable));
        Ok(())
    }

    pub fn remove_export(&self, export: &str) {
        self.users.locked().exports.retain(|(e, _)| e != export);
    }

    pub fn exports(&self) -> Vec<String> {
        let users = self.users.locked();
        users.exports.iter().map(|(e, _)| e.clone()).collect()
    }

    /// Statistics folded in from channels already released.
    pub fn retired_stats(&self) -> stats::IoStats {
        *self.retired.locked()
    }

    pub(crate) fn retire_stats(&self, stats: &stats::IoStats) {
        self.retired.locked().add(stats);
    }

    /// The bdev as `bdev_get_bdevs` shows it, SPDK's field names.
    pub fn describe(&self) -> Value {
        let mut supported = serde_json::Map::new();
        for kind in IoKind::ALL {
            supported.insert(
                serde_json::to_value(kind)
                    .expect("kind serialises")
                    .as_str()
                    .expect("string")
                    .to_string(),
                self.supports(kind).into(),
            );
        }
        let mut driver_specific = serde_json::Map::new();
        if let Some((key, value)) = self.backend.driver_specific() {
            driver_specific.insert(key.to_string(), value);
        }
        serde_json::json!({
            "name": self.name,
            "aliases": self.aliases(),
            "product_name": self.backend.product_name(),
            "block_size": self.block_size,
            "num_blocks": self.num_blocks(),
            "uuid": self.uuid.to_string(),
            "claimed": self.claimed_by().is_some(),
            "claimed_by": self.claimed_by(),
            "exported_by": self.exports(),
            "zoned": false,
            "supported_io_types": supported,
            "driver_specific": driver_specific,
        })
    }
}

impl IoRequest {
    /// A read or write of `buf` at `offset_blocks`.
    pub fn with_kind(kind: IoKind, offset_blocks: u64, buf: IoBuf, block_size: u32) -> Self {
        Self::with_buf(kind, offset_blocks, buf, block_size)
    }
}

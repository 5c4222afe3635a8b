//! Logical volumes after SPDK's lvol store (its blobstore model, written
//! for Shoal): thin provisioning, snapshots and clones on one base bdev.
//!
//! This is the on-disk and allocation core; the bdev module (I/O through
//! the chain, copy-on-write, unmap) and the RPCs come on top of it.
//!
//! # Layout on the base
//!
//! ```text
//! block 0      super block of copy A  (even generations)
//! block 1      super block of copy B  (odd generations)
//! 2 ..         copy A pages: lvol table (34 pages, 31 records each,
//!              MAX_LVOLS slots), then the owner table (507 entries a page,
//!              one per data cluster)
//! ..           copy B pages, the same
//! (cluster-aligned) data clusters 0 .. total_clusters
//! ```
//!
//! All metadata is in 4 KiB blocks, each sealed with a CRC32C; pages also
//! carry the store uuid, their copy and index, and the generation of the
//! commit that wrote them. An lvol record holds identity, size, flags and
//! parent; its clusters are found through the owner table, where each
//! data cluster names its lvol slot and logical cluster or is free. That
//! table is at once the allocation map and every extent table, so "free
//! and used" or "used twice" cannot be written down.
//!
//! # Commit
//!
//! Two alternating copies: generation `g` goes to copy `g % 2`, its
//! changed pages first, a flush, then its super block, a flush. Open
//! trusts the valid super block of higher generation, and rebuilds the
//! allocation map and extents from that copy's owner table (checking every
//! cross-reference). A cut at any single write leaves the previous
//! generation whole; see [`store`] for the argument and for the two-step
//! allocation (reserve, write data, commit) that keeps cut first writes
//! from leaking clusters or exposing stale data.
//!
//! - [`format`](mod@format): geometry and the encoding of every block, with bounds;
//! - [`allocator`]: the in-memory map of free clusters;
//! - [`device`]: what the metadata needs of the base (block I/O, flush);
//! - [`chain`]: which blob of a snapshot chain a read goes to;
//! - [`store`]: the store in memory, its operations and its commit;
//! - [`staged`]: the store's metadata on a real base bdev (loaded before
//!   open, commits replayed in order after each change);
//! - [`vbdev`]: the bdev module: an open store and a bdev per lvol whose
//!   I/O goes through the chain, allocating on first write;
//! - [`stores`]: the open stores, and what the `bdev_lvol_*` methods share;
//! - [`turns`]: async locks per key (first writes per logical cluster).

pub mod allocator;
pub mod chain;
#[cfg(test)]
mod crash_tests;
pub mod device;
pub mod format;
pub mod staged;
#[cfg(test)]
mod staged_tests;
pub mod store;
#[cfg(test)]
mod store_tests;
pub mod stores;
pub mod turns;
pub mod vbdev;
#[cfg(test)]
mod vbdev_tests;

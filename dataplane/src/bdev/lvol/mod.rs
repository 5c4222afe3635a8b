//! Logical volumes after SPDK's lvol store (its blobstore model, written
//! for Shoal): thin provisioning, snapshots and clones on one base bdev.
//!
//! This is the on-disk and allocation core; the bdev module and the RPCs
//! come on top of it.
//!
//! - [`format`]: where everything is on the base and how each metadata
//!   block is encoded and checked;
//! - [`allocator`]: the in-memory map of free clusters.

pub mod allocator;
pub mod format;

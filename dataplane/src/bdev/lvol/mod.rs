//! Logical volumes after SPDK's lvol store (its blobstore model, written
//! for Shoal): thin provisioning, snapshots and clones on one base bdev.
//!
//! This is the on-disk and allocation core; the bdev module and the RPCs
//! come on top of it.
//!
//! - [`format`]: where everything is on the base and how each metadata
//!   block is encoded and checked;
//! - [`allocator`]: the in-memory map of free clusters;
//! - [`device`]: what the metadata needs of the base (block I/O, flush);
//! - [`chain`]: which blob of a snapshot chain a read goes to;
//! - [`store`]: the store in memory, its operations and its
//!   crash-consistent commit (two alternating copies).

pub mod allocator;
pub mod chain;

#[cfg(test)]
mod crash_tests;
pub mod device;
pub mod format;
pub mod store;
#[cfg(test)]
mod store_tests;

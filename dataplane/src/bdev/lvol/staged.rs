//! The store's metadata device in a running dataplane: the store's code is
//! synchronous, the base bdev's I/O is not, so the two meet here.
//!
//! [`StagedDevice`] holds the metadata blocks the store may read (loaded
//! from the base before the store opens, [`load`]) and records every write
//! and flush the store makes instead of doing it. After each change the
//! caller takes the recorded operations ([`StagedDevice::take`]) and
//! [`replay`]s them on the base, in order, before it reports the change
//! done. The commit protocol's order (pages, flush, super block, flush)
//! is kept because the replay is that order exactly; only one replay runs
//! at a time (the caller serialises changes), so two commits never mix.
//!
//! Until a replay finishes the store in memory is ahead of the disk. That
//! is safe: nothing is acknowledged before it, and a replay that fails
//! leaves the caller's store poisoned (see `vbdev`), to be opened again.

use std::collections::HashMap;
use std::io;

use super::device::MetadataDevice;
use super::format::{Geometry, METADATA_BLOCK_BYTES, SuperBlock};
use super::store::{LvolStore, StoreError, StoreOptions};
use crate::bdev::{IoBuf, IoChannel, IoKind, IoRequest};

/// One metadata operation the store asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaOp {
    Write { index: u64, block: Vec<u8> },
    Flush,
}

/// A metadata device whose reads come from blocks loaded beforehand and
/// whose writes are kept for [`replay`].
#[derive(Debug, Default)]
pub struct StagedDevice {
    blocks: u64,
    loaded: HashMap<u64, Vec<u8>>,
    pending: Vec<MetaOp>,
}

impl StagedDevice {
    /// A device of `blocks` metadata blocks that has read nothing (a
    /// store about to be formatted reads nothing).
    pub fn empty(blocks: u64) -> Self {
        Self {
            blocks,
            ..Self::default()
        }
    }

    /// The operations recorded since the last call, in order.
    pub fn take(&mut self) -> Vec<MetaOp> {
        // What a store wrote it may later read back (it does not today,
        // but the device must not answer with a block older than its own
        // write).
        for op in &self.pending {
            if let MetaOp::Write { index, block } = op {
                self.loaded.insert(*index, block.clone());
            }
        }
        std::mem::take(&mut self.pending)
    }
}

impl MetadataDevice for StagedDevice {
    fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Recorded, not written: the module replays them, then settles.
    fn commits_durable_on_return(&self) -> bool {
        false
    }

    fn read_block(&mut self, index: u64) -> io::Result<Vec<u8>> {
        if let Some(block) = self.pending.iter().rev().find_map(|op| match op {
            MetaOp::Write { index: at, block } if *at == index => Some(block.clone()),
            _ => None,
        }) {
            return Ok(block);
        }
        self.loaded
            .get(&index)
            .cloned()
            .ok_or_else(|| io::Error::other(format!("metadata block {index} was not loaded")))
    }

    fn write_block(&mut self, index: u64, block: &[u8]) -> io::Result<()> {
        if index >= self.blocks || block.len() != METADATA_BLOCK_BYTES {
            return Err(io::Error::other(format!(
                "metadata write of {} bytes at block {index} of {}",
                block.len(),
                self.blocks
            )));
        }
        self.pending.push(MetaOp::Write {
            index,
            block: block.to_vec(),
        });
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.pending.push(MetaOp::Flush);
        Ok(())
    }
}

/// Base blocks per metadata block; `None` if the base's blocks do not
/// divide a metadata block (the store needs 512 B to 4 KiB blocks).
pub fn base_blocks_per_metadata_block(block_size: u32) -> Option<u64> {
    let block_size = block_size as usize;
    (block_size <= METADATA_BLOCK_BYTES && METADATA_BLOCK_BYTES.is_multiple_of(block_size))
        .then(|| (METADATA_BLOCK_BYTES / block_size) as u64)
}

/// Size of `channel`'s bdev in whole metadata blocks.
pub fn metadata_blocks(channel: &IoChannel) -> u64 {
    channel.bdev().size_bytes() / METADATA_BLOCK_BYTES as u64
}

async fn read_blocks(channel: &IoChannel, first: u64, count: u64) -> io::Result<Vec<u8>> {
    let block_size = channel.bdev().block_size();
    let per = base_blocks_per_metadata_block(block_size)
        .ok_or_else(|| io::Error::other("base block size does not divide 4 KiB"))?;
    let buf = IoBuf::for_io(count as usize * METADATA_BLOCK_BYTES);
    let done = channel
        .submit(IoRequest::read(first * per, buf, block_size))
        .await;
    done.result.map_err(|e| io::Error::other(e.to_string()))?;
    Ok(done
        .buf
        .expect("a read returns its buffer")
        .as_slice()
        .to_vec())
}

/// Largest metadata read issued at once (the owner table of a big store
/// is tens of MiB): within the pool's largest buffer class.
const LOAD_CHUNK_BLOCKS: u64 = 256;

/// Reads from `channel`'s bdev every block [`LvolStore::open`](super::store::LvolStore::open) may read: both super
/// blocks and the pages of each copy a valid super block describes.
pub async fn load(channel: &IoChannel) -> io::Result<StagedDevice> {
    let mut device = StagedDevice::empty(metadata_blocks(channel));
    if device.blocks < 2 {
        return Err(io::Error::other("base too small for an lvol store"));
    }
    let supers = read_blocks(channel, 0, 2).await?;
    for (copy, block) in supers.chunks(METADATA_BLOCK_BYTES).enumerate() {
        device
            .loaded
            .insert(Geometry::super_block_at(copy as u8), block.to_vec());
    }
    for copy in 0..2u8 {
        let Ok(super_block) = SuperBlock::decode(&device.loaded[&Geometry::super_block_at(copy)])
        else {
            continue;
        };
        let geometry = super_block.geometry;
        let pages = u64::from(geometry.pages_per_copy());
        if pages == 0 || geometry.page_at(copy, 1) + pages > device.blocks {
            continue; // the store's open reports the bad geometry
        }
        let first = geometry.page_at(copy, 1);
        let mut at = 0;
        while at < pages {
            let count = LOAD_CHUNK_BLOCKS.min(pages - at);
            let bytes = read_blocks(channel, first + at, count).await?;
            for (i, block) in bytes.chunks(METADATA_BLOCK_BYTES).enumerate() {
                device.loaded.insert(first + at + i as u64, block.to_vec());
            }
            at += count;
        }
    }
    Ok(device)
}

/// Formats a store on `channel`'s bdev (over whatever it held) and
/// writes it there.
pub async fn format(
    channel: &IoChannel,
    options: StoreOptions,
) -> Result<LvolStore<StagedDevice>, StoreError> {
    let mut store = LvolStore::format(StagedDevice::empty(metadata_blocks(channel)), options)?;
    let ops = store.device_mut().take();
    replay(channel, ops).await?;
    Ok(store)
}

/// Carries out `ops` on `channel`'s bdev in order: the writes between two
/// flushes go out together, a flush waits for them and then flushes.
pub async fn replay(channel: &IoChannel, ops: Vec<MetaOp>) -> io::Result<()> {
    let block_size = channel.bdev().block_size();
    let per = base_blocks_per_metadata_block(block_size)
        .ok_or_else(|| io::Error::other("base block size does not divide 4 KiB"))?;
    let mut writes = Vec::new();
    for op in ops {
        match op {
            MetaOp::Write { index, block } => {
                writes.push(channel.submit(IoRequest::write(
                    index * per,
                    IoBuf::from_slice(&block),
                    block_size,
                )));
            }
            MetaOp::Flush => {
                for done in futures_util::future::join_all(writes.drain(..)).await {
                    done.result.map_err(|e| io::Error::other(e.to_string()))?;
                }
                flush(channel).await?;
            }
        }
    }
    for done in futures_util::future::join_all(writes).await {
        done.result.map_err(|e| io::Error::other(e.to_string()))?;
    }
    Ok(())
}

async fn flush(channel: &IoChannel) -> io::Result<()> {
    if !channel.bdev().supports(IoKind::Flush) {
        // A base without a volatile cache (malloc): a completed write is
        // as durable as it gets.
        return Ok(());
    }
    channel
        .submit(IoRequest::range(IoKind::Flush, 0, 0))
        .await
        .result
        .map_err(|e| io::Error::other(e.to_string()))
}

//! What the store needs from its base for metadata: whole
//! [`METADATA_BLOCK_BYTES`](super::format::METADATA_BLOCK_BYTES) blocks read and written, and a flush that makes
//! every completed write durable. The bdev module adapts a base bdev to
//! it; tests use [`testing::CrashingDevice`].

use std::io;

/// A base as the store's metadata sees it.
///
/// The commit protocol assumes only that a write is durable after the next
/// flush completes, and that a block write which is cut short leaves the
/// old block, the new one, or a mix of the two (which its CRC catches).
pub trait MetadataDevice {
    /// Size of the base, in metadata blocks.
    fn blocks(&self) -> u64;
    fn read_block(&mut self, index: u64) -> io::Result<Vec<u8>>;
    fn write_block(&mut self, index: u64, block: &[u8]) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}

#[cfg(test)]
pub mod testing {
    use std::collections::HashMap;

    use super::*;
    use crate::bdev::lvol::format::METADATA_BLOCK_BYTES;

    /// An in-memory base that loses power at its k-th write: that write
    /// and every later one are dropped (or the k-th is torn: its first
    /// half lands), and every call after it fails, as the process would
    /// be gone. [`durable`](Self::durable) is what a restart would find.
    #[derive(Debug, Clone)]
    pub struct CrashingDevice {
        blocks: u64,
        written: HashMap<u64, Vec<u8>>,
        writes: u64,
        crash_at: Option<u64>,
        tear: bool,
        crashed: bool,
    }

    impl CrashingDevice {
        pub fn new(blocks: u64) -> Self {
            Self {
                blocks,
                written: HashMap::new(),
                writes: 0,
                crash_at: None,
                tear: false,
                crashed: false,
            }
        }

        /// Power is lost at write number `k` (0-based, counted from now);
        /// with `tear` half of that write lands.
        pub fn crash_at_write(&mut self, k: u64, tear: bool) {
            self.crash_at = Some(self.writes + k);
            self.tear = tear;
        }

        pub fn writes(&self) -> u64 {
            self.writes
        }

        pub fn crashed(&self) -> bool {
            self.crashed
        }

        /// The base as it is after a restart: what was written, working.
        pub fn durable(&self) -> Self {
            Self {
                blocks: self.blocks,
                written: self.written.clone(),
                writes: 0,
                crash_at: None,
                tear: false,
                crashed: false,
            }
        }

        fn gone() -> io::Error {
            io::Error::other("power lost")
        }
    }

    impl MetadataDevice for CrashingDevice {
        fn blocks(&self) -> u64 {
            self.blocks
        }

        fn read_block(&mut self, index: u64) -> io::Result<Vec<u8>> {
            if self.crashed {
                return Err(Self::gone());
            }
            assert!(index < self.blocks, "read past the base");
            Ok(self
                .written
                .get(&index)
                .cloned()
                .unwrap_or_else(|| vec![0; METADATA_BLOCK_BYTES]))
        }

        fn write_block(&mut self, index: u64, block: &[u8]) -> io::Result<()> {
            if self.crashed {
                return Err(Self::gone());
            }
            assert!(index < self.blocks, "write past the base");
            assert_eq!(block.len(), METADATA_BLOCK_BYTES, "whole blocks only");
            let n = self.writes;
            self.writes += 1;
            if self.crash_at == Some(n) {
                self.crashed = true;
                if self.tear {
                    let old = self.read_block_raw(index);
                    let half = METADATA_BLOCK_BYTES / 2;
                    let torn = [&block[..half], &old[half..]].concat();
                    self.written.insert(index, torn);
                }
                return Err(Self::gone());
            }
            self.written.insert(index, block.to_vec());
            Ok(())
        }

        fn flush(&mut self) -> io::Result<()> {
            if self.crashed {
                Err(Self::gone())
            } else {
                Ok(())
            }
        }
    }

    impl CrashingDevice {
        fn read_block_raw(&self, index: u64) -> Vec<u8> {
            self.written
                .get(&index)
                .cloned()
                .unwrap_or_else(|| vec![0; METADATA_BLOCK_BYTES])
        }
    }
}

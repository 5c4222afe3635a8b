//! What the store needs from its base for metadata: whole
//! [`METADATA_BLOCK_BYTES`](super::format::METADATA_BLOCK_BYTES) blocks read and written, and a flush that makes
//! every completed write durable. The bdev module adapts a base bdev to
//! it; tests use `testing::CrashingDevice`.

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

    /// Whether a commit is on the base once its writes and flushes have
    /// returned. A device that only records them, to be carried out
    /// later (the bdev module's staged device), answers no; the store then
    /// keeps the clusters a commit frees out of reach until
    /// [`LvolStore::settle`](super::store::LvolStore::settle) says that
    /// commit is on the base. Reused sooner, a cut before it landed would
    /// leave the old owner reading what the new owner wrote there.
    fn commits_durable_on_return(&self) -> bool {
        true
    }
}

#[cfg(test)]
pub mod testing {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::rc::Rc;

    use super::*;
    use crate::bdev::lvol::format::METADATA_BLOCK_BYTES;

    /// An in-memory base that loses power at its k-th write: that write
    /// and every later one are dropped (or the k-th is torn: its first
    /// half lands), and every call after it fails, as the process would
    /// be gone. [`durable`](Self::durable) is what a restart would find.
    ///
    /// Clones are handles on the same base, so a test keeps one while the
    /// store owns another.
    #[derive(Debug, Clone)]
    pub struct CrashingDevice(Rc<RefCell<Base>>);

    #[derive(Debug, Clone)]
    struct Base {
        blocks: u64,
        written: HashMap<u64, Vec<u8>>,
        writes: u64,
        crash_at: Option<u64>,
        tear: bool,
        crashed: bool,
    }

    impl Base {
        fn block(&self, index: u64) -> Vec<u8> {
            self.written
                .get(&index)
                .cloned()
                .unwrap_or_else(|| vec![0; METADATA_BLOCK_BYTES])
        }
    }

    impl CrashingDevice {
        pub fn new(blocks: u64) -> Self {
            Self(Rc::new(RefCell::new(Base {
                blocks,
                written: HashMap::new(),
                writes: 0,
                crash_at: None,
                tear: false,
                crashed: false,
            })))
        }

        /// Power is lost at write number `k` (0-based, counted from now);
        /// with `tear` half of that write lands.
        pub fn crash_at_write(&self, k: u64, tear: bool) {
            let mut base = self.0.borrow_mut();
            base.crash_at = Some(base.writes + k);
            base.tear = tear;
        }

        /// Writes issued so far (the lost one included).
        pub fn writes(&self) -> u64 {
            self.0.borrow().writes
        }

        /// A new base holding what this one made durable, working.
        pub fn durable(&self) -> Self {
            let base = self.0.borrow();
            let copy = Self::new(base.blocks);
            copy.0.borrow_mut().written = base.written.clone();
            copy
        }

        fn gone() -> io::Error {
            io::Error::other("power lost")
        }
    }

    impl MetadataDevice for CrashingDevice {
        fn blocks(&self) -> u64 {
            self.0.borrow().blocks
        }

        fn read_block(&mut self, index: u64) -> io::Result<Vec<u8>> {
            let base = self.0.borrow();
            if base.crashed {
                return Err(Self::gone());
            }
            assert!(index < base.blocks, "read past the base");
            Ok(base.block(index))
        }

        fn write_block(&mut self, index: u64, block: &[u8]) -> io::Result<()> {
            let mut base = self.0.borrow_mut();
            if base.crashed {
                return Err(Self::gone());
            }
            assert!(index < base.blocks, "write past the base");
            assert_eq!(block.len(), METADATA_BLOCK_BYTES, "whole blocks only");
            let n = base.writes;
            base.writes += 1;
            if base.crash_at == Some(n) {
                base.crashed = true;
                if base.tear {
                    let half = METADATA_BLOCK_BYTES / 2;
                    let torn = [&block[..half], &base.block(index)[half..]].concat();
                    base.written.insert(index, torn);
                }
                return Err(Self::gone());
            }
            base.written.insert(index, block.to_vec());
            Ok(())
        }

        fn flush(&mut self) -> io::Result<()> {
            if self.0.borrow().crashed {
                Err(Self::gone())
            } else {
                Ok(())
            }
        }
    }
}

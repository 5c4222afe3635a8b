//! I/O channels: a bdev's I/O path on one reactor.
//!
//! Each reactor keeps its channels in a thread-local table, created on first
//! use. The generic checks every front-end relies on (range, buffer size,
//! supported kind) and the statistics live here, so modules see only valid
//! requests.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::stats::IoStats;
use super::{BackendChannel, Bdev, IoCompletion, IoError, IoRequest};

thread_local! {
    static CHANNELS: RefCell<HashMap<u64, Rc<IoChannel>>> = RefCell::new(HashMap::new());
}

/// A bdev's I/O path on the current reactor.
pub struct IoChannel {
    bdev: Arc<Bdev>,
    backend: Box<dyn BackendChannel>,
    stats: Cell<IoStats>,
}

impl Bdev {
    /// This reactor's channel for the bdev, created on first use.
    pub fn channel(self: &Arc<Self>) -> Rc<IoChannel> {
        if let Some(channel) = CHANNELS.with(|channels| channels.borrow().get(&self.id()).cloned())
        {
            return channel;
        }
        // Created outside the table's borrow: a virtual bdev's channel
        // creates its base bdevs' channels in turn.
        let channel = Rc::new(IoChannel {
            bdev: Arc::clone(self),
            backend: self.backend().create_channel(),
            stats: Cell::new(IoStats::default()),
        });
        CHANNELS.with(|channels| channels.borrow_mut().insert(self.id(), Rc::clone(&channel)));
        channel
    }
}

/// Drops this reactor's channel for bdev `id` (the bdev is being deleted).
pub fn release_channel(id: u64) {
    let channel = CHANNELS.with(|channels| channels.borrow_mut().remove(&id));
    drop(channel);
}

/// Statistics of this reactor's channel for bdev `id`, if it has one.
pub fn channel_stats(id: u64) -> Option<IoStats> {
    CHANNELS.with(|channels| channels.borrow().get(&id).map(|c| c.stats.get()))
}

impl IoChannel {
    pub fn bdev(&self) -> &Arc<Bdev> {
        &self.bdev
    }

    /// Submits `io` and waits for it. Invalid requests complete at once
    /// with an error, without reaching the module.
    pub async fn submit(&self, io: IoRequest) -> IoCompletion {
        if let Err(error) = self.check(&io) {
            let mut stats = self.stats.get();
            stats.num_io_errors += 1;
            self.stats.set(stats);
            return IoCompletion::new(io.buf, Err(error));
        }
        let kind = io.kind;
        let bytes = io.num_blocks * u64::from(self.bdev.block_size());
        let started = Instant::now();
        let completion = self.backend.submit(io).await;
        let mut stats = self.stats.get();
        stats.record(kind, bytes, started.elapsed(), completion.result.is_err());
        self.stats.set(stats);
        completion
    }

    fn check(&self, io: &IoRequest) -> Result<(), IoError> {
        if !self.bdev.supports(io.kind) {
            return Err(IoError::NotSupported);
        }
        let end = io.offset_blocks.checked_add(io.num_blocks);
        if end.is_none_or(|end| end > self.bdev.num_blocks()) {
            return Err(IoError::OutOfRange {
                offset: io.offset_blocks,
                end: end.unwrap_or(u64::MAX),
                num_blocks: self.bdev.num_blocks(),
            });
        }
        match (&io.buf, io.kind.has_data()) {
            (Some(buf), true) => {
                if buf.len() as u64 != io.num_blocks * u64::from(self.bdev.block_size()) {
                    return Err(IoError::Invalid(
                        "buffer length is not num_blocks x block_size",
                    ));
                }
                if io.num_blocks == 0 {
                    return Err(IoError::Invalid("zero-length read or write"));
                }
            }
            (None, true) => return Err(IoError::Invalid("read or write without a buffer")),
            (_, false) => {}
        }
        Ok(())
    }
}

impl Drop for IoChannel {
    fn drop(&mut self) {
        self.bdev.retire_stats(&self.stats.get());
    }
}

/// Runs `io` against `bdev` on the current reactor: a convenience for
/// front-ends and virtual bdevs.
pub async fn submit(bdev: &Arc<Bdev>, io: IoRequest) -> IoCompletion {
    let channel = bdev.channel();
    channel.submit(io).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bdev::malloc::create_malloc;
    use crate::bdev::testing::block_on;
    use crate::bdev::{BdevRegistry, BdevSpec, IoBuf, IoKind};

    #[test]
    fn invalid_requests_never_reach_the_module() {
        let registry = BdevRegistry::new();
        let spec = BdevSpec {
            name: "m0".into(),
            uuid: None,
            block_size: 512,
            num_blocks: 8,
        };
        let bdev = create_malloc(&registry, spec).unwrap();
        block_on(async {
            let done = submit(&bdev, IoRequest::read(7, IoBuf::new(1024), 512)).await;
            assert!(matches!(done.result, Err(IoError::OutOfRange { .. })));
            let done = submit(&bdev, IoRequest::range(IoKind::Unmap, u64::MAX, 2)).await;
            assert!(matches!(done.result, Err(IoError::OutOfRange { .. })));
            let mut bad = IoRequest::read(0, IoBuf::new(512), 512);
            bad.num_blocks = 2;
            assert!(matches!(
                submit(&bdev, bad).await.result,
                Err(IoError::Invalid(_))
            ));
            let ok = submit(&bdev, IoRequest::read(6, IoBuf::new(1024), 512)).await;
            assert!(ok.result.is_ok());
            let stats = channel_stats(bdev.id()).unwrap();
            assert_eq!((stats.num_read_ops, stats.num_io_errors), (1, 3));
            release_channel(bdev.id());
            assert_eq!(bdev.retired_stats().num_read_ops, 1);
        });
    }
}

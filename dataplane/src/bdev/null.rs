//! `null`: a bdev that completes every I/O at once without storing data
//! (SPDK's Null disk), for measuring everything but the media. Reads
//! return zeroes.

use std::sync::Arc;

use super::{
    BackendChannel, Bdev, BdevBackend, BdevError, BdevRegistry, BdevSpec, IoCompletion, IoFuture,
    IoKind, IoRequest,
};

struct Null;

/// Creates and registers a null bdev.
pub fn create_null(registry: &BdevRegistry, spec: BdevSpec) -> Result<Arc<Bdev>, BdevError> {
    registry.register(spec, Box::new(Null))
}

impl BdevBackend for Null {
    fn module(&self) -> &'static str {
        "null"
    }

    fn product_name(&self) -> &'static str {
        "Null disk"
    }

    fn supports(&self, _kind: IoKind) -> bool {
        true
    }

    fn create_channel(&self) -> Box<dyn BackendChannel> {
        Box::new(NullChannel)
    }
}

struct NullChannel;

impl BackendChannel for NullChannel {
    fn submit(&self, mut io: IoRequest) -> IoFuture {
        // A read returns zeroes: a pool buffer still holds its previous
        // user's bytes, which must never reach this reader.
        if io.kind == IoKind::Read
            && let Some(buf) = io.buf.as_mut()
        {
            buf.as_mut_slice().fill(0);
        }
        Box::pin(std::future::ready(IoCompletion::new(io.buf, Ok(()))))
    }
}

//! The server side of the inter-cluster poller: requests from peers run on
//! this cluster's bdevs, reading and writing the requester's buffer in
//! place, and their completions go back.

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::Arc;

use shoal_appliance::region::ring::Descriptor;

use super::engine::Engine;
use super::stats;
use super::wire::{self, FLAG_FUA, Op};
use crate::bdev::{Bdev, BdevRegistry, IoBuf, IoRequest};

/// A served request finished on this cluster's bdev.
pub(super) struct Served {
    peer: usize,
    request: Descriptor,
    status: i32,
}

/// This cluster's bdevs by wire id, rebuilt when the registry changes.
pub(super) struct Targets {
    registry: Arc<BdevRegistry>,
    epoch: u64,
    by_id: HashMap<u64, Option<Arc<Bdev>>>,
}

impl Targets {
    pub(super) fn new(registry: Arc<BdevRegistry>) -> Self {
        Self {
            registry,
            epoch: u64::MAX,
            by_id: HashMap::new(),
        }
    }

    /// The bdev with wire id `id`. Two names hashing alike (never seen in
    /// practice, but possible) make both unreachable rather than confused.
    fn get(&mut self, id: u64) -> Option<Arc<Bdev>> {
        let epoch = self.registry.epoch();
        if epoch != self.epoch {
            self.by_id.clear();
            // By name and by alias: a forwarder may name an lvol
            // `lvs/lvol`, which stays the same wherever its store opens.
            for bdev in self.registry.list() {
                let names = std::iter::once(bdev.name().to_string()).chain(bdev.aliases());
                for name in names {
                    self.by_id
                        .entry(wire::target_id(&name))
                        .and_modify(|slot| *slot = None)
                        .or_insert(Some(Arc::clone(&bdev)));
                }
            }
            self.epoch = epoch;
        }
        self.by_id.get(&id).cloned().flatten()
    }
}

impl Engine {
    pub(super) fn poll_requests(&mut self, index: usize) {
        let peer = self.peers[index].as_ref().expect("present");
        let ring = peer.requests_in;
        let peer_cluster = peer.index;
        while let Some(request) = ring.pop() {
            // Read the requester's generation afresh: the supervisor bumps it
            // before a restarted requester runs, and from then on nothing
            // its earlier life sent may touch the arena it is about to reuse.
            let requester_generation = self.slot(peer_cluster).generation();
            if request.target_generation != wire::short_generation(self.generation)
                || request.generation != requester_generation
            {
                stats::bump(&self.stats.peer(peer_cluster).dropped_stale);
                continue;
            }
            self.serve(index, request);
        }
    }

    fn serve(&mut self, index: usize, request: Descriptor) {
        let peer_cluster = self.peers[index].as_ref().expect("present").index;
        let op = Op::from_raw(request.op);
        if op != Some(Op::Fence) {
            stats::bump(&self.stats.peer(peer_cluster).served);
        }
        let io = match op {
            None => Err(-libc::EINVAL),
            Some(Op::Fence) => {
                let peer = self.peers[index].as_mut().expect("present");
                if peer.served_in_flight == 0 {
                    self.complete(index, wire::completion(&request, 0));
                } else {
                    peer.fence = Some(request);
                }
                return;
            }
            Some(Op::Identify) => {
                let completion = match self.targets.get(request.target) {
                    Some(bdev) => Descriptor {
                        offset_blocks: bdev.num_blocks(),
                        buf_len: bdev.block_size(),
                        ..wire::completion(&request, 0)
                    },
                    None => wire::completion(&request, -libc::ENODEV),
                };
                return self.complete_counted(index, completion);
            }
            Some(op) => self.build_io(peer_cluster, op, &request),
        };
        let (bdev, io) = match io {
            Ok(found) => found,
            Err(status) => return self.complete_counted(index, wire::completion(&request, status)),
        };
        self.peers[index]
            .as_mut()
            .expect("present")
            .served_in_flight += 1;
        let channel = bdev.channel();
        let done = self.served_tx.clone();
        tokio::task::spawn_local(async move {
            let completion = channel.submit(io).await;
            // Dropping the lent view frees nothing: the buffer is the
            // requester's, and it gets it back with the completion.
            drop(completion.buf);
            let _ = done.send(Served {
                peer: index,
                request,
                status: wire::status_of(&completion.result),
            });
        });
    }

    /// The bdev and the request a peer's descriptor asks for, or the
    /// status to answer with.
    fn build_io(
        &mut self,
        peer_cluster: u32,
        op: Op,
        request: &Descriptor,
    ) -> Result<(Arc<Bdev>, IoRequest), i32> {
        let kind = op.kind().expect("data operations have a bdev I/O kind");
        let bdev = self.targets.get(request.target).ok_or(-libc::ENODEV)?;
        let mut io = if kind.has_data() {
            let len = request
                .num_blocks
                .checked_mul(u64::from(bdev.block_size()))
                .filter(|&len| len == u64::from(request.buf_len) && len > 0)
                .ok_or(-libc::EINVAL)?;
            let ptr = self
                .lent_buffer(peer_cluster, request.buf_offset, len)
                .ok_or(-libc::EFAULT)?;
            // SAFETY: the range lies in the requester's arena inside our
            // mapping of the region, which outlives every served request
            // (the process keeps it mapped until exit); the requester does
            // not touch the buffer until our completion.
            let buf = unsafe { IoBuf::lent(ptr, request.buf_offset, len as usize) };
            IoRequest::with_kind(kind, request.offset_blocks, buf, bdev.block_size())
        } else {
            IoRequest::range(kind, request.offset_blocks, request.num_blocks)
        };
        io.fua = request.flags & FLAG_FUA != 0;
        Ok((bdev, io))
    }

    /// Where the requester's buffer is mapped here, if `offset..offset+len`
    /// lies wholly inside the requester's own arena.
    fn lent_buffer(&self, requester: u32, offset: u64, len: u64) -> Option<NonNull<u8>> {
        let region = self.participant.region();
        let layout = region.interconnect();
        let last = offset.checked_add(len - 1)?;
        if layout.arena_owner(offset) != Some(requester)
            || layout.arena_owner(last) != Some(requester)
        {
            return None;
        }
        NonNull::new(region.address_of(offset, len)?)
    }

    fn complete_counted(&mut self, index: usize, completion: Descriptor) {
        if completion.status != 0 {
            let peer_cluster = self.peers[index].as_ref().expect("present").index;
            stats::bump(&self.stats.peer(peer_cluster).served_errors);
        }
        self.complete(index, completion);
    }

    pub(super) fn on_served(&mut self, done: Served) {
        let Served {
            peer: index,
            request,
            status,
        } = done;
        let peer = self.peers[index].as_mut().expect("present");
        peer.served_in_flight -= 1;
        let fence = if peer.served_in_flight == 0 {
            peer.fence.take()
        } else {
            None
        };
        // A request of a requester that has since restarted still gets its
        // completion: the new life drops it by tag generation.
        self.complete_counted(index, wire::completion(&request, status));
        if let Some(fence) = fence {
            self.complete(index, wire::completion(&fence, 0));
        }
    }
}

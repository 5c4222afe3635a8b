//! The inter-cluster poller: the one task of a cluster that pushes and pops
//! its ring ends. This file is the requester side and the loop; serving
//! peers' requests is in `serve.rs`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use shoal_appliance::doorbell::Doorbell;
use shoal_appliance::participant::Participant;
use shoal_appliance::region::layout::{ParticipantSlot, SlotStatus};
use shoal_appliance::region::ring::{Descriptor, Ring};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};

use super::serve::{Served, Targets};
use super::stats::{self, Stats};
use super::wire::{self, FLAG_FUA, Op};
use super::{RemoteCompletion, Submission};
use crate::bdev::{BdevRegistry, IoBuf};

/// How often peers' liveness slots are checked (and rings polled even
/// without a doorbell).
const LIVENESS_TICK: Duration = Duration::from_millis(100);

/// Never a real tag: generations and sequence numbers start at 1.
const FENCE_DEFERRED: u64 = 0;

/// A request waiting for its completion.
struct Pending {
    reply: oneshot::Sender<RemoteCompletion>,
    buf: Option<IoBuf>,
}

/// Our four ring ends towards one peer and what is in flight on them.
pub(super) struct Peer {
    pub(super) index: u32,
    /// We push requests to the peer.
    requests_out: Ring,
    /// The peer's completions of those come back here.
    completions_in: Ring,
    /// The peer's requests to us.
    pub(super) requests_in: Ring,
    /// Our completions of them.
    completions_out: Ring,
    /// The peer's slot generation when last checked.
    pub(super) generation: u64,
    /// Whether the peer's process is alive (not seen exited).
    up: bool,
    pending: HashMap<u64, Pending>,
    /// Requests not yet in the ring: it was full, or the peer already has
    /// a ring's worth in flight (which keeps its completions from ever
    /// overflowing the completion ring).
    queued: VecDeque<(Descriptor, Pending)>,
    /// Completions that found the completion ring full.
    pub(super) completion_backlog: VecDeque<Descriptor>,
    /// Peer requests we are serving now.
    pub(super) served_in_flight: u32,
    /// A fence from the peer, answered when `served_in_flight` reaches 0.
    pub(super) fence: Option<Descriptor>,
    /// Tag of our own fence to the peer until it is answered, or
    /// [`FENCE_DEFERRED`] while it waits for room in the ring.
    awaiting_fence: Option<u64>,
}

pub(super) struct Engine {
    pub(super) cluster: u32,
    pub(super) generation: u64,
    pub(super) participant: Arc<Participant>,
    doorbells: Vec<Option<Doorbell>>,
    own_doorbell: Option<Doorbell>,
    pub(super) peers: Vec<Option<Peer>>,
    sequence: u64,
    ready: bool,
    waiting: VecDeque<Submission>,
    pub(super) served_tx: mpsc::UnboundedSender<Served>,
    served_rx: Option<mpsc::UnboundedReceiver<Served>>,
    pub(super) targets: Targets,
    /// Peers whose doorbell to ring at the end of this round (bit mask).
    pub(super) to_ring: u64,
    pub(super) stats: Arc<Stats>,
}

/// Whether a peer's process may be alive. A stopping or stopped process
/// may still be finishing I/O on our buffers: only the supervisor's
/// "exited" (after reaping) or a new generation means it is gone.
/// Generation 0: the supervisor has not started the cluster yet.
pub(super) fn alive(generation: u64, status: Option<SlotStatus>) -> bool {
    generation != 0 && !matches!(status, Some(SlotStatus::Exited) | None)
}

/// Whether a new request may be pushed to a peer: only to a life that has
/// reported running. A life still "spawned" or "starting" may never get
/// there (it can die before it claims its slot, leaving no pid to reap
/// it by), and nothing it has not started serves the ring, so a request
/// pushed to it could wait forever; failing it at once keeps I/O to an
/// unreachable leg bounded however the peer failed. Nothing of ours is
/// then ever in the ring of a life that has not run, so a later restart
/// never finds our buffers in it. A stopping peer is draining: new I/O
/// to it fails too, what it already has completes or fails at its exit.
pub(super) fn accepts_requests(generation: u64, status: Option<SlotStatus>) -> bool {
    generation != 0 && status == Some(SlotStatus::Running)
}

impl Engine {
    pub(super) fn new(
        participant: Arc<Participant>,
        cluster: u32,
        doorbells: Vec<Doorbell>,
        registry: Arc<BdevRegistry>,
        stats: Arc<Stats>,
    ) -> Self {
        let region = participant.region();
        let header = region.header();
        let generation = header
            .cluster_slot(cluster)
            .expect("joined slot")
            .generation();
        let mut own_doorbell = None;
        let mut others = Vec::new();
        for (index, bell) in (0u32..).zip(doorbells) {
            if index == cluster {
                own_doorbell = Some(bell);
                others.push(None);
            } else {
                others.push(Some(bell));
            }
        }
        let peers = (0..header.cluster_count())
            .map(|peer| {
                (peer != cluster).then(|| {
                    let slot = header.cluster_slot(peer).expect("peer below cluster count");
                    // SAFETY: this engine is the only user of these ring
                    // ends in this process: it pushes requests_out and
                    // completions_out, pops requests_in and completions_in.
                    unsafe {
                        Peer {
                            index: peer,
                            requests_out: region.request_ring(cluster, peer),
                            completions_in: region.completion_ring(cluster, peer),
                            requests_in: region.request_ring(peer, cluster),
                            completions_out: region.completion_ring(peer, cluster),
                            generation: slot.generation(),
                            up: alive(slot.generation(), slot.status()),
                            pending: HashMap::new(),
                            queued: VecDeque::new(),
                            completion_backlog: VecDeque::new(),
                            served_in_flight: 0,
                            fence: None,
                            awaiting_fence: None,
                        }
                    }
                })
            })
            .collect();
        let (served_tx, served_rx) = mpsc::unbounded_channel();
        Self {
            cluster,
            generation,
            participant,
            doorbells: others,
            own_doorbell,
            peers,
            sequence: 0,
            ready: false,
            waiting: VecDeque::new(),
            served_tx,
            served_rx: Some(served_rx),
            targets: Targets::new(registry),
            to_ring: 0,
            stats,
        }
    }

    pub(super) fn slot(&self, cluster: u32) -> &ParticipantSlot {
        self.participant
            .region()
            .header()
            .cluster_slot(cluster)
            .expect("cluster below cluster count")
    }

    /// The poller's loop; runs on reactor 0 until the reactor stops.
    pub(super) async fn run(mut self, mut submissions: mpsc::UnboundedReceiver<Submission>) {
        let mut served = self.served_rx.take().expect("run once");
        let own = self
            .own_doorbell
            .take()
            .expect("Interconnect::start checks one doorbell per cluster");
        // SAFETY: the doorbell owns its descriptor and always reports the
        // same one; the AsyncFd owns the doorbell until the loop ends.
        let bell = match unsafe { AsyncFd::register_with_interest(own, Interest::READABLE) } {
            Ok(bell) => bell,
            Err(e) => {
                tracing::error!(
                    "cannot watch this cluster's doorbell: {e}; inter-cluster I/O is off"
                );
                return;
            }
        };
        self.send_fences();
        let mut tick = tokio::time::interval(LIVENESS_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                submission = submissions.recv() => match submission {
                    Some(submission) => self.submit(submission),
                    None => break,
                },
                Some(done) = served.recv() => self.on_served(done),
                guard = bell.readable() => {
                    if let Ok(mut guard) = guard {
                        while guard.get_inner().drain() {}
                        guard.clear_ready();
                    }
                }
                _ = tick.tick() => self.check_peers(),
            }
            // Take whatever else is already there before touching the rings,
            // so one doorbell covers a batch.
            while let Ok(submission) = submissions.try_recv() {
                self.submit(submission);
            }
            while let Ok(done) = served.try_recv() {
                self.on_served(done);
            }
            self.poll_rings();
            self.ring_doorbells();
        }
    }

    /// At start: a fence to every peer that may still hold buffers of our
    /// previous life; with none, the pool opens at once.
    fn send_fences(&mut self) {
        for index in 0..self.peers.len() {
            let Some(peer) = self.peers[index].as_ref() else {
                continue;
            };
            // A peer that is only starting is a new process: it never saw
            // our buffers.
            let status = self.slot(peer.index).status();
            if peer.up && !matches!(status, Some(SlotStatus::Spawned | SlotStatus::Starting)) {
                self.send_fence(index);
            }
        }
        self.open_when_fenced();
    }

    fn open_when_fenced(&mut self) {
        if self.ready
            || self
                .peers
                .iter()
                .flatten()
                .any(|p| p.awaiting_fence.is_some())
        {
            return;
        }
        if let Some(pool) = crate::pool::get() {
            pool.reset_and_open();
        }
        self.ready = true;
        self.stats
            .ready
            .store(true, std::sync::atomic::Ordering::Release);
        tracing::info!(
            generation = self.generation,
            "inter-cluster I/O ready: no peer holds a buffer of an earlier life"
        );
        while let Some(submission) = self.waiting.pop_front() {
            self.submit(submission);
        }
    }

    fn next_tag(&mut self) -> u64 {
        self.sequence += 1;
        wire::tag(self.generation, self.sequence)
    }

    fn submit(&mut self, submission: Submission) {
        if !self.ready {
            self.waiting.push_back(submission);
            return;
        }
        let Submission {
            peer,
            op,
            target,
            offset_blocks,
            num_blocks,
            buf,
            fua,
            reply,
        } = submission;
        let fail = |reply: oneshot::Sender<RemoteCompletion>, buf, errno| {
            let _ = reply.send(RemoteCompletion::failed(buf, errno));
        };
        if peer == self.cluster || self.peers.get(peer as usize).is_none_or(Option::is_none) {
            return fail(reply, buf, libc::EINVAL);
        }
        let (buf_offset, buf_len) = match &buf {
            Some(b) => match b.region_offset() {
                Some(offset) => (offset, b.len() as u32),
                None => return fail(reply, buf, libc::EINVAL),
            },
            None => (0, 0),
        };
        let (peer_generation, up) = self.refresh_peer(peer as usize);
        if !up || !accepts_requests(peer_generation, self.slot(peer).status()) {
            stats::bump(&self.stats.peer(peer).errors);
            return fail(reply, buf, libc::EIO);
        }
        let tag = self.next_tag();
        let descriptor = Descriptor {
            tag,
            generation: self.generation,
            target,
            offset_blocks,
            num_blocks,
            buf_offset,
            buf_len,
            op: op as u16,
            flags: if fua { FLAG_FUA } else { 0 },
            status: 0,
            target_generation: wire::short_generation(peer_generation),
        };
        let stats = Arc::clone(&self.stats);
        let peer = self.peers[peer as usize].as_mut().expect("checked");
        peer.queued.push_back((descriptor, Pending { reply, buf }));
        if peer.flush_queued(&stats) {
            self.to_ring |= 1 << peer.index;
        }
    }

    /// Drains every ring addressed to us and retries what waits for room.
    fn poll_rings(&mut self) {
        for index in 0..self.peers.len() {
            if self.peers[index].is_none() {
                continue;
            }
            self.poll_completions(index);
            self.poll_requests(index);
            let stats = Arc::clone(&self.stats);
            let peer = self.peers[index].as_mut().expect("present");
            if peer.flush_queued(&stats) | peer.flush_completions() {
                self.to_ring |= 1 << peer.index;
            }
        }
    }

    fn poll_completions(&mut self, index: usize) {
        let mut fence_answered = false;
        let peer = self.peers[index].as_mut().expect("present");
        let stats = self.stats.peer(peer.index);
        while let Some(completion) = peer.completions_in.pop() {
            if wire::tag_generation(completion.tag) != self.generation {
                stats::bump(&stats.stale_completions);
                continue;
            }
            if completion.op == Op::Fence as u16 {
                if peer.awaiting_fence == Some(completion.tag) {
                    peer.awaiting_fence = None;
                    fence_answered = true;
                }
                continue;
            }
            let Some(pending) = peer.pending.remove(&completion.tag) else {
                stats::bump(&stats.stale_completions);
                continue;
            };
            stats::bump(&stats.completed);
            if completion.status != 0 {
                stats::bump(&stats.errors);
            }
            let _ = pending.reply.send(RemoteCompletion {
                buf: pending.buf,
                status: completion.status,
                descriptor: completion,
            });
        }
        stats::set(&stats.in_flight, peer.pending.len());
        if fence_answered {
            self.open_when_fenced();
        }
    }

    /// Every tick: fail what is in flight to peers that died or restarted.
    fn check_peers(&mut self) {
        for index in 0..self.peers.len() {
            if self.peers[index].is_some() {
                self.refresh_peer(index);
            }
        }
        self.open_when_fenced();
    }

    /// Reads peer `index`'s slot; if it died or restarted since we last
    /// looked, fails what is in flight to its earlier life. Returns the
    /// peer's generation and whether it is up.
    fn refresh_peer(&mut self, index: usize) -> (u64, bool) {
        let peer_cluster = self.peers[index].as_ref().expect("present").index;
        let slot = self.slot(peer_cluster);
        let (generation, up) = (slot.generation(), alive(slot.generation(), slot.status()));
        let peer = self.peers[index].as_mut().expect("present");
        if generation == peer.generation && up == peer.up {
            if peer.awaiting_fence == Some(FENCE_DEFERRED) {
                self.send_fence(index);
            }
            return (generation, up);
        }
        let was_up = peer.up;
        let failed = peer.fail_all(&self.stats);
        peer.generation = generation;
        peer.up = up;
        // What we owe its earlier life is moot (the new life drops it by
        // generation); a fence or completion of the new life, which may
        // have arrived before we looked, still stands.
        if peer
            .fence
            .is_some_and(|fence| fence.generation != generation)
        {
            peer.fence = None;
        }
        peer.completion_backlog
            .retain(|completion| completion.generation == generation);
        // Our fence to its earlier life is answered by that life's end.
        peer.awaiting_fence = None;
        if was_up {
            stats::bump(&self.stats.peer(peer_cluster).peer_restarts);
            tracing::warn!(
                peer = peer_cluster,
                failed,
                generation,
                "data cluster {peer_cluster} went away: its in-flight I/O failed with EIO"
            );
        } else if up {
            tracing::info!(
                peer = peer_cluster,
                generation,
                "data cluster {peer_cluster} is up"
            );
        }
        (generation, up)
    }

    fn send_fence(&mut self, index: usize) {
        let tag = self.next_tag();
        let peer = self.peers[index].as_mut().expect("present");
        let fence = Descriptor {
            tag,
            generation: self.generation,
            op: Op::Fence as u16,
            target_generation: wire::short_generation(peer.generation),
            ..Default::default()
        };
        if peer.requests_out.push(&fence) {
            peer.awaiting_fence = Some(tag);
            self.to_ring |= 1 << peer.index;
        } else {
            // Full of our previous life's requests, which the peer drops by
            // generation as it drains them: the next tick retries.
            tracing::warn!(peer = peer.index, "request ring full: fence deferred");
            peer.awaiting_fence = Some(FENCE_DEFERRED);
        }
    }

    /// Queues a completion for `peer` (the ring, or its backlog when full).
    pub(super) fn complete(&mut self, index: usize, completion: Descriptor) {
        let peer = self.peers[index].as_mut().expect("present");
        peer.completion_backlog.push_back(completion);
        if peer.flush_completions() {
            self.to_ring |= 1 << peer.index;
        }
    }

    fn ring_doorbells(&mut self) {
        let mut mask = std::mem::take(&mut self.to_ring);
        while mask != 0 {
            let peer = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if let Some(Some(bell)) = self.doorbells.get(peer) {
                bell.ring();
            }
        }
    }
}

impl Peer {
    /// Moves queued requests into the ring while it has room and the peer
    /// has fewer than a ring's worth in flight. True if any moved.
    fn flush_queued(&mut self, stats: &Stats) -> bool {
        let limit = self.requests_out.capacity() as usize;
        let mut moved = false;
        while self.pending.len() < limit {
            let Some((descriptor, _)) = self.queued.front() else {
                break;
            };
            if !self.requests_out.push(descriptor) {
                break;
            }
            let (descriptor, pending) = self.queued.pop_front().expect("front exists");
            self.pending.insert(descriptor.tag, pending);
            stats::bump(&stats.peer(self.index).submitted);
            moved = true;
        }
        let peer_stats = stats.peer(self.index);
        stats::set(&peer_stats.in_flight, self.pending.len());
        stats::set(&peer_stats.queued, self.queued.len());
        moved
    }

    /// Pushes backlogged completions while the ring has room.
    fn flush_completions(&mut self) -> bool {
        let mut moved = false;
        while let Some(completion) = self.completion_backlog.front() {
            if !self.completions_out.push(completion) {
                break;
            }
            self.completion_backlog.pop_front();
            moved = true;
        }
        moved
    }

    /// Fails every request in flight or queued to this peer with EIO.
    fn fail_all(&mut self, stats: &Stats) -> usize {
        let peer_stats = stats.peer(self.index);
        let pending = self.pending.drain().map(|(_, p)| p);
        let queued = self.queued.drain(..).map(|(_, p)| p);
        let mut failed = 0;
        for p in pending.chain(queued) {
            failed += 1;
            stats::bump(&peer_stats.errors);
            let _ = p.reply.send(RemoteCompletion::failed(p.buf, libc::EIO));
        }
        stats::set(&peer_stats.in_flight, 0);
        stats::set(&peer_stats.queued, 0);
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [SlotStatus; 6] = [
        SlotStatus::Spawned,
        SlotStatus::Starting,
        SlotStatus::Running,
        SlotStatus::Stopping,
        SlotStatus::Stopped,
        SlotStatus::Exited,
    ];

    #[test]
    fn only_a_running_life_is_given_new_requests() {
        for status in ALL {
            assert_eq!(
                accepts_requests(7, Some(status)),
                status == SlotStatus::Running,
                "{status:?}"
            );
        }
        assert!(!accepts_requests(0, Some(SlotStatus::Running)));
        assert!(!accepts_requests(7, None));
    }

    #[test]
    fn anything_short_of_exited_may_still_touch_our_buffers() {
        // `alive` guards buffer reuse: anything short of exited may still
        // touch buffers of requests already in its ring.
        for status in ALL {
            assert_eq!(
                alive(3, Some(status)),
                status != SlotStatus::Exited,
                "{status:?}"
            );
        }
        assert!(!alive(0, Some(SlotStatus::Running)));
    }
}

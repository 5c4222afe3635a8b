//! Inter-cluster I/O: how a data cluster sends I/O to a bdev of another
//! cluster and serves theirs, through descriptor rings in the shared
//! region, while the payload stays where it is (the seed's "zero-copy I/O
//! exchange between SPDK instances").
//!
//! Every ordered pair of clusters has a request ring and a completion ring
//! ([`shoal_appliance::region::interconnect`]). A request names a buffer of
//! the requester's pool arena by region offset; the server's bdev reads or
//! writes that memory directly and the completion travels back.
//!
//! One *inter-cluster poller* per cluster, on reactor 0, is the single
//! producer and consumer of all of the cluster's ring ends. Other reactors
//! hand it their requests by message. It sleeps on the cluster's doorbell
//! (an eventfd every peer rings after pushing) and on a 100 ms tick that
//! checks the peers' liveness slots.
//!
//! Failure rules:
//! - a peer seen to exit or restart (its slot says `exited`, or its
//!   generation changed) fails everything in flight to it with EIO at the
//!   next tick;
//! - a server drops requests addressed to an earlier life of itself
//!   (`target_generation`) or sent by an earlier life of the requester;
//! - a requester drops completions whose tag carries an earlier generation;
//! - a restarted cluster does not reuse its arena until every live peer has
//!   answered a *fence*, which a peer answers only once it has finished all
//!   requests it took from the cluster's earlier life.

mod engine;
mod serve;
pub mod stats;
pub mod wire;

use std::sync::Arc;

use serde_json::{Value, json};
use shoal_appliance::doorbell::Doorbell;
use shoal_appliance::participant::Participant;
use shoal_appliance::region::ring::Descriptor;
use tokio::sync::{mpsc, oneshot};

use crate::bdev::{BdevRegistry, IoBuf};
use crate::reactor::ReactorHandle;
pub use wire::Op;

/// A request for a peer cluster, as a remote bdev hands it over.
#[derive(Debug)]
pub struct Submission {
    pub peer: u32,
    pub op: Op,
    pub target: u64,
    pub offset_blocks: u64,
    pub num_blocks: u64,
    /// For reads and writes: a buffer in this cluster's pool arena.
    pub buf: Option<IoBuf>,
    pub fua: bool,
    pub reply: oneshot::Sender<RemoteCompletion>,
}

/// What came back: the buffer, the peer's status and its descriptor.
#[derive(Debug)]
pub struct RemoteCompletion {
    pub buf: Option<IoBuf>,
    /// 0 or a negative errno.
    pub status: i32,
    pub descriptor: Descriptor,
}

impl RemoteCompletion {
    fn failed(buf: Option<IoBuf>, errno: i32) -> Self {
        Self {
            buf,
            status: -errno,
            descriptor: Descriptor::default(),
        }
    }
}

/// The handle other threads use; the engine itself lives on reactor 0.
#[derive(Clone)]
pub struct Interconnect {
    cluster: u32,
    clusters: u32,
    participant: Arc<Participant>,
    submissions: mpsc::UnboundedSender<Submission>,
    stats: Arc<stats::Stats>,
}

impl std::fmt::Debug for Interconnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interconnect")
            .field("cluster", &self.cluster)
            .field("clusters", &self.clusters)
            .finish()
    }
}

impl Interconnect {
    /// Installs and starts the inter-cluster poller of cluster `cluster`
    /// on `reactor` (reactor 0). `doorbells` has one entry per cluster.
    pub fn start(
        participant: Arc<Participant>,
        cluster: u32,
        doorbells: Vec<Doorbell>,
        reactor: &ReactorHandle,
        registry: Arc<BdevRegistry>,
    ) -> anyhow::Result<Self> {
        let clusters = participant.region().header().cluster_count();
        anyhow::ensure!(
            doorbells.len() == clusters as usize,
            "{} doorbells were passed for {clusters} data clusters",
            doorbells.len()
        );
        crate::pool::install(Arc::clone(&participant), cluster);
        let stats = Arc::new(stats::Stats::new(clusters));
        let (submissions, receiver) = mpsc::unbounded_channel();
        let engine_participant = Arc::clone(&participant);
        let engine_stats = Arc::clone(&stats);
        let started = reactor.spawn(move || {
            let engine = engine::Engine::new(
                engine_participant,
                cluster,
                doorbells,
                registry,
                engine_stats,
            );
            engine.run(receiver)
        });
        anyhow::ensure!(started, "reactor 0 is not running");
        Ok(Self {
            cluster,
            clusters,
            participant,
            submissions,
            stats,
        })
    }

    pub fn cluster(&self) -> u32 {
        self.cluster
    }

    pub fn clusters(&self) -> u32 {
        self.clusters
    }

    /// Sends `op` to `peer` and waits for its completion. Fails with EIO
    /// when the poller is gone (the process is stopping).
    #[allow(clippy::too_many_arguments)]
    pub async fn call(
        &self,
        peer: u32,
        op: Op,
        target: u64,
        offset_blocks: u64,
        num_blocks: u64,
        buf: Option<IoBuf>,
        fua: bool,
    ) -> RemoteCompletion {
        let (reply, answer) = oneshot::channel();
        let submission = Submission {
            peer,
            op,
            target,
            offset_blocks,
            num_blocks,
            buf,
            fua,
            reply,
        };
        if let Err(mpsc::error::SendError(submission)) = self.submissions.send(submission) {
            return RemoteCompletion::failed(submission.buf, libc::EIO);
        }
        answer
            .await
            .unwrap_or_else(|_| RemoteCompletion::failed(None, libc::EIO))
    }

    /// The generation of `peer`'s current life if it takes new requests
    /// (it reported running: the rule the poller applies before every
    /// submission), `None` while it does not: never started, still
    /// starting, stopping, exited, or not a peer.
    /// Remote bdevs that hold I/O across a peer's death poll this.
    pub fn peer_life(&self, peer: u32) -> Option<u64> {
        if peer == self.cluster {
            return None;
        }
        let slot = self.participant.region().header().cluster_slot(peer)?;
        let generation = slot.generation();
        engine::accepts_requests(generation, slot.status()).then_some(generation)
    }

    /// `interconnect_get_stats`: per-peer rings and counters, the pool.
    pub fn describe(&self) -> Value {
        let region = self.participant.region();
        let header = region.header();
        let me = self.cluster;
        let peers: Vec<Value> = (0..self.clusters)
            .filter(|&peer| peer != me)
            .map(|peer| {
                let slot = header.cluster_slot(peer).expect("peer below cluster count");
                let s = self.stats.peer(peer);
                // SAFETY: depth() only loads the ring's indices; it neither
                // pushes nor pops, so the SPSC discipline is untouched.
                let (out_req, out_cpl, in_req, in_cpl) = unsafe {
                    (
                        region.request_ring(me, peer).depth(),
                        region.completion_ring(me, peer).depth(),
                        region.request_ring(peer, me).depth(),
                        region.completion_ring(peer, me).depth(),
                    )
                };
                json!({
                    "cluster": peer,
                    "state": slot.status(),
                    "generation": slot.generation(),
                    "outbound": {
                        "request_ring_depth": out_req,
                        "completion_ring_depth": out_cpl,
                        "submitted": stats::read(&s.submitted),
                        "completed": stats::read(&s.completed),
                        "errors": stats::read(&s.errors),
                        "in_flight": stats::read(&s.in_flight),
                        "queued": stats::read(&s.queued),
                        "stale_completions": stats::read(&s.stale_completions),
                    },
                    "inbound": {
                        "request_ring_depth": in_req,
                        "completion_ring_depth": in_cpl,
                        "served": stats::read(&s.served),
                        "errors": stats::read(&s.served_errors),
                        "dropped_stale": stats::read(&s.dropped_stale),
                    },
                    "peer_restarts": stats::read(&s.peer_restarts),
                })
            })
            .collect();
        json!({
            "cluster": me,
            "generation": header.cluster_slot(me).map(|s| s.generation()),
            "ready": self.stats.ready.load(std::sync::atomic::Ordering::Acquire),
            "ring_entries": header.ring_entries(),
            "peers": peers,
            "pool": crate::pool::get().map(|pool| pool.describe()),
        })
    }
}

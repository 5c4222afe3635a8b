//! Counters of the inter-cluster path, written by the engine on reactor 0
//! and read by `interconnect_get_stats` from the control thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters for one peer cluster.
#[derive(Debug, Default)]
pub struct PeerStats {
    /// Requests pushed into our ring to the peer.
    pub submitted: AtomicU64,
    /// Completions received for them.
    pub completed: AtomicU64,
    /// Requests that ended in an error (from the peer, or failed here
    /// because the peer went away).
    pub errors: AtomicU64,
    /// Requests waiting for the peer's completion now.
    pub in_flight: AtomicU64,
    /// Requests waiting for room in the ring now.
    pub queued: AtomicU64,
    /// Completions that matched no request (a previous life's, or one we
    /// already failed).
    pub stale_completions: AtomicU64,
    /// Requests from the peer we served.
    pub served: AtomicU64,
    /// Of those, the ones that failed.
    pub served_errors: AtomicU64,
    /// Requests from the peer we dropped: addressed to an earlier life of
    /// this cluster or sent by an earlier life of the peer.
    pub dropped_stale: AtomicU64,
    /// Times the peer was seen to die or restart.
    pub peer_restarts: AtomicU64,
}

/// Counters for the whole engine.
#[derive(Debug)]
pub struct Stats {
    pub peers: Vec<PeerStats>,
    /// Set once the arena is safe to reuse and remote I/O flows.
    pub ready: AtomicBool,
}

impl Stats {
    pub fn new(clusters: u32) -> Self {
        Self {
            peers: (0..clusters).map(|_| PeerStats::default()).collect(),
            ready: AtomicBool::new(false),
        }
    }

    pub fn peer(&self, cluster: u32) -> &PeerStats {
        &self.peers[cluster as usize]
    }
}

/// Shorthand for the relaxed counter updates the engine makes.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub fn set(gauge: &AtomicU64, value: usize) {
    gauge.store(value as u64, Ordering::Relaxed);
}

pub fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

//! A child process's membership in the appliance: it maps the shared region,
//! claims its slot, reports its lifecycle and heartbeats there, where the
//! supervisor watches.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::monotonic_ns;
use crate::region::layout::{ParticipantSlot, SlotStatus};
use crate::region::{RegionError, SharedRegion};

/// Which slot of the region header a process owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotId {
    /// The control cluster (management service).
    Control,
    /// Data cluster `i`.
    Cluster(u32),
}

impl std::fmt::Display for SlotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlotId::Control => write!(f, "control cluster"),
            SlotId::Cluster(i) => write!(f, "data cluster {i}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Region(#[from] RegionError),
    #[error("the region has {count} data clusters; there is no {slot}")]
    NoSuchSlot { slot: SlotId, count: u32 },
}

/// A process's claimed slot in the mapped region.
#[derive(Debug)]
pub struct Participant {
    region: SharedRegion,
    id: SlotId,
    generation: u64,
}

impl Participant {
    /// Maps the region at `path` and claims slot `id` for this process.
    pub fn join(path: &Path, id: SlotId) -> Result<Self, JoinError> {
        let region = SharedRegion::open(path)?;
        let header = region.header();
        let slot = match id {
            SlotId::Control => header.control_slot(),
            SlotId::Cluster(i) => header.cluster_slot(i).ok_or(JoinError::NoSuchSlot {
                slot: id,
                count: header.cluster_count(),
            })?,
        };
        let generation = slot.generation();
        slot.claim(std::process::id());
        Ok(Self {
            region,
            id,
            generation,
        })
    }

    pub fn id(&self) -> SlotId {
        self.id
    }

    pub fn region(&self) -> &SharedRegion {
        &self.region
    }

    fn slot(&self) -> &ParticipantSlot {
        let header = self.region.header();
        match self.id {
            SlotId::Control => header.control_slot(),
            SlotId::Cluster(i) => header.cluster_slot(i).expect("checked at join"),
        }
    }

    /// False once the supervisor has handed this slot to a newer process;
    /// this process must then stop writing to it.
    pub fn owns_slot(&self) -> bool {
        self.slot().generation() == self.generation
    }

    pub fn set_status(&self, status: SlotStatus) {
        if self.owns_slot() {
            self.slot().set_status(status);
        }
    }

    /// Records a heartbeat; returns false if the slot is no longer ours.
    pub fn beat(&self) -> bool {
        if !self.owns_slot() {
            return false;
        }
        self.slot().beat(monotonic_ns());
        true
    }

    /// Beats every `interval` on the current tokio runtime while `healthy`
    /// says the process's own work loops are alive, until the slot is lost.
    /// An unhealthy process stops beating, so the supervisor restarts it.
    pub fn spawn_heartbeat(
        self: &Arc<Self>,
        interval: Duration,
        healthy: impl Fn() -> bool + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if !healthy() {
                    tracing::warn!(slot = %me.id, "work loops stalled: withholding the heartbeat");
                    continue;
                }
                if !me.beat() {
                    tracing::error!(slot = %me.id, "slot handed to a newer process; heartbeat stops");
                    return;
                }
            }
        })
    }
}

/// Waits for SIGTERM or SIGINT and returns its name. Children stop cleanly
/// on either: the supervisor sends SIGTERM, a developer presses Ctrl-C.
pub async fn stop_requested() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

impl Participant {
    /// The lifecycle every child shares: report running, heartbeat (while
    /// `healthy`), wait for SIGTERM/SIGINT, report stopping, run `drain`
    /// (close sockets, finish work), report stopped.
    pub async fn run_until_stopped<F, Fut>(
        self: &Arc<Self>,
        heartbeat_every: Duration,
        healthy: impl Fn() -> bool + Send + 'static,
        drain: F,
    ) -> std::io::Result<()>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        self.beat();
        self.set_status(SlotStatus::Running);
        let heartbeat = self.spawn_heartbeat(heartbeat_every, healthy);
        tracing::info!("{} running", self.id);
        let signal = stop_requested().await?;
        tracing::info!("{signal} received: stopping");
        self.set_status(SlotStatus::Stopping);
        heartbeat.abort();
        drain().await;
        self.set_status(SlotStatus::Stopped);
        tracing::info!("{} stopped", self.id);
        Ok(())
    }
}

/// `main` of a child binary: builds the runtime, runs `service`, and turns
/// its outcome into the exit code shoald reads (0 clean, 1 failure).
pub fn child_main<Fut>(multi_thread: bool, service: Fut) -> std::process::ExitCode
where
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let runtime = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(service) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

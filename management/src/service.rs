//! The process lifecycle of the management service.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shoal_appliance::participant::{Participant, SlotId, stop_requested};
use shoal_appliance::region::layout::SlotStatus;

use crate::args::Args;

/// Runs until SIGTERM/SIGINT, then shuts down cleanly.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let participant = Arc::new(
        Participant::join(&args.region, SlotId::Control)
            .with_context(|| format!("cannot join the shared region {}", args.region.display()))?,
    );
    participant.beat();
    participant.set_status(SlotStatus::Running);
    let heartbeat = participant.spawn_heartbeat(Duration::from_millis(args.heartbeat_interval_ms));
    tracing::info!(state_dir = %args.state_dir.display(), "management service running");

    let signal = stop_requested()
        .await
        .context("cannot install signal handlers")?;
    tracing::info!("{signal} received: stopping");
    participant.set_status(SlotStatus::Stopping);
    heartbeat.abort();
    participant.set_status(SlotStatus::Stopped);
    tracing::info!("management service stopped");
    Ok(())
}

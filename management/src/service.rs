//! The process lifecycle of the management service.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shoal_appliance::participant::{Participant, SlotId};

use crate::args::Args;

/// Runs until SIGTERM/SIGINT, then shuts down cleanly.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let participant = Arc::new(
        Participant::join(&args.region, SlotId::Control)
            .with_context(|| format!("cannot join the shared region {}", args.region.display()))?,
    );
    tracing::info!(state_dir = %args.state_dir.display(), "management service starting");
    let heartbeat_every = Duration::from_millis(args.heartbeat_interval_ms);
    participant
        .run_until_stopped(heartbeat_every, || true, || async {})
        .await
        .context("cannot install signal handlers")
}

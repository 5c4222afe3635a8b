//! The process lifecycle of one data cluster.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shoal_appliance::jsonrpc;
use shoal_appliance::participant::{Participant, SlotId, stop_requested};
use shoal_appliance::region::layout::SlotStatus;

use crate::args::Args;

/// Runs the cluster until SIGTERM/SIGINT, then shuts down cleanly.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let participant = Arc::new(
        Participant::join(&args.region, SlotId::Cluster(args.cluster))
            .with_context(|| format!("cannot join the shared region {}", args.region.display()))?,
    );
    tracing::info!(
        region = %args.region.display(),
        cores = args.cores,
        cpus = ?args.cpus,
        "data cluster starting"
    );

    let listener = jsonrpc::server::bind(&args.rpc_socket)
        .with_context(|| format!("cannot bind {}", args.rpc_socket.display()))?;
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(jsonrpc::serve(
        listener,
        Arc::new(crate::rpc::router()),
        async {
            let _ = server_stopped.await;
        },
    ));

    participant.beat();
    participant.set_status(SlotStatus::Running);
    let heartbeat = participant.spawn_heartbeat(Duration::from_millis(args.heartbeat_interval_ms));
    tracing::info!(socket = %args.rpc_socket.display(), "data cluster running");

    let signal = stop_requested()
        .await
        .context("cannot install signal handlers")?;
    tracing::info!("{signal} received: stopping");
    participant.set_status(SlotStatus::Stopping);
    heartbeat.abort();
    let _ = stop_server.send(());
    let _ = server.await;
    if let Err(e) = std::fs::remove_file(&args.rpc_socket) {
        tracing::warn!("cannot remove {}: {e}", args.rpc_socket.display());
    }
    participant.set_status(SlotStatus::Stopped);
    tracing::info!("data cluster stopped");
    Ok(())
}

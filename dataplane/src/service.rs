//! The process lifecycle of one data cluster.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shoal_appliance::jsonrpc;
use shoal_appliance::participant::{Participant, SlotId};

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
    tracing::info!(socket = %args.rpc_socket.display(), "JSON-RPC listening");

    let heartbeat_every = Duration::from_millis(args.heartbeat_interval_ms);
    participant
        .run_until_stopped(heartbeat_every, || async {
            let _ = stop_server.send(());
            let _ = server.await;
            if let Err(e) = std::fs::remove_file(&args.rpc_socket) {
                tracing::warn!("cannot remove {}: {e}", args.rpc_socket.display());
            }
        })
        .await
        .context("cannot install signal handlers")
}

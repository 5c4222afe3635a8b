//! The process lifecycle of one data cluster: reactors up, startup config
//! applied, NBD and JSON-RPC served, heartbeat kept while the reactors are
//! alive, everything taken down in order on SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shoal_appliance::doorbell;
use shoal_appliance::jsonrpc;
use shoal_appliance::participant::{Participant, SlotId};
use tokio_util::sync::CancellationToken;

use crate::args::Args;
use crate::bdev::BdevRegistry;
use crate::interconnect::Interconnect;
use crate::nbd::exports::Exports;
use crate::reactor::Reactors;
use crate::rpc::{self, Context};
use crate::startup_config;

/// A reactor that has not ticked for this long counts as stalled.
const REACTOR_STALL: Duration = Duration::from_secs(1);

/// Runs the cluster until SIGTERM/SIGINT, then shuts down cleanly.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let participant = Arc::new(
        Participant::join(&args.region, SlotId::Cluster(args.cluster))
            .with_context(|| format!("cannot join the shared region {}", args.region.display()))?,
    );
    let reactors = Arc::new(
        Reactors::start(args.cores, &args.cpus, args.pin).context("cannot start reactors")?,
    );
    tracing::info!(
        region = %args.region.display(),
        reactors = args.cores,
        cpus = ?args.cpus,
        pinned = args.pin,
        "data cluster starting"
    );
    let registry = Arc::new(BdevRegistry::new());
    let interconnect = if args.doorbells.is_empty() {
        tracing::info!("no --doorbells: running without inter-cluster I/O");
        None
    } else {
        let doorbells = doorbell::from_inherited_list(&args.doorbells)
            .context("cannot take the inherited doorbells")?;
        let first = reactors.get(0).context("no reactor")?;
        Some(Interconnect::start(
            Arc::clone(&participant),
            args.cluster,
            doorbells,
            first,
            Arc::clone(&registry),
        )?)
    };
    let nvmf = Arc::new(crate::nvmf::subsystem::Target::new());
    let portals = Arc::new(crate::nvmf::listener::Portals::new(
        Arc::clone(&nvmf),
        reactors.handles(),
    ));
    let context = Arc::new(Context {
        cluster: args.cluster,
        registry,
        exports: Arc::new(Exports::new()),
        nvmf,
        portals,
        reactors: Arc::clone(&reactors),
        interconnect,
    });
    let router = Arc::new(rpc::router(Arc::clone(&context)));
    let result = serve(&args, &participant, &context, router).await;
    reactors.shutdown();
    result
}

/// Opens this cluster's drive as bdev `drive<cluster>`. A drive that
/// cannot be opened is logged and the cluster serves without it: it can
/// still serve other clusters' bdevs, and the management service reports
/// the drive missing.
fn open_drive(context: &Context, cluster: u32, path: &std::path::Path) {
    let config = crate::bdev::uring::UringConfig {
        name: format!("drive{cluster}"),
        filename: path.to_path_buf(),
        block_size: None,
        uuid: None,
    };
    match crate::bdev::uring::create_uring(&context.registry, config) {
        Ok(bdev) => tracing::info!(
            path = %path.display(),
            bytes = bdev.size_bytes(),
            "drive opened as bdev {}",
            bdev.name()
        ),
        Err(e) => {
            tracing::error!(path = %path.display(), "cannot open the drive: {e}; serving without it")
        }
    }
}

async fn serve(
    args: &Args,
    participant: &Arc<Participant>,
    context: &Arc<Context>,
    router: Arc<jsonrpc::Router>,
) -> anyhow::Result<()> {
    if let Some(path) = &args.drive {
        open_drive(context, args.cluster, path);
    }
    if let Some(config) = &args.config {
        startup_config::apply(config, &router).await?;
    }

    let stop_nbd = CancellationToken::new();
    if let Some(address) = args.nbd_listen {
        let listener = std::net::TcpListener::bind(address)
            .with_context(|| format!("cannot listen for NBD on {address}"))?;
        listener.set_nonblocking(true)?;
        let exports = Arc::clone(&context.exports);
        let handles = Arc::new(context.reactors.handles());
        let stop = stop_nbd.clone();
        let first = handles[0].clone();
        first.spawn(move || crate::nbd::server::accept_loop(listener, exports, handles, stop));
        tracing::info!(%address, "NBD server listening");
    }

    for address in [args.nvmf_listen, args.discovery_listen]
        .into_iter()
        .flatten()
    {
        context
            .portals
            .listen(address)
            .with_context(|| format!("cannot listen for NVMe/TCP on {address}"))?;
    }

    let listener = jsonrpc::server::bind(&args.rpc_socket)
        .with_context(|| format!("cannot bind {}", args.rpc_socket.display()))?;
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(jsonrpc::serve(listener, router, async {
        let _ = server_stopped.await;
    }));
    tracing::info!(socket = %args.rpc_socket.display(), "JSON-RPC listening");

    let heartbeat_every = Duration::from_millis(args.heartbeat_interval_ms);
    let reactors = Arc::clone(&context.reactors);
    participant
        .run_until_stopped(
            heartbeat_every,
            move || reactors.all_alive(REACTOR_STALL),
            || async {
                stop_nbd.cancel();
                context.portals.stop();
                let _ = stop_server.send(());
                let _ = server.await;
                if let Err(e) = std::fs::remove_file(&args.rpc_socket) {
                    tracing::warn!("cannot remove {}: {e}", args.rpc_socket.display());
                }
            },
        )
        .await
        .context("cannot install signal handlers")
}

//! The supervisor's JSON-RPC methods, served on `<state>/shoald.sock`.
//!
//! Handlers only forward to the supervisor loop, which owns all state.

use serde::Deserialize;
use shoal_appliance::config::ApplianceConfig;
use shoal_appliance::jsonrpc::{Router, RpcError, parse_params};
use tokio::sync::{mpsc, oneshot};

use crate::supervisor::Command;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartClusterParams {
    cluster: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

pub fn router(commands: mpsc::Sender<Command>, config: &ApplianceConfig) -> Router {
    let status_commands = commands.clone();
    let config = serde_json::to_value(config).expect("config serialises");
    Router::new()
        .method("appliance_get_status", move |params| {
            let commands = status_commands.clone();
            async move {
                parse_params::<NoParams>(params)?;
                ask(&commands, Command::Status).await
            }
        })
        .method("appliance_restart_cluster", move |params| {
            let commands = commands.clone();
            async move {
                let RestartClusterParams { cluster } = parse_params(params)?;
                ask(&commands, |reply| Command::RestartCluster(cluster, reply)).await?
            }
        })
        .method("appliance_get_config", move |params| {
            let config = config.clone();
            async move {
                parse_params::<NoParams>(params)?;
                Ok(config)
            }
        })
}

async fn ask<T>(
    commands: &mpsc::Sender<Command>,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, RpcError>
where
    T: Send,
{
    let (reply, answer) = oneshot::channel();
    let gone = || {
        RpcError::errno(
            nix::errno::Errno::ESHUTDOWN,
            "the supervisor is shutting down",
        )
    };
    commands.send(make(reply)).await.map_err(|_| gone())?;
    answer.await.map_err(|_| gone())
}

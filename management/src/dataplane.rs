//! Calls to the data clusters' JSON-RPC sockets, found through the
//! supervisor's status. The management service reads actual state from
//! the dataplanes this way (and, with the reconciler, will change it).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use shoal_appliance::jsonrpc::RpcClient;

use crate::resources::appliance;
use crate::state::AppState;

/// Longest wait for one data cluster's answer.
const DATAPLANE_TIMEOUT: Duration = Duration::from_secs(2);

/// The data clusters the supervisor knows of: index and RPC socket.
pub async fn clusters(state: &AppState) -> Vec<(u32, PathBuf)> {
    let Some(status) = appliance::status(state).await else {
        return Vec::new();
    };
    status["clusters"]
        .as_array()
        .map(|clusters| {
            clusters
                .iter()
                .filter_map(|c| {
                    Some((
                        c["index"].as_u64()? as u32,
                        PathBuf::from(c["rpc_socket"].as_str()?),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Calls `method` on the data cluster behind `socket`; `None` when it
/// does not answer in time or answers with an error.
pub async fn call(socket: &std::path::Path, method: &str, params: Option<Value>) -> Option<Value> {
    let call = async {
        let mut client = RpcClient::connect(socket).await.ok()?;
        client.call(method, params).await.ok()
    };
    tokio::time::timeout(DATAPLANE_TIMEOUT, call)
        .await
        .ok()
        .flatten()
}

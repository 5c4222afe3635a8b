//! Host access in the storage model: initiator endpoints (hosts by their
//! NQN) and the connections that let them reach volumes.

use super::model::{
    Access, Connection, InitiatorEndpoint, MAX_CONNECTIONS, MAX_ENDPOINTS, VolumeAccess,
};
use super::reconcile::Failure;
use super::secrets::ConnectionKeys;
use super::{StorageError, check_name, desired, not_found, pass_locked, ready_fabric};
use crate::state::AppState;
use crate::store::Table;

/// Records a host (initiator endpoint) by its NQN.
pub async fn create_endpoint(
    state: &AppState,
    name: Option<String>,
    host_nqn: String,
) -> Result<InitiatorEndpoint, StorageError> {
    let _guard = state.storage.lock.lock().await;
    let desired = desired(state)?;
    if desired.endpoints.len() >= MAX_ENDPOINTS {
        return Err(StorageError::Limit {
            kind: "initiator endpoints",
            limit: MAX_ENDPOINTS,
        });
    }
    shoal_appliance::nqn::check(&host_nqn).map_err(|reason| StorageError::Invalid {
        property: "Identifiers/DurableName",
        value: host_nqn.clone(),
        reason,
    })?;
    if host_nqn == crate::storage::subsystem_nqn(&state.service_uuid) {
        return Err(StorageError::Invalid {
            property: "Identifiers/DurableName",
            value: host_nqn,
            reason: "is the storage's own subsystem NQN".into(),
        });
    }
    if desired.endpoints.iter().any(|e| e.host_nqn == host_nqn) {
        return Err(StorageError::NameTaken {
            kind: "initiator endpoint",
            name: host_nqn,
        });
    }
    if let Some(name) = &name {
        check_name("Name", name)?;
    }
    let id = state.store.next_id("endpoint").await?;
    let endpoint = InitiatorEndpoint {
        id,
        name: name.unwrap_or_else(|| format!("Initiator {id}")),
        host_nqn,
    };
    state
        .store
        .put(Table::Endpoints, &id.to_string(), &endpoint)
        .await?;
    Ok(endpoint)
}

pub async fn delete_endpoint(state: &AppState, id: u64) -> Result<(), StorageError> {
    let _guard = state.storage.lock.lock().await;
    let desired = desired(state)?;
    let endpoint = desired
        .endpoint(id)
        .ok_or_else(|| not_found("initiator endpoint", id))?;
    if let Some(connection) = desired
        .connections
        .iter()
        .find(|c| c.initiators.contains(&id))
    {
        return Err(StorageError::InUse(format!(
            "endpoint {} is used by connection {} ({}); delete the connection first",
            endpoint.name, connection.id, connection.name
        )));
    }
    state
        .store
        .remove(Table::Endpoints, &id.to_string())
        .await?;
    Ok(())
}

/// Lets `initiators` reach `volumes` (read and write), through every data
/// cluster's portal. Applied to the running clusters before it returns.
pub async fn create_connection(
    state: &AppState,
    name: Option<String>,
    volumes: Vec<u64>,
    initiators: Vec<u64>,
    keys: Option<ConnectionKeys>,
) -> Result<Connection, StorageError> {
    let fabric = ready_fabric(state).await?;
    let _guard = state.storage.lock.lock().await;
    let desired = desired(state)?;
    if desired.connections.len() >= MAX_CONNECTIONS {
        return Err(StorageError::Limit {
            kind: "connections",
            limit: MAX_CONNECTIONS,
        });
    }
    for id in &volumes {
        desired
            .volume(*id)
            .ok_or_else(|| not_found("volume", *id))?;
        if let Some(pool) = desired.pool_on(*id) {
            return Err(StorageError::InUse(format!(
                "volume {id} holds storage pool {} ({}) and is no host's",
                pool.id, pool.name
            )));
        }
    }
    for id in &initiators {
        desired
            .endpoint(*id)
            .ok_or_else(|| not_found("initiator endpoint", *id))?;
    }
    if let Some(name) = &name {
        check_name("Name", name)?;
    }
    if let Some(keys) = &keys {
        check_host_keys(&desired, None, &initiators, keys)?;
    }
    let sealed = keys.as_ref().map(|k| seal(state, k)).transpose()?;
    let id = state.store.next_id("connection").await?;
    let connection = Connection {
        id,
        name: name.unwrap_or_else(|| format!("Connection {id}")),
        volumes: volumes
            .iter()
            .map(|&volume| VolumeAccess {
                volume,
                access: Access::ReadWrite,
            })
            .collect(),
        initiators,
        keys: sealed,
    };
    state
        .store
        .put(Table::Connections, &id.to_string(), &connection)
        .await?;
    let observation = pass_locked(state, &fabric).await?;
    let failures: Vec<Failure> = volumes
        .iter()
        .flat_map(|v| observation.report.failures_of(*v))
        .chain(
            observation
                .report
                .failures
                .iter()
                .filter(|f| f.object.starts_with("host ")),
        )
        .cloned()
        .collect();
    if !failures.is_empty() {
        state
            .store
            .remove(Table::Connections, &id.to_string())
            .await?;
        let _ = pass_locked(state, &fabric).await;
        return Err(StorageError::Dataplane(failures));
    }
    Ok(connection)
}

fn seal(state: &AppState, keys: &ConnectionKeys) -> Result<super::secrets::Sealed, StorageError> {
    let files = state.storage.key_files()?;
    let key = files.seal_key().map_err(|e| {
        tracing::error!("cannot seal connection keys: {e}");
        StorageError::Unavailable(format!("cannot seal connection keys: {e}"))
    })?;
    Ok(key.seal(keys))
}

/// Keys belong to a host on the subsystem, not to a connection: a host
/// NQN that another keyed connection names must get the same keys there.
/// (An unkeyed connection naming the host is fine: the host then
/// authenticates for it too.)
fn check_host_keys(
    desired: &super::model::Desired,
    replacing: Option<u64>,
    initiators: &[u64],
    keys: &ConnectionKeys,
) -> Result<(), StorageError> {
    let nqns: Vec<&str> = initiators
        .iter()
        .filter_map(|id| desired.endpoint(*id))
        .map(|e| e.host_nqn.as_str())
        .collect();
    for other in desired
        .connections
        .iter()
        .filter(|c| Some(c.id) != replacing)
    {
        let Some(other_keys) = desired.keys.get(&other.id) else {
            continue;
        };
        let shared = other
            .initiators
            .iter()
            .filter_map(|id| desired.endpoint(*id))
            .find(|e| nqns.contains(&e.host_nqn.as_str()));
        if let Some(endpoint) = shared
            && other_keys != keys
        {
            return Err(StorageError::KeyConflict {
                connection: other.id,
                host: endpoint.host_nqn.clone(),
            });
        }
    }
    Ok(())
}

/// Replaces a connection's keys (`None`: removes them) and applies it;
/// on failure the old keys are put back.
pub async fn set_connection_keys(
    state: &AppState,
    id: u64,
    keys: Option<ConnectionKeys>,
) -> Result<Connection, StorageError> {
    let fabric = ready_fabric(state).await?;
    let _guard = state.storage.lock.lock().await;
    let desired = desired(state)?;
    let old = desired
        .connections
        .iter()
        .find(|c| c.id == id)
        .cloned()
        .ok_or_else(|| not_found("connection", id))?;
    if let Some(keys) = &keys {
        check_host_keys(&desired, Some(id), &old.initiators, keys)?;
    }
    let mut connection = old.clone();
    connection.keys = keys.as_ref().map(|k| seal(state, k)).transpose()?;
    state
        .store
        .put(Table::Connections, &id.to_string(), &connection)
        .await?;
    let observation = pass_locked(state, &fabric).await?;
    let failures: Vec<Failure> = observation
        .report
        .failures
        .iter()
        .filter(|f| f.object.starts_with("host "))
        .cloned()
        .collect();
    if !failures.is_empty() {
        state
            .store
            .put(Table::Connections, &id.to_string(), &old)
            .await?;
        let _ = pass_locked(state, &fabric).await;
        return Err(StorageError::Dataplane(failures));
    }
    Ok(connection)
}

/// Revokes a connection: its hosts lose the volumes at once.
pub async fn delete_connection(state: &AppState, id: u64) -> Result<(), StorageError> {
    let fabric = ready_fabric(state).await?;
    let _guard = state.storage.lock.lock().await;
    if !state
        .store
        .remove(Table::Connections, &id.to_string())
        .await?
    {
        return Err(not_found("connection", id));
    }
    let _ = pass_locked(state, &fabric).await;
    Ok(())
}

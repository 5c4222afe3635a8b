//! Thin pools: an lvol store on one redundant volume, and the volumes made
//! in it (lvols, thin or thick). Creation and deletion, each under the
//! storage lock and carried out by a reconciliation pass before it
//! returns, rolled back if the pass could not.
//!
//! The store opens on the pool volume's owner, the one cluster that holds
//! its raid; every metadata change (a first write's allocation, a new
//! lvol) is made there, and the other clusters forward the pool's volumes
//! to it by their lvols' aliases (`pool<P>/volume<V>`), which stay the
//! same when the owner moves and the store is examined there.

use super::model::{self, MAX_POOLS, MAX_VOLUMES, Pool, Provisioning, Volume, VolumeState};
use super::reconcile::{Failure, Report};
use super::{
    StorageError, check_name, desired, not_found, now_s, pass_locked, plan, ready_fabric,
    running_clusters,
};
use crate::state::AppState;
use crate::store::Table;

/// A new volume in a pool, as the Redfish POST asks for it.
#[derive(Debug, Clone)]
pub struct PoolVolumeRequest {
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub capacity_bytes: u64,
    pub provisioning: Provisioning,
    pub pool: u64,
}

/// Largest volume in a pool: the lvol store's limit on an lvol's clusters
/// (a u32 count of 1 MiB clusters).
pub const MAX_POOL_VOLUME_BYTES: u64 = (u32::MAX as u64) * model::POOL_CLUSTER_BYTES;

/// Makes pool `name` on volume `volume`: a new lvol store on it, opened
/// on the volume's owner. The volume's data is given up to the store, so
/// it must have no connection; from then on it is no host's.
pub async fn create_pool(
    state: &AppState,
    name: String,
    volume: u64,
) -> Result<Pool, StorageError> {
    let fabric = ready_fabric(state).await?;
    let _guard = state.storage.lock.lock().await;
    let desired = desired(state)?;
    if desired.pools.len() >= MAX_POOLS {
        return Err(StorageError::Limit {
            kind: "storage pools",
            limit: MAX_POOLS,
        });
    }
    check_name("Name", &name)?;
    if desired.pools.iter().any(|p| p.name == name) {
        return Err(StorageError::NameTaken {
            kind: "storage pool",
            name,
        });
    }
    let base = desired
        .volume(volume)
        .ok_or_else(|| not_found("volume", volume))?;
    let invalid = |reason: String| StorageError::Invalid {
        property: "CapacitySources/ProvidingVolumes",
        value: format!("volume {volume}"),
        reason,
    };
    if base.pool.is_some() {
        return Err(invalid("it is itself a volume of a pool".into()));
    }
    if !base.raid_type.has_owner() {
        return Err(invalid(format!(
            "a pool's store opens on its volume's owner, which only redundant volumes (RAID1, RAID10, RAID5, RAID6) have; this one is {}",
            base.raid_type.redfish()
        )));
    }
    if base.state != VolumeState::Ready {
        return Err(invalid("it is still being created".into()));
    }
    if let Some(pool) = desired.pool_on(volume) {
        return Err(StorageError::InUse(format!(
            "volume {} already holds storage pool {} ({})",
            base.name, pool.id, pool.name
        )));
    }
    if let Some(connection) = desired.connections_of(volume).next() {
        return Err(StorageError::InUse(format!(
            "volume {} is used by connection {} ({}); a pool's volume is no host's, delete the connection first",
            base.name, connection.id, connection.name
        )));
    }
    if super::initialize_progress(state, volume).is_some() || super::check::running(state, volume) {
        return Err(StorageError::InUse(format!(
            "a task runs on volume {}; make the pool when it has ended",
            base.name
        )));
    }
    let id = state.store.next_id("pool").await?;
    let pool = Pool {
        id,
        name,
        volume,
        state: VolumeState::Creating,
        created: now_s(),
    };
    state
        .store
        .put(Table::Pools, &id.to_string(), &pool)
        .await?;
    let store = model::pool_store(id);
    let built = pass_locked(state, &fabric)
        .await
        .map_err(|e| vec![failure(&store, e.to_string())])
        .and_then(|observation| {
            let report = &observation.report;
            let mut failures = failures_of(report, &store);
            if failures.is_empty()
                && !report
                    .views
                    .values()
                    .any(|v| v.lvstores.contains_key(&store))
            {
                failures.push(failure(&store, "no cluster opened the store".into()));
            }
            if failures.is_empty() {
                Ok(())
            } else {
                Err(failures)
            }
        });
    if let Err(failures) = built {
        state.store.remove(Table::Pools, &id.to_string()).await?;
        let _ = pass_locked(state, &fabric).await;
        return Err(StorageError::Dataplane(failures));
    }
    let ready = Pool {
        state: VolumeState::Ready,
        ..pool
    };
    state
        .store
        .put(Table::Pools, &id.to_string(), &ready)
        .await?;
    tracing::info!(pool = id, name = ready.name, volume, "storage pool created");
    Ok(ready)
}

/// Deletes a pool that holds no volume; its store goes with the pass.
/// The pool's volume stays (and may be connected or deleted again).
pub async fn delete_pool(state: &AppState, id: u64) -> Result<(), StorageError> {
    let fabric = ready_fabric(state).await?;
    let _guard = state.storage.lock.lock().await;
    let desired = desired(state)?;
    let pool = desired
        .pool(id)
        .ok_or_else(|| not_found("storage pool", id))?;
    if let Some(volume) = desired.volumes_in(id).next() {
        return Err(StorageError::InUse(format!(
            "storage pool {} holds volume {} ({}); delete its volumes first",
            pool.name, volume.id, volume.name
        )));
    }
    let name = pool.name.clone();
    state.store.remove(Table::Pools, &id.to_string()).await?;
    tracing::info!(pool = id, name, "storage pool deleted");
    let _ = pass_locked(state, &fabric).await;
    Ok(())
}

/// Makes a volume in a pool: an lvol in its store (thin: its clusters
/// come as it is written; fixed: all reserved and zeroed now), served by
/// every running cluster before it is acknowledged.
pub async fn create_pool_volume(
    state: &AppState,
    request: PoolVolumeRequest,
) -> Result<Volume, StorageError> {
    let fabric = ready_fabric(state).await?;
    let _guard = state.storage.lock.lock().await;
    let desired = desired(state)?;
    if desired.volumes.len() >= MAX_VOLUMES {
        return Err(StorageError::Limit {
            kind: "volumes",
            limit: MAX_VOLUMES,
        });
    }
    if let Some(name) = &request.name {
        check_name("Name", name)?;
        if desired.volumes.iter().any(|v| &v.name == name) {
            return Err(StorageError::NameTaken {
                kind: "volume",
                name: name.clone(),
            });
        }
    }
    let pool = desired
        .pool(request.pool)
        .ok_or_else(|| not_found("storage pool", request.pool))?;
    if pool.state != VolumeState::Ready {
        return Err(StorageError::Unavailable(format!(
            "storage pool {} is still being created",
            pool.name
        )));
    }
    let base = desired
        .volume(pool.volume)
        .ok_or_else(|| not_found("volume", pool.volume))?;
    // Whole clusters of the store.
    let capacity_bytes = request
        .capacity_bytes
        .div_ceil(model::POOL_CLUSTER_BYTES)
        .saturating_mul(model::POOL_CLUSTER_BYTES);
    if request.capacity_bytes == 0 || capacity_bytes > MAX_POOL_VOLUME_BYTES {
        return Err(StorageError::Invalid {
            property: "CapacityBytes",
            value: request.capacity_bytes.to_string(),
            reason: format!(
                "a volume in a pool has 1 to {MAX_POOL_VOLUME_BYTES} bytes (whole MiB)"
            ),
        });
    }
    if request.provisioning == Provisioning::Fixed {
        let free = store_free_bytes(state, pool.id);
        if free.is_some_and(|free| free < capacity_bytes) {
            return Err(StorageError::InsufficientCapacity(format!(
                "a Fixed volume of {capacity_bytes} bytes does not fit storage pool {}: {} bytes are free (a Thin volume would)",
                pool.name,
                free.unwrap_or(0)
            )));
        }
    }
    let nsid = (1..=MAX_VOLUMES as u32)
        .find(|n| desired.volumes.iter().all(|v| v.nsid != *n))
        .expect("fewer volumes than namespace IDs");
    let id = state.store.next_id("volume").await?;
    let volume = Volume {
        id,
        name: request.name.unwrap_or_else(|| format!("Volume {id}")),
        display_name: request.display_name,
        raid_type: base.raid_type,
        capacity_bytes,
        block_size: base.block_size,
        strip_bytes: base.strip_bytes,
        uuid: uuid::Uuid::new_v4(),
        nsid,
        legs: Vec::new(),
        state: VolumeState::Creating,
        created: now_s(),
        pool: Some(pool.id),
        provisioning: request.provisioning,
    };
    state
        .store
        .put(Table::Volumes, &id.to_string(), &volume)
        .await?;
    let object = plan::volume_bdev(id);
    let running = running_clusters(state).await;
    let built = pass_locked(state, &fabric)
        .await
        .map_err(|e| vec![failure(&object, e.to_string())])
        .and_then(|observation| {
            let report = &observation.report;
            let mut failures: Vec<Failure> = report.failures_of(id).into_iter().cloned().collect();
            for (cluster, _) in &running {
                let served = report
                    .views
                    .get(cluster)
                    .is_some_and(|view| view.serves_volume(&volume));
                if !served && failures.iter().all(|f| f.cluster != *cluster) {
                    failures.push(Failure {
                        cluster: *cluster,
                        object: object.clone(),
                        error: "the volume is not served after the pass".into(),
                    });
                }
            }
            if failures.is_empty() {
                Ok(())
            } else {
                Err(failures)
            }
        });
    if let Err(failures) = built {
        state.store.remove(Table::Volumes, &id.to_string()).await?;
        let _ = pass_locked(state, &fabric).await;
        return Err(StorageError::Dataplane(failures));
    }
    let ready = Volume {
        state: VolumeState::Ready,
        ..volume
    };
    state
        .store
        .put(Table::Volumes, &id.to_string(), &ready)
        .await?;
    tracing::info!(
        volume = id,
        name = ready.name,
        bytes = ready.capacity_bytes,
        pool = pool.id,
        provisioning = ready.provisioning.redfish(),
        "volume created in a storage pool"
    );
    Ok(ready)
}

/// Space a pool's store has, as the cluster holding it last said:
/// (total, free) bytes of its data clusters. `None` while no running
/// cluster has it open.
pub fn store_bytes(state: &AppState, pool: u64) -> Option<(u64, u64)> {
    let observation = state.storage.observed()?;
    let name = model::pool_store(pool);
    observation.report.views.values().find_map(|view| {
        let store = view.lvstores.get(&name)?;
        let cluster = store["cluster_size"].as_u64()?;
        Some((
            store["total_data_clusters"].as_u64()? * cluster,
            store["free_clusters"].as_u64()? * cluster,
        ))
    })
}

fn store_free_bytes(state: &AppState, pool: u64) -> Option<u64> {
    store_bytes(state, pool).map(|(_, free)| free)
}

/// Bytes of the pool's store that `volume` owns (its allocated clusters),
/// as the cluster holding the store last said.
pub fn allocated_bytes(state: &AppState, volume: &Volume) -> Option<u64> {
    let alias = volume.lvol_alias()?;
    let observation = state.storage.observed()?;
    observation.report.views.values().find_map(|view| {
        let lvol = view.lvols.get(&alias)?;
        Some(lvol["num_allocated_clusters"].as_u64()? * model::POOL_CLUSTER_BYTES)
    })
}

fn failure(object: &str, error: String) -> Failure {
    Failure {
        cluster: 0,
        object: object.to_string(),
        error,
    }
}

fn failures_of(report: &Report, object: &str) -> Vec<Failure> {
    report
        .failures
        .iter()
        .filter(|f| f.object == object)
        .cloned()
        .collect()
}

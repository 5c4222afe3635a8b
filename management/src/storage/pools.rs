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

use super::model::{
    self, MAX_POOLS, Pool, Provisioning, Replica, ReplicaKind, Volume, VolumeState,
};
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
        low_space_warning_percents: Vec::new(),
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

/// Sets the remaining-capacity percentages whose crossing pool `id`
/// reports (already checked by `low_space::check`).
pub async fn set_low_space_thresholds(
    state: &AppState,
    id: u64,
    thresholds: Vec<u8>,
) -> Result<Pool, StorageError> {
    let _guard = state.storage.lock.lock().await;
    let desired = desired(state)?;
    let pool = Pool {
        low_space_warning_percents: thresholds,
        ..desired
            .pool(id)
            .cloned()
            .ok_or_else(|| not_found("storage pool", id))?
    };
    state
        .store
        .put(Table::Pools, &id.to_string(), &pool)
        .await?;
    tracing::info!(pool = id, thresholds = ?pool.low_space_warning_percents, "low-space thresholds set");
    Ok(pool)
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
    super::volumes::check_new_volume(&desired, "Name", request.name.as_deref())?;
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
    let nsid = super::volumes::free_nsid(&desired);
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
        replica: None,
    };
    state
        .store
        .put(Table::Volumes, &id.to_string(), &volume)
        .await?;
    let built = super::volumes::pass_and_check_served(state, &fabric, &volume)
        .await
        .map(|_| ());
    let ready = settle_creation(state, &fabric, volume, built).await?;
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

/// A replica of a volume in a pool (`Volume.CreateReplicaTarget`).
#[derive(Debug, Clone)]
pub struct ReplicaRequest {
    pub source: u64,
    pub kind: ReplicaKind,
    /// The pool the target goes to: the source's (an lvol's replicas share
    /// its store's clusters).
    pub pool: u64,
    pub name: Option<String>,
}

/// Longest a snapshot or clone call may take on the store's owner (both
/// change metadata only: constant time whatever the size).
const REPLICA_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Makes a snapshot of a pool volume, or a clone of a snapshot, on the
/// store's owner, then serves it everywhere (a snapshot read-only).
pub async fn create_replica(
    state: &AppState,
    request: ReplicaRequest,
) -> Result<Volume, StorageError> {
    let fabric = ready_fabric(state).await?;
    let _guard = state.storage.lock.lock().await;
    let desired = desired(state)?;
    super::volumes::check_new_volume(&desired, "VolumeName", request.name.as_deref())?;
    let source = desired
        .volume(request.source)
        .cloned()
        .ok_or_else(|| not_found("volume", request.source))?;
    let Some(pool) = source.pool else {
        return Err(StorageError::Invalid {
            property: "ReplicaType",
            value: request.kind.redfish().into(),
            reason: format!(
                "volume {} is extents of the drives; only volumes of a thin pool have replicas",
                source.name
            ),
        });
    };
    if request.pool != pool {
        return Err(StorageError::Invalid {
            property: "TargetStoragePool",
            value: format!("pool {}", request.pool),
            reason: format!(
                "a replica of volume {} is made in its own pool, {pool}",
                source.name
            ),
        });
    }
    if source.state != VolumeState::Ready {
        return Err(StorageError::Unavailable(format!(
            "volume {} is still being created",
            source.name
        )));
    }
    match (request.kind, source.is_read_only()) {
        (ReplicaKind::Snapshot, true) => {
            return Err(StorageError::Invalid {
                property: "ReplicaType",
                value: "Snapshot".into(),
                reason: format!("volume {} is a snapshot already", source.name),
            });
        }
        (ReplicaKind::Clone, false) => {
            return Err(StorageError::Invalid {
                property: "ReplicaType",
                value: "Clone".into(),
                reason: format!(
                    "a clone is made of a snapshot; volume {} is none (make a Snapshot of it first)",
                    source.name
                ),
            });
        }
        _ => {}
    }
    let nsid = super::volumes::free_nsid(&desired);
    let id = state.store.next_id("volume").await?;
    let volume = Volume {
        id,
        name: request.name.unwrap_or_else(|| format!("Volume {id}")),
        display_name: None,
        uuid: uuid::Uuid::new_v4(),
        nsid,
        state: VolumeState::Creating,
        created: now_s(),
        provisioning: Provisioning::Thin,
        replica: Some(Replica {
            source: source.id,
            kind: request.kind,
        }),
        ..source.clone()
    };
    state
        .store
        .put(Table::Volumes, &id.to_string(), &volume)
        .await?;
    let built = match replicate(state, &source, &volume).await {
        Err((cluster, error)) => Err(vec![Failure {
            cluster,
            object: plan::volume_bdev(id),
            error,
        }]),
        Ok(()) => super::volumes::pass_and_check_served(state, &fabric, &volume)
            .await
            .map(|_| ()),
    };
    let ready = settle_creation(state, &fabric, volume, built).await?;
    tracing::info!(
        volume = id,
        source = source.id,
        kind = request.kind.redfish(),
        "replica created"
    );
    Ok(ready)
}

/// Ends a volume's creation: recorded Ready if it was `built`, else
/// removed again (and what of it the clusters hold deleted by a pass).
async fn settle_creation(
    state: &AppState,
    fabric: &super::plan::Fabric,
    volume: Volume,
    built: Result<(), Vec<Failure>>,
) -> Result<Volume, StorageError> {
    let key = volume.id.to_string();
    if let Err(failures) = built {
        state.store.remove(Table::Volumes, &key).await?;
        let _ = pass_locked(state, fabric).await;
        return Err(StorageError::Dataplane(failures));
    }
    let ready = Volume {
        state: VolumeState::Ready,
        ..volume
    };
    state.store.put(Table::Volumes, &key, &ready).await?;
    Ok(ready)
}

/// The snapshot or clone call, on the cluster that has the store open.
async fn replicate(
    state: &AppState,
    source: &Volume,
    target: &Volume,
) -> Result<(), (u32, String)> {
    let alias = source.lvol_alias().expect("a pool volume");
    let (cluster, socket) = store_owner(state, source).await.ok_or_else(|| {
        (
            0,
            "no running data cluster has the pool's store open".to_string(),
        )
    })?;
    let (method, params) = match target.replica.map(|r| r.kind) {
        Some(ReplicaKind::Clone) => (
            "bdev_lvol_clone",
            serde_json::json!({"snapshot_name": alias, "clone_name": target.lvol_name()}),
        ),
        _ => (
            "bdev_lvol_snapshot",
            serde_json::json!({"lvol_name": alias, "snapshot_name": target.lvol_name()}),
        ),
    };
    super::volumes::call(&socket, method, params, REPLICA_CALL_TIMEOUT)
        .await
        .map(|_| ())
        .map_err(|e| (cluster, e))
}

/// The running cluster with `volume`'s lvol, and its socket.
async fn store_owner(state: &AppState, volume: &Volume) -> Option<(u32, std::path::PathBuf)> {
    let alias = volume.lvol_alias()?;
    let observation = state.storage.observed()?;
    let cluster = observation
        .report
        .views
        .iter()
        .find(|(_, view)| view.lvols.contains_key(&alias))
        .map(|(cluster, _)| *cluster)?;
    running_clusters(state)
        .await
        .into_iter()
        .find(|(c, _)| *c == cluster)
}

/// Longest an inflate or decouple may take: they copy the clusters the
/// target reads through its snapshot.
const SPLIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1800);

/// Ends clone `target`'s reliance on its snapshot `source`: `inflate`
/// (`Volume.SplitReplication`) gives it its own copy of every cluster,
/// else (`RemoveReplicaRelationship`) of those the snapshot holds, its
/// parent becoming the snapshot's (`bdev_lvol_decouple_parent`). Either
/// way it is no replica afterwards. The copy runs without the storage
/// lock (the dataplane orders it with the clone's I/O), so the
/// reconciler goes on meanwhile.
pub async fn split_replica(
    state: &AppState,
    source: u64,
    target: u64,
    inflate: bool,
) -> Result<Volume, StorageError> {
    let (volume, socket) = {
        let _guard = state.storage.lock.lock().await;
        let desired = desired(state)?;
        let volume = desired
            .volume(target)
            .cloned()
            .ok_or_else(|| not_found("volume", target))?;
        match volume.replica {
            Some(Replica {
                source: s,
                kind: ReplicaKind::Clone,
            }) if s == source => {}
            _ => {
                return Err(StorageError::Invalid {
                    property: "TargetVolume",
                    value: format!("volume {target}"),
                    reason: format!(
                        "it is no clone of volume {source}; only a clone is split from its snapshot (a snapshot is deleted instead)"
                    ),
                });
            }
        }
        let (_, socket) = store_owner(state, &volume).await.ok_or_else(|| {
            StorageError::Unavailable("no running data cluster has the pool's store open".into())
        })?;
        (volume, socket)
    };
    let alias = volume.lvol_alias().expect("a pool volume");
    let method = if inflate {
        "bdev_lvol_inflate"
    } else {
        "bdev_lvol_decouple_parent"
    };
    super::volumes::call(
        &socket,
        method,
        serde_json::json!({"name": alias}),
        SPLIT_TIMEOUT,
    )
    .await
    .map_err(|error| {
        StorageError::Dataplane(vec![Failure {
            cluster: 0,
            object: plan::volume_bdev(target),
            error,
        }])
    })?;
    let _guard = state.storage.lock.lock().await;
    let current = desired(state)?
        .volume(target)
        .cloned()
        .ok_or_else(|| not_found("volume", target))?;
    // An inflated lvol holds every cluster: it is thick from then on.
    let provisioning = if inflate {
        Provisioning::Fixed
    } else {
        current.provisioning
    };
    let split = Volume {
        replica: None,
        provisioning,
        ..current
    };
    state
        .store
        .put(Table::Volumes, &target.to_string(), &split)
        .await?;
    tracing::info!(
        volume = target,
        source,
        method,
        "clone split from its snapshot"
    );
    Ok(split)
}

/// Grows a volume of a pool online: its lvol on the store's owner
/// (`bdev_lvol_resize`; a Fixed one gets its new clusters reserved and
/// zeroed, refused if the pool has too few), then the forwarders and the
/// namespaces everywhere with the next pass. Called with the storage lock
/// held. Shrinking is refused: the host's data past the new end would go.
pub(super) async fn grow_pool_volume(
    state: &AppState,
    fabric: &super::plan::Fabric,
    volume: Volume,
    capacity_bytes: u64,
) -> Result<Volume, StorageError> {
    let invalid = |reason: String| StorageError::Invalid {
        property: "CapacityBytes",
        value: capacity_bytes.to_string(),
        reason,
    };
    if volume.is_read_only() {
        return Err(invalid("a snapshot keeps the size it was taken at".into()));
    }
    let rounded = capacity_bytes
        .div_ceil(model::POOL_CLUSTER_BYTES)
        .saturating_mul(model::POOL_CLUSTER_BYTES);
    if rounded < volume.capacity_bytes {
        return Err(invalid(format!(
            "volumes of a pool grow, they do not shrink yet (it has {} bytes)",
            volume.capacity_bytes
        )));
    }
    if rounded > MAX_POOL_VOLUME_BYTES {
        return Err(invalid(format!("at most {MAX_POOL_VOLUME_BYTES} bytes")));
    }
    if rounded == volume.capacity_bytes {
        return Ok(volume);
    }
    let (cluster, socket) = store_owner(state, &volume).await.ok_or_else(|| {
        StorageError::Unavailable("no running data cluster has the pool's store open".into())
    })?;
    let alias = volume.lvol_alias().expect("a pool volume");
    let params = serde_json::json!({"name": alias, "size_in_mib": rounded / (1 << 20)});
    super::volumes::call(&socket, "bdev_lvol_resize", params, SPLIT_TIMEOUT)
        .await
        .map_err(|error| {
            // The store's NoSpace, as the dataplane words it.
            if error.contains("free clusters") {
                StorageError::InsufficientCapacity(format!(
                    "the pool has too few free clusters for a Fixed volume of {rounded} bytes: {error}"
                ))
            } else {
                StorageError::Dataplane(vec![Failure {
                    cluster,
                    object: plan::volume_bdev(volume.id),
                    error,
                }])
            }
        })?;
    let grown = Volume {
        capacity_bytes: rounded,
        ..volume
    };
    state
        .store
        .put(Table::Volumes, &grown.id.to_string(), &grown)
        .await?;
    tracing::info!(volume = grown.id, bytes = rounded, "pool volume grown");
    // The forwarders follow (`bdev_remote_resize`); a failure there is the
    // reconciler's to retry, the lvol has grown.
    let _ = pass_locked(state, fabric).await;
    Ok(grown)
}

/// Why pool volume `volume` cannot be deleted now, if it cannot: a
/// snapshot that more than one volume reads through (its one child, if
/// it has one, takes its clusters over).
pub fn check_deletable(
    state: &AppState,
    desired: &model::Desired,
    volume: &Volume,
) -> Result<(), StorageError> {
    let Some(alias) = volume.lvol_alias() else {
        return Ok(());
    };
    let Some(observation) = state.storage.observed() else {
        return Ok(());
    };
    let children: Vec<String> = observation
        .report
        .views
        .values()
        .find_map(|view| {
            let canonical = view.bdev_named(&alias)?;
            let lvol = &view.bdevs.get(canonical)?["driver_specific"]["lvol"];
            let clones = lvol["clones"].as_array()?;
            Some(
                clones
                    .iter()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect(),
            )
        })
        .unwrap_or_default();
    if children.len() <= 1 {
        return Ok(());
    }
    let names: Vec<String> = children
        .iter()
        .map(|lvol| {
            desired
                .volumes
                .iter()
                .find(|v| v.pool == volume.pool && &v.lvol_name() == lvol)
                .map_or_else(|| lvol.clone(), |v| format!("volume {} ({})", v.id, v.name))
        })
        .collect();
    Err(StorageError::InUse(format!(
        "snapshot {} is read through by {}; delete all but one of them first",
        volume.name,
        names.join(", ")
    )))
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

//! The storage model behind the Swordfish resources: desired state in
//! sled ([`model`]), where volumes go ([`placement`]), what each data
//! cluster must hold ([`plan`]) and the reconciler that makes it so
//! ([`reconcile`]).
//!
//! Every change runs under one lock: it is validated against the recorded
//! state, written to the store, and applied to the dataplanes by a
//! reconciliation pass before it is acknowledged. If the dataplanes cannot
//! carry it out, the record is removed and the pass repeated, so nothing is
//! left half made. Between changes the reconciler repeats its pass every
//! [`RECONCILE_PERIOD`], which rebuilds whatever a restarted cluster lost.

mod access;
pub mod check;
pub mod free_space;
pub mod health;
pub mod low_space;
pub mod model;
pub mod owner;
pub mod placement;
pub mod plan;
mod pools;
pub mod reconcile;
pub mod secrets;
mod volumes;

pub use access::{
    create_connection, create_endpoint, delete_connection, delete_endpoint, set_connection_keys,
};
pub use pools::{
    PoolVolumeRequest, ReplicaRequest, allocated_bytes, create_pool, create_pool_volume,
    create_replica, delete_pool, set_low_space_thresholds, split_replica, store_bytes,
};
pub use volumes::{
    VolumeRequest, check_initializable, create_volume, delete_volume, grow_volume,
    initialize_progress, initialize_volume, rename_volume,
};

use shoal_appliance::locks::RecoverRw;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use shoal_appliance::jsonrpc::RpcClient;

use crate::resources::appliance;
use crate::state::AppState;
use crate::store::{StoreError, Table};
use model::{Desired, Volume, VolumeState};
use placement::Drive;
use plan::Fabric;
use reconcile::{Failure, Report};

/// How often the reconciler checks the dataplanes between changes.
pub const RECONCILE_PERIOD: Duration = Duration::from_secs(2);

/// Why a storage change was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The change needs a part of the appliance that is not running.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    InsufficientCapacity(String),
    #[error("a {kind} named {name:?} already exists")]
    NameTaken { kind: &'static str, name: String },
    #[error("the appliance already has its maximum of {limit} {kind}")]
    Limit { kind: &'static str, limit: usize },
    #[error("{kind} {id} does not exist")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    InUse(String),
    /// Another connection gives host `host` other DH-HMAC-CHAP keys.
    #[error("connection {connection} gives host {host} other keys")]
    KeyConflict { connection: u64, host: String },
    /// A property's value cannot be used: (property, value, why).
    #[error("{property} = {value}: {reason}")]
    Invalid {
        property: &'static str,
        value: String,
        reason: String,
    },
    /// The dataplanes could not carry the change out; it was rolled back.
    #[error("the data clusters could not apply the change: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Dataplane(Vec<Failure>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the last reconciliation pass found.
pub struct Observation {
    pub at: Instant,
    pub report: Report,
}

/// The storage model's shared state (one per service).
#[derive(Default)]
pub struct Storage {
    /// Serialises changes and reconciliation passes.
    lock: tokio::sync::Mutex<()>,
    fabric: OnceLock<Fabric>,
    observed: RwLock<Option<Arc<Observation>>>,
    /// Each cluster's drive as last seen (kept while the cluster is down,
    /// so the pool's size does not flicker).
    drives: RwLock<std::collections::BTreeMap<u32, Drive>>,
    /// Wakes the reconciler early (a cluster came back, a change landed).
    wake: tokio::sync::Notify,
    /// Volumes being initialised, with their progress in percent: they
    /// cannot be deleted or initialised again meanwhile.
    initializing: std::sync::Mutex<std::collections::BTreeMap<u64, u8>>,
    /// Volumes a consistency check runs on (one each): they cannot be
    /// deleted or checked again meanwhile.
    checks: check::Checks,
    /// Where connection credentials are sealed and staged (set at start).
    keys: OnceLock<secrets::KeyFiles>,
    /// The NBD PSKs each cluster was given, by (cluster, identity): tags
    /// only, so a changed key is re-sent and an unchanged one is not (a
    /// re-sent key ends the TLS connections made with it).
    psks_sent: std::sync::Mutex<std::collections::BTreeMap<(u32, String), [u8; 8]>>,
}

impl Storage {
    /// Keeps connection credentials under `dir` (the management state
    /// directory).
    pub fn set_key_dir(&self, dir: &std::path::Path) {
        let _ = self.keys.set(secrets::KeyFiles::new(dir));
    }

    pub(crate) fn key_files(&self) -> Result<&secrets::KeyFiles, StorageError> {
        self.keys
            .get()
            .ok_or_else(|| StorageError::Unavailable("no key directory".into()))
    }

    /// The last pass's findings, if one ran.
    pub fn observed(&self) -> Option<Arc<Observation>> {
        self.observed.read_locked().clone()
    }

    fn record(&self, report: Report) {
        {
            let mut drives = self.drives.write_locked();
            for (cluster, view) in &report.views {
                let Some(bdev) = view.bdevs.get(&plan::drive_bdev(*cluster)) else {
                    continue;
                };
                if let (Some(block_size), Some(num_blocks)) =
                    (bdev["block_size"].as_u64(), bdev["num_blocks"].as_u64())
                {
                    drives.insert(
                        *cluster,
                        Drive {
                            cluster: *cluster,
                            block_size: block_size as u32,
                            num_blocks,
                        },
                    );
                }
            }
        }
        *self.observed.write_locked() = Some(Arc::new(Observation {
            at: Instant::now(),
            report,
        }));
    }
}

/// The storage's NVM subsystem NQN: one per appliance, from its UUID.
pub fn subsystem_nqn(service_uuid: &uuid::Uuid) -> String {
    format!("nqn.2026-11.io.shoal:{service_uuid}")
}

/// Facts about the front-ends, read once from the supervisor's config.
pub async fn fabric(state: &AppState) -> Option<Fabric> {
    if let Some(fabric) = state.storage.fabric.get() {
        return Some(fabric.clone());
    }
    let config = supervisor_call(state, "appliance_get_config").await?;
    let dataplane = &config["dataplane"];
    let uuid = state.service_uuid;
    let serial: String = format!("SHOAL{}", uuid.simple())
        .to_uppercase()
        .chars()
        .take(20)
        .collect();
    let fabric = Fabric {
        clusters: config["topology"]["data_clusters"].as_u64()? as u32,
        listen_address: dataplane["listen_address"].as_str()?.parse().ok()?,
        nvmf_base_port: dataplane["nvmf_base_port"].as_u64()? as u16,
        nbd_base_port: dataplane["nbd_base_port"].as_u64()? as u16,
        nbd_volumes: config["management"]["nbd_volume_exports"]
            .as_bool()
            .unwrap_or(true),
        nqn: subsystem_nqn(&uuid),
        serial_number: serial,
    };
    Some(state.storage.fabric.get_or_init(|| fabric).clone())
}

async fn supervisor_call(state: &AppState, method: &str) -> Option<Value> {
    let call = async {
        let mut client = RpcClient::connect(&state.supervisor_socket).await.ok()?;
        client.call(method, None).await.ok()
    };
    tokio::time::timeout(Duration::from_secs(2), call)
        .await
        .ok()
        .flatten()
}

/// The data clusters the supervisor reports running: index and socket.
/// A cached status with a cluster not running is asked again before the
/// answer is believed: a change refused on a view up to
/// `STATUS_MAX_AGE` old would be a 503 right after the cluster (or the
/// whole appliance) reported ready.
async fn running_clusters(state: &AppState) -> Vec<(u32, PathBuf)> {
    let Some(mut status) = appliance::status(state).await else {
        return Vec::new();
    };
    if !appliance::all_running(&status)
        && let Some(fresh) = appliance::fresh_status(state).await
    {
        status = fresh;
    }
    status["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["state"] == "running")
        .filter_map(|c| {
            Some((
                c["index"].as_u64()? as u32,
                PathBuf::from(c["rpc_socket"].as_str()?),
            ))
        })
        .collect()
}

/// The desired state as the store holds it.
pub fn desired(state: &AppState) -> Result<Desired, StoreError> {
    let mut desired = Desired {
        volumes: state.store.list(Table::Volumes)?,
        pools: state.store.list(Table::Pools)?,
        endpoints: state.store.list(Table::Endpoints)?,
        connections: state.store.list(Table::Connections)?,
        keys: Default::default(),
    };
    desired.volumes.sort_by_key(|v| v.id);
    desired.pools.sort_by_key(|p| p.id);
    desired.endpoints.sort_by_key(|e| e.id);
    desired.connections.sort_by_key(|c| c.id);
    let mut unopened = Vec::new();
    for connection in &desired.connections {
        let Some(sealed) = &connection.keys else {
            continue;
        };
        let opened = state
            .storage
            .keys
            .get()
            .ok_or(secrets::SealError::Open)
            .and_then(|files| files.seal_key()?.open(sealed));
        match opened {
            Ok(keys) => {
                desired.keys.insert(connection.id, keys);
            }
            Err(e) => {
                // Never served without the keys it was given.
                tracing::error!(connection = connection.id, "connection left out: {e}");
                unopened.push(connection.id);
            }
        }
    }
    desired.connections.retain(|c| !unopened.contains(&c.id));
    Ok(desired)
}

/// Runs one pass with the lock held, records and returns its report.
async fn pass_locked(state: &AppState, fabric: &Fabric) -> Result<Arc<Observation>, StorageError> {
    let desired = desired(state)?;
    let running = running_clusters(state).await;
    let report = match state.storage.keys.get() {
        Some(files) => {
            reconcile::pass(
                fabric,
                &desired,
                &running,
                &reconcile::Credentials {
                    files,
                    psks_sent: &state.storage.psks_sent,
                },
            )
            .await
        }
        None => return Err(StorageError::Unavailable("no key directory".into())),
    };
    state.storage.record(report);
    Ok(state.storage.observed().expect("just recorded"))
}

/// The reconciler: rolls back creations a previous life left unfinished,
/// then passes every [`RECONCILE_PERIOD`] (or when woken) until `stop`.
pub async fn run_reconciler(state: AppState, stop: tokio_util::sync::CancellationToken) {
    let fabric = loop {
        if let Some(fabric) = fabric(&state).await {
            break fabric;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RECONCILE_PERIOD) => {}
        }
    };
    if let Err(e) = roll_back_unfinished(&state).await {
        tracing::error!("cannot roll back unfinished volume creations: {e}");
    }
    let mut reported: BTreeSet<Failure> = BTreeSet::new();
    loop {
        {
            let _guard = state.storage.lock.lock().await;
            match pass_locked(&state, &fabric).await {
                Ok(observation) => {
                    // Each distinct failure is logged once, not every pass.
                    let now: BTreeSet<Failure> =
                        observation.report.failures.iter().cloned().collect();
                    for failure in now.difference(&reported) {
                        tracing::warn!("reconciler: {failure}");
                    }
                    reported = now;
                }
                Err(e) => tracing::error!("reconciler: {e}"),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = state.storage.wake.notified() => {}
            _ = tokio::time::sleep(RECONCILE_PERIOD) => {}
        }
    }
}

/// A volume still `Creating` was never acknowledged (the service stopped
/// during its POST): it is removed, and the next pass deletes whatever of
/// it the dataplanes hold.
async fn roll_back_unfinished(state: &AppState) -> Result<(), StoreError> {
    for volume in desired(state)?.volumes {
        if volume.state == VolumeState::Creating {
            tracing::warn!(
                volume = volume.id,
                "rolling back volume {} whose creation did not finish",
                volume.name
            );
            state
                .store
                .remove(Table::Volumes, &volume.id.to_string())
                .await?;
        }
    }
    Ok(())
}

/// The checked fabric, or why storage cannot change now.
async fn ready_fabric(state: &AppState) -> Result<Fabric, StorageError> {
    fabric(state).await.ok_or_else(|| {
        StorageError::Unavailable(
            "the supervisor does not answer; storage cannot change now".into(),
        )
    })
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Volume names: 1 to 64 printable characters.
pub fn check_name(property: &'static str, name: &str) -> Result<(), StorageError> {
    if name.is_empty()
        || name.chars().count() > model::MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(StorageError::Invalid {
            property,
            value: name.to_string(),
            reason: format!(
                "must be 1 to {} printable characters",
                model::MAX_NAME_CHARS
            ),
        });
    }
    Ok(())
}

fn not_found(kind: &'static str, id: u64) -> StorageError {
    StorageError::NotFound {
        kind,
        id: id.to_string(),
    }
}

/// How the clusters serve volume `volume` now: (serving, expected).
pub fn serving(state: &AppState, volume: &Volume) -> Option<(usize, usize)> {
    let observation = state.storage.observed()?;
    let fabric = state.storage.fabric.get()?;
    let serving = observation
        .report
        .views
        .values()
        .filter(|view| view.serves_volume(volume))
        .count();
    Some((serving, fabric.clusters as usize))
}

/// A redundant volume's raid as its owner last described it
/// (`bdev_raid_get_bdevs`' object), if a running cluster holds it.
pub fn raid_of(state: &AppState, volume: &Volume) -> Option<serde_json::Value> {
    let observation = state.storage.observed()?;
    let bdev = plan::volume_bdev(volume.id);
    observation.report.views.values().find_map(|view| {
        let raid = &view.bdevs.get(&bdev)?["driver_specific"]["raid"];
        raid.is_object().then(|| raid.clone())
    })
}

/// Asks the reconciler for a pass now (a data cluster came back: it gets
/// its share without waiting for the next period).
pub fn wake(state: &AppState) {
    state.storage.wake.notify_one();
}

/// Every data cluster's drive as last seen by the reconciler.
pub fn known_drives(state: &AppState) -> Vec<Drive> {
    state
        .storage
        .drives
        .read_locked()
        .values()
        .copied()
        .collect()
}

/// The front-end facts if they were read already (the reconciler reads
/// them at start).
pub fn cached_fabric(state: &AppState) -> Option<&Fabric> {
    state.storage.fabric.get()
}

/// The number of data clusters serving the fabric (0 until known).
pub fn fabric_clusters(state: &AppState) -> u32 {
    cached_fabric(state).map_or(0, |f| f.clusters)
}

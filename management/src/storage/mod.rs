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

pub mod model;
pub mod placement;
pub mod plan;
pub mod reconcile;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use shoal_appliance::jsonrpc::RpcClient;

use crate::dataplane;
use crate::resources::appliance;
use crate::state::AppState;
use crate::store::{StoreError, Table};
use model::{
    Access, Connection, Desired, InitiatorEndpoint, MAX_CONNECTIONS, MAX_ENDPOINTS, MAX_VOLUMES,
    RaidType, Volume, VolumeAccess, VolumeState,
};
use placement::Drive;
use plan::Fabric;
use reconcile::{Failure, Report};

/// How often the reconciler checks the dataplanes between changes.
pub const RECONCILE_PERIOD: Duration = Duration::from_secs(2);
/// Longest a scrub (zeroing) of one leg may take.
const SCRUB_TIMEOUT: Duration = Duration::from_secs(600);

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
}

impl Storage {
    /// The last pass's findings, if one ran.
    pub fn observed(&self) -> Option<Arc<Observation>> {
        self.observed.read().expect("observation lock").clone()
    }

    fn record(&self, report: Report) {
        {
            let mut drives = self.drives.write().expect("drives lock");
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
        *self.observed.write().expect("observation lock") = Some(Arc::new(Observation {
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
async fn running_clusters(state: &AppState) -> Vec<(u32, PathBuf)> {
    let Some(status) = appliance::status(state).await else {
        return Vec::new();
    };
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
        endpoints: state.store.list(Table::Endpoints)?,
        connections: state.store.list(Table::Connections)?,
    };
    desired.volumes.sort_by_key(|v| v.id);
    desired.endpoints.sort_by_key(|e| e.id);
    desired.connections.sort_by_key(|c| c.id);
    Ok(desired)
}

/// Runs one pass with the lock held, records and returns its report.
async fn pass_locked(state: &AppState, fabric: &Fabric) -> Result<Arc<Observation>, StorageError> {
    let desired = desired(state)?;
    let running = running_clusters(state).await;
    let report = reconcile::pass(fabric, &desired, &running).await;
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

/// A new volume, as the Redfish POST asks for it (already type-checked).
#[derive(Debug, Clone)]
pub struct VolumeRequest {
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub capacity_bytes: u64,
    pub raid_type: RaidType,
    pub strip_bytes: Option<u64>,
    /// Data clusters whose drives hold the legs, in stripe order; all of
    /// them when absent.
    pub clusters: Option<Vec<u32>>,
}

/// The drive of each cluster in `clusters`, as the running clusters report it.
async fn drives(state: &AppState, clusters: &[u32]) -> Result<Vec<Drive>, StorageError> {
    let running = running_clusters(state).await;
    let mut drives = Vec::new();
    for &cluster in clusters {
        let socket = running
            .iter()
            .find(|(c, _)| *c == cluster)
            .map(|(_, s)| s)
            .ok_or_else(|| {
                StorageError::Unavailable(format!(
                    "data cluster {cluster} is not running; its drive cannot take a volume now"
                ))
            })?;
        let bdev = dataplane::call(
            socket,
            "bdev_get_bdevs",
            Some(json!({"name": plan::drive_bdev(cluster)})),
        )
        .await
        .and_then(|list| list.get(0).cloned())
        .ok_or_else(|| {
            StorageError::Unavailable(format!("data cluster {cluster} has no drive open"))
        })?;
        drives.push(Drive {
            cluster,
            block_size: bdev["block_size"].as_u64().unwrap_or(512) as u32,
            num_blocks: bdev["num_blocks"].as_u64().unwrap_or(0),
        });
    }
    Ok(drives)
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

/// Creates a volume: placed, built on every running cluster, its new
/// blocks zeroed (a volume never shows a deleted one's data), then
/// recorded as ready. Fully rolled back on any failure.
pub async fn create_volume(
    state: &AppState,
    request: VolumeRequest,
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
    let clusters = request
        .clusters
        .clone()
        .unwrap_or_else(|| (0..fabric.clusters).collect());
    let drives = drives(state, &clusters).await?;
    let block_size = drives[0].block_size;
    if let Some(odd) = drives.iter().find(|d| d.block_size != block_size) {
        return Err(StorageError::Invalid {
            property: "Links/Drives",
            value: plan::drive_bdev(odd.cluster),
            reason: format!(
                "its {}-byte blocks differ from drive{}'s {block_size}: a volume's drives need one block size",
                odd.block_size, drives[0].cluster
            ),
        });
    }
    let strip_bytes = request.strip_bytes.unwrap_or(model::DEFAULT_STRIP_BYTES);
    if !strip_bytes.is_power_of_two()
        || !(model::MIN_STRIP_BYTES..=model::MAX_STRIP_BYTES).contains(&strip_bytes)
        || strip_bytes < u64::from(block_size)
    {
        return Err(StorageError::Invalid {
            property: "StripSizeBytes",
            value: strip_bytes.to_string(),
            reason: format!(
                "must be a power of two from {} to {} bytes",
                model::MIN_STRIP_BYTES,
                model::MAX_STRIP_BYTES
            ),
        });
    }
    let pool_bytes: u64 = drives
        .iter()
        .map(|d| placement::free_bytes(d, &desired.volumes))
        .sum();
    let leg_bytes = placement::leg_bytes(request.capacity_bytes, clusters.len() as u32);
    let legs = placement::allocate(&drives, &desired.volumes, leg_bytes).map_err(
        |_| {
            StorageError::InsufficientCapacity(format!(
                "{} bytes do not fit: the drives chosen have {pool_bytes} bytes free ({} per drive needed, as {} legs of whole MiB)",
                request.capacity_bytes,
                leg_bytes,
                clusters.len()
            ))
        },
    )?;
    let nsid = (1..=MAX_VOLUMES as u32)
        .find(|n| desired.volumes.iter().all(|v| v.nsid != *n))
        .expect("fewer volumes than namespace IDs");
    let id = state.store.next_id("volume").await?;
    let volume = Volume {
        id,
        name: request.name.unwrap_or_else(|| format!("Volume {id}")),
        display_name: request.display_name,
        raid_type: request.raid_type,
        capacity_bytes: leg_bytes * clusters.len() as u64,
        block_size,
        strip_bytes,
        uuid: uuid::Uuid::new_v4(),
        nsid,
        legs,
        state: VolumeState::Creating,
        created: now_s(),
    };
    state
        .store
        .put(Table::Volumes, &id.to_string(), &volume)
        .await?;
    match build_volume(state, &fabric, &volume).await {
        Ok(()) => {
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
                clusters = ?clusters,
                "volume created"
            );
            Ok(ready)
        }
        Err(failures) => {
            state.store.remove(Table::Volumes, &id.to_string()).await?;
            let _ = pass_locked(state, &fabric).await;
            Err(StorageError::Dataplane(failures))
        }
    }
}

/// Builds a recorded volume on every running cluster and zeroes its legs.
async fn build_volume(
    state: &AppState,
    fabric: &Fabric,
    volume: &Volume,
) -> Result<(), Vec<Failure>> {
    let observation = pass_locked(state, fabric).await.map_err(|e| {
        vec![Failure {
            cluster: 0,
            object: plan::volume_bdev(volume.id),
            error: e.to_string(),
        }]
    })?;
    let report = &observation.report;
    let mut failures: Vec<Failure> = report.failures_of(volume.id).into_iter().cloned().collect();
    for (cluster, _) in running_clusters(state).await {
        let served = report
            .views
            .get(&cluster)
            .is_some_and(|v| v.serves(volume.nsid, &plan::volume_bdev(volume.id)));
        if !served && failures.iter().all(|f| f.cluster != cluster) {
            failures.push(Failure {
                cluster,
                object: plan::volume_bdev(volume.id),
                error: "the volume is not served after the pass".into(),
            });
        }
    }
    if !failures.is_empty() {
        return Err(failures);
    }
    scrub(state, volume).await
}

/// Zeroes every leg of `volume` on the cluster that owns it, in parallel.
async fn scrub(state: &AppState, volume: &Volume) -> Result<(), Vec<Failure>> {
    let running = running_clusters(state).await;
    let zeroing = volume.legs.iter().enumerate().map(|(index, leg)| {
        let socket = running
            .iter()
            .find(|(c, _)| *c == leg.cluster)
            .map(|(_, s)| s.clone());
        let name = plan::leg_bdev(volume.id, index);
        async move {
            let failure = |error: String| Failure {
                cluster: leg.cluster,
                object: name.clone(),
                error,
            };
            let socket = socket.ok_or_else(|| failure("the cluster stopped".into()))?;
            zero_bdev(&socket, &name, None).await.map_err(failure)
        }
    });
    let failures: Vec<Failure> = futures_util::future::join_all(zeroing)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// `bdev_write_zeroes` on one cluster; `range` in blocks, all when `None`.
pub async fn zero_bdev(
    socket: &std::path::Path,
    bdev: &str,
    range: Option<(u64, u64)>,
) -> Result<(), String> {
    let mut params = json!({"name": bdev});
    if let Some((offset, blocks)) = range {
        params["offset_blocks"] = json!(offset);
        params["num_blocks"] = json!(blocks);
    }
    let call = async {
        let mut client = RpcClient::connect(socket)
            .await
            .map_err(|e| e.to_string())?;
        client
            .call("bdev_write_zeroes", Some(params))
            .await
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(SCRUB_TIMEOUT, call).await {
        Ok(result) => result.map(|_| ()),
        Err(_) => Err(format!("zeroing did not finish within {SCRUB_TIMEOUT:?}")),
    }
}

/// How far the initialisation of volume `id` is, while one runs.
pub fn initialize_progress(state: &AppState, id: u64) -> Option<u8> {
    state
        .storage
        .initializing
        .lock()
        .expect("initializing lock")
        .get(&id)
        .copied()
}

/// Marks a volume as being initialised until dropped.
struct Initializing<'a> {
    state: &'a AppState,
    id: u64,
}

impl Drop for Initializing<'_> {
    fn drop(&mut self) {
        self.state
            .storage
            .initializing
            .lock()
            .expect("initializing lock")
            .remove(&self.id);
    }
}

/// Blocks zeroed by one call while initialising (progress moves per slice).
const INITIALIZE_SLICE_BYTES: u64 = 64 << 20;

/// Zeroes every block of volume `id` (Volume.Initialize), each leg on its
/// own cluster, all legs at once; `progress` hears the percentage done.
pub async fn initialize_volume(
    state: &AppState,
    id: u64,
    progress: impl Fn(u8),
) -> Result<Volume, StorageError> {
    let volume = {
        let _guard = state.storage.lock.lock().await;
        let desired = desired(state)?;
        let volume = desired
            .volume(id)
            .cloned()
            .ok_or_else(|| not_found("volume", id))?;
        let mut initializing = state
            .storage
            .initializing
            .lock()
            .expect("initializing lock");
        if initializing.contains_key(&id) {
            return Err(StorageError::InUse(format!(
                "volume {} is being initialised already",
                volume.name
            )));
        }
        initializing.insert(id, 0);
        volume
    };
    let _marker = Initializing { state, id };
    let running = running_clusters(state).await;
    let total: u64 = volume.legs.iter().map(|l| l.blocks()).sum();
    let done = std::sync::atomic::AtomicU64::new(0);
    let report = |blocks: u64| {
        let so_far = done.fetch_add(blocks, std::sync::atomic::Ordering::Relaxed) + blocks;
        let percent = (so_far * 100 / total.max(1)).min(100) as u8;
        if let Some(p) = state
            .storage
            .initializing
            .lock()
            .expect("initializing lock")
            .get_mut(&id)
        {
            *p = percent;
        }
        progress(percent);
    };
    let slice = INITIALIZE_SLICE_BYTES / u64::from(volume.block_size);
    let legs = volume.legs.iter().enumerate().map(|(index, leg)| {
        let socket = running
            .iter()
            .find(|(c, _)| *c == leg.cluster)
            .map(|(_, s)| s.clone());
        let name = plan::leg_bdev(volume.id, index);
        let report = &report;
        async move {
            let failure = |error: String| Failure {
                cluster: leg.cluster,
                object: name.clone(),
                error,
            };
            let socket = socket.ok_or_else(|| failure("the cluster is not running".into()))?;
            let mut at = 0;
            while at < leg.blocks() {
                let count = slice.min(leg.blocks() - at);
                zero_bdev(&socket, &name, Some((at, count)))
                    .await
                    .map_err(failure)?;
                at += count;
                report(count);
            }
            Ok::<(), Failure>(())
        }
    });
    let failures: Vec<Failure> = futures_util::future::join_all(legs)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if !failures.is_empty() {
        return Err(StorageError::Dataplane(failures));
    }
    tracing::info!(volume = id, name = volume.name, "volume initialised");
    Ok(volume)
}

/// Renames a volume (`Name`, `DisplayName`).
pub async fn rename_volume(
    state: &AppState,
    id: u64,
    name: Option<String>,
    display_name: Option<Option<String>>,
) -> Result<Volume, StorageError> {
    let _guard = state.storage.lock.lock().await;
    let desired = desired(state)?;
    let mut volume = desired
        .volume(id)
        .cloned()
        .ok_or_else(|| not_found("volume", id))?;
    if let Some(name) = name {
        check_name("Name", &name)?;
        if desired.volumes.iter().any(|v| v.name == name && v.id != id) {
            return Err(StorageError::NameTaken {
                kind: "volume",
                name,
            });
        }
        volume.name = name;
    }
    if let Some(display_name) = display_name {
        if let Some(text) = &display_name {
            check_name("DisplayName", text)?;
        }
        volume.display_name = display_name;
    }
    state
        .store
        .put(Table::Volumes, &id.to_string(), &volume)
        .await?;
    Ok(volume)
}

/// Grows volume `id` to at least `capacity_bytes`, online: each leg takes
/// the free blocks right after it (zeroed first, so no deleted volume's
/// data shows), then every cluster grows its parts, remote legs and stripe
/// in place and NVMe hosts get a namespace-changed event. Existing data
/// stays where it is. Rolled back if the clusters cannot carry it out.
pub async fn grow_volume(
    state: &AppState,
    id: u64,
    capacity_bytes: u64,
) -> Result<Volume, StorageError> {
    let fabric = ready_fabric(state).await?;
    let _guard = state.storage.lock.lock().await;
    let desired = desired(state)?;
    let volume = desired
        .volume(id)
        .cloned()
        .ok_or_else(|| not_found("volume", id))?;
    if capacity_bytes < volume.capacity_bytes {
        return Err(StorageError::Invalid {
            property: "CapacityBytes",
            value: capacity_bytes.to_string(),
            reason: format!(
                "volumes grow, they never shrink (it has {} bytes)",
                volume.capacity_bytes
            ),
        });
    }
    let leg_bytes = placement::leg_bytes(capacity_bytes, volume.legs.len() as u32);
    if leg_bytes * volume.legs.len() as u64 == volume.capacity_bytes {
        return Ok(volume);
    }
    if initialize_progress(state, id).is_some() {
        return Err(StorageError::InUse(format!(
            "volume {} is being initialised; grow it when its task has ended",
            volume.name
        )));
    }
    let clusters: Vec<u32> = volume.clusters().collect();
    let drives = drives(state, &clusters).await?;
    let legs = placement::grow(&drives, &desired.volumes, &volume, leg_bytes)
        .map_err(|e| StorageError::InsufficientCapacity(e.to_string()))?;
    scrub_growth(state, &volume, &legs)
        .await
        .map_err(StorageError::Dataplane)?;
    let grown = Volume {
        capacity_bytes: leg_bytes * volume.legs.len() as u64,
        legs,
        ..volume.clone()
    };
    state
        .store
        .put(Table::Volumes, &id.to_string(), &grown)
        .await?;
    let observation = pass_locked(state, &fabric).await?;
    let bdev = plan::volume_bdev(id);
    let blocks = grown.capacity_bytes / u64::from(grown.block_size);
    let mut failures: Vec<Failure> = observation
        .report
        .failures_of(id)
        .into_iter()
        .cloned()
        .collect();
    for (cluster, view) in &observation.report.views {
        let size = view.bdevs.get(&bdev).and_then(|b| b["num_blocks"].as_u64());
        if size != Some(blocks) && failures.iter().all(|f| f.cluster != *cluster) {
            failures.push(Failure {
                cluster: *cluster,
                object: bdev.clone(),
                error: format!("has {size:?} blocks after the pass, not {blocks}"),
            });
        }
    }
    if !failures.is_empty() {
        // Back to the old record: the next passes rebuild whatever grew.
        state
            .store
            .put(Table::Volumes, &id.to_string(), &volume)
            .await?;
        let _ = pass_locked(state, &fabric).await;
        return Err(StorageError::Dataplane(failures));
    }
    tracing::info!(
        volume = id,
        from = volume.capacity_bytes,
        to = grown.capacity_bytes,
        "volume grew"
    );
    Ok(grown)
}

/// Zeroes the blocks each leg is about to take, through a temporary part
/// over just those blocks on the leg's cluster.
async fn scrub_growth(
    state: &AppState,
    volume: &Volume,
    grown: &[model::Leg],
) -> Result<(), Vec<Failure>> {
    let running = running_clusters(state).await;
    let steps = volume
        .legs
        .iter()
        .zip(grown)
        .enumerate()
        .map(|(index, (old, new))| {
            let socket = running
                .iter()
                .find(|(c, _)| *c == old.cluster)
                .map(|(_, s)| s.clone());
            let name = plan::growth_bdev(volume.id, index);
            let start = old.extents[0].end();
            let blocks = new.blocks() - old.blocks();
            async move {
                let failure = |error: String| Failure {
                    cluster: old.cluster,
                    object: name.clone(),
                    error,
                };
                let socket = socket.ok_or_else(|| failure("the cluster is not running".into()))?;
                let call = |method: &'static str, params: Value| {
                    let socket = socket.clone();
                    async move {
                        let mut client = RpcClient::connect(&socket)
                            .await
                            .map_err(|e| e.to_string())?;
                        client
                            .call(method, Some(params))
                            .await
                            .map(|_| ())
                            .map_err(|e| format!("{method}: {e}"))
                    }
                };
                call(
                    "bdev_part_create",
                    json!({"name": name, "base_bdev": plan::drive_bdev(old.cluster),
                       "offset_blocks": start, "num_blocks": blocks}),
                )
                .await
                .map_err(failure)?;
                let zeroed = zero_bdev(&socket, &name, None).await;
                let deleted = call("bdev_part_delete", json!({"name": name})).await;
                zeroed.map_err(failure)?;
                deleted.map_err(failure)
            }
        });
    let failures: Vec<Failure> = futures_util::future::join_all(steps)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

fn not_found(kind: &'static str, id: u64) -> StorageError {
    StorageError::NotFound {
        kind,
        id: id.to_string(),
    }
}

/// Deletes a volume that no connection uses; its dataplane objects go with
/// the next pass (this one, when the clusters run).
pub async fn delete_volume(state: &AppState, id: u64) -> Result<(), StorageError> {
    let fabric = ready_fabric(state).await?;
    let _guard = state.storage.lock.lock().await;
    let desired = desired(state)?;
    let volume = desired.volume(id).ok_or_else(|| not_found("volume", id))?;
    if initialize_progress(state, id).is_some() {
        return Err(StorageError::InUse(format!(
            "volume {} is being initialised; delete it when its task has ended",
            volume.name
        )));
    }
    if let Some(connection) = desired.connections_of(id).next() {
        return Err(StorageError::InUse(format!(
            "volume {} is used by connection {} ({}); delete the connection first",
            volume.name, connection.id, connection.name
        )));
    }
    state.store.remove(Table::Volumes, &id.to_string()).await?;
    tracing::info!(volume = id, name = volume.name, "volume deleted");
    let _ = pass_locked(state, &fabric).await;
    Ok(())
}

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
    }
    for id in &initiators {
        desired
            .endpoint(*id)
            .ok_or_else(|| not_found("initiator endpoint", *id))?;
    }
    if let Some(name) = &name {
        check_name("Name", name)?;
    }
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

/// How the clusters serve volume `volume` now: (serving, expected).
pub fn serving(state: &AppState, volume: &Volume) -> Option<(usize, usize)> {
    let observation = state.storage.observed()?;
    let fabric = state.storage.fabric.get()?;
    let bdev = plan::volume_bdev(volume.id);
    let serving = observation
        .report
        .views
        .values()
        .filter(|view| view.serves(volume.nsid, &bdev))
        .count();
    Some((serving, fabric.clusters as usize))
}

/// Asks the reconciler for a pass soon.
pub fn wake(state: &AppState) {
    state.storage.wake.notify_one();
}

/// Every data cluster's drive as last seen by the reconciler.
pub fn known_drives(state: &AppState) -> Vec<Drive> {
    state
        .storage
        .drives
        .read()
        .expect("drives lock")
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

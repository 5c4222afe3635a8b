//! Volumes of the storage model: creation (placement, build on every
//! cluster, zeroing, rollback), online growth, renaming, initialisation
//! and deletion. Every change holds the storage lock and is applied by a
//! reconciliation pass before it returns.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_appliance::jsonrpc::RpcClient;

use super::free_space::{self, FileSystemSpace};
use super::model::{self, Leg, MAX_VOLUMES, RaidType, Volume, VolumeState};
use super::placement::{self, Drive};
use super::plan::Fabric;
use super::reconcile::Failure;
use super::{
    StorageError, check_name, desired, not_found, now_s, pass_locked, plan, ready_fabric,
    running_clusters,
};
use crate::dataplane;
use crate::state::AppState;
use crate::store::Table;

/// Longest a scrub (zeroing) of one leg may take.
const SCRUB_TIMEOUT: Duration = Duration::from_secs(600);

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

/// The drive of each cluster in `clusters`, as the running clusters report
/// it, with the file system space under it (`None`: not a file).
async fn drives(
    state: &AppState,
    clusters: &[u32],
) -> Result<(Vec<Drive>, Vec<Option<FileSystemSpace>>), StorageError> {
    let running = running_clusters(state).await;
    let mut drives = Vec::new();
    let mut spaces = Vec::new();
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
        spaces.push(drive_file_space(cluster, &bdev)?);
    }
    Ok((drives, spaces))
}

/// The file system space under a drive that is a file (the uring bdev's
/// `filename`); `None` for a block device or a drive of another module.
fn drive_file_space(cluster: u32, bdev: &Value) -> Result<Option<FileSystemSpace>, StorageError> {
    let Some(file) = bdev["driver_specific"]["uring"]["filename"].as_str() else {
        return Ok(None);
    };
    free_space::probe(std::path::Path::new(file)).map_err(|e| {
        StorageError::Unavailable(format!(
            "cannot see the free space under drive{cluster} ({file}): {e}"
        ))
    })
}

/// Refuses new blocks (`bytes[i]` on the drive of `spaces[i]`) that the
/// file systems under the drives do not have room for.
fn check_free_space(spaces: &[Option<FileSystemSpace>], bytes: &[u64]) -> Result<(), StorageError> {
    let demands: Vec<_> = spaces.iter().cloned().zip(bytes.iter().copied()).collect();
    match free_space::shortfall(&demands, free_space::RESERVE_BYTES) {
        None => Ok(()),
        Some(short) => Err(StorageError::InsufficientCapacity(format!(
            "the volume does not fit the space really free: {short}"
        ))),
    }
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
    check_new_volume(&desired, "Name", request.name.as_deref())?;
    let clusters = request
        .clusters
        .clone()
        .unwrap_or_else(|| default_clusters(request.raid_type, fabric.clusters));
    if let Some(mut reason) = request.raid_type.leg_count_error(clusters.len() as u32) {
        if request.clusters.is_none() {
            reason += &format!(" (all the appliance has: {})", fabric.clusters);
        }
        return Err(StorageError::Invalid {
            property: "RAIDType",
            value: request.raid_type.redfish().to_string(),
            reason,
        });
    }
    let (drives, spaces) = drives(state, &clusters).await?;
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
    let strip_bytes = request
        .strip_bytes
        .unwrap_or(request.raid_type.default_strip_bytes());
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
    // A redundant volume's legs each hold their share of the data plus the
    // raid's superblock area; the capacity is rounded up to whole stripes.
    let layout = placement::layout(
        request.raid_type,
        request.capacity_bytes,
        clusters.len() as u32,
    );
    let leg_bytes = layout.leg_bytes;
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
    check_free_space(&spaces, &vec![leg_bytes; clusters.len()])?;
    let nsid = free_nsid(&desired);
    let id = state.store.next_id("volume").await?;
    let volume = Volume {
        id,
        name: request.name.unwrap_or_else(|| format!("Volume {id}")),
        display_name: request.display_name,
        raid_type: request.raid_type,
        capacity_bytes: layout.capacity_bytes,
        block_size,
        strip_bytes,
        uuid: uuid::Uuid::new_v4(),
        nsid,
        legs,
        state: VolumeState::Creating,
        created: now_s(),
        pool: None,
        provisioning: model::Provisioning::Fixed,
        replica: None,
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
            // Zeroing may have taken space on the drives' file systems
            // before it failed (a full one fails it half way).
            release_space(state, &volume).await;
            Err(StorageError::Dataplane(failures))
        }
    }
}

/// Refuses a new volume past [`MAX_VOLUMES`] or named as another
/// (`property`: the request's name for it).
pub(super) fn check_new_volume(
    desired: &model::Desired,
    property: &'static str,
    name: Option<&str>,
) -> Result<(), StorageError> {
    if desired.volumes.len() >= MAX_VOLUMES {
        return Err(StorageError::Limit {
            kind: "volumes",
            limit: MAX_VOLUMES,
        });
    }
    if let Some(name) = name {
        check_name(property, name)?;
        if desired.volumes.iter().any(|v| v.name == name) {
            return Err(StorageError::NameTaken {
                kind: "volume",
                name: name.to_string(),
            });
        }
    }
    Ok(())
}

/// The lowest namespace ID no volume has (there are as many as volumes
/// may be, and the caller checked the count).
pub(super) fn free_nsid(desired: &model::Desired) -> u32 {
    (1..=MAX_VOLUMES as u32)
        .find(|n| desired.volumes.iter().all(|v| v.nsid != *n))
        .expect("fewer volumes than namespace IDs")
}

/// Builds a recorded volume on every running cluster and zeroes its legs.
async fn build_volume(
    state: &AppState,
    fabric: &Fabric,
    volume: &Volume,
) -> Result<(), Vec<Failure>> {
    let observation = pass_and_check_served(state, fabric, volume).await?;
    let report = &observation.report;
    if volume.raid_type.has_owner() {
        return scrub_through_owner(state, volume, &report.views).await;
    }
    scrub(state, volume).await
}

/// Runs a pass and checks that every running cluster serves `volume`
/// (the failures the pass met on it, or the clusters that do not).
pub(super) async fn pass_and_check_served(
    state: &AppState,
    fabric: &Fabric,
    volume: &Volume,
) -> Result<std::sync::Arc<super::Observation>, Vec<Failure>> {
    let object = plan::volume_bdev(volume.id);
    let observation = pass_locked(state, fabric).await.map_err(|e| {
        vec![Failure {
            cluster: 0,
            object: object.clone(),
            error: e.to_string(),
        }]
    })?;
    let report = &observation.report;
    let mut failures: Vec<Failure> = report.failures_of(volume.id).into_iter().cloned().collect();
    for (cluster, _) in running_clusters(state).await {
        let served = report
            .views
            .get(&cluster)
            .is_some_and(|view| view.serves_volume(volume));
        if !served && failures.iter().all(|f| f.cluster != cluster) {
            failures.push(Failure {
                cluster,
                object: object.clone(),
                error: "the volume is not served after the pass".into(),
            });
        }
    }
    if failures.is_empty() {
        Ok(observation)
    } else {
        Err(failures)
    }
}

/// The clusters a volume's legs go to when the POST names none: every
/// cluster for striped volumes, the first two for RAID1, the largest even
/// number for RAID10, every cluster up to the raid's limit for RAID5 and
/// RAID6 (one leg per cluster: the cluster is the failure domain).
fn default_clusters(raid_type: RaidType, clusters: u32) -> Vec<u32> {
    let count = match raid_type {
        RaidType::Raid10 => clusters - clusters % 2,
        _ => raid_type
            .max_legs()
            .map_or(clusters, |max| clusters.min(max)),
    };
    (0..count).collect()
}

/// Zeroes a redundant volume through its raid on the owner: the legs'
/// first MiBs are the raid's superblock and bitmap, which zeroing the legs
/// would wipe, and the raid zeroes every mirror alike. A parity raid
/// cannot write zeroes (its parity must follow them); the dataplane's
/// `bdev_write_zeroes` then writes buffers of zeroes through it, so parity
/// and data agree from the start.
async fn scrub_through_owner(
    state: &AppState,
    volume: &Volume,
    views: &std::collections::BTreeMap<u32, super::reconcile::ClusterView>,
) -> Result<(), Vec<Failure>> {
    let name = plan::volume_bdev(volume.id);
    let owner = views.iter().find_map(|(cluster, view)| {
        view.bdevs
            .get(&name)?
            .get("driver_specific")?
            .get("raid")
            .map(|_| *cluster)
    });
    let failure = |cluster, error: String| {
        vec![Failure {
            cluster,
            object: name.clone(),
            error,
        }]
    };
    let Some(owner) = owner else {
        return Err(failure(0, "no cluster holds the volume's raid".into()));
    };
    let running = running_clusters(state).await;
    let Some((_, socket)) = running.iter().find(|(c, _)| *c == owner) else {
        return Err(failure(owner, "the owner cluster is not running".into()));
    };
    zero_bdev(socket, &name, None)
        .await
        .map_err(|e| failure(owner, e))
}

/// Runs `work(leg index, leg, socket)` for every leg of `volume` on the
/// cluster that owns it, all legs at once. Failures are reported against
/// `object(leg index)`.
async fn on_every_leg<Work, Done>(
    state: &AppState,
    volume: &Volume,
    object: impl Fn(usize) -> String,
    work: Work,
) -> Result<(), Vec<Failure>>
where
    Work: Fn(usize, Leg, PathBuf) -> Done,
    Done: std::future::Future<Output = Result<(), String>>,
{
    let running = running_clusters(state).await;
    let legs = volume.legs.iter().enumerate().map(|(index, leg)| {
        let socket = running
            .iter()
            .find(|(c, _)| *c == leg.cluster)
            .map(|(_, s)| s.clone());
        let (cluster, object) = (leg.cluster, object(index));
        let failure = move |error: String| Failure {
            cluster,
            object,
            error,
        };
        let work = &work;
        async move {
            match socket {
                Some(socket) => work(index, leg.clone(), socket).await.map_err(failure),
                None => Err(failure("the cluster is not running".into())),
            }
        }
    });
    let failures: Vec<Failure> = futures_util::future::join_all(legs)
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

/// Zeroes every leg of `volume` on the cluster that owns it, in parallel.
async fn scrub(state: &AppState, volume: &Volume) -> Result<(), Vec<Failure>> {
    let leg = |index| plan::leg_bdev(volume.id, index);
    on_every_leg(state, volume, leg, |index, _, socket| async move {
        zero_bdev(&socket, &leg(index), None).await
    })
    .await
}

/// Unmaps the blocks a volume held on its drives (no record owns them any
/// more), so a drive file gives their space back to its file system.
/// Failures are logged only: the blocks are free either way, and a new
/// volume zeroes them before use.
async fn release_space(state: &AppState, volume: &Volume) {
    let drive = |index: usize| plan::drive_bdev(volume.legs[index].cluster);
    let released = on_every_leg(state, volume, drive, |index, leg, socket| async move {
        for extent in &leg.extents {
            let params = json!({"name": drive(index), "offset_blocks": extent.offset_blocks,
                                "num_blocks": extent.num_blocks});
            rpc(&socket, "bdev_unmap", params).await?;
        }
        Ok(())
    })
    .await;
    if let Err(failures) = released {
        for failure in failures {
            tracing::warn!(
                volume = volume.id,
                "the space of a removed volume stays allocated: {failure}"
            );
        }
    }
}

/// `bdev_write_zeroes` on one cluster; `range` in blocks, all when `None`.
async fn zero_bdev(
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

/// Why `volume` cannot be initialised, if it cannot: a redundant volume's
/// legs hold its raid's superblock, which zeroing the legs would wipe (it
/// was zeroed through the raid when created). Checked before the task is
/// made, so the action is refused at once, and again under the lock.
pub fn check_initializable(volume: &Volume) -> Result<(), StorageError> {
    if volume.pool.is_some() {
        return Err(StorageError::Invalid {
            property: "ProvisioningPolicy",
            value: volume.provisioning.redfish().to_string(),
            reason: "Volume.Initialize of a volume in a storage pool is not supported yet".into(),
        });
    }
    if !volume.raid_type.has_owner() {
        return Ok(());
    }
    Err(StorageError::Invalid {
        property: "RAIDType",
        value: volume.raid_type.redfish().to_string(),
        reason: format!(
            "Volume.Initialize of a {} volume is not supported yet (its legs hold the raid's superblock; it was zeroed through the raid when created)",
            volume.raid_type.redfish()
        ),
    })
}

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
        check_initializable(&volume)?;
        initializing.insert(id, 0);
        volume
    };
    let _marker = Initializing { state, id };
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
    let leg_name = |index| plan::leg_bdev(volume.id, index);
    let report = &report;
    on_every_leg(state, &volume, leg_name, |index, leg, socket| async move {
        let name = leg_name(index);
        let mut at = 0;
        while at < leg.blocks() {
            let count = slice.min(leg.blocks() - at);
            zero_bdev(&socket, &name, Some((at, count))).await?;
            at += count;
            report(count);
        }
        Ok(())
    })
    .await
    .map_err(StorageError::Dataplane)?;
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
    if volume.pool.is_some() {
        return super::pools::grow_pool_volume(state, &fabric, volume, capacity_bytes).await;
    }
    if desired.pool_on(id).is_some() {
        return Err(StorageError::Invalid {
            property: "CapacityBytes",
            value: capacity_bytes.to_string(),
            reason:
                "a pool's own volume does not change size yet (its store would not grow with it)"
                    .into(),
        });
    }
    if volume.raid_type.has_owner() && capacity_bytes != volume.capacity_bytes {
        return Err(StorageError::Invalid {
            property: "CapacityBytes",
            value: capacity_bytes.to_string(),
            reason: format!(
                "{} volumes do not grow yet (the raid's bitmap is sized at creation)",
                volume.raid_type.redfish()
            ),
        });
    }
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
    let (drives, spaces) = drives(state, &clusters).await?;
    let legs = placement::grow(&drives, &desired.volumes, &volume, leg_bytes)
        .map_err(|e| StorageError::InsufficientCapacity(e.to_string()))?;
    let growth: Vec<u64> = legs
        .iter()
        .zip(&volume.legs)
        .map(|(new, old)| (new.blocks() - old.blocks()) * u64::from(volume.block_size))
        .collect();
    check_free_space(&spaces, &growth)?;
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
    grown: &[Leg],
) -> Result<(), Vec<Failure>> {
    let part = |index| plan::growth_bdev(volume.id, index);
    on_every_leg(state, volume, part, |index, old, socket| async move {
        let name = part(index);
        let start = old.extents[0].end();
        let blocks = grown[index].blocks() - old.blocks();
        let params = json!({"name": name, "base_bdev": plan::drive_bdev(old.cluster),
                            "offset_blocks": start, "num_blocks": blocks});
        rpc(&socket, "bdev_part_create", params).await?;
        let zeroed = zero_bdev(&socket, &name, None).await;
        let deleted = rpc(&socket, "bdev_part_delete", json!({"name": name})).await;
        zeroed.and(deleted)
    })
    .await
}

/// One call on a cluster's socket; the error says which call failed.
async fn rpc(socket: &std::path::Path, method: &str, params: Value) -> Result<(), String> {
    call(socket, method, params, Duration::from_secs(10))
        .await
        .map(|_| ())
}

/// One call on a cluster's socket with its answer, given up after
/// `timeout`; the error says which call failed.
pub(super) async fn call(
    socket: &std::path::Path,
    method: &str,
    params: Value,
    timeout: Duration,
) -> Result<Value, String> {
    let call = async {
        let mut client = RpcClient::connect(socket)
            .await
            .map_err(|e| e.to_string())?;
        client
            .call(method, Some(params))
            .await
            .map_err(|e| format!("{method}: {e}"))
    };
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "{method}: no answer within {} s",
                timeout.as_secs()
            ))
        })
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
    if super::check::running(state, id) {
        return Err(StorageError::InUse(format!(
            "a consistency check of volume {} runs; delete it when its task has ended",
            volume.name
        )));
    }
    if let Some(connection) = desired.connections_of(id).next() {
        return Err(StorageError::InUse(format!(
            "volume {} is used by connection {} ({}); delete the connection first",
            volume.name, connection.id, connection.name
        )));
    }
    if let Some(pool) = desired.pool_on(id) {
        return Err(StorageError::InUse(format!(
            "volume {} holds storage pool {} ({}); delete the pool first",
            volume.name, pool.id, pool.name
        )));
    }
    super::pools::check_deletable(state, &desired, volume)?;
    let volume = volume.clone();
    state.store.remove(Table::Volumes, &id.to_string()).await?;
    tracing::info!(volume = id, name = volume.name, "volume deleted");
    let _ = pass_locked(state, &fabric).await;
    release_space(state, &volume).await;
    Ok(())
}

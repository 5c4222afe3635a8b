//! StoragePools: `Storage/appliance/StoragePools/default`, made of every
//! data cluster's drive (each drive one capacity source), with capacity
//! figures computed from the volumes' recorded extents; and the thin pools
//! (`StoragePools/<id>`), each an lvol store on one volume (its capacity
//! source), made by POST and removed by DELETE, whose volumes take the
//! store's clusters as they are written.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{drives, storage, volumes};
use crate::redfish::body;
use crate::redfish::message::RedfishError;
use crate::redfish::resource;
use crate::state::AppState;
use crate::storage::low_space;
use crate::storage::model::{Pool, RaidType, VolumeState};
use crate::storage::placement::{self, Drive};
use crate::storage::{self as model_ops};

pub const DEFAULT_ID: &str = "default";
pub const DEFAULT_URI: &str = "/redfish/v1/Storage/appliance/StoragePools/default";

fn collection_uri() -> String {
    format!("{}/StoragePools", storage::URI)
}

/// A thin pool's URI.
pub fn uri(id: u64) -> String {
    format!("{}/{id}", collection_uri())
}

/// The pool `uri` names: `Some(None)` for the default pool, `Some(id)`
/// for a thin pool (whether or not it exists), `None` for anything else.
pub fn pool_of_uri(uri: &str) -> Option<Option<u64>> {
    if uri == DEFAULT_URI {
        return Some(None);
    }
    let id = body::member_id(&collection_uri(), uri)?;
    id.parse().ok().filter(|_| !id.starts_with('0')).map(Some)
}

/// Which pool a path names.
enum Which {
    Default,
    Thin(Pool),
}

fn check(storage_id: &str, pool: &str) -> Result<(), RedfishError> {
    storage::check_id(storage_id)?;
    if pool == DEFAULT_ID {
        Ok(())
    } else {
        Err(RedfishError::not_found("StoragePool", pool))
    }
}

fn find(state: &AppState, storage_id: &str, pool: &str) -> Result<Which, RedfishError> {
    storage::check_id(storage_id)?;
    if pool == DEFAULT_ID {
        return Ok(Which::Default);
    }
    let not_found = || RedfishError::not_found("StoragePool", pool);
    let id: u64 = pool.parse().map_err(|_| not_found())?;
    let desired = model_ops::desired(state).map_err(RedfishError::internal)?;
    desired
        .pool(id)
        .cloned()
        .map(Which::Thin)
        .ok_or_else(not_found)
}

pub async fn list(
    State(state): State<AppState>,
    Path(storage_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    storage::check_id(&storage_id)?;
    let desired = model_ops::desired(&state).map_err(RedfishError::internal)?;
    let members = std::iter::once(DEFAULT_URI.to_string())
        .chain(desired.pools.iter().map(|p| uri(p.id)))
        .collect();
    Ok(resource::collection(
        &headers,
        &collection_uri(),
        "StoragePoolCollection",
        "Storage Pool Collection",
        members,
    ))
}

/// POST: a thin pool on one volume, named in
/// `CapacitySources: [{"ProvidingVolumes": [{"@odata.id": <volume>}]}]`.
pub async fn create(
    State(state): State<AppState>,
    Path(storage_id): Path<String>,
    raw: Bytes,
) -> Result<Response, RedfishError> {
    storage::check_id(&storage_id)?;
    let object = body::object(&raw)?;
    body::only_known(&object, &["Name", "CapacitySources"])?;
    let name = object
        .get("Name")
        .ok_or_else(|| RedfishError::bad_request("CreateFailedMissingReqProperties", &["Name"]))?;
    let name = body::string("Name", name)?.to_string();
    let sources = object.get("CapacitySources").ok_or_else(|| {
        RedfishError::bad_request("CreateFailedMissingReqProperties", &["CapacitySources"])
    })?;
    let volume = providing_volume(sources)?;
    let pool = model_ops::create_pool(&state, name, volume)
        .await
        .map_err(storage::error)?;
    state.events.created(&uri(pool.id), "StoragePool");
    Ok(resource::created(&uri(pool.id), thin_body(&state, &pool)))
}

/// The one volume a thin pool's POST names.
fn providing_volume(sources: &Value) -> Result<u64, RedfishError> {
    const NAME: &str = "CapacitySources/ProvidingVolumes";
    let list = sources.as_array().filter(|l| l.len() == 1).ok_or_else(|| {
        body::type_error("CapacitySources", sources)
            .with_detail("a thin pool has one capacity source: the volume its store is on")
    })?;
    let source = list[0]
        .as_object()
        .ok_or_else(|| body::type_error("CapacitySources", &list[0]))?;
    body::only_known(source, &["ProvidingVolumes"])?;
    let volumes = source
        .get("ProvidingVolumes")
        .ok_or_else(|| RedfishError::bad_request("CreateFailedMissingReqProperties", &[NAME]))?;
    let uris = body::one_or_more_links(NAME, volumes)?;
    let [uri] = uris.as_slice() else {
        return Err(RedfishError::bad_request(
            "PropertyValueIncorrect",
            &[NAME, &volumes.to_string()],
        )
        .with_detail("name exactly one volume"));
    };
    body::member_id(&volumes::collection_uri(), uri)
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| RedfishError::bad_request("ResourceNotFound", &["Volume", uri]))
}

pub async fn delete(
    State(state): State<AppState>,
    Path((storage_id, pool)): Path<(String, String)>,
) -> Result<Response, RedfishError> {
    let Which::Thin(pool) = find(&state, &storage_id, &pool)? else {
        return Err(RedfishError::new(
            axum::http::StatusCode::METHOD_NOT_ALLOWED,
            "ActionNotSupported",
            &["DELETE"],
        )
        .with_detail("the default pool is the drives themselves"));
    };
    model_ops::delete_pool(&state, pool.id)
        .await
        .map_err(storage::error)?;
    state.events.removed(&uri(pool.id), "StoragePool");
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// PATCH of a thin pool: `LowSpaceWarningThresholdPercents` (the
/// remaining-capacity percentages whose crossing is an event).
pub async fn patch(
    State(state): State<AppState>,
    Path((storage_id, pool)): Path<(String, String)>,
    raw: Bytes,
) -> Result<Response, RedfishError> {
    let Which::Thin(pool) = find(&state, &storage_id, &pool)? else {
        return Err(RedfishError::new(
            axum::http::StatusCode::METHOD_NOT_ALLOWED,
            "ActionNotSupported",
            &["PATCH"],
        )
        .with_detail("the default pool has no settings"));
    };
    let object = body::object(&raw)?;
    const NAME: &str = "LowSpaceWarningThresholdPercents";
    if let Some(other) = object
        .keys()
        .find(|k| *k != NAME && !body::is_annotation(k))
    {
        return Err(RedfishError::bad_request("PropertyUnknown", &[other])
            .with_detail(&format!("a thin pool takes only {NAME}")));
    }
    let value = object
        .get(NAME)
        .ok_or_else(|| RedfishError::bad_request("NoOperation", &[]))?;
    let numbers = value
        .as_array()
        .and_then(|list| list.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
        .ok_or_else(|| body::type_error(NAME, value))?;
    let thresholds = low_space::check(&numbers).map_err(|why| {
        RedfishError::bad_request("PropertyValueIncorrect", &[NAME, &value.to_string()])
            .with_detail(&why)
    })?;
    let pool = model_ops::set_low_space_thresholds(&state, pool.id, thresholds)
        .await
        .map_err(storage::error)?;
    state.events.changed(&uri(pool.id), "StoragePool");
    Ok(resource::updated(thin_body(&state, &pool), Vec::new()))
}

/// The one capacity source of thin pool `pool`: its volume.
fn thin_source(pool: &Pool, total: Option<u64>, free: Option<u64>) -> Value {
    let id = pool.volume.to_string();
    let at = format!("{}/CapacitySources/{id}", uri(pool.id));
    json!({
        "@odata.id": at,
        "@odata.type": "#Capacity.v1_2_1.CapacitySource",
        "Id": id,
        "Name": format!("Volume {} holding the pool's store", pool.volume),
        "ProvidedCapacity": {"Data": {
            "AllocatedBytes": total,
            "ConsumedBytes": total.zip(free).map(|(t, f)| t - f),
        }},
        "ProvidingVolumes": {"@odata.id": format!("{at}/ProvidingVolumes")},
    })
}

fn thin_body(state: &AppState, pool: &Pool) -> Value {
    let desired = model_ops::desired(state).unwrap_or_default();
    let space = model_ops::store_bytes(state, pool.id);
    let (total, free) = (space.map(|s| s.0), space.map(|s| s.1));
    let provisioned: u64 = desired.volumes_in(pool.id).map(|v| v.capacity_bytes).sum();
    let base = desired.volume(pool.volume);
    let health = match (pool.state, space) {
        (VolumeState::Ready, Some(_)) => "OK",
        _ => "Critical",
    };
    let mut body = json!({
        "@odata.id": uri(pool.id),
        "@odata.type": "#StoragePool.v1_9_1.StoragePool",
        "Id": pool.id.to_string(),
        "Name": pool.name,
        "Description": format!(
            "An lvol store on volume {}: its volumes are lvols in it, protected as that volume is, and take its 1 MiB clusters as they are written",
            pool.volume
        ),
        "Status": {"State": "Enabled", "Health": health},
        "Capacity": {"Data": {
            "AllocatedBytes": total,
            "ConsumedBytes": total.zip(free).map(|(t, f)| t - f),
            "ProvisionedBytes": provisioned,
        }},
        "RemainingCapacityPercent": total.zip(free).map(|(t, f)| low_space::remaining_percent(t, f)),
        "LowSpaceWarningThresholdPercents": pool.low_space_warning_percents,
        "SupportedProvisioningPolicies": ["Thin", "Fixed"],
        "PoolType": ["Block"],
        "SupportedPoolTypes": ["Block"],
        "Encrypted": false,
        "AllocatedVolumes": {"@odata.id": format!("{}/AllocatedVolumes", uri(pool.id))},
        "CapacitySources@odata.count": 1,
        "CapacitySources": [thin_source(pool, total, free)],
        "Links": {"OwningStorageResource": {"@odata.id": storage::URI}},
    });
    if let Some(base) = base {
        body["SupportedRAIDTypes"] = json!([base.raid_type.redfish()]);
        body["BlockSizeBytes"] = json!(base.block_size);
    }
    body
}

/// (usable, consumed) bytes of `drive`.
fn drive_bytes(drive: &Drive, volumes: &[crate::storage::model::Volume]) -> (u64, u64) {
    let usable = drive.usable_bytes();
    (usable, usable - placement::free_bytes(drive, volumes))
}

fn source_uri(drive: &str) -> String {
    format!("{DEFAULT_URI}/CapacitySources/{drive}")
}

fn capacity_source(drive: &Drive, volumes: &[crate::storage::model::Volume]) -> Value {
    let id = drives::drive_id(drive.cluster);
    let (usable, consumed) = drive_bytes(drive, volumes);
    json!({
        "@odata.id": source_uri(&id),
        "@odata.type": "#Capacity.v1_2_1.CapacitySource",
        "Id": id,
        "Name": format!("Capacity of data cluster {}'s drive", drive.cluster),
        "ProvidedCapacity": {"Data": {
            "AllocatedBytes": usable,
            "ConsumedBytes": consumed,
            "GuaranteedBytes": usable,
        }},
        "ProvidingDrives": {"@odata.id": format!("{}/ProvidingDrives", source_uri(&id))},
    })
}

pub async fn get(
    State(state): State<AppState>,
    Path((storage_id, pool)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    if let Which::Thin(pool) = find(&state, &storage_id, &pool)? {
        return Ok(resource::get(
            &headers,
            thin_body(&state, &pool),
            "StoragePool",
            "GET, HEAD, PATCH, DELETE",
        ));
    }
    let desired = model_ops::desired(&state).map_err(RedfishError::internal)?;
    let drives = model_ops::known_drives(&state);
    let (usable, consumed) = drives
        .iter()
        .map(|d| drive_bytes(d, &desired.volumes))
        .fold((0, 0), |(u, c), (du, dc)| (u + du, c + dc));
    let remaining = ((usable - consumed) * 100).checked_div(usable).unwrap_or(0);
    let sources: Vec<Value> = drives
        .iter()
        .map(|d| capacity_source(d, &desired.volumes))
        .collect();
    let provisioned: u64 = desired.volumes.iter().map(|v| v.capacity_bytes).sum();
    let mut body = json!({
        "@odata.id": DEFAULT_URI,
        "@odata.type": "#StoragePool.v1_9_1.StoragePool",
        "Id": DEFAULT_ID,
        "Name": "Default pool",
        "Description": "Every data cluster's drive; a volume is striped over all of them unless its Links.Drives names some",
        "Status": {"State": "Enabled", "Health": if drives.is_empty() { "Critical" } else { "OK" }},
        "Capacity": {"Data": {
            "AllocatedBytes": usable,
            "ConsumedBytes": consumed,
            "GuaranteedBytes": usable,
            "ProvisionedBytes": provisioned,
        }},
        "RemainingCapacityPercent": remaining,
        "SupportedRAIDTypes": RaidType::SUPPORTED,
        "SupportedProvisioningPolicies": ["Fixed"],
        "PoolType": ["Block"],
        "SupportedPoolTypes": ["Block"],
        "Encrypted": false,
        "AllocatedVolumes": {"@odata.id": format!("{DEFAULT_URI}/AllocatedVolumes")},
        "CapacitySources@odata.count": sources.len(),
        "CapacitySources": sources,
        "Links": {"OwningStorageResource": {"@odata.id": storage::URI}},
    });
    if let Some(first) = drives.first()
        && drives.iter().all(|d| d.block_size == first.block_size)
    {
        body["BlockSizeBytes"] = json!(first.block_size);
    }
    Ok(resource::get(&headers, body, "StoragePool", "GET, HEAD"))
}

pub async fn allocated_volumes(
    State(state): State<AppState>,
    Path((storage_id, pool)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    let desired = model_ops::desired(&state).map_err(RedfishError::internal)?;
    let (at, name, members) = match find(&state, &storage_id, &pool)? {
        Which::Default => (
            format!("{DEFAULT_URI}/AllocatedVolumes"),
            "Volumes allocated from the default pool".to_string(),
            desired
                .volumes
                .iter()
                .filter(|v| v.pool.is_none())
                .map(|v| volumes::uri(v.id))
                .collect(),
        ),
        Which::Thin(pool) => (
            format!("{}/AllocatedVolumes", uri(pool.id)),
            format!("Volumes of thin pool {}", pool.name),
            desired
                .volumes_in(pool.id)
                .map(|v| volumes::uri(v.id))
                .collect(),
        ),
    };
    Ok(resource::collection(
        &headers,
        &at,
        "VolumeCollection",
        &name,
        members,
    ))
}

fn find_source(state: &AppState, source: &str) -> Result<Drive, RedfishError> {
    model_ops::known_drives(state)
        .into_iter()
        .find(|d| drives::drive_id(d.cluster) == source)
        .ok_or_else(|| RedfishError::not_found("CapacitySource", source))
}

pub async fn capacity_source_get(
    State(state): State<AppState>,
    Path((storage_id, pool, source)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    if let Which::Thin(pool) = find(&state, &storage_id, &pool)? {
        if source != pool.volume.to_string() {
            return Err(RedfishError::not_found("CapacitySource", &source));
        }
        let space = model_ops::store_bytes(&state, pool.id);
        return Ok(resource::get(
            &headers,
            thin_source(&pool, space.map(|s| s.0), space.map(|s| s.1)),
            "Capacity",
            "GET, HEAD",
        ));
    }
    let drive = find_source(&state, &source)?;
    let desired = model_ops::desired(&state).map_err(RedfishError::internal)?;
    Ok(resource::get(
        &headers,
        capacity_source(&drive, &desired.volumes),
        "Capacity",
        "GET, HEAD",
    ))
}

pub async fn providing_drives(
    State(state): State<AppState>,
    Path((storage_id, pool, source)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    check(&storage_id, &pool)?;
    let drive = find_source(&state, &source)?;
    Ok(resource::collection(
        &headers,
        &format!("{}/ProvidingDrives", source_uri(&source)),
        "DriveCollection",
        "Drives providing this capacity",
        vec![drives::uri(&drives::drive_id(drive.cluster))],
    ))
}

/// A thin pool's capacity source's volume, as a collection of one (a
/// drive of the default pool is provided by no volume: an empty one).
pub async fn providing_volumes(
    State(state): State<AppState>,
    Path((storage_id, pool, source)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    let Which::Thin(pool) = find(&state, &storage_id, &pool)? else {
        find_source(&state, &source)?;
        return Ok(resource::collection(
            &headers,
            &format!("{}/ProvidingVolumes", source_uri(&source)),
            "VolumeCollection",
            "Volumes providing this capacity: none, it is a drive's",
            Vec::new(),
        ));
    };
    if source != pool.volume.to_string() {
        return Err(RedfishError::not_found("CapacitySource", &source));
    }
    Ok(resource::collection(
        &headers,
        &format!("{}/CapacitySources/{source}/ProvidingVolumes", uri(pool.id)),
        "VolumeCollection",
        "The volume holding the pool's store",
        vec![volumes::uri(pool.volume)],
    ))
}

//! StoragePools: `Storage/appliance/StoragePools/default`, the one pool,
//! made of every data cluster's drive (each drive one capacity source),
//! with capacity figures computed from the volumes' recorded extents.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use super::{drives, storage, volumes};
use crate::redfish::message::RedfishError;
use crate::redfish::resource;
use crate::state::AppState;
use crate::storage::model::RaidType;
use crate::storage::placement::{self, Drive};
use crate::storage::{self as model_ops};

pub const DEFAULT_ID: &str = "default";
pub const DEFAULT_URI: &str = "/redfish/v1/Storage/appliance/StoragePools/default";

fn collection_uri() -> String {
    format!("{}/StoragePools", storage::URI)
}

fn check(storage_id: &str, pool: &str) -> Result<(), RedfishError> {
    storage::check_id(storage_id)?;
    if pool == DEFAULT_ID {
        Ok(())
    } else {
        Err(RedfishError::not_found("StoragePool", pool))
    }
}

pub async fn list(
    Path(storage_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    storage::check_id(&storage_id)?;
    Ok(resource::collection(
        &headers,
        &collection_uri(),
        "StoragePoolCollection",
        "Storage Pool Collection",
        vec![DEFAULT_URI.to_string()],
    ))
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
    check(&storage_id, &pool)?;
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
    check(&storage_id, &pool)?;
    Ok(resource::collection(
        &headers,
        &format!("{DEFAULT_URI}/AllocatedVolumes"),
        "VolumeCollection",
        "Volumes allocated from the default pool",
        volumes::member_uris(&state)?,
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
    check(&storage_id, &pool)?;
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

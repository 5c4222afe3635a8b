//! Drives: `Chassis/appliance/Drives`, one Drive per data cluster's
//! backing drive (bdev `drive<i>`), with its real capacity and block size
//! as the cluster reports them, the storage and pool it belongs to and the
//! volumes with a leg on it.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::chassis;
use crate::dataplane;
use crate::redfish::message::RedfishError;
use crate::redfish::resource;
use crate::state::AppState;

fn collection_uri() -> String {
    format!("/redfish/v1/Chassis/{}/Drives", chassis::ID)
}

/// The drive ID of data cluster `cluster` (also its bdev's name there).
pub fn drive_id(cluster: u32) -> String {
    crate::storage::plan::drive_bdev(cluster)
}

/// The URI of drive `id`.
pub fn uri(id: &str) -> String {
    format!("{}/{id}", collection_uri())
}

/// The data cluster whose drive `uri` names, if it names one of ours.
pub fn cluster_of(uri: &str) -> Option<u32> {
    crate::redfish::body::member_id(&collection_uri(), uri)?
        .strip_prefix("drive")?
        .parse()
        .ok()
}

/// The drive IDs of every data cluster.
pub async fn ids(state: &AppState) -> Vec<String> {
    dataplane::clusters(state)
        .await
        .into_iter()
        .map(|(cluster, _)| drive_id(cluster))
        .collect()
}

pub async fn list(
    State(state): State<AppState>,
    Path(chassis_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if chassis_id != chassis::ID {
        return RedfishError::not_found("Chassis", &chassis_id).into_response();
    }
    let members = ids(&state).await.iter().map(|id| uri(id)).collect();
    resource::collection(
        &headers,
        &collection_uri(),
        "DriveCollection",
        "Drive Collection",
        members,
    )
}

pub async fn get(
    State(state): State<AppState>,
    Path((chassis_id, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if chassis_id != chassis::ID {
        return RedfishError::not_found("Chassis", &chassis_id).into_response();
    }
    let clusters = dataplane::clusters(&state).await;
    let Some((cluster, socket)) = clusters.into_iter().find(|(c, _)| drive_id(*c) == id) else {
        return RedfishError::not_found("Drive", &id).into_response();
    };
    let bdev = dataplane::call(&socket, "bdev_get_bdevs", Some(json!({"name": id})))
        .await
        .and_then(|list| list.get(0).cloned());
    let mut body = drive(cluster, &id, bdev.as_ref());
    // The volumes with a leg on this drive.
    let volumes: Vec<Value> = crate::storage::desired(&state)
        .map(|d| d.volumes)
        .unwrap_or_default()
        .iter()
        .filter(|v| v.clusters().any(|c| c == cluster))
        .map(|v| json!({"@odata.id": super::volumes::uri(v.id)}))
        .collect();
    body["Links"]["Volumes@odata.count"] = json!(volumes.len());
    body["Links"]["Volumes"] = Value::Array(volumes);
    resource::get(&headers, body, "Drive", "GET, HEAD")
}

/// The Drive for cluster `cluster`, from its bdev (absent: the cluster did
/// not open a drive, or does not answer).
fn drive(cluster: u32, id: &str, bdev: Option<&Value>) -> Value {
    let mut body = json!({
        "@odata.id": format!("{}/{id}", collection_uri()),
        "@odata.type": "#Drive.v1_22_0.Drive",
        "Id": id,
        "Name": format!("Drive of data cluster {cluster}"),
        "Links": {
            "Chassis": {"@odata.id": format!("/redfish/v1/Chassis/{}", chassis::ID)},
            "Storage": {"@odata.id": super::storage::URI},
            "StoragePools": [{"@odata.id": super::storage_pools::DEFAULT_URI}],
        },
    });
    let Some(bdev) = bdev else {
        body["Status"] = json!({"State": "Absent"});
        body["Description"] = json!(format!("Data cluster {cluster} has no drive open"));
        return body;
    };
    let block_size = bdev["block_size"].as_u64().unwrap_or(0);
    let blocks = bdev["num_blocks"].as_u64().unwrap_or(0);
    let path = bdev["driver_specific"]["uring"]["filename"]
        .as_str()
        .unwrap_or("");
    body["CapacityBytes"] = json!(block_size * blocks);
    body["BlockSizeBytes"] = json!(block_size);
    body["Status"] = json!({"State": "Enabled", "Health": "OK"});
    if let Some(uuid) = bdev["uuid"].as_str() {
        body["Identifiers"] = json!([{"DurableNameFormat": "UUID", "DurableName": uuid}]);
    }
    // An NVMe SSD (the images' /dev/shoal/drive<i>, or any /dev/nvme*); a
    // file stands in for one on development machines.
    if path.starts_with("/dev/shoal/") || path.starts_with("/dev/nvme") {
        body["Protocol"] = json!("NVMe");
        body["MediaType"] = json!("SSD");
        body["Description"] = json!(format!("NVMe drive {path} of data cluster {cluster}"));
    } else {
        body["Description"] = json!(format!(
            "File-backed drive {path} of data cluster {cluster}"
        ));
    }
    body
}

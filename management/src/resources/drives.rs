//! Drives: `Chassis/appliance/Drives`, one Drive per data cluster's
//! backing drive (bdev `drive<i>`), with its real capacity and block size
//! as the cluster reports them.

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

/// The drive ID of data cluster `cluster`.
fn drive_id(cluster: u32) -> String {
    format!("drive{cluster}")
}

pub async fn list(
    State(state): State<AppState>,
    Path(chassis_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if chassis_id != chassis::ID {
        return RedfishError::not_found("Chassis", &chassis_id).into_response();
    }
    let members = dataplane::clusters(&state)
        .await
        .into_iter()
        .map(|(cluster, _)| format!("{}/{}", collection_uri(), drive_id(cluster)))
        .collect();
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
    resource::get(
        &headers,
        drive(cluster, &id, bdev.as_ref()),
        "Drive",
        "GET, HEAD",
    )
}

/// The Drive for cluster `cluster`, from its bdev (absent: the cluster did
/// not open a drive, or does not answer).
fn drive(cluster: u32, id: &str, bdev: Option<&Value>) -> Value {
    let mut body = json!({
        "@odata.id": format!("{}/{id}", collection_uri()),
        "@odata.type": "#Drive.v1_22_0.Drive",
        "Id": id,
        "Name": format!("Drive of data cluster {cluster}"),
        "Links": {"Chassis": {"@odata.id": format!("/redfish/v1/Chassis/{}", chassis::ID)}},
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

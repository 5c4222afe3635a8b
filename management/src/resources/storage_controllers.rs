//! Controllers: `Storage/appliance/Controllers/cluster<i>`, the NVMe I/O
//! controller each data cluster runs for the storage's subsystem, with the
//! cluster's portal (its target endpoint) and the volumes it serves.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use super::{appliance, fabrics, storage, volumes};
use crate::redfish::message::RedfishError;
use crate::redfish::resource;
use crate::state::AppState;
use crate::storage::{self as model_ops, plan};

fn collection_uri() -> String {
    format!("{}/Controllers", storage::URI)
}

fn controller_id(cluster: u32) -> String {
    format!("cluster{cluster}")
}

/// The controller of data cluster `cluster`.
pub fn uri(cluster: u32) -> String {
    format!("{}/{}", collection_uri(), controller_id(cluster))
}

pub async fn list(
    State(state): State<AppState>,
    Path(storage_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    storage::check_id(&storage_id)?;
    let members = (0..model_ops::fabric_clusters(&state)).map(uri).collect();
    Ok(resource::collection(
        &headers,
        &collection_uri(),
        "StorageControllerCollection",
        "Storage Controller Collection",
        members,
    ))
}

pub async fn get(
    State(state): State<AppState>,
    Path((storage_id, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    storage::check_id(&storage_id)?;
    let cluster = id
        .strip_prefix("cluster")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|c| *c < model_ops::fabric_clusters(&state))
        .ok_or_else(|| RedfishError::not_found("StorageController", &id))?;
    let status = appliance::status(&state).await;
    let running = status
        .as_ref()
        .and_then(|s| s["clusters"].get(cluster as usize).cloned())
        .is_some_and(|c| c["state"] == "running");
    // The volumes this cluster serves now, as the reconciler last saw.
    let served: Vec<Value> = model_ops::desired(&state)
        .map(|d| d.volumes)
        .unwrap_or_default()
        .iter()
        .filter(|v| {
            state.storage.observed().is_some_and(|o| {
                o.report
                    .views
                    .get(&cluster)
                    .is_some_and(|view| view.serves(v.nsid, &plan::volume_bdev(v.id)))
            })
        })
        .map(|v| json!({"@odata.id": volumes::uri(v.id)}))
        .collect();
    let body = json!({
        "@odata.id": format!("{}/{id}", collection_uri()),
        "@odata.type": "#StorageController.v1_11_0.StorageController",
        "Id": id,
        "Name": format!("NVMe I/O controller of data cluster {cluster}"),
        "Status": if running {
            json!({"State": "Enabled", "Health": "OK"})
        } else {
            json!({"State": "UnavailableOffline", "Health": "Critical"})
        },
        "SupportedControllerProtocols": ["NVMeOverFabrics"],
        "SupportedDeviceProtocols": ["NVMe"],
        "NVMeControllerProperties": {
            "ControllerType": "IO",
            "NVMeVersion": "1.4",
            "MaxQueueSize": 128,
        },
        "Links": {
            "Endpoints": [{"@odata.id": fabrics::endpoint_uri(&fabrics::target_id(cluster))}],
            "AttachedVolumes@odata.count": served.len(),
            "AttachedVolumes": served,
        },
    });
    Ok(resource::get(
        &headers,
        body,
        "StorageController",
        "GET, HEAD",
    ))
}

//! Fabrics: `/redfish/v1/Fabrics/NVMeoF`, the NVMe-oF/TCP fabric hosts
//! reach the storage through, with its endpoints, endpoint groups and
//! connections (one module each), and the URIs they share.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::json;

use super::appliance;
use crate::dataplane;
use crate::redfish::message::RedfishError;
use crate::redfish::resource;
use crate::state::AppState;

pub const ID: &str = "NVMeoF";
pub const URI: &str = "/redfish/v1/Fabrics/NVMeoF";
pub const ENDPOINTS: &str = "/redfish/v1/Fabrics/NVMeoF/Endpoints";
pub const ENDPOINT_GROUPS: &str = "/redfish/v1/Fabrics/NVMeoF/EndpointGroups";
pub const CONNECTIONS: &str = "/redfish/v1/Fabrics/NVMeoF/Connections";

pub fn endpoint_uri(id: &str) -> String {
    format!("{ENDPOINTS}/{id}")
}

/// The target endpoint of data cluster `cluster` (its portal).
pub fn target_id(cluster: u32) -> String {
    format!("target{cluster}")
}

/// The data cluster of target endpoint `id`.
pub fn target_cluster(id: &str) -> Option<u32> {
    id.strip_prefix("target")?.parse().ok()
}

pub fn initiator_id(id: u64) -> String {
    format!("initiator{id}")
}

pub fn initiator_uri(id: u64) -> String {
    endpoint_uri(&initiator_id(id))
}

/// The number of initiator endpoint `id`.
pub fn initiator_number(id: &str) -> Option<u64> {
    id.strip_prefix("initiator")?.parse().ok()
}

pub fn connection_uri(id: u64) -> String {
    format!("{CONNECTIONS}/{id}")
}

/// Target endpoint IDs, one per data cluster the fabric serves.
pub fn target_ids(state: &AppState) -> Vec<String> {
    let clusters = crate::storage::fabric_clusters(state);
    (0..clusters).map(target_id).collect()
}

/// 404 unless `id` is this fabric.
pub fn check_id(id: &str) -> Result<(), RedfishError> {
    if id == ID {
        Ok(())
    } else {
        Err(RedfishError::not_found("Fabric", id))
    }
}

pub async fn list(headers: HeaderMap) -> Response {
    resource::collection(
        &headers,
        "/redfish/v1/Fabrics",
        "FabricCollection",
        "Fabric Collection",
        vec![URI.to_string()],
    )
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    check_id(&id)?;
    let status = appliance::status(&state).await;
    let clusters = dataplane::clusters(&state).await.len();
    let body = json!({
        "@odata.id": URI,
        "@odata.type": "#Fabric.v1_4_0.Fabric",
        "Id": ID,
        "Name": "NVMe-oF fabric",
        "Description": format!("NVMe/TCP: one portal per data cluster ({clusters}), a discovery controller on data cluster 0"),
        "FabricType": "NVMeOverFabrics",
        "Status": appliance::health(status.as_deref()),
        "Endpoints": {"@odata.id": ENDPOINTS},
        "EndpointGroups": {"@odata.id": ENDPOINT_GROUPS},
        "Connections": {"@odata.id": CONNECTIONS},
    });
    Ok(resource::get(&headers, body, "Fabric", "GET, HEAD"))
}

//! Systems: the appliance as a computer system, `appliance`, with the
//! supervisor's health and the machine's CPUs and memory.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::appliance;
use crate::redfish::message::RedfishError;
use crate::redfish::resource;
use crate::state::AppState;

pub const ID: &str = "appliance";

pub async fn list(headers: HeaderMap) -> Response {
    resource::collection(
        &headers,
        "/redfish/v1/Systems",
        "ComputerSystemCollection",
        "Computer System Collection",
        vec![format!("/redfish/v1/Systems/{ID}")],
    )
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if id != ID {
        return RedfishError::not_found("ComputerSystem", &id).into_response();
    }
    let status = appliance::status(&state).await;
    let clusters = status
        .as_ref()
        .and_then(|s| s["clusters"].as_array())
        .map_or(0, Vec::len);
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let body = json!({
        "@odata.id": format!("/redfish/v1/Systems/{ID}"),
        "@odata.type": "#ComputerSystem.v1_22_0.ComputerSystem",
        "Id": ID,
        "Name": "Shoal appliance",
        "Description": format!("Storage appliance: a control cluster and {clusters} data clusters"),
        "SystemType": "Physical",
        "HostName": hostname,
        "UUID": state.service_uuid.to_string(),
        "Manufacturer": "Shoal",
        "Model": "Shoal storage appliance",
        "PowerState": "On",
        "Status": appliance::health(status.as_deref()),
        "ProcessorSummary": {"Count": appliance::cpu_count()},
        "MemorySummary": {"TotalSystemMemoryGiB": appliance::memory_gib()},
        // Ansible's redfish modules and sushy reach storage only this way.
        "Storage": {"@odata.id": super::storage::COLLECTION},
        "Links": {
            "Chassis": [{"@odata.id": "/redfish/v1/Chassis/appliance"}],
            "ManagedBy": [{"@odata.id": "/redfish/v1/Managers/bmc"}],
        },
    });
    resource::get(&headers, body, "ComputerSystem", "GET, HEAD")
}

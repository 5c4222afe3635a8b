//! Chassis: the appliance enclosure, `appliance`.

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
        "/redfish/v1/Chassis",
        "ChassisCollection",
        "Chassis Collection",
        vec![format!("/redfish/v1/Chassis/{ID}")],
    )
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if id != ID {
        return RedfishError::not_found("Chassis", &id).into_response();
    }
    let status = appliance::status(&state).await;
    let body = json!({
        "@odata.id": format!("/redfish/v1/Chassis/{ID}"),
        "@odata.type": "#Chassis.v1_25_0.Chassis",
        "Id": ID,
        "Name": "Shoal appliance",
        "ChassisType": "StorageEnclosure",
        "Manufacturer": "Shoal",
        "Model": "Shoal storage appliance",
        "Status": appliance::health(status.as_deref()),
        "Drives": {"@odata.id": format!("/redfish/v1/Chassis/{ID}/Drives")},
        "Links": {
            "ComputerSystems": [{"@odata.id": "/redfish/v1/Systems/appliance"}],
            "ManagedBy": [{"@odata.id": "/redfish/v1/Managers/bmc"}],
        },
    });
    resource::get(&headers, body, "Chassis", "GET, HEAD")
}

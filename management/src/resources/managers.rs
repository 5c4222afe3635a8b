//! Managers: the appliance's management controller `bmc` (this service)
//! and its NetworkProtocol.

use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::time::rfc3339;
use crate::redfish::message::RedfishError;
use crate::redfish::resource;
use crate::state::AppState;

pub const ID: &str = "bmc";

pub async fn list(headers: HeaderMap) -> Response {
    resource::collection(
        &headers,
        "/redfish/v1/Managers",
        "ManagerCollection",
        "Manager Collection",
        vec![format!("/redfish/v1/Managers/{ID}")],
    )
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if id != ID {
        return RedfishError::not_found("Manager", &id).into_response();
    }
    let body = json!({
        "@odata.id": format!("/redfish/v1/Managers/{ID}"),
        "@odata.type": "#Manager.v1_19_0.Manager",
        "Id": ID,
        "Name": "Shoal management controller",
        "Description": "The Redfish/Swordfish service of the appliance's control cluster",
        "ManagerType": "Service",
        "FirmwareVersion": env!("CARGO_PKG_VERSION"),
        "UUID": state.service_uuid.to_string(),
        "ServiceEntryPointUUID": state.service_uuid.to_string(),
        "DateTime": rfc3339(SystemTime::now()),
        "DateTimeLocalOffset": "+00:00",
        "LastResetTime": rfc3339(state.started),
        "Status": {"State": "Enabled", "Health": "OK"},
        "NetworkProtocol": {"@odata.id": format!("/redfish/v1/Managers/{ID}/NetworkProtocol")},
        "Links": {
            "ManagerForChassis": [{"@odata.id": "/redfish/v1/Chassis/appliance"}],
            "ManagerForServers": [{"@odata.id": "/redfish/v1/Systems/appliance"}],
        },
    });
    resource::get(&headers, body, "Manager", "GET, HEAD")
}

pub async fn network_protocol(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if id != ID {
        return RedfishError::not_found("Manager", &id).into_response();
    }
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let body = json!({
        "@odata.id": format!("/redfish/v1/Managers/{ID}/NetworkProtocol"),
        "@odata.type": "#ManagerNetworkProtocol.v1_10_0.ManagerNetworkProtocol",
        "Id": "NetworkProtocol",
        "Name": "Manager Network Protocol",
        "HostName": hostname,
        "Status": {"State": "Enabled", "Health": "OK"},
        "HTTPS": {"ProtocolEnabled": true, "Port": state.https_port},
        "HTTP": {
            "ProtocolEnabled": state.http_redirect_port.is_some(),
            "Port": state.http_redirect_port,
        },
    });
    resource::get(&headers, body, "ManagerNetworkProtocol", "GET, HEAD")
}

//! Managers: the appliance's management controller `bmc` (this service,
//! its `ServiceIdentification` PATCHable) and its NetworkProtocol.

use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::session_service::{merge, not_applied};
use super::time::rfc3339;
use crate::redfish::body;
use crate::redfish::message::RedfishError;
use crate::redfish::resource;
use crate::state::AppState;
use crate::store::Table;

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

/// Where `ServiceIdentification` is kept (the settings table).
const SERVICE_IDENTIFICATION_KEY: &str = "manager_service_identification";
/// Longest `ServiceIdentification` accepted.
pub const MAX_SERVICE_IDENTIFICATION_CHARS: usize = 256;

/// The manager's `ServiceIdentification`, empty until one is set (then
/// also shown in the service root).
pub fn service_identification(state: &AppState) -> Result<String, RedfishError> {
    Ok(state
        .store
        .get::<String>(Table::Settings, SERVICE_IDENTIFICATION_KEY)
        .map_err(RedfishError::internal)?
        .unwrap_or_default())
}

fn manager_body(state: &AppState) -> Result<Value, RedfishError> {
    Ok(json!({
        "@odata.id": format!("/redfish/v1/Managers/{ID}"),
        "@odata.type": "#Manager.v1_19_0.Manager",
        "Id": ID,
        "Name": "Shoal management controller",
        "Description": "The Redfish/Swordfish service of the appliance's control cluster",
        "ManagerType": "Service",
        "FirmwareVersion": env!("CARGO_PKG_VERSION"),
        "UUID": state.service_uuid.to_string(),
        "ServiceEntryPointUUID": state.service_uuid.to_string(),
        "ServiceIdentification": service_identification(state)?,
        "DateTime": rfc3339(SystemTime::now()),
        "DateTimeLocalOffset": "+00:00",
        "LastResetTime": rfc3339(state.started),
        "Status": {"State": "Enabled", "Health": "OK"},
        "NetworkProtocol": {"@odata.id": format!("/redfish/v1/Managers/{ID}/NetworkProtocol")},
        "Links": {
            "ManagerForChassis": [{"@odata.id": "/redfish/v1/Chassis/appliance"}],
            "ManagerForServers": [{"@odata.id": "/redfish/v1/Systems/appliance"}],
        },
    }))
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    if id != ID {
        return Err(RedfishError::not_found("Manager", &id));
    }
    Ok(resource::get(
        &headers,
        manager_body(&state)?,
        "Manager",
        "GET, HEAD, PATCH",
    ))
}

/// PATCH: `ServiceIdentification` (a string, or null to clear it),
/// persisted like the other service settings.
pub async fn patch(
    State(state): State<AppState>,
    Path(id): Path<String>,
    raw: Bytes,
) -> Result<Response, RedfishError> {
    if id != ID {
        return Err(RedfishError::not_found("Manager", &id));
    }
    let object = body::object(&raw)?;
    let current = manager_body(&state)?;
    let mut identification = None;
    let mut problems = Vec::new();
    for (name, value) in &object {
        let result = match name.as_str() {
            "ServiceIdentification" => match value {
                Value::Null => {
                    identification = Some(String::new());
                    Ok(())
                }
                Value::String(text) if text.chars().count() > MAX_SERVICE_IDENTIFICATION_CHARS => {
                    Err(RedfishError::bad_request(
                        "StringValueTooLong",
                        &[name, &MAX_SERVICE_IDENTIFICATION_CHARS.to_string()],
                    ))
                }
                Value::String(text) => {
                    identification = Some(text.clone());
                    Ok(())
                }
                other => Err(body::type_error(name, other)),
            },
            _ if body::is_annotation(name) => continue,
            _ if current.get(name).is_some() => {
                Err(RedfishError::bad_request("PropertyNotWritable", &[name]))
            }
            _ => Err(RedfishError::bad_request("PropertyUnknown", &[name])),
        };
        if let Err(e) = result {
            problems.push(e);
        }
    }
    let Some(identification) = identification else {
        return Err(
            merge(problems).unwrap_or_else(|| RedfishError::bad_request("NoOperation", &[]))
        );
    };
    state
        .store
        .put(Table::Settings, SERVICE_IDENTIFICATION_KEY, &identification)
        .await
        .map_err(RedfishError::internal)?;
    Ok(resource::updated(
        manager_body(&state)?,
        not_applied(problems),
    ))
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

//! Endpoints of the NVMe-oF fabric: one target endpoint per data cluster
//! portal (read-only: the storage's NQN at that cluster's address and
//! port), and initiator endpoints that administrators create for hosts,
//! named by their host NQN, to use in connections.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::fabrics::{self, ENDPOINTS};
use super::{appliance, storage};
use crate::redfish::body;
use crate::redfish::message::RedfishError;
use crate::redfish::resource;
use crate::state::AppState;
use crate::storage::model::InitiatorEndpoint;
use crate::storage::{self as model_ops};

pub async fn list(
    State(state): State<AppState>,
    Path(fabric): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    fabrics::check_id(&fabric)?;
    let initiators = model_ops::desired(&state)
        .map_err(RedfishError::internal)?
        .endpoints;
    let members: Vec<String> = fabrics::target_ids(&state)
        .iter()
        .map(|id| fabrics::endpoint_uri(id))
        .chain(initiators.iter().map(|e| fabrics::initiator_uri(e.id)))
        .collect();
    let body = json!({
        "@odata.id": ENDPOINTS,
        "@odata.type": "#EndpointCollection.EndpointCollection",
        "Name": "Endpoint Collection",
        "Members@odata.count": members.len(),
        "Members": resource::members(members),
    });
    Ok(resource::get(
        &headers,
        body,
        "EndpointCollection",
        "GET, HEAD, POST",
    ))
}

/// Connection links of the connections that name initiator `id` (or all
/// connections, for a target endpoint: every one is served everywhere).
fn connection_links(state: &AppState, initiator: Option<u64>) -> Vec<Value> {
    model_ops::desired(state)
        .map(|d| d.connections)
        .unwrap_or_default()
        .iter()
        .filter(|c| initiator.is_none_or(|id| c.initiators.contains(&id)))
        .map(|c| json!({"@odata.id": fabrics::connection_uri(c.id)}))
        .collect()
}

async fn target_body(state: &AppState, cluster: u32) -> Option<Value> {
    let fabric = model_ops::cached_fabric(state)?.clone();
    if cluster >= fabric.clusters {
        return None;
    }
    let status = appliance::status(state).await;
    let running = status
        .as_ref()
        .and_then(|s| s["clusters"].get(cluster as usize).cloned())
        .is_some_and(|c| c["state"] == "running");
    let address = match fabric.listen_address {
        std::net::IpAddr::V4(a) => json!({"IPv4Address": {"Address": a.to_string()}}),
        std::net::IpAddr::V6(a) => json!({"IPv6Address": {"Address": a.to_string()}}),
    };
    let mut transport = json!({"TransportProtocol": "TCP", "Port": fabric.nvmf_port(cluster)});
    if let (Value::Object(t), Value::Object(a)) = (&mut transport, address) {
        t.extend(a);
    }
    let connections = connection_links(state, None);
    let id = fabrics::target_id(cluster);
    Some(json!({
        "@odata.id": fabrics::endpoint_uri(&id),
        "@odata.type": "#Endpoint.v1_8_2.Endpoint",
        "Id": id,
        "Name": format!("NVMe/TCP portal of data cluster {cluster}"),
        "EndpointProtocol": "NVMeOverFabrics",
        "Status": if running {
            json!({"State": "Enabled", "Health": "OK"})
        } else {
            json!({"State": "UnavailableOffline", "Health": "Critical"})
        },
        "Identifiers": [{"DurableNameFormat": "NQN", "DurableName": fabric.nqn}],
        "ConnectedEntities": [{
            "EntityType": "StorageSubsystem",
            "EntityRole": "Target",
            "EntityLink": {"@odata.id": storage::URI},
        }],
        "IPTransportDetails": [transport],
        "Links": {
            "Connections@odata.count": connections.len(),
            "Connections": connections,
        },
    }))
}

fn initiator_body(state: &AppState, endpoint: &InitiatorEndpoint) -> Value {
    let connections = connection_links(state, Some(endpoint.id));
    let id = fabrics::initiator_id(endpoint.id);
    json!({
        "@odata.id": fabrics::endpoint_uri(&id),
        "@odata.type": "#Endpoint.v1_8_2.Endpoint",
        "Id": id,
        "Name": endpoint.name,
        "EndpointProtocol": "NVMeOverFabrics",
        "Identifiers": [{"DurableNameFormat": "NQN", "DurableName": endpoint.host_nqn}],
        "ConnectedEntities": [{"EntityType": "StorageInitiator", "EntityRole": "Initiator"}],
        "Links": {
            "Connections@odata.count": connections.len(),
            "Connections": connections,
        },
    })
}

/// The initiator endpoint with Redfish ID `id`.
pub fn find_initiator(state: &AppState, id: &str) -> Result<InitiatorEndpoint, RedfishError> {
    let desired = model_ops::desired(state).map_err(RedfishError::internal)?;
    fabrics::initiator_number(id)
        .and_then(|n| desired.endpoint(n).cloned())
        .ok_or_else(|| RedfishError::not_found("Endpoint", id))
}

pub async fn get(
    State(state): State<AppState>,
    Path((fabric, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    fabrics::check_id(&fabric)?;
    if let Some(cluster) = fabrics::target_cluster(&id) {
        let body = target_body(&state, cluster)
            .await
            .ok_or_else(|| RedfishError::not_found("Endpoint", &id))?;
        return Ok(resource::get(&headers, body, "Endpoint", "GET, HEAD"));
    }
    let endpoint = find_initiator(&state, &id)?;
    Ok(resource::get(
        &headers,
        initiator_body(&state, &endpoint),
        "Endpoint",
        "GET, HEAD, DELETE",
    ))
}

/// The host NQN of a new initiator endpoint: its one NQN identifier.
fn host_nqn(object: &Map<String, Value>) -> Result<String, RedfishError> {
    let identifiers = object.get("Identifiers").ok_or_else(|| {
        RedfishError::bad_request("CreateFailedMissingReqProperties", &["Identifiers"])
    })?;
    let list = identifiers
        .as_array()
        .ok_or_else(|| body::type_error("Identifiers", identifiers))?;
    let [identifier] = list.as_slice() else {
        return Err(RedfishError::bad_request(
            "PropertyValueIncorrect",
            &["Identifiers", &identifiers.to_string()],
        )
        .with_detail("give exactly one identifier: the host's NQN"));
    };
    let format = identifier.get("DurableNameFormat").ok_or_else(|| {
        RedfishError::bad_request("PropertyMissing", &["Identifiers/DurableNameFormat"])
    })?;
    if format != "NQN" {
        return Err(RedfishError::bad_request(
            "PropertyValueNotInList",
            &[&format.to_string(), "Identifiers/DurableNameFormat"],
        ));
    }
    let name = identifier.get("DurableName").ok_or_else(|| {
        RedfishError::bad_request("PropertyMissing", &["Identifiers/DurableName"])
    })?;
    Ok(body::string("Identifiers/DurableName", name)?.to_string())
}

/// POST: an initiator endpoint for a host, `Identifiers: [{"DurableNameFormat":
/// "NQN", "DurableName": <host NQN>}]`, optionally `Name`.
pub async fn create(
    State(state): State<AppState>,
    Path(fabric): Path<String>,
    raw: Bytes,
) -> Result<Response, RedfishError> {
    fabrics::check_id(&fabric)?;
    let object = body::object(&raw)?;
    body::only_known(
        &object,
        &[
            "Name",
            "Identifiers",
            "EndpointProtocol",
            "ConnectedEntities",
            "Description",
        ],
    )?;
    if let Some(protocol) = object.get("EndpointProtocol")
        && protocol != "NVMeOverFabrics"
    {
        return Err(RedfishError::bad_request(
            "PropertyValueNotInList",
            &[&protocol.to_string(), "EndpointProtocol"],
        ));
    }
    if let Some(entities) = object.get("ConnectedEntities") {
        let roles_ok = entities.as_array().is_some_and(|list| {
            list.iter()
                .all(|e| e.get("EntityRole").is_none_or(|r| r == "Initiator"))
        });
        if !roles_ok {
            return Err(RedfishError::bad_request(
                "PropertyValueIncorrect",
                &["ConnectedEntities", &entities.to_string()],
            )
            .with_detail(
                "only initiator endpoints can be created; targets are the data clusters' portals",
            ));
        }
    }
    let name = object
        .get("Name")
        .map(|v| body::string("Name", v).map(str::to_string))
        .transpose()?;
    let nqn = host_nqn(&object)?;
    let endpoint = model_ops::create_endpoint(&state, name, nqn)
        .await
        .map_err(storage::error)?;
    state
        .events
        .created(&fabrics::initiator_uri(endpoint.id), "Endpoint");
    Ok(resource::created(
        &fabrics::initiator_uri(endpoint.id),
        initiator_body(&state, &endpoint),
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    Path((fabric, id)): Path<(String, String)>,
) -> Result<Response, RedfishError> {
    fabrics::check_id(&fabric)?;
    if fabrics::target_cluster(&id).is_some() {
        return Err(RedfishError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "ResourceCannotBeDeleted",
            &[],
        )
        .with_header(axum::http::header::ALLOW, "GET, HEAD"));
    }
    let endpoint = find_initiator(&state, &id)?;
    model_ops::delete_endpoint(&state, endpoint.id)
        .await
        .map_err(storage::error)?;
    state
        .events
        .removed(&fabrics::initiator_uri(endpoint.id), "Endpoint");
    Ok(StatusCode::NO_CONTENT.into_response())
}

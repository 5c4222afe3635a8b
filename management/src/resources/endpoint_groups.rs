//! EndpointGroups of the NVMe-oF fabric, both derived and read-only:
//! `targets` (every data cluster's portal) and `initiators` (every host
//! endpoint administrators created).

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use super::fabrics::{self, ENDPOINT_GROUPS};
use crate::redfish::message::RedfishError;
use crate::redfish::resource;
use crate::state::AppState;
use crate::storage::{self as model_ops};

const GROUPS: [&str; 2] = ["targets", "initiators"];

pub async fn list(
    Path(fabric): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    fabrics::check_id(&fabric)?;
    Ok(resource::collection(
        &headers,
        ENDPOINT_GROUPS,
        "EndpointGroupCollection",
        "Endpoint Group Collection",
        GROUPS
            .iter()
            .map(|g| format!("{ENDPOINT_GROUPS}/{g}"))
            .collect(),
    ))
}

pub async fn get(
    State(state): State<AppState>,
    Path((fabric, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    fabrics::check_id(&fabric)?;
    let desired = model_ops::desired(&state).map_err(RedfishError::internal)?;
    let (name, group_type, endpoints): (&str, &str, Vec<String>) = match id.as_str() {
        "targets" => (
            "Every data cluster's NVMe/TCP portal",
            "Target",
            fabrics::target_ids(&state),
        ),
        "initiators" => (
            "Every host endpoint",
            "Initiator",
            desired
                .endpoints
                .iter()
                .map(|e| fabrics::initiator_id(e.id))
                .collect(),
        ),
        _ => return Err(RedfishError::not_found("EndpointGroup", &id)),
    };
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|e| json!({"@odata.id": fabrics::endpoint_uri(e)}))
        .collect();
    let connections: Vec<Value> = desired
        .connections
        .iter()
        .map(|c| json!({"@odata.id": fabrics::connection_uri(c.id)}))
        .collect();
    let body = json!({
        "@odata.id": format!("{ENDPOINT_GROUPS}/{id}"),
        "@odata.type": "#EndpointGroup.v1_3_4.EndpointGroup",
        "Id": id,
        "Name": name,
        "GroupType": group_type,
        "Links": {
            "Endpoints@odata.count": endpoints.len(),
            "Endpoints": endpoints,
            "Connections@odata.count": connections.len(),
            "Connections": connections,
        },
    });
    Ok(resource::get(&headers, body, "EndpointGroup", "GET, HEAD"))
}

//! Connections of the NVMe-oF fabric: which hosts (initiator endpoints)
//! may use which volumes. A POST grants access on every data cluster
//! before it answers (the host then sees the namespaces through every
//! portal); DELETE revokes it, and the hosts' controllers lose the
//! namespaces at once.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::fabrics::{self, CONNECTIONS};
use super::{storage, volumes};
use crate::redfish::body;
use crate::redfish::message::RedfishError;
use crate::redfish::resource;
use crate::state::AppState;
use crate::storage::model::Connection;
use crate::storage::secrets::{ConnectionKeys, DhchapSecret};
use crate::storage::{self as model_ops};

/// What a message shows in place of a secret a request carried.
pub const HIDDEN: &str = "(write-only)";
const LOCAL_SECRET: &str = "ConnectionKeys/DHCHAP/LocalDHCHAPAuthSecret";
const PEER_SECRET: &str = "ConnectionKeys/DHCHAP/PeerDHCHAPAuthSecret";

pub async fn list(
    State(state): State<AppState>,
    Path(fabric): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    fabrics::check_id(&fabric)?;
    let members: Vec<String> = model_ops::desired(&state)
        .map_err(RedfishError::internal)?
        .connections
        .iter()
        .map(|c| fabrics::connection_uri(c.id))
        .collect();
    let body = json!({
        "@odata.id": CONNECTIONS,
        "@odata.type": "#ConnectionCollection.ConnectionCollection",
        "Name": "Connection Collection",
        "Members@odata.count": members.len(),
        "Members": resource::members(members),
    });
    Ok(resource::get(
        &headers,
        body,
        "ConnectionCollection",
        "GET, HEAD, POST",
    ))
}

fn body_of(state: &AppState, connection: &Connection) -> Value {
    let volume_info: Vec<Value> = connection
        .volumes
        .iter()
        .map(|v| {
            json!({
                "AccessCapabilities": ["Read", "Write"],
                "Volume": {"@odata.id": volumes::uri(v.volume)},
            })
        })
        .collect();
    let initiators: Vec<Value> = connection
        .initiators
        .iter()
        .map(|id| json!({"@odata.id": fabrics::initiator_uri(*id)}))
        .collect();
    let targets: Vec<Value> = fabrics::target_ids(state)
        .iter()
        .map(|id| json!({"@odata.id": fabrics::endpoint_uri(id)}))
        .collect();
    let mut body = json!({
        "@odata.id": fabrics::connection_uri(connection.id),
        "@odata.type": "#Connection.v1_4_0.Connection",
        "Id": connection.id.to_string(),
        "Name": connection.name,
        "ConnectionType": "Storage",
        "VolumeInfo": volume_info,
        "Links": {
            "InitiatorEndpoints@odata.count": initiators.len(),
            "InitiatorEndpoints": initiators,
            "TargetEndpoints@odata.count": targets.len(),
            "TargetEndpoints": targets,
        },
        "Status": status(connection),
    });
    if connection.keys.is_some() {
        // Write-only: present, so a client sees keys are set, but null.
        body["ConnectionKeys"] = json!({"DHCHAP": {
            "LocalDHCHAPAuthSecret": null,
            "PeerDHCHAPAuthSecret": null,
        }});
    }
    body
}

/// Keyed: OK. Unkeyed: a warning, with a condition saying what is missing
/// (the hosts are let in by their NQN alone, which any host can claim).
fn status(connection: &Connection) -> Value {
    if connection.keys.is_some() {
        return json!({"State": "Enabled", "Health": "OK"});
    }
    let message = crate::redfish::message::message("PropertyMissing", &[LOCAL_SECRET]);
    json!({
        "State": "Enabled",
        "Health": "Warning",
        "Conditions": [{
            "MessageId": message["MessageId"],
            "Message": message["Message"],
            "MessageArgs": message["MessageArgs"],
            "Severity": "Warning",
            "Resolution": "The hosts are let in by their host NQN alone, unauthenticated. \
                PATCH ConnectionKeys/DHCHAP with a DH-HMAC-CHAP secret so they must prove it.",
        }],
    })
}

/// One secret of `ConnectionKeys/DHCHAP`; errors never show the value.
fn secret(property: &str, value: &Value) -> Result<DhchapSecret, RedfishError> {
    let text = value
        .as_str()
        .ok_or_else(|| RedfishError::bad_request("PropertyValueTypeError", &[HIDDEN, property]))?;
    DhchapSecret::parse(text).map_err(|why| {
        RedfishError::bad_request("PropertyValueFormatError", &[HIDDEN, property])
            .with_detail(&format!("the secret {why}"))
    })
}

/// `ConnectionKeys`: `{"DHCHAP": {Local..., Peer...}}`, or null (none).
fn connection_keys(value: &Value) -> Result<Option<ConnectionKeys>, RedfishError> {
    if value.is_null() {
        return Ok(None);
    }
    let object = value
        .as_object()
        .ok_or_else(|| body::type_error("ConnectionKeys", value))?;
    body::only_known(object, &["DHCHAP"])?;
    let dhchap = match object.get("DHCHAP") {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v
            .as_object()
            .ok_or_else(|| body::type_error("ConnectionKeys/DHCHAP", v))?,
    };
    body::only_known(dhchap, &["LocalDHCHAPAuthSecret", "PeerDHCHAPAuthSecret"])?;
    let local = dhchap
        .get("LocalDHCHAPAuthSecret")
        .filter(|v| !v.is_null())
        .map(|v| secret(LOCAL_SECRET, v))
        .transpose()?;
    let peer = dhchap
        .get("PeerDHCHAPAuthSecret")
        .filter(|v| !v.is_null())
        .map(|v| secret(PEER_SECRET, v))
        .transpose()?;
    match (local, peer) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(RedfishError::bad_request(
            "PropertyValueConflict",
            &[PEER_SECRET, LOCAL_SECRET],
        )
        .with_detail("the controller's secret needs the hosts' secret")),
        (Some(local), peer) => {
            if peer.as_ref() == Some(&local) {
                return Err(RedfishError::bad_request(
                    "PropertyValueConflict",
                    &[PEER_SECRET, LOCAL_SECRET],
                )
                .with_detail("the controller's secret must differ from the hosts'"));
            }
            Ok(Some(ConnectionKeys { local, peer }))
        }
    }
}

fn find(state: &AppState, id: &str) -> Result<Connection, RedfishError> {
    id.parse::<u64>()
        .ok()
        .and_then(|n| {
            model_ops::desired(state)
                .ok()?
                .connections
                .into_iter()
                .find(|c| c.id == n)
        })
        .ok_or_else(|| RedfishError::not_found("Connection", id))
}

pub async fn get(
    State(state): State<AppState>,
    Path((fabric, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    fabrics::check_id(&fabric)?;
    let connection = find(&state, &id)?;
    Ok(resource::get(
        &headers,
        body_of(&state, &connection),
        "Connection",
        "GET, HEAD, PATCH, DELETE",
    ))
}

/// PATCH: `ConnectionKeys` (replaced; null removes them) and nothing else.
pub async fn patch(
    State(state): State<AppState>,
    Path((fabric, id)): Path<(String, String)>,
    raw: Bytes,
) -> Result<Response, RedfishError> {
    fabrics::check_id(&fabric)?;
    let connection = find(&state, &id)?;
    let object = body::object(&raw)?;
    for name in object.keys() {
        if name != "ConnectionKeys" {
            return Err(RedfishError::bad_request("PropertyNotWritable", &[name]));
        }
    }
    let Some(value) = object.get("ConnectionKeys") else {
        return Err(RedfishError::bad_request("NoOperation", &[]));
    };
    let keys = connection_keys(value)?;
    let connection = model_ops::set_connection_keys(&state, connection.id, keys)
        .await
        .map_err(storage::error)?;
    state
        .events
        .changed(&fabrics::connection_uri(connection.id), "Connection");
    Ok(resource::get(
        &HeaderMap::new(),
        body_of(&state, &connection),
        "Connection",
        "GET, HEAD, PATCH, DELETE",
    ))
}

/// The volumes of `VolumeInfo`; each must allow reading and writing.
fn volume_ids(value: &Value) -> Result<Vec<u64>, RedfishError> {
    let list = value
        .as_array()
        .ok_or_else(|| body::type_error("VolumeInfo", value))?;
    if list.is_empty() {
        return Err(RedfishError::bad_request(
            "ArraySizeTooShort",
            &["VolumeInfo", "1"],
        ));
    }
    let mut ids = Vec::new();
    for entry in list {
        let object = entry
            .as_object()
            .ok_or_else(|| body::type_error("VolumeInfo", entry))?;
        body::only_known(object, &["Volume", "AccessCapabilities"])?;
        if let Some(access) = object.get("AccessCapabilities") {
            let mut granted: Vec<&str> = access
                .as_array()
                .ok_or_else(|| body::type_error("VolumeInfo/AccessCapabilities", access))?
                .iter()
                .map(|a| a.as_str().unwrap_or(""))
                .collect();
            granted.sort_unstable();
            if granted != ["Read", "Write"] {
                return Err(RedfishError::bad_request(
                    "PropertyValueNotInList",
                    &[&access.to_string(), "VolumeInfo/AccessCapabilities"],
                )
                .with_detail("hosts get read and write access: [\"Read\", \"Write\"]"));
            }
        }
        let link = object
            .get("Volume")
            .ok_or_else(|| RedfishError::bad_request("PropertyMissing", &["VolumeInfo/Volume"]))?;
        let uri = body::link("VolumeInfo/Volume", link)?;
        let id = body::member_id(&volumes::collection_uri(), uri)
            .and_then(|id| id.parse::<u64>().ok())
            .ok_or_else(|| {
                RedfishError::new(StatusCode::BAD_REQUEST, "ResourceMissingAtURI", &[uri])
            })?;
        if ids.contains(&id) {
            return Err(RedfishError::bad_request(
                "PropertyValueIncorrect",
                &["VolumeInfo/Volume", uri],
            )
            .with_detail("the volume is listed twice"));
        }
        ids.push(id);
    }
    Ok(ids)
}

/// The initiator endpoints of `Links`; `TargetEndpoints`, if given, must be
/// all of them (every cluster serves every connection).
fn initiator_ids(state: &AppState, links: &Value) -> Result<Vec<u64>, RedfishError> {
    let object = links
        .as_object()
        .ok_or_else(|| body::type_error("Links", links))?;
    body::only_known(object, &["InitiatorEndpoints", "TargetEndpoints"])?;
    if let Some(targets) = object.get("TargetEndpoints") {
        let mut named: Vec<&str> = body::links("Links/TargetEndpoints", targets)?;
        named.sort_unstable();
        let all: Vec<String> = fabrics::target_ids(state)
            .iter()
            .map(|id| fabrics::endpoint_uri(id))
            .collect();
        let mut all: Vec<&str> = all.iter().map(String::as_str).collect();
        all.sort_unstable();
        if named != all {
            return Err(RedfishError::bad_request(
                "PropertyValueIncorrect",
                &["Links/TargetEndpoints", &targets.to_string()],
            )
            .with_detail("a connection is served through every data cluster's portal: name all target endpoints, or none"));
        }
    }
    let value = object.get("InitiatorEndpoints").ok_or_else(|| {
        RedfishError::bad_request(
            "CreateFailedMissingReqProperties",
            &["Links/InitiatorEndpoints"],
        )
    })?;
    let uris = body::links("Links/InitiatorEndpoints", value)?;
    if uris.is_empty() {
        return Err(RedfishError::bad_request(
            "ArraySizeTooShort",
            &["Links/InitiatorEndpoints", "1"],
        ));
    }
    let mut ids = Vec::new();
    for uri in uris {
        let id = body::member_id(fabrics::ENDPOINTS, uri)
            .and_then(fabrics::initiator_number)
            .ok_or_else(|| {
                RedfishError::bad_request(
                    "PropertyValueIncorrect",
                    &["Links/InitiatorEndpoints", uri],
                )
                .with_detail("not an initiator endpoint of this fabric")
            })?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// What a connection POST asks for.
struct ConnectionRequest {
    name: Option<String>,
    volumes: Vec<u64>,
    initiators: Vec<u64>,
    keys: Option<ConnectionKeys>,
}

fn parse_create(
    state: &AppState,
    object: &Map<String, Value>,
) -> Result<ConnectionRequest, RedfishError> {
    for name in object.keys() {
        if name == "Id" {
            return Err(RedfishError::bad_request("PropertyNotWritable", &[name]));
        }
    }
    body::only_known(
        object,
        &[
            "Name",
            "ConnectionType",
            "VolumeInfo",
            "Links",
            "Description",
            "ConnectionKeys",
        ],
    )?;
    if let Some(kind) = object.get("ConnectionType")
        && kind != "Storage"
    {
        return Err(RedfishError::bad_request(
            "PropertyValueNotInList",
            &[&kind.to_string(), "ConnectionType"],
        ));
    }
    let volume_info = object.get("VolumeInfo").ok_or_else(|| {
        RedfishError::bad_request("CreateFailedMissingReqProperties", &["VolumeInfo"])
    })?;
    let volumes = volume_ids(volume_info)?;
    let links = object.get("Links").ok_or_else(|| {
        RedfishError::bad_request(
            "CreateFailedMissingReqProperties",
            &["Links/InitiatorEndpoints"],
        )
    })?;
    let initiators = initiator_ids(state, links)?;
    let name = object
        .get("Name")
        .map(|v| body::string("Name", v).map(str::to_string))
        .transpose()?;
    let keys = object
        .get("ConnectionKeys")
        .map(connection_keys)
        .transpose()?
        .flatten();
    Ok(ConnectionRequest {
        name,
        volumes,
        initiators,
        keys,
    })
}

pub async fn create(
    State(state): State<AppState>,
    Path(fabric): Path<String>,
    raw: Bytes,
) -> Result<Response, RedfishError> {
    fabrics::check_id(&fabric)?;
    let object = body::object(&raw)?;
    let request = parse_create(&state, &object)?;
    let connection = model_ops::create_connection(
        &state,
        request.name,
        request.volumes,
        request.initiators,
        request.keys,
    )
    .await
    .map_err(storage::error)?;
    state
        .events
        .created(&fabrics::connection_uri(connection.id), "Connection");
    Ok(resource::created(
        &fabrics::connection_uri(connection.id),
        body_of(&state, &connection),
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    Path((fabric, id)): Path<(String, String)>,
) -> Result<Response, RedfishError> {
    fabrics::check_id(&fabric)?;
    let connection = find(&state, &id)?;
    model_ops::delete_connection(&state, connection.id)
        .await
        .map_err(storage::error)?;
    state
        .events
        .removed(&fabrics::connection_uri(connection.id), "Connection");
    Ok(StatusCode::NO_CONTENT.into_response())
}

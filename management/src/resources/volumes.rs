//! Volumes: `Storage/appliance/Volumes`. A POST places a volume on the
//! data clusters' drives, builds it on every cluster, zeroes it and answers
//! 201; PATCH renames it; DELETE removes it once no connection uses it.
//! Each volume is one NVMe namespace of the storage's subsystem (and an NBD
//! export, when those are enabled), with I/O statistics from the clusters.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::session_service::{merge, not_applied};
use super::{drives, fabrics, storage, storage_controllers, storage_pools, task_service};
use crate::dataplane;
use crate::redfish::body;
use crate::redfish::message::{RedfishError, message, registry_message};
use crate::redfish::resource;
use crate::state::AppState;
use crate::storage::check::{self, CheckError, CheckResult};
use crate::storage::model::{Provisioning, RaidType, Replica, ReplicaKind, Volume};
use crate::storage::{self as model_ops, VolumeRequest, health, plan};
use crate::tasks::Outcome;

pub fn collection_uri() -> String {
    format!("{}/Volumes", storage::URI)
}

pub fn uri(id: u64) -> String {
    format!("{}/{id}", collection_uri())
}

/// Largest volume asked for (1 EiB): far beyond any pool, and far from
/// overflowing the arithmetic that splits it into legs.
const MAX_VOLUME_BYTES: u64 = 1 << 60;

const ALLOW_ONE: &str = "GET, HEAD, PATCH, DELETE";

/// The URIs of every volume.
pub fn member_uris(state: &AppState) -> Result<Vec<String>, RedfishError> {
    Ok(model_ops::desired(state)
        .map_err(RedfishError::internal)?
        .volumes
        .iter()
        .map(|v| uri(v.id))
        .collect())
}

pub async fn list(
    State(state): State<AppState>,
    Path(storage_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    storage::check_id(&storage_id)?;
    let members = member_uris(&state)?;
    let body = json!({
        "@odata.id": collection_uri(),
        "@odata.type": "#VolumeCollection.VolumeCollection",
        "Name": "Volume Collection",
        "Members@odata.count": members.len(),
        "Members": resource::members(members),
    });
    Ok(resource::get(
        &headers,
        body,
        "VolumeCollection",
        "GET, HEAD, POST",
    ))
}

fn find(state: &AppState, id: &str) -> Result<Volume, RedfishError> {
    id.parse::<u64>()
        .ok()
        .and_then(|n| {
            model_ops::desired(state)
                .ok()?
                .volumes
                .into_iter()
                .find(|v| v.id == n)
        })
        .ok_or_else(|| RedfishError::not_found("Volume", id))
}

/// Redfish `Status` from how many clusters serve the volume and, for a
/// redundant one, from its raid's health (`storage::health`), with a
/// StorageDevice condition while it is not OK.
fn status(state: &AppState, volume: &Volume) -> Value {
    if volume.raid_type.has_owner()
        && model_ops::serving(state, volume).is_some()
        && let Some((health, owner)) = health::observe(state, volume)
    {
        let (state, health_text) = health.status();
        let conditions: Vec<Value> = health
            .condition_key()
            .map(|key| condition(&health_message(volume.id, key, owner), volume.id))
            .into_iter()
            .collect();
        return json!({"State": state, "Health": health_text, "Conditions": conditions});
    }
    match model_ops::serving(state, volume) {
        Some((serving, expected)) if serving == expected => {
            json!({"State": "Enabled", "Health": "OK"})
        }
        Some((0, _)) => json!({"State": "UnavailableOffline", "Health": "Critical"}),
        Some(_) => json!({"State": "Enabled", "Health": "Warning"}),
        None => json!({"State": "Starting"}),
    }
}

/// Swordfish `WriteHoleProtectionPolicy` of a redundant volume. Mirrors
/// have no parity to tear (an unclean stop is resynced from the bitmap):
/// `Off`. A parity raid is protected only when the dataplane says it
/// journals its stripes (`shoal.write_hole_protection` of
/// `bdev_raid_get_bdevs`); while the raid is out of sight nothing is
/// claimed.
fn write_hole_policy(raid_type: RaidType, raid: Option<&Value>) -> &'static str {
    let parity = matches!(raid_type, RaidType::Raid5 | RaidType::Raid6);
    match raid {
        Some(raid) if parity && raid["shoal"]["write_hole_protection"] == "journal" => "Journaling",
        _ => "Off",
    }
}

/// StorageDevice message `key` (`VolumeDegraded`, `VolumeOK`...) about
/// volume `id`: the volume's URI, and the controller of the cluster that
/// holds its raid (the storage itself when none does).
pub fn health_message(id: u64, key: &str, owner: Option<u32>) -> Value {
    let location = owner.map_or_else(|| storage::URI.to_string(), storage_controllers::uri);
    registry_message("StorageDevice", key, &[&uri(id), &location])
}

/// A `Status.Conditions` entry made of a registry message.
fn condition(message: &Value, id: u64) -> Value {
    json!({
        "MessageId": message["MessageId"],
        "Message": message["Message"],
        "MessageArgs": message["MessageArgs"],
        "Severity": message["MessageSeverity"],
        "Resolution": message["Resolution"],
        "OriginOfCondition": {"@odata.id": uri(id)},
    })
}

fn body_of(state: &AppState, volume: &Volume) -> Value {
    let desired = model_ops::desired(state).unwrap_or_default();
    let drive_links: Vec<Value> = volume
        .clusters()
        .map(|c| json!({"@odata.id": drives::uri(&drives::drive_id(c))}))
        .collect();
    let clients: Vec<Value> = desired
        .connections_of(volume.id)
        .flat_map(|c| c.initiators.iter())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|id| json!({"@odata.id": fabrics::initiator_uri(*id)}))
        .collect();
    let servers: Vec<Value> = fabrics::target_ids(state)
        .into_iter()
        .map(|id| json!({"@odata.id": fabrics::endpoint_uri(&id)}))
        .collect();
    let export = plan::volume_bdev(volume.id);
    let layout = match volume.pool {
        Some(pool) => format!(
            "An lvol of thin pool {pool} ({} clusters of its store as it is written)",
            if volume.provisioning == Provisioning::Thin {
                "taking"
            } else {
                "holding all its"
            }
        ),
        None => format!(
            "{} striped over {} data cluster drive(s) in {}-KiB strips",
            volume.raid_type.redfish(),
            volume.legs.len(),
            volume.strip_bytes / 1024,
        ),
    };
    // A volume in a pool holds the store's clusters it was written in (all
    // of them when Fixed); a volume of the drives holds its extents.
    let allocated = match volume.pool {
        Some(_) => model_ops::allocated_bytes(state, volume),
        None => Some(volume.capacity_bytes),
    };
    let pool_uri = volume
        .pool
        .map_or(storage_pools::DEFAULT_URI.to_string(), storage_pools::uri);
    let mut body = json!({
        "@odata.id": uri(volume.id),
        "@odata.type": "#Volume.v1_10_2.Volume",
        "Id": volume.id.to_string(),
        "Name": volume.name,
        "Description": format!(
            "{layout}; NVMe namespace {} of the storage's subsystem on every cluster's portal; NBD export {export} when NBD exports are enabled",
            volume.nsid,
        ),
        "Status": status(state, volume),
        "CapacityBytes": volume.capacity_bytes,
        "BlockSizeBytes": volume.block_size,
        "RAIDType": volume.raid_type.redfish(),
        "StripSizeBytes": volume.strip_bytes,
        "MediaSpanCount": volume.legs.len(),
        "Encrypted": false,
        "ProvisioningPolicy": volume.provisioning.redfish(),
        "Identifiers": [
            {"DurableNameFormat": "NGUID", "DurableName": volume.nguid()},
            {"DurableNameFormat": "UUID", "DurableName": volume.uuid.to_string()},
        ],
        "NVMeNamespaceProperties": {
            "NamespaceId": format!("0x{:x}", volume.nsid),
            "NVMeVersion": "1.4",
            "IsShareable": true,
            "MetadataTransferredAtEndOfDataLBA": false,
            "NamespaceFeatures": {
                "SupportsThinProvisioning": volume.provisioning == Provisioning::Thin,
                "SupportsAtomicTransactionSize": false,
                "SupportsDeallocatedOrUnwrittenLBError": false,
                "SupportsNGUIDReuse": false,
                "SupportsIOPerformanceHints": false,
            },
        },
        "Capacity": {"Data": {
            "AllocatedBytes": allocated,
            "ConsumedBytes": allocated,
            "ProvisionedBytes": volume.capacity_bytes,
        }},
        "Metrics": {"@odata.id": format!("{}/Metrics", uri(volume.id))},
        "Actions": {"#Volume.Initialize": {
            "target": format!("{}/Actions/Volume.Initialize", uri(volume.id)),
            "InitializeType@Redfish.AllowableValues": ["Fast", "Slow"],
        }},
        "Links": {
            "Drives@odata.count": drive_links.len(),
            "Drives": drive_links,
            "ClientEndpoints@odata.count": clients.len(),
            "ClientEndpoints": clients,
            "ServerEndpoints@odata.count": servers.len(),
            "ServerEndpoints": servers,
            "OwningStorageResource": {"@odata.id": storage::URI},
            "ProvidingStoragePool": {"@odata.id": pool_uri},
        },
    });
    if let Some(display_name) = &volume.display_name {
        body["DisplayName"] = json!(display_name);
    }
    if volume.pool.is_some() {
        body["Actions"][CREATE_REPLICA_TARGET] = json!({
            "target": create_replica_target(volume.id),
            "ReplicaType@Redfish.AllowableValues": [if volume.is_read_only() { "Clone" } else { "Snapshot" }],
            "ReplicaUpdateMode@Redfish.AllowableValues": REPLICA_UPDATE_MODES,
        });
        body["AccessCapabilities"] = if volume.is_read_only() {
            json!(["Read"])
        } else {
            json!(["Read", "Write"])
        };
        let targets: Vec<Value> = desired
            .volumes
            .iter()
            .filter(|v| v.replica.is_some_and(|r| r.source == volume.id))
            .map(|v| json!({"@odata.id": uri(v.id)}))
            .collect();
        if volume.is_read_only() {
            body["Actions"][SPLIT_REPLICATION] = json!({
                "target": action_target(volume.id, "Volume.SplitReplication"),
            });
        }
        body["Actions"][REMOVE_REPLICA_RELATIONSHIP] = json!({
            "target": action_target(volume.id, "Volume.RemoveReplicaRelationship"),
        });
        body["ReplicaTargets@odata.count"] = json!(targets.len());
        body["ReplicaTargets"] = json!(targets);
    }
    if let Some(replica) = volume.replica {
        body["ReplicaInfo"] = json!({
            "ReplicaType": replica.kind.redfish(),
            "ReplicaRole": "Target",
            "ReplicaUpdateMode": "Asynchronous",
            "ReplicaReadOnlyAccess": if replica.kind == ReplicaKind::Snapshot { "ReplicaElement" } else { "SourceElement" },
            "Replica": {"@odata.id": uri(replica.source)},
            "WhenActivated": super::time::rfc3339(super::time::from_unix(volume.created)),
        });
    }
    if let Some(percent) = model_ops::initialize_progress(state, volume.id) {
        body["Operations"] = json!([{"Operation": "Initialize", "PercentageComplete": percent}]);
    }
    if volume.raid_type.is_redundant() && volume.pool.is_none() {
        let raid = model_ops::raid_of(state, volume);
        body["Actions"][CHECK_CONSISTENCY] = json!({"target": check_target(volume.id)});
        // No spare drives: a failed leg is rebuilt when its cluster is back.
        body["RecoverableCapacitySourceCount"] = json!(0);
        body["WriteHoleProtectionPolicy"] =
            json!(write_hole_policy(volume.raid_type, raid.as_ref()));
        if let Some(operation) = raid.as_ref().and_then(raid_operation) {
            body["Operations"] = json!([operation]);
        }
    }
    body
}

/// The raid's running process as a Swordfish `Operation`.
fn raid_operation(raid: &Value) -> Option<Value> {
    let process = &raid["process"];
    let operation = match process["type"].as_str()? {
        "rebuild" | "resync" => "Rebuild",
        "check" => "CheckConsistency",
        _ => return None,
    };
    let percent = process["progress"]["percent"].as_f64().unwrap_or(0.0);
    Some(json!({
        "Operation": operation,
        "PercentageComplete": percent.clamp(0.0, 100.0) as u64,
    }))
}

pub async fn get(
    State(state): State<AppState>,
    Path((storage_id, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    storage::check_id(&storage_id)?;
    let volume = find(&state, &id)?;
    Ok(resource::get(
        &headers,
        body_of(&state, &volume),
        "Volume",
        ALLOW_ONE,
    ))
}

/// Properties a POST may set, and those it may name but not set.
const CREATE_PROPERTIES: &[&str] = &[
    "Name",
    "DisplayName",
    "CapacityBytes",
    "RAIDType",
    "StripSizeBytes",
    "Links",
    "CapacitySources",
    "VolumeType",
    "Encrypted",
    "ProvisioningPolicy",
    "InitializeMethod",
];
const READ_ONLY: &[&str] = &[
    "Id",
    "Status",
    "Identifiers",
    "BlockSizeBytes",
    "MediaSpanCount",
    "NVMeNamespaceProperties",
    "Capacity",
    "Metrics",
    "Description",
    "Operations",
];

fn optional_string(
    object: &Map<String, Value>,
    name: &str,
) -> Result<Option<String>, RedfishError> {
    object
        .get(name)
        .map(|v| body::string(name, v).map(str::to_string))
        .transpose()
}

/// The data clusters named by `Links.Drives`, in order.
fn linked_clusters(state_clusters: u32, links: &Value) -> Result<Option<Vec<u32>>, RedfishError> {
    let Some(links) = links.as_object() else {
        return Err(body::type_error("Links", links));
    };
    body::only_known(links, &["Drives"])?;
    let Some(value) = links.get("Drives") else {
        return Ok(None);
    };
    let uris = body::links("Links/Drives", value)?;
    if uris.is_empty() {
        return Err(RedfishError::bad_request(
            "ArraySizeTooShort",
            &["Links/Drives", "1"],
        ));
    }
    let mut clusters = Vec::new();
    for uri in uris {
        let cluster = drives::cluster_of(uri)
            .filter(|c| *c < state_clusters)
            .ok_or_else(|| {
                RedfishError::bad_request("PropertyValueIncorrect", &["Links/Drives", uri])
                    .with_detail("it is not a drive of this storage")
            })?;
        if clusters.contains(&cluster) {
            return Err(RedfishError::bad_request(
                "PropertyValueIncorrect",
                &["Links/Drives", uri],
            )
            .with_detail("the drive is listed twice"));
        }
        clusters.push(cluster);
    }
    Ok(Some(clusters))
}

/// `CapacitySources: [{"ProvidingPools": [...]}]` names one pool of this
/// storage: the default one (extents of the drives; `None`) or a thin
/// pool (its id).
fn capacity_pool(value: &Value) -> Result<Option<u64>, RedfishError> {
    let mut chosen = None;
    let sources = value
        .as_array()
        .ok_or_else(|| body::type_error("CapacitySources", value))?;
    for source in sources {
        let object = source
            .as_object()
            .ok_or_else(|| body::type_error("CapacitySources", source))?;
        body::only_known(object, &["ProvidingPools"])?;
        let Some(pools) = object.get("ProvidingPools") else {
            continue;
        };
        let uris = body::one_or_more_links("CapacitySources/ProvidingPools", pools)?;
        for uri in uris {
            let pool = storage_pools::pool_of_uri(uri).ok_or_else(|| {
                RedfishError::bad_request(
                    "PropertyValueIncorrect",
                    &["CapacitySources/ProvidingPools", uri],
                )
                .with_detail(&format!(
                    "name {} or one of this storage's thin pools",
                    storage_pools::DEFAULT_URI
                ))
            })?;
            if chosen.is_some_and(|c| c != pool) {
                return Err(RedfishError::bad_request(
                    "PropertyValueIncorrect",
                    &["CapacitySources/ProvidingPools", uri],
                )
                .with_detail("a volume comes from one pool"));
            }
            chosen = Some(pool);
        }
    }
    Ok(chosen.flatten())
}

/// What a volume POST asks for: extents of the drives, or a volume in a
/// thin pool.
enum CreateRequest {
    Extents(VolumeRequest),
    InPool(model_ops::PoolVolumeRequest),
}

/// Reads a POST body into a volume request, or the first problem found.
/// How a POST wants its volume initialised: `None` when it waits for the
/// volume (201), `Some` when it asked for a task (202, `Foreground`).
fn initialize_method(object: &Map<String, Value>) -> Result<Option<&'static str>, RedfishError> {
    match object.get("InitializeMethod") {
        None => Ok(None),
        Some(value) if value == "Foreground" => Ok(Some("Foreground")),
        Some(value) => Err(RedfishError::bad_request(
            "PropertyValueNotInList",
            &[&value.to_string(), "InitializeMethod"],
        )
        .with_detail("a volume is zeroed before it is served: only Foreground is supported")),
    }
}

fn parse_create(object: &Map<String, Value>, clusters: u32) -> Result<CreateRequest, RedfishError> {
    for name in object.keys() {
        if READ_ONLY.contains(&name.as_str()) {
            return Err(RedfishError::bad_request("PropertyNotWritable", &[name]));
        }
    }
    body::only_known(object, CREATE_PROPERTIES)?;
    let capacity = object.get("CapacityBytes").ok_or_else(|| {
        RedfishError::bad_request("CreateFailedMissingReqProperties", &["CapacityBytes"])
    })?;
    let capacity_bytes = body::unsigned("CapacityBytes", capacity)?;
    if capacity_bytes == 0 || capacity_bytes > MAX_VOLUME_BYTES {
        return Err(RedfishError::bad_request(
            "PropertyValueOutOfRange",
            &[&capacity_bytes.to_string(), "CapacityBytes"],
        ));
    }
    let raid_type = match object.get("RAIDType") {
        None => RaidType::Raid0,
        Some(value) => {
            let text = body::string("RAIDType", value)?;
            RaidType::parse(text)
                .filter(|_| RaidType::SUPPORTED.contains(&text))
                .ok_or_else(|| {
                    RedfishError::bad_request("PropertyValueNotInList", &[text, "RAIDType"])
                        .with_detail(&format!("supported: {}", RaidType::SUPPORTED.join(", ")))
                })?
        }
    };
    let strip_bytes = object
        .get("StripSizeBytes")
        .map(|v| body::unsigned("StripSizeBytes", v))
        .transpose()?;
    let checks: [(&str, &[Value]); 3] = [
        ("VolumeType", &[json!("RawDevice")]),
        ("Encrypted", &[json!(false)]),
        ("ProvisioningPolicy", &[json!("Fixed"), json!("Thin")]),
    ];
    for (name, allowed) in checks {
        if let Some(value) = object.get(name)
            && !allowed.contains(value)
        {
            return Err(RedfishError::bad_request(
                "PropertyValueNotInList",
                &[&value.to_string(), name],
            ));
        }
    }
    let pool = match object.get("CapacitySources") {
        Some(sources) => capacity_pool(sources)?,
        None => None,
    };
    let provisioning = object
        .get("ProvisioningPolicy")
        .and_then(Value::as_str)
        .and_then(Provisioning::parse);
    if let Some(pool) = pool {
        // The pool's volume decides the layout: a volume in it is an lvol.
        for name in ["RAIDType", "StripSizeBytes", "Links", "InitializeMethod"] {
            if object.contains_key(name) {
                return Err(RedfishError::bad_request(
                    "PropertyValueConflict",
                    &[name, "CapacitySources/ProvidingPools"],
                )
                .with_detail(&format!(
                    "a volume of thin pool {pool} takes its layout from the pool's volume"
                )));
            }
        }
        return Ok(CreateRequest::InPool(model_ops::PoolVolumeRequest {
            name: optional_string(object, "Name")?,
            display_name: optional_string(object, "DisplayName")?,
            capacity_bytes,
            provisioning: provisioning.unwrap_or(Provisioning::Thin),
            pool,
        }));
    }
    if provisioning == Some(Provisioning::Thin) {
        return Err(RedfishError::bad_request(
            "PropertyValueConflict",
            &["ProvisioningPolicy", "CapacitySources/ProvidingPools"],
        )
        .with_detail(
            "a Thin volume comes from a thin pool: name one in CapacitySources/ProvidingPools",
        ));
    }
    let linked = match object.get("Links") {
        Some(links) => linked_clusters(clusters, links)?,
        None => None,
    };
    Ok(CreateRequest::Extents(VolumeRequest {
        name: optional_string(object, "Name")?,
        display_name: optional_string(object, "DisplayName")?,
        capacity_bytes,
        raid_type,
        strip_bytes,
        clusters: linked,
    }))
}

pub async fn create(
    State(state): State<AppState>,
    Path(storage_id): Path<String>,
    raw: Bytes,
) -> Result<Response, RedfishError> {
    storage::check_id(&storage_id)?;
    let object = body::object(&raw)?;
    let fabric = model_ops::fabric(&state).await.ok_or_else(|| {
        storage::error(model_ops::StorageError::Unavailable(
            "the supervisor does not answer".into(),
        ))
    })?;
    let request = match parse_create(&object, fabric.clusters)? {
        CreateRequest::Extents(request) => request,
        CreateRequest::InPool(request) => {
            let volume = model_ops::create_pool_volume(&state, request)
                .await
                .map_err(storage::error)?;
            state.events.created(&uri(volume.id), "Volume");
            return Ok(resource::created(&uri(volume.id), body_of(&state, &volume)));
        }
    };
    if initialize_method(&object)?.is_none() {
        let volume = model_ops::create_volume(&state, request)
            .await
            .map_err(storage::error)?;
        state.events.created(&uri(volume.id), "Volume");
        return Ok(resource::created(&uri(volume.id), body_of(&state, &volume)));
    }
    // Foreground initialisation: the creation, zeroing included, is a task.
    let worker = state.clone();
    task_service::spawn(
        &state,
        "Create a volume",
        "POST",
        &collection_uri(),
        |_| async move {
            let volume = model_ops::create_volume(&worker, request)
                .await
                .map_err(storage::error)?;
            worker.events.created(&uri(volume.id), "Volume");
            Ok(Outcome::response(
                StatusCode::CREATED.as_u16(),
                Some(uri(volume.id)),
                body_of(&worker, &volume),
            ))
        },
    )
    .await
}

/// `Volume.Initialize`: zeroes the whole volume, as a task (202).
pub async fn initialize(
    State(state): State<AppState>,
    Path((storage_id, id)): Path<(String, String)>,
    raw: Bytes,
) -> Result<Response, RedfishError> {
    storage::check_id(&storage_id)?;
    let volume = find(&state, &id)?;
    let object = if raw.is_empty() {
        Map::new()
    } else {
        body::object(&raw)?
    };
    const ACTION: &str = "Volume.Initialize";
    for (name, value) in &object {
        match name.as_str() {
            "InitializeType" if value == "Fast" || value == "Slow" => {}
            "InitializeType" => {
                return Err(RedfishError::bad_request(
                    "ActionParameterValueNotInList",
                    &[&value.to_string(), name, ACTION],
                ));
            }
            _ if body::is_annotation(name) => {}
            _ => {
                return Err(RedfishError::bad_request(
                    "ActionParameterUnknown",
                    &[ACTION, name],
                ));
            }
        }
    }
    model_ops::check_initializable(&volume).map_err(storage::error)?;
    if model_ops::initialize_progress(&state, volume.id).is_some() {
        return Err(storage::error(model_ops::StorageError::InUse(format!(
            "volume {} is being initialised already",
            volume.name
        ))));
    }
    let target = format!("{}/Actions/{ACTION}", uri(volume.id));
    let name = format!("Initialize volume {}", volume.name);
    let worker = state.clone();
    task_service::spawn(&state, &name, "POST", &target, move |task| async move {
        let progress = |percent| worker.tasks.progress(task, percent);
        let volume = model_ops::initialize_volume(&worker, volume.id, progress)
            .await
            .map_err(storage::error)?;
        Ok(Outcome::response(
            StatusCode::OK.as_u16(),
            None,
            body_of(&worker, &volume),
        ))
    })
    .await
}

const CREATE_REPLICA_TARGET: &str = "#Volume.CreateReplicaTarget";

fn create_replica_target(id: u64) -> String {
    format!("{}/Actions/Volume.CreateReplicaTarget", uri(id))
}

/// The update modes a replica takes: a snapshot or clone is a point in
/// time, never updated from its source afterwards.
const REPLICA_UPDATE_MODES: [&str; 1] = ["Asynchronous"];

/// `Volume.CreateReplicaTarget` of a volume in a thin pool: a `Snapshot`
/// (read-only) of it, or a `Clone` (writable) of a snapshot, in the same
/// pool; 201 with the new volume.
pub async fn create_replica(
    State(state): State<AppState>,
    Path((storage_id, id)): Path<(String, String)>,
    raw: Bytes,
) -> Result<Response, RedfishError> {
    storage::check_id(&storage_id)?;
    let source = find(&state, &id)?;
    const ACTION: &str = "Volume.CreateReplicaTarget";
    let object = body::object(&raw)?;
    body::only_known_parameters(
        &object,
        ACTION,
        &[
            "ReplicaType",
            "ReplicaUpdateMode",
            "TargetStoragePool",
            "VolumeName",
        ],
    )?;
    let required = |name: &str| {
        object
            .get(name)
            .ok_or_else(|| RedfishError::bad_request("ActionParameterMissing", &[ACTION, name]))
    };
    let text = |name: &str, value: &Value| {
        value.as_str().map(str::to_string).ok_or_else(|| {
            RedfishError::bad_request(
                "ActionParameterValueTypeError",
                &[&value.to_string(), name, ACTION],
            )
        })
    };
    let kind = text("ReplicaType", required("ReplicaType")?)?;
    let kind = ReplicaKind::parse(&kind).ok_or_else(|| {
        RedfishError::bad_request(
            "ActionParameterValueNotInList",
            &[&kind, "ReplicaType", ACTION],
        )
        .with_detail("supported: Snapshot, Clone (of a snapshot)")
    })?;
    let mode = text("ReplicaUpdateMode", required("ReplicaUpdateMode")?)?;
    if !REPLICA_UPDATE_MODES.contains(&mode.as_str()) {
        return Err(RedfishError::bad_request(
            "ActionParameterValueNotInList",
            &[&mode, "ReplicaUpdateMode", ACTION],
        )
        .with_detail("a snapshot or clone is a point in time: only Asynchronous"));
    }
    let target = text("TargetStoragePool", required("TargetStoragePool")?)?;
    let pool = match storage_pools::pool_of_uri(&target) {
        Some(Some(pool)) => pool,
        _ => {
            return Err(RedfishError::bad_request(
                "ActionParameterValueNotInList",
                &[&target, "TargetStoragePool", ACTION],
            )
            .with_detail("name the thin pool of the source volume"));
        }
    };
    let name = object
        .get("VolumeName")
        .map(|v| text("VolumeName", v))
        .transpose()?;
    let volume = model_ops::create_replica(
        &state,
        model_ops::ReplicaRequest {
            source: source.id,
            kind,
            pool,
            name,
        },
    )
    .await
    .map_err(storage::error)?;
    state.events.created(&uri(volume.id), "Volume");
    Ok(resource::created(&uri(volume.id), body_of(&state, &volume)))
}

const SPLIT_REPLICATION: &str = "#Volume.SplitReplication";
const REMOVE_REPLICA_RELATIONSHIP: &str = "#Volume.RemoveReplicaRelationship";

fn action_target(id: u64, action: &str) -> String {
    format!("{}/Actions/{action}", uri(id))
}

/// The `TargetVolume` of a replication action on `source`, by id.
fn replication_target(
    object: &Map<String, Value>,
    action: &str,
    known: &[&str],
) -> Result<u64, RedfishError> {
    body::only_known_parameters(object, action, known)?;
    let value = object.get("TargetVolume").ok_or_else(|| {
        RedfishError::bad_request("ActionParameterMissing", &[action, "TargetVolume"])
    })?;
    let text = value.as_str().ok_or_else(|| {
        RedfishError::bad_request(
            "ActionParameterValueTypeError",
            &[&value.to_string(), "TargetVolume", action],
        )
    })?;
    body::member_id(&collection_uri(), text)
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| RedfishError::bad_request("ResourceNotFound", &["Volume", text]))
}

/// `Volume.SplitReplication` (inflate) and, without `DeleteTargetVolume`,
/// `Volume.RemoveReplicaRelationship` (decouple) of a clone of this
/// snapshot, as a task: both copy clusters.
async fn split(
    state: AppState,
    source: Volume,
    target: u64,
    inflate: bool,
    action: &'static str,
) -> Result<Response, RedfishError> {
    // Refused at once, not in the task: only a clone splits from its
    // snapshot (the storage layer checks again under its lock).
    let clone = find(&state, &target.to_string())?;
    if clone.replica
        != Some(Replica {
            source: source.id,
            kind: ReplicaKind::Clone,
        })
    {
        return Err(RedfishError::bad_request(
            "ActionParameterValueNotInList",
            &[&uri(target), "TargetVolume", action],
        )
        .with_detail(&format!(
            "volume {target} is no clone of volume {}; a snapshot is deleted instead",
            source.id
        )));
    }
    let name = format!("{action} of volume {target} from volume {}", source.name);
    let worker = state.clone();
    task_service::spawn(
        &state,
        &name,
        "POST",
        &action_target(source.id, action),
        move |_| async move {
            let volume = model_ops::split_replica(&worker, source.id, target, inflate)
                .await
                .map_err(storage::error)?;
            worker.events.changed(&uri(volume.id), "Volume");
            Ok(Outcome::response(
                StatusCode::OK.as_u16(),
                None,
                body_of(&worker, &volume),
            ))
        },
    )
    .await
}

pub async fn split_replication(
    State(state): State<AppState>,
    Path((storage_id, id)): Path<(String, String)>,
    raw: Bytes,
) -> Result<Response, RedfishError> {
    storage::check_id(&storage_id)?;
    let source = find(&state, &id)?;
    const ACTION: &str = "Volume.SplitReplication";
    let target = replication_target(&body::object(&raw)?, ACTION, &["TargetVolume"])?;
    split(state, source, target, true, ACTION).await
}

pub async fn remove_replica_relationship(
    State(state): State<AppState>,
    Path((storage_id, id)): Path<(String, String)>,
    raw: Bytes,
) -> Result<Response, RedfishError> {
    storage::check_id(&storage_id)?;
    let source = find(&state, &id)?;
    const ACTION: &str = "Volume.RemoveReplicaRelationship";
    let object = body::object(&raw)?;
    let target = replication_target(&object, ACTION, &["TargetVolume", "DeleteTargetVolume"])?;
    let delete = match object.get("DeleteTargetVolume") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(RedfishError::bad_request(
                "ActionParameterValueTypeError",
                &[&other.to_string(), "DeleteTargetVolume", ACTION],
            ));
        }
    };
    if !delete {
        return split(state, source, target, false, ACTION).await;
    }
    let volume = find(&state, &target.to_string())?;
    if volume.replica.map(|r| r.source) != Some(source.id) {
        return Err(RedfishError::bad_request(
            "ActionParameterValueNotInList",
            &[&uri(target), "TargetVolume", ACTION],
        )
        .with_detail(&format!(
            "volume {target} is no replica of volume {}",
            source.id
        )));
    }
    model_ops::delete_volume(&state, target)
        .await
        .map_err(storage::error)?;
    state.events.removed(&uri(target), "Volume");
    Ok(StatusCode::NO_CONTENT.into_response())
}

const CHECK_CONSISTENCY: &str = "#Volume.CheckConsistency";

fn check_target(id: u64) -> String {
    format!("{}/Actions/Volume.CheckConsistency", uri(id))
}

/// `Volume.CheckConsistency`: compares a redundant volume's legs without
/// repairing, as a task (202) whose progress follows the raid's check;
/// it completes with the counts in its `Description`, with a warning when
/// blocks differ.
pub async fn check_consistency(
    State(state): State<AppState>,
    Path((storage_id, id)): Path<(String, String)>,
    raw: Bytes,
) -> Result<Response, RedfishError> {
    storage::check_id(&storage_id)?;
    let volume = find(&state, &id)?;
    const ACTION: &str = "Volume.CheckConsistency";
    let object = if raw.is_empty() {
        Map::new()
    } else {
        body::object(&raw)?
    };
    // The action takes no parameters.
    body::only_known_parameters(&object, ACTION, &[])?;
    let check = check::start_check(&state, volume.id)
        .await
        .map_err(|e| match e {
            CheckError::NotRedundant(_) => {
                RedfishError::bad_request("ActionNotSupported", &[ACTION])
                    .with_detail(&e.to_string())
            }
            CheckError::NotInSync(why) | CheckError::Running(why) => {
                RedfishError::new(StatusCode::CONFLICT, "ResourceInUse", &[]).with_detail(&why)
            }
            CheckError::Storage(e) => storage::error(e),
        })?;
    let name = format!("Check the consistency of volume {}", volume.name);
    let worker = state.clone();
    task_service::spawn(
        &state,
        &name,
        "POST",
        &check_target(volume.id),
        move |task| async move {
            let result = check
                .follow(|percent| worker.tasks.progress(task, percent))
                .await
                .map_err(storage::error)?;
            Ok(check_outcome(&worker, &volume, result))
        },
    )
    .await
}

/// The end of a consistency check task: the volume, the counts as the
/// task's description, and a warning when the legs differ.
fn check_outcome(state: &AppState, volume: &Volume, result: CheckResult) -> Outcome {
    let CheckResult {
        checked_blocks,
        mismatched_blocks,
    } = result;
    let summary = format!(
        "Checked {checked_blocks} blocks of {} bytes of volume {}: {mismatched_blocks} mismatched",
        volume.block_size, volume.name
    );
    let mut outcome = Outcome::response(StatusCode::OK.as_u16(), None, body_of(state, volume));
    if mismatched_blocks > 0 {
        // No registry message counts mismatches: the fault is reported
        // with Base's, and the resolution says what was found.
        let mut warning = message("UndeterminedFault", &[&uri(volume.id)]);
        warning["Resolution"] = json!(format!(
            "{mismatched_blocks} of {checked_blocks} blocks differ between the volume's legs and \
             were not repaired. Reads may return either copy; restore the affected data from a \
             backup."
        ));
        outcome.warnings.push(warning);
    }
    outcome.summary = Some(summary);
    outcome
}

/// Serialises PATCHes of this resource type (see `patch`).
static VOLUME_CHANGES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn patch(
    State(state): State<AppState>,
    Path((storage_id, id)): Path<(String, String)>,
    headers: HeaderMap,
    raw: Bytes,
) -> Result<Response, RedfishError> {
    // The If-Match check and the write are one step: concurrent PATCHes
    // carrying the same ETag must not all win (lost updates).
    let _serialised = VOLUME_CHANGES.lock().await;
    storage::check_id(&storage_id)?;
    let volume = find(&state, &id)?;
    let current = resource::etag_of(&body_of(&state, &volume));
    if resource::header_matches(&headers, header::IF_MATCH, &current) == Some(false) {
        return Err(RedfishError::new(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            &[],
        ));
    }
    let object = body::object(&raw)?;
    let mut problems = Vec::new();
    let mut name = None;
    let mut display_name = None;
    let mut capacity = None;
    for (property, value) in &object {
        match property.as_str() {
            "Name" => match body::string(property, value) {
                Ok(text) => name = Some(text.to_string()),
                Err(e) => problems.push(e),
            },
            "DisplayName" => match value {
                Value::Null => display_name = Some(None),
                _ => match body::string(property, value) {
                    Ok(text) => display_name = Some(Some(text.to_string())),
                    Err(e) => problems.push(e),
                },
            },
            "CapacityBytes" => match body::unsigned(property, value) {
                Ok(bytes) if bytes > MAX_VOLUME_BYTES => problems.push(RedfishError::bad_request(
                    "PropertyValueOutOfRange",
                    &[&bytes.to_string(), property],
                )),
                Ok(bytes) => capacity = Some(bytes),
                Err(e) => problems.push(e),
            },
            _ if body::is_annotation(property) => {}
            _ if READ_ONLY.contains(&property.as_str())
                || CREATE_PROPERTIES.contains(&property.as_str()) =>
            {
                problems.push(RedfishError::bad_request(
                    "PropertyNotWritable",
                    &[property],
                ))
            }
            _ => problems.push(RedfishError::bad_request("PropertyUnknown", &[property])),
        }
    }
    if name.is_none() && display_name.is_none() && capacity.is_none() {
        return Err(
            merge(problems).unwrap_or_else(|| RedfishError::bad_request("NoOperation", &[]))
        );
    }
    // Growth first: when it is refused, nothing else changes either.
    let mut volume = volume;
    if let Some(bytes) = capacity {
        volume = model_ops::grow_volume(&state, volume.id, bytes)
            .await
            .map_err(storage::error)?;
    }
    if name.is_some() || display_name.is_some() {
        volume = model_ops::rename_volume(&state, volume.id, name, display_name)
            .await
            .map_err(storage::error)?;
    }
    state.events.changed(&uri(volume.id), "Volume");
    Ok(resource::updated(
        body_of(&state, &volume),
        not_applied(problems),
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    Path((storage_id, id)): Path<(String, String)>,
) -> Result<Response, RedfishError> {
    storage::check_id(&storage_id)?;
    let volume = find(&state, &id)?;
    model_ops::delete_volume(&state, volume.id)
        .await
        .map_err(storage::error)?;
    state.events.removed(&uri(volume.id), "Volume");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `Volumes/{id}/Metrics`: the volume's I/O on every data cluster, summed.
pub async fn metrics(
    State(state): State<AppState>,
    Path((storage_id, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    storage::check_id(&storage_id)?;
    let volume = find(&state, &id)?;
    let bdev = plan::volume_bdev(volume.id);
    let mut sums: std::collections::BTreeMap<&str, u64> = Default::default();
    const FIELDS: [&str; 8] = [
        "num_read_ops",
        "bytes_read",
        "read_latency_ticks",
        "num_write_ops",
        "bytes_written",
        "write_latency_ticks",
        "num_unmap_ops",
        "num_flush_ops",
    ];
    for (_, socket) in dataplane::clusters(&state).await {
        let Some(stats) =
            dataplane::call(&socket, "bdev_get_iostat", Some(json!({"name": bdev}))).await
        else {
            continue;
        };
        for field in FIELDS {
            *sums.entry(field).or_default() += stats["bdevs"][0][field].as_u64().unwrap_or(0);
        }
    }
    let seconds = |ticks: u64| format!("PT{:.6}S", ticks as f64 / 1e9);
    let body = json!({
        "@odata.id": format!("{}/Metrics", uri(volume.id)),
        "@odata.type": "#VolumeMetrics.v1_1_1.VolumeMetrics",
        "Id": "Metrics",
        "Name": format!("Metrics of volume {}", volume.name),
        "IOStatistics": {
            "ReadIORequests": sums["num_read_ops"],
            "ReadIOKiBytes": sums["bytes_read"] / 1024,
            "ReadIORequestTime": seconds(sums["read_latency_ticks"]),
            "WriteIORequests": sums["num_write_ops"],
            "WriteIOKiBytes": sums["bytes_written"] / 1024,
            "WriteIORequestTime": seconds(sums["write_latency_ticks"]),
            "NonIORequests": sums["num_unmap_ops"] + sums["num_flush_ops"],
        },
    });
    Ok(resource::get(&headers, body, "VolumeMetrics", "GET, HEAD"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_any(body: Value) -> Result<CreateRequest, String> {
        parse_create(body.as_object().unwrap(), 4).map_err(|e| {
            e.messages[0]["MessageId"]
                .as_str()
                .unwrap()
                .trim_start_matches("Base.1.22.")
                .to_string()
        })
    }

    fn parse(body: Value) -> Result<VolumeRequest, String> {
        match parse_any(body)? {
            CreateRequest::Extents(request) => Ok(request),
            CreateRequest::InPool(_) => Err("a volume in a pool".into()),
        }
    }

    #[test]
    fn a_volume_in_a_thin_pool_is_thin_unless_fixed_and_takes_the_pools_layout() {
        let pool = storage_pools::uri(3);
        let Ok(CreateRequest::InPool(request)) =
            parse_any(json!({"CapacityBytes": 10u64 << 30, "Name": "t",
                   "CapacitySources": [{"ProvidingPools": [{"@odata.id": pool}]}]}))
        else {
            panic!("not a pool volume");
        };
        assert_eq!(request.pool, 3);
        assert_eq!(request.provisioning, Provisioning::Thin);
        assert_eq!(request.capacity_bytes, 10 << 30);
        let Ok(CreateRequest::InPool(fixed)) =
            parse_any(json!({"CapacityBytes": 1, "ProvisioningPolicy": "Fixed",
                   "CapacitySources": [{"ProvidingPools": {"@odata.id": pool}}]}))
        else {
            panic!("not a pool volume");
        };
        assert_eq!(fixed.provisioning, Provisioning::Fixed);
        for (body, expected) in [
            (
                json!({"CapacityBytes": 1, "RAIDType": "RAID1",
                       "CapacitySources": [{"ProvidingPools": [{"@odata.id": pool}]}]}),
                "PropertyValueConflict",
            ),
            (
                json!({"CapacityBytes": 1, "ProvisioningPolicy": "Thin"}),
                "PropertyValueConflict",
            ),
            (
                json!({"CapacityBytes": 1, "ProvisioningPolicy": "Deduplicated"}),
                "PropertyValueNotInList",
            ),
            (
                json!({"CapacityBytes": 1, "CapacitySources": [{"ProvidingPools": [
                    {"@odata.id": pool}, {"@odata.id": storage_pools::DEFAULT_URI}]}]}),
                "PropertyValueIncorrect",
            ),
            (
                json!({"CapacityBytes": 1, "CapacitySources": [{"ProvidingPools": [
                    {"@odata.id": format!("{}/StoragePools/03", storage::URI)}]}]}),
                "PropertyValueIncorrect",
            ),
        ] {
            assert_eq!(
                parse_any(body.clone()).err().as_deref(),
                Some(expected),
                "{body}"
            );
        }
    }

    #[test]
    fn create_bodies_are_checked_property_by_property() {
        let ok = parse(
            json!({"CapacityBytes": 1 << 30, "RAIDType": "RAID0", "Name": "a",
            "Links": {"Drives": [{"@odata.id": "/redfish/v1/Chassis/appliance/Drives/drive2"},
                                 {"@odata.id": "/redfish/v1/Chassis/appliance/Drives/drive0"}]}}),
        )
        .unwrap();
        assert_eq!(ok.clusters, Some(vec![2, 0]));
        assert_eq!(ok.raid_type, RaidType::Raid0);
        let pooled = parse(
            json!({"CapacityBytes": 1, "CapacitySources": [{"ProvidingPools": [
            {"@odata.id": storage_pools::DEFAULT_URI}]}]}),
        )
        .unwrap();
        assert_eq!(pooled.clusters, None);
        for (text, raid_type) in [("RAID5", RaidType::Raid5), ("RAID6", RaidType::Raid6)] {
            let parity = parse(json!({"CapacityBytes": 1 << 30, "RAIDType": text})).unwrap();
            assert_eq!(parity.raid_type, raid_type);
            assert_eq!(parity.clusters, None);
        }
        for (body, expected) in [
            (json!({}), "CreateFailedMissingReqProperties"),
            (json!({"CapacityBytes": 0}), "PropertyValueOutOfRange"),
            (json!({"CapacityBytes": "1GiB"}), "PropertyValueTypeError"),
            (json!({"CapacityBytes": -5}), "PropertyValueTypeError"),
            (json!({"CapacityBytes": 1.5}), "PropertyValueTypeError"),
            (
                json!({"CapacityBytes": u64::MAX}),
                "PropertyValueOutOfRange",
            ),
            (
                json!({"CapacityBytes": 1, "RAIDType": "RAID50"}),
                "PropertyValueNotInList",
            ),
            (
                json!({"CapacityBytes": 1, "RAIDType": "RAID3"}),
                "PropertyValueNotInList",
            ),
            (
                json!({"CapacityBytes": 1, "RAIDType": 0}),
                "PropertyValueTypeError",
            ),
            (
                json!({"CapacityBytes": 1, "Encrypted": true}),
                "PropertyValueNotInList",
            ),
            (
                json!({"CapacityBytes": 1, "Colour": "red"}),
                "PropertyUnknown",
            ),
            (
                json!({"CapacityBytes": 1, "Id": "9"}),
                "PropertyNotWritable",
            ),
            (
                json!({"CapacityBytes": 1, "Links": {"Drives": [
                {"@odata.id": "/redfish/v1/Systems/other/Storage/1/Drives/d1"}]}}),
                "PropertyValueIncorrect",
            ),
            (
                json!({"CapacityBytes": 1, "Links": {"Drives": [
                {"@odata.id": "/redfish/v1/Chassis/appliance/Drives/drive9"}]}}),
                "PropertyValueIncorrect",
            ),
            (
                json!({"CapacityBytes": 1, "Links": {"Drives": [
                {"@odata.id": "/redfish/v1/Chassis/appliance/Drives/drive1"},
                {"@odata.id": "/redfish/v1/Chassis/appliance/Drives/drive1"}]}}),
                "PropertyValueIncorrect",
            ),
            (
                json!({"CapacityBytes": 1, "Links": {"Drives": []}}),
                "ArraySizeTooShort",
            ),
            (
                json!({"CapacityBytes": 1, "Links": {"Drives": "drive0"}}),
                "PropertyValueTypeError",
            ),
            (
                json!({"CapacityBytes": 1, "CapacitySources": [{"ProvidingPools": [
                {"@odata.id": "/redfish/v1/Storage/other/StoragePools/p"}]}]}),
                "PropertyValueIncorrect",
            ),
            (
                json!({"CapacityBytes": 1, "Name": 7}),
                "PropertyValueTypeError",
            ),
        ] {
            assert_eq!(parse(body.clone()).unwrap_err(), expected, "{body}");
        }
    }

    #[test]
    fn a_raid6_with_two_legs_away_is_a_warning_not_critical() {
        let raid = |state: &str, degraded: bool| {
            json!({"state": state, "shoal": {"degraded": degraded, "tolerated_failures": 2,
                   "legs": [{"state": "online"}, {"state": "failed"}, {"state": "online"}, {"state": "missing"}]}})
        };
        let status = |raid: Option<&Value>| health::VolumeHealth::of_raid(raid).status();
        assert_eq!(status(Some(&raid("online", true))), ("Enabled", "Warning"));
        assert_eq!(status(Some(&raid("online", false))), ("Enabled", "OK"));
        assert_eq!(
            status(Some(&raid("offline", true))),
            ("UnavailableOffline", "Critical")
        );
        assert_eq!(status(None), ("UnavailableOffline", "Critical"));
    }

    #[test]
    fn write_hole_protection_is_what_the_dataplane_reports() {
        let raid = |protection: &str| json!({"shoal": {"write_hole_protection": protection}});
        assert_eq!(
            write_hole_policy(RaidType::Raid6, Some(&raid("journal"))),
            "Journaling"
        );
        assert_eq!(
            write_hole_policy(RaidType::Raid5, Some(&raid("none"))),
            "Off"
        );
        assert_eq!(write_hole_policy(RaidType::Raid5, None), "Off");
        assert_eq!(
            write_hole_policy(RaidType::Raid1, Some(&raid("journal"))),
            "Off"
        );
    }

    #[test]
    fn a_rebuild_is_an_operation_with_its_progress() {
        let raid = json!({"process": {"type": "rebuild", "progress": {"percent": 42.7}}});
        assert_eq!(
            raid_operation(&raid),
            Some(json!({"Operation": "Rebuild", "PercentageComplete": 42}))
        );
        assert_eq!(raid_operation(&json!({"process": null})), None);
    }
}

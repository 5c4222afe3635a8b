//! Storage: `/redfish/v1/Storage/appliance`, the appliance's one NVM
//! subsystem as hosts see it (its NQN), with the drives of every data
//! cluster, the pool carved from them, the volumes, one controller per
//! data cluster, and the fabric's connections and endpoint groups.
//!
//! Also the mapping from the storage model's errors to Base registry
//! messages, shared by the storage resources.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::{appliance, drives, fabrics};
use crate::redfish::message::RedfishError;
use crate::redfish::resource;
use crate::state::AppState;
use crate::storage::{self, StorageError};

pub const ID: &str = "appliance";
pub const URI: &str = "/redfish/v1/Storage/appliance";
pub const COLLECTION: &str = "/redfish/v1/Storage";

pub async fn list(headers: HeaderMap) -> Response {
    resource::collection(
        &headers,
        COLLECTION,
        "StorageCollection",
        "Storage Collection",
        vec![URI.to_string()],
    )
}

/// 404 unless `id` is this storage.
pub fn check_id(id: &str) -> Result<(), RedfishError> {
    if id == ID {
        Ok(())
    } else {
        Err(RedfishError::not_found("Storage", id))
    }
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    check_id(&id)?;
    let status = appliance::status(&state).await;
    let drives: Vec<Value> = drives::ids(&state)
        .await
        .into_iter()
        .map(|drive| json!({"@odata.id": drives::uri(&drive)}))
        .collect();
    let nqn = storage::subsystem_nqn(&state.service_uuid);
    let body = json!({
        "@odata.id": URI,
        "@odata.type": "#Storage.v1_21_0.Storage",
        "Id": ID,
        "Name": "Shoal NVMe-oF storage",
        "Description": "One NVM subsystem served by every data cluster: each volume is a namespace with a path through each cluster's portal",
        "Status": appliance::health(status.as_deref()),
        "Identifiers": [{"DurableNameFormat": "NQN", "DurableName": nqn}],
        "Drives@odata.count": drives.len(),
        "Drives": drives,
        "Volumes": {"@odata.id": format!("{URI}/Volumes")},
        "StoragePools": {"@odata.id": format!("{URI}/StoragePools")},
        "Controllers": {"@odata.id": format!("{URI}/Controllers")},
        "Connections": {"@odata.id": fabrics::CONNECTIONS},
        "EndpointGroups": {"@odata.id": fabrics::ENDPOINT_GROUPS},
        "Links": {
            "Enclosures": [{"@odata.id": format!("/redfish/v1/Chassis/{}", super::chassis::ID)}],
        },
    });
    Ok(resource::get(&headers, body, "Storage", "GET, HEAD"))
}

/// The Base registry message for a refused or failed storage change.
pub fn error(e: StorageError) -> RedfishError {
    let bad = |key: &str, args: &[&str]| RedfishError::new(StatusCode::BAD_REQUEST, key, args);
    match e {
        StorageError::Unavailable(why) => {
            tracing::warn!("storage change refused: {why}");
            let retry = storage::RECONCILE_PERIOD.as_secs().to_string();
            RedfishError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceTemporarilyUnavailable",
                &[&retry],
            )
            .with_detail(&why)
            .with_header(axum::http::header::RETRY_AFTER, retry)
        }
        StorageError::InsufficientCapacity(why) => {
            RedfishError::new(StatusCode::BAD_REQUEST, "InsufficientStorage", &[]).with_detail(&why)
        }
        StorageError::NameTaken { kind, name } => RedfishError::new(
            StatusCode::CONFLICT,
            "ResourceAlreadyExists",
            &[kind, "Name", &name],
        ),
        StorageError::Limit { kind, limit } => bad("CreateLimitReachedForResource", &[])
            .with_detail(&format!("the appliance holds at most {limit} {kind}")),
        StorageError::NotFound { kind, id } => RedfishError::not_found(kind, &id),
        StorageError::InUse(why) => {
            RedfishError::new(StatusCode::CONFLICT, "ResourceInUse", &[]).with_detail(&why)
        }
        StorageError::KeyConflict { connection, host } => RedfishError::new(
            StatusCode::CONFLICT,
            "PropertyValueResourceConflict",
            &[
                "ConnectionKeys/DHCHAP/LocalDHCHAPAuthSecret",
                super::connections::HIDDEN,
                &super::fabrics::connection_uri(connection),
            ],
        )
        .with_detail(&format!(
            "keys belong to a host on the subsystem: host {host} is also in that connection, \
             with other keys; give both connections the same keys"
        )),
        StorageError::Invalid {
            property,
            value,
            reason,
        } => bad("PropertyValueIncorrect", &[property, &value]).with_detail(&reason),
        StorageError::Dataplane(failures) => {
            let detail = StorageError::Dataplane(failures).to_string();
            tracing::error!("{detail}");
            RedfishError::new(StatusCode::INTERNAL_SERVER_ERROR, "OperationFailed", &[])
                .with_detail(&detail)
        }
        StorageError::Store(crate::store::StoreError::Full(why)) => {
            crate::redfish::message::state_file_system_full(&why)
        }
        StorageError::Store(e) => RedfishError::internal(e),
    }
}

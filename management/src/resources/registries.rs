//! Registries: the DMTF message registries every message this service
//! sends comes from (Base, TaskEvent, ResourceEvent, StorageDevice).

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::redfish::message::{REGISTRY_FILES, RedfishError};
use crate::redfish::resource;

const COLLECTION: &str = "/redfish/v1/Registries";

/// The shipped registry named `id` ("Base.1.22.1"): its JSON.
fn registry(id: &str) -> Option<&'static str> {
    REGISTRY_FILES
        .iter()
        .find(|(name, _)| *name == id)
        .map(|(_, json)| *json)
}

pub async fn list(headers: HeaderMap) -> Response {
    let members: Vec<String> = REGISTRY_FILES
        .iter()
        .map(|(name, _)| format!("{COLLECTION}/{name}"))
        .collect();
    let body = json!({
        "@odata.id": COLLECTION,
        "@odata.type": "#MessageRegistryFileCollection.MessageRegistryFileCollection",
        "Name": "Registry File Collection",
        "Members@odata.count": members.len(),
        "Members": resource::members(members),
    });
    resource::get(&headers, body, "MessageRegistryFileCollection", "GET, HEAD")
}

pub async fn get(Path(id): Path<String>, headers: HeaderMap) -> Response {
    if registry(&id).is_none() {
        return RedfishError::not_found("MessageRegistryFile", &id).into_response();
    }
    let prefix = id.split('.').next().unwrap_or_default();
    let body = json!({
        "@odata.id": format!("{COLLECTION}/{id}"),
        "@odata.type": "#MessageRegistryFile.v1_1_5.MessageRegistryFile",
        "Id": id,
        "Name": format!("{prefix} Message Registry File"),
        "Registry": id,
        "Languages": ["en"],
        "Location": [{
            "Language": "en",
            "Uri": format!("{COLLECTION}/{id}/{id}.json"),
            "PublicationUri": format!("http://redfish.dmtf.org/registries/{id}.json"),
        }],
    });
    resource::get(&headers, body, "MessageRegistryFile", "GET, HEAD")
}

pub async fn file(Path((id, file)): Path<(String, String)>) -> Response {
    let json = match registry(&id) {
        Some(json) if file == format!("{id}.json") => json,
        _ => return RedfishError::not_found("MessageRegistry", &file).into_response(),
    };
    let mut response = json.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

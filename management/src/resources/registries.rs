//! Registries: the Base message registry every error message comes from.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::redfish::message::{BASE_REGISTRY_JSON, RedfishError};
use crate::redfish::resource;

const BASE: &str = "Base.1.22.1";

pub async fn list(headers: HeaderMap) -> Response {
    let body = json!({
        "@odata.id": "/redfish/v1/Registries",
        "@odata.type": "#MessageRegistryFileCollection.MessageRegistryFileCollection",
        "Name": "Registry File Collection",
        "Members@odata.count": 1,
        "Members": resource::members([format!("/redfish/v1/Registries/{BASE}")]),
    });
    resource::get(&headers, body, "MessageRegistryFileCollection", "GET, HEAD")
}

pub async fn get(Path(id): Path<String>, headers: HeaderMap) -> Response {
    if id != BASE {
        return RedfishError::not_found("MessageRegistryFile", &id).into_response();
    }
    let body = json!({
        "@odata.id": format!("/redfish/v1/Registries/{BASE}"),
        "@odata.type": "#MessageRegistryFile.v1_1_5.MessageRegistryFile",
        "Id": BASE,
        "Name": "Base Message Registry File",
        "Registry": BASE,
        "Languages": ["en"],
        "Location": [{
            "Language": "en",
            "Uri": format!("/redfish/v1/Registries/{BASE}/{BASE}.json"),
            "PublicationUri": format!("http://redfish.dmtf.org/registries/{BASE}.json"),
        }],
    });
    resource::get(&headers, body, "MessageRegistryFile", "GET, HEAD")
}

pub async fn file(Path((id, file)): Path<(String, String)>) -> Response {
    if id != BASE || file != format!("{BASE}.json") {
        return RedfishError::not_found("MessageRegistry", &file).into_response();
    }
    let mut response = BASE_REGISTRY_JSON.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

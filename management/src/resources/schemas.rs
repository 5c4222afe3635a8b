//! The DMTF schema files the service uses, shipped with it (see
//! `management/redfish/`, DMTF and SNIA licences) and served so a client
//! without internet access can validate: CSDL under
//! `/redfish/v1/schemas/<file>` (no credentials needed, like
//! `$metadata`), JSON schemas through the JsonSchemas collection.

use std::path::{Path, PathBuf};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::redfish::message::RedfishError;
use crate::redfish::resource;
use crate::state::AppState;

/// A file name we may serve: one path segment, a schema file's characters.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn read(dir: &Path, name: &str) -> Option<Vec<u8>> {
    if !safe_name(name) {
        return None;
    }
    std::fs::read(dir.join(name)).ok()
}

/// Whether `name` is a file we ship, without reading it: an expanded
/// JsonSchemas asks this for each of its 500+ members.
fn exists(dir: &Path, name: &str) -> bool {
    safe_name(name) && dir.join(name).is_file()
}

pub async fn csdl(State(state): State<AppState>, UrlPath(name): UrlPath<String>) -> Response {
    match read(&state.schema_dir.join("csdl"), &name) {
        Some(bytes) => {
            let mut response = bytes.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/xml"),
            );
            response
        }
        None => RedfishError::not_found("Schema", &name).into_response(),
    }
}

/// JSON schema files shipped, by schema name ("ServiceRoot.v1_20_0").
fn json_schema_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter_map(|file| file.strip_suffix(".json").map(str::to_string))
        .collect();
    names.sort();
    names
}

pub async fn collection(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let names = json_schema_names(&state.schema_dir.join("json-schema"));
    let body = json!({
        "@odata.id": "/redfish/v1/JsonSchemas",
        "@odata.type": "#JsonSchemaFileCollection.JsonSchemaFileCollection",
        "Name": "JSON Schema Collection",
        "Members@odata.count": names.len(),
        "Members": resource::members(names.iter().map(|n| format!("/redfish/v1/JsonSchemas/{n}"))),
    });
    resource::get(&headers, body, "JsonSchemaFileCollection", "GET, HEAD")
}

pub async fn file_entry(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let dir = state.schema_dir.join("json-schema");
    if !exists(&dir, &format!("{name}.json")) {
        return RedfishError::not_found("JsonSchemaFile", &name).into_response();
    }
    let body = json!({
        "@odata.id": format!("/redfish/v1/JsonSchemas/{name}"),
        "@odata.type": "#JsonSchemaFile.v1_1_5.JsonSchemaFile",
        "Id": name,
        "Name": format!("{name} schema file"),
        "Schema": format!("#{name}"),
        "Languages": ["en"],
        "Location": [{
            "Language": "en",
            "Uri": format!("/redfish/v1/JsonSchemas/{name}/{name}.json"),
            "PublicationUri": format!("http://redfish.dmtf.org/schemas/v1/{name}.json"),
        }],
    });
    resource::get(&headers, body, "JsonSchemaFile", "GET, HEAD")
}

pub async fn file(
    State(state): State<AppState>,
    UrlPath((name, file)): UrlPath<(String, String)>,
) -> Response {
    if file != format!("{name}.json") {
        return RedfishError::not_found("JsonSchemaFile", &file).into_response();
    }
    match read(&state.schema_dir.join("json-schema"), &file) {
        Some(bytes) => {
            let mut response = bytes.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        None => RedfishError::not_found("JsonSchemaFile", &file).into_response(),
    }
}

/// Where the schema files are when `--schema-dir` is not given: installed
/// beside the binary (`<prefix>/share/shoal/redfish` for
/// `<prefix>/bin/shoal-management`, as the images lay them out), else the
/// source tree's copy (running from a checkout).
pub fn default_dir() -> PathBuf {
    let installed = std::env::current_exe().ok().and_then(|exe| {
        let prefix = exe.parent()?.parent()?;
        Some(prefix.join("share/shoal/redfish"))
    });
    match installed {
        Some(dir) if dir.is_dir() => dir,
        _ => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/redfish")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_file_names_are_served() {
        assert!(safe_name("ServiceRoot_v1.xml"));
        assert!(!safe_name("../etc/passwd"));
        assert!(!safe_name(".hidden"));
        assert!(!safe_name("a/b"));
        assert!(read(&default_dir().join("csdl"), "ServiceRoot_v1.xml").is_some());
    }
}

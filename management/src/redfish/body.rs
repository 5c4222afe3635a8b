//! Request bodies: JSON objects only, parsed with serde_json's limits
//! (the transport already capped the size), mistakes reported with Base
//! registry messages.

use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::message::RedfishError;

/// The body as a JSON object; `MalformedJSON` otherwise.
pub fn object(body: &Bytes) -> Result<Map<String, Value>, RedfishError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(RedfishError::new(
            StatusCode::BAD_REQUEST,
            "InvalidObject",
            &["#"],
        )),
        Err(_) => Err(RedfishError::malformed_json()),
    }
}

/// A string property, or `PropertyValueTypeError`.
pub fn string<'a>(name: &str, value: &'a Value) -> Result<&'a str, RedfishError> {
    value.as_str().ok_or_else(|| type_error(name, value))
}

pub fn boolean(name: &str, value: &Value) -> Result<bool, RedfishError> {
    value.as_bool().ok_or_else(|| type_error(name, value))
}

pub fn unsigned(name: &str, value: &Value) -> Result<u64, RedfishError> {
    value.as_u64().ok_or_else(|| type_error(name, value))
}

pub fn type_error(name: &str, value: &Value) -> RedfishError {
    RedfishError::new(
        StatusCode::BAD_REQUEST,
        "PropertyValueTypeError",
        &[&value.to_string(), name],
    )
}

pub fn missing(name: &str) -> RedfishError {
    RedfishError::new(StatusCode::BAD_REQUEST, "PropertyMissing", &[name])
}

/// Annotations (`@odata.*`, `x@Redfish...`) carry no change.
pub fn is_annotation(name: &str) -> bool {
    name.contains('@')
}

/// The target of a link property (`{"@odata.id": "..."}`) named `name`,
/// without a trailing slash.
pub fn link<'a>(name: &str, value: &'a Value) -> Result<&'a str, RedfishError> {
    match value.get("@odata.id").and_then(Value::as_str) {
        Some(uri) if value.as_object().is_some_and(|o| o.len() == 1) => {
            Ok(uri.strip_suffix('/').unwrap_or(uri))
        }
        _ => Err(type_error(name, value)),
    }
}

/// The links of an array property (`[{"@odata.id": ...}, ...]`).
pub fn links<'a>(name: &str, value: &'a Value) -> Result<Vec<&'a str>, RedfishError> {
    let array = value.as_array().ok_or_else(|| type_error(name, value))?;
    array.iter().map(|item| link(name, item)).collect()
}

/// The member ID of `uri` if it names a member of `collection`
/// (`/redfish/v1/.../Volumes` + `/7` → `7`).
pub fn member_id<'a>(collection: &str, uri: &'a str) -> Option<&'a str> {
    let id = uri.strip_prefix(collection)?.strip_prefix('/')?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// `PropertyUnknown` for the first of `object`'s properties that is not
/// in `known` and is not an annotation.
pub fn only_known(object: &Map<String, Value>, known: &[&str]) -> Result<(), RedfishError> {
    match object
        .keys()
        .find(|name| !known.contains(&name.as_str()) && !is_annotation(name))
    {
        Some(name) => Err(RedfishError::new(
            StatusCode::BAD_REQUEST,
            "PropertyUnknown",
            &[name],
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn links_are_read_strictly() {
        let ok = json!({"@odata.id": "/redfish/v1/Chassis/appliance/Drives/drive0/"});
        assert_eq!(
            link("Drives", &ok).unwrap(),
            "/redfish/v1/Chassis/appliance/Drives/drive0"
        );
        assert!(link("Drives", &json!("/redfish/v1")).is_err());
        assert!(link("Drives", &json!({"@odata.id": 3})).is_err());
        assert!(link("Drives", &json!({"@odata.id": "/x", "Extra": 1})).is_err());
        assert_eq!(links("D", &json!([ok.clone(), ok])).unwrap().len(), 2);
        assert!(links("D", &json!({})).is_err());
        assert_eq!(member_id("/a/Volumes", "/a/Volumes/7"), Some("7"));
        assert_eq!(member_id("/a/Volumes", "/a/Volumes/7/Metrics"), None);
        assert_eq!(member_id("/a/Volumes", "/a/Volumes"), None);
        assert_eq!(member_id("/a/Volumes", "/b/Volumes/7"), None);
    }
}

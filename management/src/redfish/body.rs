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

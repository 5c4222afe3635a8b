//! Building resource responses the way DSP0266 asks: JSON with
//! `@odata.etag` and an `ETag` header, `Link: rel=describedby` to the
//! resource's JSON schema, `Allow` with the methods the resource takes,
//! and 304 when the client's `If-None-Match` already has this version.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// A resource's strong validator: a hash of its representation.
pub fn etag_of(body: &Value) -> String {
    let bytes = serde_json::to_vec(body).expect("JSON values serialise");
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{hash:016x}\"")
}

/// Whether an `If-Match` / `If-None-Match` header lists `etag` (or `*`).
pub fn header_matches(headers: &HeaderMap, name: header::HeaderName, etag: &str) -> Option<bool> {
    let value = headers.get(name)?.to_str().ok()?;
    Some(
        value
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag == etag || tag.strip_prefix("W/") == Some(etag)),
    )
}

/// The response for GET of a resource of JSON schema `schema` (e.g.
/// "ServiceRoot") that allows `allow` (e.g. "GET, HEAD, PATCH").
pub fn get(headers: &HeaderMap, mut body: Value, schema: &str, allow: &'static str) -> Response {
    let etag = etag_of(&body);
    if let Value::Object(map) = &mut body {
        map.insert("@odata.etag".into(), Value::String(etag.clone()));
    }
    let mut response = if header_matches(headers, header::IF_NONE_MATCH, &etag) == Some(true) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        axum::Json(body).into_response()
    };
    let h = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, value);
    }
    h.insert(header::ALLOW, HeaderValue::from_static(allow));
    if let Ok(link) = HeaderValue::from_str(&format!(
        "</redfish/v1/JsonSchemas/{schema}>; rel=describedby"
    )) {
        h.insert(header::LINK, link);
    }
    response
}

/// The response to a successful PATCH: 200 with the resource as it is
/// now, and `@Message.ExtendedInfo` for properties that were not applied.
pub fn updated(mut body: Value, not_applied: Vec<Value>) -> Response {
    let etag = etag_of(&body);
    if let Value::Object(map) = &mut body {
        map.insert("@odata.etag".into(), Value::String(etag.clone()));
        if !not_applied.is_empty() {
            map.insert("@Message.ExtendedInfo".into(), Value::Array(not_applied));
        }
    }
    let mut response = axum::Json(body).into_response();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// The `Members` of a collection: `@odata.id`s.
pub fn members(ids: impl IntoIterator<Item = String>) -> Value {
    Value::Array(
        ids.into_iter()
            .map(|id| serde_json::json!({"@odata.id": id}))
            .collect(),
    )
}

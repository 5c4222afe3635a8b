//! Building resource responses the way DSP0266 asks: JSON with
//! `@odata.etag` and an `ETag` header, `Link: rel=describedby` to the
//! resource's JSON schema, `Allow` with the methods the resource takes,
//! and 304 when the client's `If-None-Match` already has this version.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// A resource's strong validator: a hash (64-bit FNV-1a) of its
/// serialised representation, computed as it is serialised.
pub fn etag_of(body: &Value) -> String {
    let mut hash = Fnv1a::new();
    serde_json::to_writer(&mut hash, body).expect("JSON values serialise");
    hash.etag()
}

fn etag_of_bytes(bytes: &[u8]) -> String {
    let mut hash = Fnv1a::new();
    std::io::Write::write_all(&mut hash, bytes).expect("hashing cannot fail");
    hash.etag()
}

/// `json` (a serialised object) with `"@odata.etag": etag` as its first
/// member.
fn with_etag_member(json: Vec<u8>, etag: &str) -> Vec<u8> {
    let Some(rest) = json.strip_prefix(b"{") else {
        return json;
    };
    let mut out = Vec::with_capacity(json.len() + etag.len() + 24);
    out.extend_from_slice(b"{\"@odata.etag\":");
    serde_json::to_writer(&mut out, etag).expect("strings serialise");
    if rest != b"}" {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    out
}

struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn etag(&self) -> String {
        format!("\"{:016x}\"", self.0)
    }
}

impl std::io::Write for Fnv1a {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
pub fn get(headers: &HeaderMap, body: Value, schema: &str, allow: &'static str) -> Response {
    // Serialised once: the ETag is the hash of these bytes, and
    // `@odata.etag` is spliced in after the opening brace.
    let bytes = serde_json::to_vec(&body).expect("JSON values serialise");
    let etag = etag_of_bytes(&bytes);
    let mut response = if header_matches(headers, header::IF_NONE_MATCH, &etag) == Some(true) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let json = with_etag_member(bytes, &etag);
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json,
        )
            .into_response()
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

/// The response to a POST that created `body` at `location`: 201 with
/// `Location`, the new resource and its ETag.
pub fn created(location: &str, mut body: Value) -> Response {
    let etag = etag_of(&body);
    if let Value::Object(map) = &mut body {
        map.insert("@odata.etag".into(), Value::String(etag.clone()));
    }
    let mut response = (StatusCode::CREATED, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    response
}

/// The response for GET of a read-only collection: `@odata.id` `uri`,
/// schema `schema` (e.g. "ManagerCollection"), its `Name`, and members.
pub fn collection(
    headers: &HeaderMap,
    uri: &str,
    schema: &str,
    name: &str,
    member_uris: Vec<String>,
) -> Response {
    let body = serde_json::json!({
        "@odata.id": uri,
        "@odata.type": format!("#{schema}.{schema}"),
        "Name": name,
        "Members@odata.count": member_uris.len(),
        "Members": members(member_uris),
    });
    get(headers, body, schema, "GET, HEAD")
}

/// The `Members` of a collection: `@odata.id`s.
pub fn members(ids: impl IntoIterator<Item = String>) -> Value {
    Value::Array(
        ids.into_iter()
            .map(|id| serde_json::json!({"@odata.id": id}))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_etag_member_is_spliced_into_the_object() {
        let body = serde_json::json!({"Id": "x", "Name": "n"});
        let bytes = serde_json::to_vec(&body).unwrap();
        let etag = etag_of_bytes(&bytes);
        assert_eq!(etag, etag_of(&body));
        let spliced: Value = serde_json::from_slice(&with_etag_member(bytes, &etag)).unwrap();
        assert_eq!(spliced["@odata.etag"], Value::String(etag.clone()));
        assert_eq!(spliced["Id"], "x");
        assert_eq!(spliced.as_object().unwrap().len(), 3);

        let empty: Value =
            serde_json::from_slice(&with_etag_member(b"{}".to_vec(), &etag)).unwrap();
        assert_eq!(empty, serde_json::json!({"@odata.etag": etag}));
    }
}

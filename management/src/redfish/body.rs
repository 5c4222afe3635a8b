//! Request bodies: JSON objects only, parsed with serde_json's limits
//! (the transport already capped the size; nesting stops at serde_json's
//! recursion limit), mistakes reported with Base registry messages. A
//! property named twice in one object, at any depth, is `MalformedJSON`
//! (RFC 8259 leaves its meaning open; last-wins would let a client's
//! and a proxy's reading of one body differ).

use std::fmt;

use axum::body::Bytes;
use axum::http::StatusCode;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::message::RedfishError;

/// The body as a JSON object; `MalformedJSON` otherwise (also for a
/// property named twice in one object).
pub fn object(body: &Bytes) -> Result<Map<String, Value>, RedfishError> {
    match serde_json::from_slice::<Strict>(body) {
        Ok(Strict(Value::Object(map))) => Ok(map),
        Ok(_) => Err(RedfishError::new(
            StatusCode::BAD_REQUEST,
            "InvalidObject",
            &["#"],
        )),
        Err(e) if e.to_string().starts_with(DUPLICATE) => Err(RedfishError::malformed_json()
            .with_detail("An object names the same property more than once.")),
        Err(_) => Err(RedfishError::malformed_json()),
    }
}

const DUPLICATE: &str = "duplicate property";

/// A JSON value whose objects name each property once. Built in one pass
/// like serde_json's own `Value`: each key is looked up once in the map
/// being built (O(log n)), so the check adds no more than that.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(DUPLICATE));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
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

/// A list of links, or one link where a client names a single resource
/// (Swordfish capacity sources take either).
pub fn one_or_more_links<'a>(name: &str, value: &'a Value) -> Result<Vec<&'a str>, RedfishError> {
    match value {
        Value::Array(_) => links(name, value),
        _ => Ok(vec![link(name, value)?]),
    }
}

/// The member ID of `uri` if it names a member of `collection`
/// (`/redfish/v1/.../Volumes` + `/7` → `7`).
pub fn member_id<'a>(collection: &str, uri: &'a str) -> Option<&'a str> {
    let id = uri.strip_prefix(collection)?.strip_prefix('/')?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// `PropertyUnknown` for the first of `object`'s properties that is not
/// in `known` and is not an annotation.
/// An action's body names only parameters of `known` (and annotations),
/// else `ActionParameterUnknown`.
pub fn only_known_parameters(
    object: &Map<String, Value>,
    action: &str,
    known: &[&str],
) -> Result<(), RedfishError> {
    match object
        .keys()
        .find(|name| !known.contains(&name.as_str()) && !is_annotation(name))
    {
        Some(name) => Err(RedfishError::bad_request(
            "ActionParameterUnknown",
            &[action, name],
        )),
        None => Ok(()),
    }
}

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
    fn a_property_named_twice_is_malformed_at_any_depth() {
        let parse = |text: &str| object(&Bytes::from(text.to_string()));
        let ok = parse(r#"{"A": 1, "B": {"C": [1, {"D": "x"}], "E": null}, "F": 1.5}"#).unwrap();
        assert_eq!(
            Value::Object(ok),
            json!({"A": 1, "B": {"C": [1, {"D": "x"}], "E": null}, "F": 1.5})
        );
        for twice in [
            r#"{"A": 1, "A": 2}"#,
            r#"{"A": {"B": 1, "B": 1}}"#,
            r#"{"A": [{"B": 1}, {"C": 1, "C": 2}]}"#,
            // The same name spelled with an escape is the same name.
            r#"{"A": 1, "\u0041": 2}"#,
        ] {
            let error = parse(twice).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{twice}");
            assert_eq!(
                error.messages[0]["MessageId"], "Base.1.22.MalformedJSON",
                "{twice}"
            );
        }
        // The same name in sibling objects is fine.
        assert!(parse(r#"{"A": [{"B": 1}, {"B": 2}], "C": {"B": 3}}"#).is_ok());
        // Nesting stays bounded by serde_json's recursion limit.
        let deep = format!("{{\"A\": {}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse(&deep).is_err());
        assert!(parse("[1]").is_err());
        assert!(parse("{} x").is_err());
    }

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

//! Redfish messages from the DMTF Base message registry, and the error
//! responses built from them.
//!
//! The registry ships with the service (`management/redfish/Base.1.22.1.json`)
//! and is served under `/redfish/v1/Registries`; every message this service
//! sends is looked up in it, so the text, severity and resolution are the
//! DMTF's, with `%1`, `%2`... filled in.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

/// The registry file, as published by the DMTF.
pub const BASE_REGISTRY_JSON: &str = include_str!("../../redfish/Base.1.22.1.json");

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RegistryFile {
    registry_prefix: String,
    registry_version: String,
    messages: HashMap<String, RegistryMessage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RegistryMessage {
    message: String,
    #[serde(default)]
    number_of_args: usize,
    message_severity: Option<String>,
    severity: Option<String>,
    resolution: Option<String>,
}

struct Registry {
    /// "Base.1.22": the MessageId prefix (registry name, major, minor).
    id_prefix: String,
    messages: HashMap<String, RegistryMessage>,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let file: RegistryFile =
            serde_json::from_str(BASE_REGISTRY_JSON).expect("the shipped Base registry parses");
        let mut version = file.registry_version.split('.');
        let id_prefix = format!(
            "{}.{}.{}",
            file.registry_prefix,
            version.next().unwrap_or("1"),
            version.next().unwrap_or("0")
        );
        Registry {
            id_prefix,
            messages: file.messages,
        }
    })
}

/// One `Message` object (`#Message.v1_3_0.Message`) from the Base registry.
/// Panics if `key` is not in the registry or the argument count is wrong:
/// both are programming errors caught by the tests that exercise each use.
pub fn message(key: &str, args: &[&str]) -> Value {
    let registry = registry();
    let entry = registry
        .messages
        .get(key)
        .unwrap_or_else(|| panic!("{key} is not in the Base registry"));
    assert_eq!(entry.number_of_args, args.len(), "arguments of {key}");
    let mut text = entry.message.clone();
    // Highest first, so %1 does not eat the start of %10.
    for (index, arg) in args.iter().enumerate().rev() {
        text = text.replace(&format!("%{}", index + 1), arg);
    }
    let severity = entry
        .message_severity
        .as_deref()
        .or(entry.severity.as_deref())
        .unwrap_or("OK");
    json!({
        "@odata.type": "#Message.v1_3_0.Message",
        "MessageId": format!("{}.{key}", registry.id_prefix),
        "Message": text,
        "MessageArgs": args,
        "MessageSeverity": severity,
        "Resolution": entry.resolution.as_deref().unwrap_or("None."),
    })
}

/// An error response: HTTP status and one or more Base messages.
#[derive(Debug, Clone)]
pub struct RedfishError {
    pub status: StatusCode,
    pub messages: Vec<Value>,
    /// Extra headers (e.g. `WWW-Authenticate` on 401, `Allow` on 405).
    pub headers: Vec<(axum::http::HeaderName, String)>,
}

impl RedfishError {
    pub fn new(status: StatusCode, key: &str, args: &[&str]) -> Self {
        Self {
            status,
            messages: vec![message(key, args)],
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: axum::http::HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn and(mut self, key: &str, args: &[&str]) -> Self {
        self.messages.push(message(key, args));
        self
    }

    pub fn not_found(resource_type: &str, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &[resource_type, name],
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "NoValidSession", &[]).with_header(
            axum::http::header::WWW_AUTHENTICATE,
            "Basic realm=\"Redfish\", charset=\"UTF-8\"",
        )
    }

    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "InsufficientPrivilege", &[])
    }

    pub fn method_not_allowed(allow: &str) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "OperationNotAllowed", &[])
            .with_header(axum::http::header::ALLOW, allow)
    }

    pub fn malformed_json() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "MalformedJSON", &[])
    }

    pub fn internal(context: &str) -> Self {
        tracing::error!("internal error: {context}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &[])
    }

    /// The body: the first message is the error's code and message; all
    /// of them are in `@Message.ExtendedInfo`.
    pub fn body(&self) -> Value {
        let first = &self.messages[0];
        json!({
            "error": {
                "code": first["MessageId"],
                "message": first["Message"],
                "@Message.ExtendedInfo": self.messages,
            }
        })
    }
}

impl IntoResponse for RedfishError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        for (name, value) in &self.headers {
            if let Ok(value) = value.parse() {
                response.headers_mut().insert(name.clone(), value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_from_the_registry_with_arguments_filled() {
        let m = message("ResourceNotFound", &["Chassis", "nope"]);
        assert_eq!(m["MessageId"], "Base.1.22.ResourceNotFound");
        assert_eq!(
            m["Message"],
            "The requested resource of type Chassis named 'nope' was not found."
        );
        assert_eq!(m["MessageSeverity"], "Critical");
        assert!(m["Resolution"].as_str().unwrap().len() > 10);
    }

    #[test]
    fn error_body_has_extended_info() {
        let e = RedfishError::new(StatusCode::BAD_REQUEST, "PropertyUnknown", &["Foo"])
            .and("PropertyNotWritable", &["Id"]);
        let body = e.body();
        assert_eq!(body["error"]["code"], "Base.1.22.PropertyUnknown");
        assert_eq!(
            body["error"]["@Message.ExtendedInfo"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    #[should_panic(expected = "arguments of ResourceNotFound")]
    fn wrong_argument_count_is_caught() {
        message("ResourceNotFound", &["only one"]);
    }
}

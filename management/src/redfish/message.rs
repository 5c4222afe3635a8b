//! Redfish messages from the DMTF message registries, and the error
//! responses built from them.
//!
//! The registries ship with the service (`management/redfish/*.json`) and
//! are served under `/redfish/v1/Registries`: Base for errors, TaskEvent
//! for task progress, ResourceEvent and StorageDevice for events. Every
//! message this service sends is looked up in them, so the text, severity
//! and resolution are the DMTF's, with `%1`, `%2`... filled in.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

/// The registry files, as published by the DMTF: (file name, contents).
pub const REGISTRY_FILES: [(&str, &str); 4] = [
    (
        "Base.1.22.1",
        include_str!("../../redfish/Base.1.22.1.json"),
    ),
    (
        "TaskEvent.1.0.5",
        include_str!("../../redfish/TaskEvent.1.0.5.json"),
    ),
    (
        "ResourceEvent.1.4.3",
        include_str!("../../redfish/ResourceEvent.1.4.3.json"),
    ),
    (
        "StorageDevice.1.5.1",
        include_str!("../../redfish/StorageDevice.1.5.1.json"),
    ),
];

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

/// The shipped registries by prefix ("Base", "TaskEvent", ...).
fn registries() -> &'static HashMap<String, Registry> {
    static REGISTRIES: OnceLock<HashMap<String, Registry>> = OnceLock::new();
    REGISTRIES.get_or_init(|| {
        REGISTRY_FILES
            .iter()
            .map(|(name, json)| {
                let file: RegistryFile = serde_json::from_str(json)
                    .unwrap_or_else(|e| panic!("the shipped registry {name} parses: {e}"));
                let mut version = file.registry_version.split('.');
                let id_prefix = format!(
                    "{}.{}.{}",
                    file.registry_prefix,
                    version.next().unwrap_or("1"),
                    version.next().unwrap_or("0")
                );
                let registry = Registry {
                    id_prefix,
                    messages: file.messages,
                };
                (file.registry_prefix, registry)
            })
            .collect()
    })
}

/// One `Message` object (`#Message.v1_3_0.Message`) from the Base registry.
/// Panics if `key` is not in the registry or the argument count is wrong:
/// both are programming errors caught by the tests that exercise each use.
pub fn message(key: &str, args: &[&str]) -> Value {
    registry_message("Base", key, args)
}

/// One `Message` of registry `prefix` ("TaskEvent", "ResourceEvent", ...),
/// with the same rules as [`message`].
pub fn registry_message(prefix: &str, key: &str, args: &[&str]) -> Value {
    let registry = registries()
        .get(prefix)
        .unwrap_or_else(|| panic!("no {prefix} registry is shipped"));
    let entry = registry
        .messages
        .get(key)
        .unwrap_or_else(|| panic!("{key} is not in the {prefix} registry"));
    assert_eq!(entry.number_of_args, args.len(), "arguments of {key}");
    build(registry, entry, key, args)
}

/// Message `key` of registry `prefix` with `args`, if the registry has it
/// and it takes that many arguments (for keys that come from a client).
pub fn find_registry_message(prefix: &str, key: &str, args: &[&str]) -> Option<Value> {
    let registry = registries().get(prefix)?;
    let entry = registry.messages.get(key)?;
    (entry.number_of_args == args.len()).then(|| build(registry, entry, key, args))
}

fn build(registry: &Registry, entry: &RegistryMessage, key: &str, args: &[&str]) -> Value {
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
    /// What exactly went wrong, beyond the registry's general text: it
    /// follows that text in the error's `message`.
    pub detail: Option<String>,
}

impl RedfishError {
    pub fn new(status: StatusCode, key: &str, args: &[&str]) -> Self {
        Self {
            status,
            messages: vec![message(key, args)],
            headers: Vec::new(),
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: &str) -> Self {
        self.detail = Some(detail.to_string());
        self
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

    /// A 400 with Base message `key`.
    pub fn bad_request(key: &str, args: &[&str]) -> Self {
        Self::new(StatusCode::BAD_REQUEST, key, args)
    }

    pub fn internal(context: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {context}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &[])
    }

    /// The body: the first message is the error's code and message; all
    /// of them are in `@Message.ExtendedInfo`.
    pub fn body(&self) -> Value {
        let first = &self.messages[0];
        let message = match (&self.detail, first["Message"].as_str()) {
            (Some(detail), Some(text)) => json!(format!("{text} {detail}")),
            _ => first["Message"].clone(),
        };
        json!({
            "error": {
                "code": first["MessageId"],
                "message": message,
                "@Message.ExtendedInfo": self.messages,
            }
        })
    }
}

/// Seconds a client is told to wait before retrying a write refused
/// because the state file system is full.
pub const FULL_RETRY_AFTER_S: u64 = 10;

/// The answer to a write while the state file system is full: 503 with
/// Base `InsufficientStorage`, `why` naming the file system, and a
/// `Retry-After` (the service takes writes again once space is freed).
pub fn state_file_system_full(why: &str) -> RedfishError {
    RedfishError::new(StatusCode::SERVICE_UNAVAILABLE, "InsufficientStorage", &[])
        .with_detail(why)
        .with_header(
            axum::http::header::RETRY_AFTER,
            FULL_RETRY_AFTER_S.to_string(),
        )
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
    fn every_shipped_registry_is_usable() {
        let m = registry_message("TaskEvent", "TaskStarted", &["7"]);
        assert_eq!(m["MessageId"], "TaskEvent.1.0.TaskStarted");
        assert_eq!(m["Message"], "The task with Id '7' has started.");
        let m = registry_message("ResourceEvent", "ResourceCreated", &[]);
        assert_eq!(m["MessageId"], "ResourceEvent.1.4.ResourceCreated");
        assert_eq!(registries().len(), REGISTRY_FILES.len());
    }

    #[test]
    #[should_panic(expected = "arguments of ResourceNotFound")]
    fn wrong_argument_count_is_caught() {
        message("ResourceNotFound", &["only one"]);
    }
}

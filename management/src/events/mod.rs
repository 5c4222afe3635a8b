//! Events: what happens in the appliance (volumes, connections and
//! endpoints created, changed or removed; data clusters failing and
//! recovering; redundant volumes degraded, rebuilding, failed and OK
//! again; tasks starting and ending), as messages of the DMTF
//! registries, published on one bus. Server-sent event streams and push
//! subscriptions ([`subscriptions`]) take from the bus what their
//! [`filter`] lets through.

pub mod clusters;
pub mod destination;
pub mod filter;
pub mod pools;
pub mod subscriptions;
pub mod volumes;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::redfish::message::registry_message;
use crate::resources::time;

/// Events a slow SSE reader may fall behind by before it misses some.
const BUS_CAPACITY: usize = 1024;

/// One event: a registry message about a resource.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// Unique for the service's life, and across restarts (the first ID is
    /// the start time in microseconds).
    pub id: u64,
    pub timestamp: SystemTime,
    /// The `Message` object (MessageId, Message, MessageArgs, Severity).
    pub message: Value,
    /// The registry prefix, e.g. `ResourceEvent`.
    pub registry: &'static str,
    /// The resource the event is about, and its schema type.
    pub origin: Option<(String, &'static str)>,
}

impl EventRecord {
    pub fn message_id(&self) -> &str {
        self.message["MessageId"].as_str().unwrap_or_default()
    }

    /// The record as an entry of an Event's `Events` array.
    pub fn entry(&self) -> Value {
        let mut entry = json!({
            "EventId": self.id.to_string(),
            "EventTimestamp": time::rfc3339(self.timestamp),
            "MessageId": self.message["MessageId"],
            "Message": self.message["Message"],
            "MessageArgs": self.message["MessageArgs"],
            "MessageSeverity": self.message["MessageSeverity"],
        });
        if let Some((uri, _)) = &self.origin {
            entry["OriginOfCondition"] = json!({"@odata.id": uri});
        }
        entry
    }

    /// An Event resource carrying this record, for a destination with
    /// `context`.
    pub fn payload(&self, context: &str) -> Value {
        json!({
            "@odata.type": "#Event.v1_13_0.Event",
            "Id": self.id.to_string(),
            "Name": "Shoal appliance event",
            "Context": context,
            "Events": [self.entry()],
        })
    }
}

/// The event bus and the push subscriptions fed from it.
pub struct Events {
    bus: broadcast::Sender<Arc<EventRecord>>,
    next_id: AtomicU64,
}

impl Default for Events {
    fn default() -> Self {
        let start = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        Self {
            bus: broadcast::channel(BUS_CAPACITY).0,
            next_id: AtomicU64::new(start),
        }
    }
}

impl Events {
    /// Publishes message `key` of registry `registry` about `origin` (its
    /// URI and schema type).
    pub fn publish(
        &self,
        registry: &'static str,
        key: &str,
        args: &[&str],
        origin: Option<(&str, &'static str)>,
    ) {
        self.publish_message(registry, registry_message(registry, key, args), origin);
    }

    /// Publishes an already built `Message` object of `registry`.
    pub fn publish_message(
        &self,
        registry: &'static str,
        message: Value,
        origin: Option<(&str, &'static str)>,
    ) {
        let record = EventRecord {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            timestamp: SystemTime::now(),
            message,
            registry,
            origin: origin.map(|(uri, kind)| (uri.to_string(), kind)),
        };
        tracing::debug!(event = record.id, message = record.message_id(), "event");
        // No receiver (no stream, no subscription) is not an error.
        let _ = self.bus.send(Arc::new(record));
    }

    /// `ResourceEvent.ResourceCreated` about `uri`, a resource of `kind`.
    pub fn created(&self, uri: &str, kind: &'static str) {
        self.publish("ResourceEvent", "ResourceCreated", &[], Some((uri, kind)));
    }

    /// `ResourceEvent.ResourceChanged` about `uri`.
    pub fn changed(&self, uri: &str, kind: &'static str) {
        self.publish("ResourceEvent", "ResourceChanged", &[], Some((uri, kind)));
    }

    /// `ResourceEvent.ResourceRemoved` about `uri`.
    pub fn removed(&self, uri: &str, kind: &'static str) {
        self.publish("ResourceEvent", "ResourceRemoved", &[], Some((uri, kind)));
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EventRecord>> {
        self.bus.subscribe()
    }
}

/// The registries events come from, as EventService lists them.
pub const REGISTRY_PREFIXES: [&str; 3] = ["ResourceEvent", "StorageDevice", "TaskEvent"];
/// The resource types events are about.
pub const RESOURCE_TYPES: [&str; 6] = [
    "Volume",
    "Connection",
    "Endpoint",
    "StorageController",
    "Task",
    "EventService",
];

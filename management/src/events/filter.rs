//! Which events a destination wants: by registry prefix, resource type,
//! message ID or originating resource. A subscription gives these as
//! properties; an SSE stream as `$filter` (DSP0266's SSE filter:
//! `RegistryPrefix eq 'TaskEvent' or ResourceType eq 'Volume'`).
//!
//! Values of one property are alternatives; different properties must
//! all match. An empty filter lets everything through. Exclusions
//! (`ExcludeMessageIds`, `ExcludeRegistryPrefixes`) win over all of them.

use super::EventRecord;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Filter {
    pub registry_prefixes: Vec<String>,
    pub resource_types: Vec<String>,
    pub message_ids: Vec<String>,
    pub origin_resources: Vec<String>,
    /// Never sent, whatever the properties above let through (a
    /// subscription's `ExcludeMessageIds` / `ExcludeRegistryPrefixes`).
    /// Absent from subscriptions stored before they existed.
    #[serde(default)]
    pub exclude_message_ids: Vec<String>,
    #[serde(default)]
    pub exclude_registry_prefixes: Vec<String>,
}

/// The SSE filter properties this service supports.
pub const SSE_PROPERTIES: [&str; 5] = [
    "EventFormatType",
    "RegistryPrefix",
    "ResourceType",
    "MessageId",
    "OriginResource",
];

/// `ResourceEvent.1.4.ResourceCreated` matches `ResourceEvent.ResourceCreated`
/// and itself.
fn message_id_matches(wanted: &str, actual: &str) -> bool {
    if wanted == actual {
        return true;
    }
    let parts: Vec<&str> = actual.split('.').collect();
    matches!(parts.as_slice(), [registry, .., key] if wanted == format!("{registry}.{key}"))
}

impl Filter {
    pub fn matches(&self, record: &EventRecord) -> bool {
        let origin = record.origin.as_ref();
        let excluded = self
            .exclude_registry_prefixes
            .iter()
            .any(|p| p == record.registry)
            || self
                .exclude_message_ids
                .iter()
                .any(|m| message_id_matches(m, record.message_id()));
        !excluded
            && (self.registry_prefixes.is_empty()
                || self.registry_prefixes.iter().any(|p| p == record.registry))
            && (self.resource_types.is_empty()
                || origin.is_some_and(|(_, kind)| self.resource_types.iter().any(|t| t == kind)))
            && (self.message_ids.is_empty()
                || self
                    .message_ids
                    .iter()
                    .any(|m| message_id_matches(m, record.message_id())))
            && (self.origin_resources.is_empty()
                || origin.is_some_and(|(uri, _)| self.origin_resources.iter().any(|o| o == uri)))
    }

    /// Parses an SSE `$filter`: `Property eq 'value'` terms joined by `or`
    /// (quotes optional). Returns what is wrong otherwise.
    pub fn parse_sse(text: &str) -> Result<Self, String> {
        let mut filter = Self::default();
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.is_empty() {
            return Err("the filter is empty".into());
        }
        for (index, term) in words.chunks(4).enumerate() {
            let (property, value) = match term {
                [property, "eq", value] | [property, "eq", value, "or"] => (*property, *value),
                _ => {
                    return Err(format!(
                        "term {} is not `Property eq value` followed by `or`",
                        index + 1
                    ));
                }
            };
            if term.len() == 4 && index * 4 + 4 == words.len() {
                return Err("the filter ends with `or`".into());
            }
            let value = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(value)
                .to_string();
            match property {
                "EventFormatType" if value == "Event" => {}
                "EventFormatType" => {
                    return Err(format!("EventFormatType {value}: only Event is sent"));
                }
                "RegistryPrefix" => filter.registry_prefixes.push(value),
                "ResourceType" => filter.resource_types.push(value),
                "MessageId" => filter.message_ids.push(value),
                "OriginResource" => filter.origin_resources.push(value),
                other => {
                    return Err(format!(
                        "{other} is not one of {}",
                        SSE_PROPERTIES.join(", ")
                    ));
                }
            }
        }
        Ok(filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        registry: &'static str,
        key: &str,
        origin: Option<(&str, &'static str)>,
    ) -> EventRecord {
        EventRecord {
            id: 1,
            timestamp: std::time::SystemTime::now(),
            message: serde_json::json!({"MessageId": format!("{registry}.1.4.{key}")}),
            registry,
            origin: origin.map(|(u, k)| (u.to_string(), k)),
        }
    }

    #[test]
    fn properties_are_anded_and_values_ored() {
        let created = record(
            "ResourceEvent",
            "ResourceCreated",
            Some(("/redfish/v1/Storage/appliance/Volumes/1", "Volume")),
        );
        let task = record(
            "TaskEvent",
            "TaskStarted",
            Some(("/redfish/v1/TaskService/Tasks/1", "Task")),
        );
        assert!(Filter::default().matches(&created));
        let f =
            Filter::parse_sse("RegistryPrefix eq 'TaskEvent' or RegistryPrefix eq ResourceEvent")
                .unwrap();
        assert!(f.matches(&created) && f.matches(&task));
        let f = Filter::parse_sse("RegistryPrefix eq 'ResourceEvent' or ResourceType eq 'Task'")
            .unwrap();
        assert!(!f.matches(&created), "a Volume is not a Task");
        assert!(!f.matches(&task), "TaskEvent is not ResourceEvent");
        let f = Filter::parse_sse("MessageId eq 'ResourceEvent.ResourceCreated'").unwrap();
        assert!(f.matches(&created) && !f.matches(&task));
        let f = Filter::parse_sse("OriginResource eq '/redfish/v1/TaskService/Tasks/1'").unwrap();
        assert!(f.matches(&task) && !f.matches(&created));
        assert!(
            Filter::parse_sse("EventFormatType eq Event")
                .unwrap()
                .matches(&task)
        );
    }

    #[test]
    fn exclusions_win() {
        let created = record("ResourceEvent", "ResourceCreated", None);
        let removed = record("ResourceEvent", "ResourceRemoved", None);
        let task = record("TaskEvent", "TaskStarted", None);
        let f = Filter {
            exclude_message_ids: vec!["ResourceEvent.ResourceCreated".into()],
            ..Filter::default()
        };
        assert!(!f.matches(&created) && f.matches(&removed) && f.matches(&task));
        let f = Filter {
            exclude_message_ids: vec!["ResourceEvent.1.4.ResourceRemoved".into()],
            ..Filter::default()
        };
        assert!(f.matches(&created) && !f.matches(&removed));
        let f = Filter {
            registry_prefixes: vec!["ResourceEvent".into(), "TaskEvent".into()],
            exclude_registry_prefixes: vec!["TaskEvent".into()],
            ..Filter::default()
        };
        assert!(f.matches(&created) && !f.matches(&task));
        // Stored before exclusions existed: read as none.
        let old: Filter = serde_json::from_str(
            r#"{"registry_prefixes":[],"resource_types":[],"message_ids":[],"origin_resources":[]}"#,
        )
        .unwrap();
        assert_eq!(old, Filter::default());
    }

    #[test]
    fn malformed_filters_say_what_is_wrong() {
        for bad in [
            "",
            "RegistryPrefix",
            "RegistryPrefix ne 'TaskEvent'",
            "Colour eq 'red'",
            "RegistryPrefix eq 'TaskEvent' or",
            "RegistryPrefix eq 'TaskEvent' and ResourceType eq Volume",
            "EventFormatType eq MetricReport",
        ] {
            assert!(Filter::parse_sse(bad).is_err(), "{bad:?}");
        }
    }
}

//! EventService: push subscriptions (`Subscriptions`, POST a
//! `Destination`), a server-sent event stream (`/redfish/v1/EventService/SSE`,
//! with `$filter`), the delivery retry policy, and `SubmitTestEvent`.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};

use super::session_service::{merge, not_applied};
use crate::auth::Principal;
use crate::events::destination;
use crate::events::filter::Filter;
use crate::events::subscriptions::{
    MAX_RETRY_ATTEMPTS, MAX_RETRY_INTERVAL_S, MAX_SSE_STREAMS, MAX_SSE_STREAMS_PER_ACCOUNT,
    MAX_SUBSCRIPTIONS, SseRefused, StreamOwner, Subscription,
};
use crate::events::{REGISTRY_PREFIXES, RESOURCE_TYPES};
use crate::redfish::body;
use crate::redfish::message::{RedfishError, find_registry_message};
use crate::redfish::{query, resource};
use crate::state::AppState;

pub const SERVICE: &str = "/redfish/v1/EventService";
pub const SUBSCRIPTIONS: &str = "/redfish/v1/EventService/Subscriptions";
pub const SSE: &str = "/redfish/v1/EventService/SSE";
const SUBMIT_TEST_EVENT: &str = "/redfish/v1/EventService/Actions/EventService.SubmitTestEvent";
/// A comment line this often keeps an idle SSE stream (and proxies) alive.
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often an SSE stream opened with a session checks that the session
/// has not expired.
const SSE_SESSION_CHECK: Duration = Duration::from_secs(5);
/// Longest `Destination` and `Context` accepted.
const MAX_URI_CHARS: usize = 2048;
const MAX_CONTEXT_CHARS: usize = 256;
/// Most message IDs a subscription lists (`MessageIds`,
/// `ExcludeMessageIds`): each event is compared with every one.
const MAX_FILTER_VALUES: usize = 256;

fn service_body(state: &AppState) -> Value {
    let retry = state.subscriptions.retry_policy();
    let sse_filters: Map<String, Value> = [
        "EventFormatType",
        "MessageId",
        "RegistryPrefix",
        "ResourceType",
        "OriginResource",
    ]
    .into_iter()
    .map(|p| (p.to_string(), json!(true)))
    .chain(
        [
            "EventType",
            "MetricReportDefinition",
            "SubordinateResources",
        ]
        .into_iter()
        .map(|p| (p.to_string(), json!(false))),
    )
    .collect();
    json!({
        "@odata.id": SERVICE,
        "@odata.type": "#EventService.v1_12_0.EventService",
        "Id": "EventService",
        "Name": "Event Service",
        "ServiceEnabled": true,
        "Status": {"State": "Enabled", "Health": "OK"},
        "DeliveryRetryAttempts": retry.attempts,
        "DeliveryRetryIntervalSeconds": retry.interval_s,
        "EventFormatTypes": ["Event"],
        "RegistryPrefixes": REGISTRY_PREFIXES,
        "ResourceTypes": RESOURCE_TYPES,
        "ServerSentEventUri": SSE,
        "SSEFilterPropertiesSupported": sse_filters,
        "IncludeOriginOfConditionSupported": false,
        "SubordinateResourcesSupported": false,
        "Subscriptions": {"@odata.id": SUBSCRIPTIONS},
        "Actions": {"#EventService.SubmitTestEvent": {"target": SUBMIT_TEST_EVENT}},
    })
}

pub async fn get_service(State(state): State<AppState>, headers: HeaderMap) -> Response {
    resource::get(
        &headers,
        service_body(&state),
        "EventService",
        "GET, HEAD, PATCH",
    )
}

/// PATCH: the delivery retry policy.
pub async fn patch_service(
    State(state): State<AppState>,
    raw: Bytes,
) -> Result<Response, RedfishError> {
    let object = body::object(&raw)?;
    let mut policy = state.subscriptions.retry_policy();
    let mut problems = Vec::new();
    let mut changed = false;
    for (name, value) in &object {
        let result = match name.as_str() {
            "DeliveryRetryAttempts" => match body::unsigned(name, value) {
                Ok(n) if n <= u64::from(MAX_RETRY_ATTEMPTS) => {
                    policy.attempts = n as u32;
                    Ok(())
                }
                Ok(n) => Err(RedfishError::bad_request(
                    "PropertyValueOutOfRange",
                    &[&n.to_string(), name],
                )),
                Err(e) => Err(e),
            },
            "DeliveryRetryIntervalSeconds" => match body::unsigned(name, value) {
                Ok(n) if (1..=MAX_RETRY_INTERVAL_S).contains(&n) => {
                    policy.interval_s = n;
                    Ok(())
                }
                Ok(n) => Err(RedfishError::bad_request(
                    "PropertyValueOutOfRange",
                    &[&n.to_string(), name],
                )),
                Err(e) => Err(e),
            },
            _ if body::is_annotation(name) => continue,
            _ if service_body(&state).get(name).is_some() => {
                Err(RedfishError::bad_request("PropertyNotWritable", &[name]))
            }
            _ => Err(RedfishError::bad_request("PropertyUnknown", &[name])),
        };
        match result {
            Ok(()) => changed = true,
            Err(e) => problems.push(e),
        }
    }
    if !changed {
        return Err(
            merge(problems).unwrap_or_else(|| RedfishError::bad_request("NoOperation", &[]))
        );
    }
    state
        .subscriptions
        .set_retry_policy(policy)
        .await
        .map_err(RedfishError::internal)?;
    Ok(resource::updated(
        service_body(&state),
        not_applied(problems),
    ))
}

fn subscription_uri(id: u64) -> String {
    format!("{SUBSCRIPTIONS}/{id}")
}

fn filter_properties(body: &mut Value, filter: &Filter) {
    body["RegistryPrefixes"] = json!(filter.registry_prefixes);
    body["ResourceTypes"] = json!(filter.resource_types);
    body["MessageIds"] = json!(filter.message_ids);
    body["ExcludeMessageIds"] = json!(filter.exclude_message_ids);
    body["ExcludeRegistryPrefixes"] = json!(filter.exclude_registry_prefixes);
    body["OriginResources"] = Value::Array(
        filter
            .origin_resources
            .iter()
            .map(|uri| json!({"@odata.id": uri}))
            .collect(),
    );
}

fn subscription_body(subscription: &Subscription) -> Value {
    let mut body = json!({
        "@odata.id": subscription_uri(subscription.id),
        "@odata.type": "#EventDestination.v1_16_0.EventDestination",
        "Id": subscription.id.to_string(),
        "Name": format!("Event subscription {}", subscription.id),
        "Destination": destination::redacted(&subscription.destination),
        "Context": subscription.context,
        "Protocol": "Redfish",
        "SubscriptionType": "RedfishEvent",
        "EventFormatType": "Event",
        "VerifyCertificate": subscription.verify_certificate,
        "Description": "Events are POSTed to the destination; a failed delivery is retried DeliveryRetryAttempts times (EventService), then that event is dropped and the subscription stays",
        "Status": {"State": "Enabled", "Health": "OK"},
    });
    filter_properties(&mut body, &subscription.filter);
    body
}

fn sse_body(destination: &crate::events::subscriptions::SseDestination) -> Value {
    let mut body = json!({
        "@odata.id": subscription_uri(destination.id),
        "@odata.type": "#EventDestination.v1_16_0.EventDestination",
        "Id": destination.id.to_string(),
        "Name": format!("Server-sent event stream {}", destination.id),
        "Context": destination.context,
        "Protocol": "Redfish",
        "SubscriptionType": "SSE",
        "EventFormatType": "Event",
        "Status": {"State": "Enabled", "Health": "OK"},
    });
    filter_properties(&mut body, &destination.filter);
    body
}

pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let members: Vec<String> = state
        .subscriptions
        .list()
        .iter()
        .map(|s| s.id)
        .chain(state.subscriptions.sse_streams().iter().map(|s| s.id))
        .map(subscription_uri)
        .collect();
    let body = json!({
        "@odata.id": SUBSCRIPTIONS,
        "@odata.type": "#EventDestinationCollection.EventDestinationCollection",
        "Name": "Event Subscriptions",
        "Members@odata.count": members.len(),
        "Members": resource::members(members),
    });
    resource::get(
        &headers,
        body,
        "EventDestinationCollection",
        "GET, HEAD, POST",
    )
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    let number = id.parse::<u64>().ok();
    if let Some(subscription) = number.and_then(|n| state.subscriptions.get(n)) {
        return Ok(resource::get(
            &headers,
            subscription_body(&subscription),
            "EventDestination",
            "GET, HEAD, DELETE",
        ));
    }
    let stream = number
        .and_then(|n| state.subscriptions.sse_stream(n))
        .ok_or_else(|| RedfishError::not_found("EventDestination", &id))?;
    Ok(resource::get(
        &headers,
        sse_body(&stream),
        "EventDestination",
        "GET, HEAD, DELETE",
    ))
}

/// The string values of array property `name`.
fn strings(object: &Map<String, Value>, name: &str) -> Result<Vec<String>, RedfishError> {
    let Some(value) = object.get(name) else {
        return Ok(Vec::new());
    };
    let list = value
        .as_array()
        .ok_or_else(|| body::type_error(name, value))?;
    list.iter()
        .map(|v| body::string(name, v).map(str::to_string))
        .collect()
}

fn check_in(values: &[String], allowed: &[&str], name: &str) -> Result<(), RedfishError> {
    match values.iter().find(|v| !allowed.contains(&v.as_str())) {
        Some(value) => Err(RedfishError::bad_request(
            "PropertyValueNotInList",
            &[value, name],
        )),
        None => Ok(()),
    }
}

/// A subscription's filter from its POST body.
fn parse_filter(object: &Map<String, Value>) -> Result<Filter, RedfishError> {
    let registry_prefixes = strings(object, "RegistryPrefixes")?;
    check_in(&registry_prefixes, &REGISTRY_PREFIXES, "RegistryPrefixes")?;
    let resource_types = strings(object, "ResourceTypes")?;
    check_in(&resource_types, &RESOURCE_TYPES, "ResourceTypes")?;
    let origin_resources = match object.get("OriginResources") {
        Some(value) => body::links("OriginResources", value)?
            .into_iter()
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    };
    let exclude_registry_prefixes = strings(object, "ExcludeRegistryPrefixes")?;
    check_in(
        &exclude_registry_prefixes,
        &REGISTRY_PREFIXES,
        "ExcludeRegistryPrefixes",
    )?;
    let message_ids = strings(object, "MessageIds")?;
    let exclude_message_ids = strings(object, "ExcludeMessageIds")?;
    for (ids, name) in [
        (&message_ids, "MessageIds"),
        (&exclude_message_ids, "ExcludeMessageIds"),
    ] {
        if ids.len() > MAX_FILTER_VALUES {
            return Err(RedfishError::bad_request(
                "ArraySizeTooLong",
                &[name, &MAX_FILTER_VALUES.to_string()],
            ));
        }
    }
    Ok(Filter {
        registry_prefixes,
        resource_types,
        message_ids,
        origin_resources,
        exclude_message_ids,
        exclude_registry_prefixes,
    })
}

/// `Destination`: an absolute http(s) URI with a host, without
/// credentials, reaching what the destination policy allows. A refused
/// value is echoed without its credentials.
fn parse_destination(
    object: &Map<String, Value>,
    policy: destination::Policy,
) -> Result<String, RedfishError> {
    let value = object.get("Destination").ok_or_else(|| {
        RedfishError::bad_request("CreateFailedMissingReqProperties", &["Destination"])
    })?;
    let Some(text) = value.as_str() else {
        // Not echoed: it may be an object holding anything.
        return Err(body::type_error("Destination", &json!("<not a string>")));
    };
    let shown = destination::redacted(text);
    if text.len() > MAX_URI_CHARS {
        return Err(RedfishError::bad_request(
            "StringValueTooLong",
            &["Destination", &MAX_URI_CHARS.to_string()],
        ));
    }
    match destination::check(text, policy) {
        Ok(_) => Ok(text.to_string()),
        Err(refused @ (destination::Refused::NotHttp | destination::Refused::Credentials)) => Err(
            RedfishError::bad_request("PropertyValueFormatError", &[&shown, "Destination"])
                .with_detail(&refused.to_string()),
        ),
        Err(refused @ destination::Refused::Local) => Err(RedfishError::bad_request(
            "PropertyValueOutOfRange",
            &[&shown, "Destination"],
        )
        .with_detail(&refused.to_string())),
    }
}

/// POST: a push subscription. Answered synchronously with 201.
pub async fn create(State(state): State<AppState>, raw: Bytes) -> Result<Response, RedfishError> {
    let object = body::object(&raw)?;
    body::only_known(
        &object,
        &[
            "Destination",
            "Protocol",
            "Context",
            "RegistryPrefixes",
            "ResourceTypes",
            "MessageIds",
            "ExcludeMessageIds",
            "ExcludeRegistryPrefixes",
            "OriginResources",
            "EventFormatType",
            "SubscriptionType",
            "VerifyCertificate",
            "DeliveryRetryPolicy",
            "Name",
            "Description",
        ],
    )?;
    let protocol = object.get("Protocol").ok_or_else(|| {
        RedfishError::bad_request("CreateFailedMissingReqProperties", &["Protocol"])
    })?;
    if protocol != "Redfish" {
        return Err(RedfishError::bad_request(
            "PropertyValueNotInList",
            &[&protocol.to_string(), "Protocol"],
        ));
    }
    if let Some(policy) = object.get("DeliveryRetryPolicy") {
        // None of the policies says "drop the event, keep the subscription".
        return Err(RedfishError::bad_request(
            "PropertyValueNotInList",
            &[&policy.to_string(), "DeliveryRetryPolicy"],
        )
        .with_detail(
            "retries follow EventService's DeliveryRetryAttempts; then the event is dropped",
        ));
    }
    for (name, allowed) in [
        ("EventFormatType", "Event"),
        ("SubscriptionType", "RedfishEvent"),
    ] {
        if let Some(value) = object.get(name)
            && value != allowed
        {
            return Err(RedfishError::bad_request(
                "PropertyValueNotInList",
                &[&value.to_string(), name],
            ));
        }
    }
    let destination = parse_destination(&object, state.subscriptions.destination_policy())?;
    let context = match object.get("Context") {
        Some(value) => body::string("Context", value)?.to_string(),
        None => String::new(),
    };
    if context.chars().count() > MAX_CONTEXT_CHARS {
        return Err(RedfishError::bad_request(
            "StringValueTooLong",
            &[&context, &MAX_CONTEXT_CHARS.to_string()],
        ));
    }
    let verify = match object.get("VerifyCertificate") {
        Some(value) => body::boolean("VerifyCertificate", value)?,
        None => true,
    };
    let filter = parse_filter(&object)?;
    let subscription = state
        .subscriptions
        .create(destination, context, filter, verify)
        .await
        .map_err(RedfishError::internal)?
        .ok_or_else(|| {
            RedfishError::new(
                StatusCode::BAD_REQUEST,
                "EventSubscriptionLimitExceeded",
                &[],
            )
            .with_detail(&format!("at most {MAX_SUBSCRIPTIONS} subscriptions"))
        })?;
    let uri = subscription_uri(subscription.id);
    state.events.created(&uri, "EventService");
    Ok(resource::created(&uri, subscription_body(&subscription)))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, RedfishError> {
    let Some(number) = id.parse::<u64>().ok() else {
        return Err(RedfishError::not_found("EventDestination", &id));
    };
    if !state
        .subscriptions
        .delete(number)
        .await
        .map_err(RedfishError::internal)?
    {
        return Err(RedfishError::not_found("EventDestination", &id));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The SSE stream: every event the `$filter` lets through, as
/// `id: <EventId>` and one line of `data:` with the Event JSON. The stream
/// is an EventDestination while it is open.
pub async fn sse(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, RedfishError> {
    // Every event of the appliance flows here: as bmcweb, only callers
    // that may configure the manager or components may listen.
    let privileges = principal.role.privileges();
    if !privileges
        .iter()
        .any(|p| matches!(*p, "ConfigureManager" | "ConfigureComponents"))
    {
        return Err(RedfishError::forbidden());
    }
    if let Some(accept) = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok())
        && !accept.contains("text/event-stream")
        && !accept.contains("*/*")
    {
        return Err(RedfishError::bad_request("HeaderInvalid", &["Accept"])
            .with_detail("the event stream is text/event-stream"));
    }
    let mut filter = Filter::default();
    for pair in raw
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match query::decode(name).as_str() {
            "$filter" => {
                let text = query::decode(value);
                filter = Filter::parse_sse(&text).map_err(|why| {
                    RedfishError::new(
                        StatusCode::BAD_REQUEST,
                        "QueryParameterValueFormatError",
                        &[&text, "$filter"],
                    )
                    .with_detail(&why)
                })?;
            }
            other => {
                return Err(RedfishError::new(
                    StatusCode::BAD_REQUEST,
                    "QueryParameterUnsupported",
                    &[other],
                ));
            }
        }
    }
    // The stream lasts as long as the caller's access: its session's end
    // (logout, expiry, password change) or its account's ends it.
    let session = match &principal.session_id {
        Some(id) => Some(
            state
                .sessions
                .get(id)
                .ok_or_else(RedfishError::unauthorized)?,
        ),
        None => None,
    };
    let owner = StreamOwner {
        account_id: principal.account_id.clone(),
        session_id: principal.session_id.clone(),
    };
    let destination = state
        .subscriptions
        .open_sse(filter.clone(), owner)
        .map_err(|refused| {
            let detail = match refused {
                SseRefused::Full => format!("at most {MAX_SSE_STREAMS} streams are open at once"),
                SseRefused::AccountLimit => {
                    format!("an account holds at most {MAX_SSE_STREAMS_PER_ACCOUNT} streams")
                }
            };
            RedfishError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "EventSubscriptionLimitExceeded",
                &[],
            )
            .with_detail(&detail)
        })?;
    let bus = state.events.subscribe();
    let stop = destination.stop.clone();
    let ended = stream_end(state.clone(), stop, session);
    // Removes the destination when the stream ends, whoever ends it.
    let closer = SseCloser {
        state: state.clone(),
        id: destination.id,
    };
    let context = destination.context.clone();
    let events = tokio_stream_of(bus)
        .take_until(ended)
        .filter(move |record| std::future::ready(filter.matches(record)))
        .map(move |record| {
            let _alive = &closer;
            let data = serde_json::to_string(&record.payload(&context)).expect("events serialise");
            Ok::<_, Infallible>(SseEvent::default().id(record.id.to_string()).data(data))
        });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE))
        .into_response())
}

/// Resolves when the stream must end: its destination was deleted (or its
/// account's access ended), or its session ended. Expiry removes a
/// session only when the table is next looked at, so the session is
/// looked up every `SSE_SESSION_CHECK`.
async fn stream_end(
    state: AppState,
    stop: tokio_util::sync::CancellationToken,
    session: Option<crate::auth::sessions::Session>,
) {
    let Some(session) = session else {
        return stop.cancelled().await;
    };
    let expired = async {
        loop {
            tokio::time::sleep(SSE_SESSION_CHECK).await;
            if state.sessions.get(&session.id).is_none() {
                return;
            }
        }
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = session.ended.cancelled() => {}
        _ = expired => {}
    }
}

/// Deregisters an SSE destination when its stream is dropped.
struct SseCloser {
    state: AppState,
    id: u64,
}

impl Drop for SseCloser {
    fn drop(&mut self) {
        self.state.subscriptions.close_sse(self.id);
    }
}

/// The bus as a stream; a reader that fell behind skips what it missed.
fn tokio_stream_of(
    bus: tokio::sync::broadcast::Receiver<std::sync::Arc<crate::events::EventRecord>>,
) -> impl futures_util::Stream<Item = std::sync::Arc<crate::events::EventRecord>> {
    futures_util::stream::unfold(bus, |mut bus| async move {
        loop {
            match bus.recv().await {
                Ok(record) => return Some((record, bus)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// `EventService.SubmitTestEvent`: publishes `ResourceEvent.TestMessage`
/// (or the `MessageId` given, if it is a shipped message taking the
/// `MessageArgs` given) about `OriginOfCondition` or the EventService.
pub async fn submit_test_event(
    State(state): State<AppState>,
    raw: Bytes,
) -> Result<Response, RedfishError> {
    const ACTION: &str = "EventService.SubmitTestEvent";
    let object = if raw.is_empty() {
        Map::new()
    } else {
        body::object(&raw)?
    };
    for name in object.keys() {
        if !matches!(
            name.as_str(),
            "MessageId"
                | "MessageArgs"
                | "OriginOfCondition"
                | "Message"
                | "Severity"
                | "MessageSeverity"
                | "EventId"
                | "EventTimestamp"
                | "EventGroupId"
        ) && !body::is_annotation(name)
        {
            return Err(RedfishError::bad_request(
                "ActionParameterUnknown",
                &[ACTION, name],
            ));
        }
    }
    let args: Vec<String> = match object.get("MessageArgs") {
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect(),
        Some(other) => {
            return Err(RedfishError::bad_request(
                "ActionParameterValueTypeError",
                &[&other.to_string(), "MessageArgs", ACTION],
            ));
        }
        None => Vec::new(),
    };
    let (registry, key) = match object.get("MessageId").and_then(Value::as_str) {
        None => ("ResourceEvent", "TestMessage".to_string()),
        Some(id) => {
            let parts: Vec<&str> = id.split('.').collect();
            let found = match parts.as_slice() {
                [registry, .., key] => REGISTRY_PREFIXES
                    .iter()
                    .find(|p| *p == registry)
                    .map(|p| (*p, key.to_string())),
                _ => None,
            };
            found.ok_or_else(|| {
                RedfishError::bad_request(
                    "ActionParameterValueNotInList",
                    &[id, "MessageId", ACTION],
                )
            })?
        }
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let message = find_registry_message(registry, &key, &args).ok_or_else(|| {
        RedfishError::bad_request(
            "ActionParameterValueNotInList",
            &[&key, "MessageId", ACTION],
        )
        .with_detail("no such message, or the wrong number of MessageArgs")
    })?;
    let origin = match object.get("OriginOfCondition") {
        Some(value) => body::link("OriginOfCondition", value)?.to_string(),
        None => SERVICE.to_string(),
    };
    state
        .events
        .publish_message(registry, message, Some((&origin, "EventService")));
    Ok(StatusCode::NO_CONTENT.into_response())
}

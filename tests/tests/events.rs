//! EventService end to end: a server-sent event stream with `$filter`
//! sees volumes created and data clusters failing and recovering; push
//! subscriptions receive task events at a loopback destination, retried
//! with the service's policy, and survive a restart of the service; bad
//! subscriptions are refused.

use std::sync::mpsc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use shoal_tests::event_receiver::EventReceiver;
use shoal_tests::redfish_client::{RedfishClient, message_key};
use shoal_tests::sse::EventStream;
use shoal_tests::{Appliance, STARTUP_TIMEOUT};

const SUBSCRIPTIONS: &str = "/redfish/v1/EventService/Subscriptions";
const VOLUMES: &str = "/redfish/v1/Storage/appliance/Volumes";
const MIB: u64 = 1 << 20;

fn start() -> Appliance {
    let appliance = Appliance::builder(2)
        .set("memory.region_mib", 32)
        .set("dataplane.drive_size_mib", 128)
        // The test's event receivers listen on loopback.
        .set("management.event_destinations_allow_local", true)
        .start();
    appliance.wait_for("all children running", STARTUP_TIMEOUT, |s| {
        s["state"] == "running"
    });
    appliance
}

#[test]
fn the_event_stream_sees_volumes_and_cluster_failures() {
    let appliance = start();
    let r = RedfishClient::new(&appliance);
    let service = r.get_ok("/redfish/v1/EventService");
    assert_eq!(
        service["ServerSentEventUri"],
        "/redfish/v1/EventService/SSE"
    );

    let stream = EventStream::open(
        &r,
        "RegistryPrefix eq 'ResourceEvent' or RegistryPrefix eq 'StorageDevice'",
    );
    // The open stream is a destination of type SSE.
    let destinations = r.get_ok(SUBSCRIPTIONS);
    assert_eq!(destinations["Members@odata.count"], 1);
    let sse_uri = destinations["Members"][0]["@odata.id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(r.get_ok(&sse_uri)["SubscriptionType"], "SSE");

    let (status, volume) = r.post(
        VOLUMES,
        &json!({"Name": "watched", "CapacityBytes": 16 * MIB}),
    );
    assert_eq!(status, StatusCode::CREATED);
    let (id, event) = stream.next_event("ResourceCreated");
    assert_eq!(event["@odata.type"], "#Event.v1_13_0.Event");
    assert_eq!(event["Events"][0]["EventId"], id.as_str());
    assert_eq!(
        event["Events"][0]["OriginOfCondition"]["@odata.id"],
        volume["@odata.id"]
    );

    // A data cluster dies and comes back: its controller fails, then is OK.
    appliance.kill_cluster(1);
    let controller = "/redfish/v1/Storage/appliance/Controllers/cluster1";
    let (_, failed) = stream.next_event("ControllerFailure");
    assert_eq!(
        failed["Events"][0]["OriginOfCondition"]["@odata.id"],
        controller
    );
    assert_eq!(failed["Events"][0]["MessageSeverity"], "Critical");
    let (_, back) = stream.next_event("ControllerOK");
    assert_eq!(
        back["Events"][0]["OriginOfCondition"]["@odata.id"],
        controller
    );

    // Deleting its destination ends the stream.
    assert_eq!(r.delete(&sse_uri).0, StatusCode::NO_CONTENT);
    let ended = loop {
        match stream.recv_timeout(Duration::from_secs(30)) {
            Ok(_) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break true,
            Err(mpsc::RecvTimeoutError::Timeout) => break false,
        }
    };
    assert!(
        ended,
        "the stream stays open after its destination was deleted"
    );
    assert_eq!(r.get_ok(SUBSCRIPTIONS)["Members@odata.count"], 0);

    // A client that does not accept an event stream gets a JSON error.
    let response = r
        .client
        .get(r.url("/redfish/v1/EventService/SSE"))
        .header("accept", "application/json")
        .basic_auth("admin", Some(&r.password))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(message_key(&response.json().unwrap()), "HeaderInvalid");

    // A filter the service cannot apply is refused.
    let response = r
        .client
        .get(r.url("/redfish/v1/EventService/SSE"))
        .query(&[("$filter", "Colour eq 'red'")])
        .basic_auth("admin", Some(&r.password))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn subscriptions_receive_task_events_with_retries_and_survive_restarts() {
    let appliance = start();
    let r = RedfishClient::new(&appliance);

    for (body, key) in [
        (
            json!({"Destination": "https://127.0.0.1/x", "Protocol": "FTP"}),
            "PropertyValueNotInList",
        ),
        (
            json!({"Destination": "not a uri", "Protocol": "Redfish"}),
            "PropertyValueFormatError",
        ),
        (
            json!({"Destination": "ftp://127.0.0.1/x", "Protocol": "Redfish"}),
            "PropertyValueFormatError",
        ),
        (
            json!({"Protocol": "Redfish"}),
            "CreateFailedMissingReqProperties",
        ),
        (
            json!({"Destination": "http://127.0.0.1/x", "Protocol": "Redfish", "RegistryPrefixes": ["Nope"]}),
            "PropertyValueNotInList",
        ),
    ] {
        let (status, error) = r.post(SUBSCRIPTIONS, &body);
        assert_eq!(
            (status, message_key(&error).as_str()),
            (StatusCode::BAD_REQUEST, key),
            "{body}"
        );
    }

    // Deliveries are retried once a second, twice; the receiver refuses
    // the first two attempts.
    let (status, _) = r.patch(
        "/redfish/v1/EventService",
        &json!({"DeliveryRetryIntervalSeconds": 1, "DeliveryRetryAttempts": 2}),
    );
    assert_eq!(status, StatusCode::OK);
    let receiver = EventReceiver::start(2);
    let (status, subscription) = r.post(
        SUBSCRIPTIONS,
        &json!({"Destination": receiver.url, "Protocol": "Redfish", "Context": "tasks only",
                "RegistryPrefixes": ["TaskEvent"]}),
    );
    assert_eq!(status, StatusCode::CREATED, "{subscription}");
    let subscription_uri = subscription["@odata.id"].as_str().unwrap().to_string();

    let (_, volume) = r.post(VOLUMES, &json!({"CapacityBytes": 16 * MIB}));
    let action = format!(
        "{}/Actions/Volume.Initialize",
        volume["@odata.id"].as_str().unwrap()
    );
    assert_eq!(r.post(&action, &json!({})).0, StatusCode::ACCEPTED);
    let completed = |e: &Value| {
        e["Events"][0]["MessageId"]
            .as_str()
            .is_some_and(|m| m.ends_with("TaskCompletedOK"))
    };
    let event = receiver.wait_for("TaskCompletedOK", STARTUP_TIMEOUT, completed);
    assert_eq!(event["Context"], "tasks only");
    assert!(
        event["Events"][0]["OriginOfCondition"]["@odata.id"]
            .as_str()
            .unwrap()
            .starts_with("/redfish/v1/TaskService/Tasks/")
    );
    let received = receiver.received();
    // Only task events: the volume's ResourceCreated was filtered out.
    assert!(received.iter().all(|e| {
        e["Events"][0]["MessageId"]
            .as_str()
            .unwrap()
            .starts_with("TaskEvent.")
    }));
    // TaskStarted was refused twice and delivered on the third attempt.
    let started: Vec<&Value> = received
        .iter()
        .filter(|e| {
            e["Events"][0]["MessageId"]
                .as_str()
                .unwrap()
                .ends_with("TaskStarted")
        })
        .collect();
    assert_eq!(started.len(), 3, "{received:#?}");
    assert!(
        started.iter().all(|e| e["Id"] == started[0]["Id"]),
        "the same event each time"
    );

    // The subscription outlives a restart of the management service.
    let management = appliance.status()["management"].clone();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(management["pid"].as_i64().unwrap() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let restarts = management["restarts"].as_u64().unwrap();
    appliance.wait_for("management restarted", STARTUP_TIMEOUT, |s| {
        s["management"]["state"] == "running"
            && s["management"]["restarts"].as_u64() > Some(restarts)
    });
    let r = RedfishClient::new(&appliance);
    let kept = r.get_ok(&subscription_uri);
    assert_eq!(kept["Destination"], receiver.url.as_str());
    assert_eq!(kept["RegistryPrefixes"], json!(["TaskEvent"]));
    assert_eq!(
        r.get_ok("/redfish/v1/EventService")["DeliveryRetryIntervalSeconds"],
        1
    );
    // A test event reaches it too (it is a ResourceEvent: widen the filter
    // by asking for that message of TaskEvent instead).
    let (status, _) = r.post(
        "/redfish/v1/EventService/Actions/EventService.SubmitTestEvent",
        &json!({"MessageId": "TaskEvent.1.0.TaskRemoved", "MessageArgs": ["42"]}),
    );
    assert_eq!(status, StatusCode::NO_CONTENT);
    receiver.wait_for("the test event", STARTUP_TIMEOUT, |e| {
        e["Events"][0]["Message"] == "The task with Id '42' was removed."
    });
    let (status, body) = r.post(
        "/redfish/v1/EventService/Actions/EventService.SubmitTestEvent",
        &json!({"MessageId": "TaskEvent.1.0.NoSuchMessage"}),
    );
    assert_eq!(
        (status, message_key(&body).as_str()),
        (StatusCode::BAD_REQUEST, "ActionParameterValueNotInList")
    );

    assert_eq!(r.delete(&subscription_uri).0, StatusCode::NO_CONTENT);
    assert_eq!(r.get(&subscription_uri).0, StatusCode::NOT_FOUND);
}

#[test]
fn subscriptions_exclude_message_ids_and_registries() {
    let appliance = start();
    let r = RedfishClient::new(&appliance);
    let receiver = EventReceiver::start(0);
    let (status, subscription) = r.post(
        SUBSCRIPTIONS,
        &json!({"Destination": receiver.url, "Protocol": "Redfish",
                "ExcludeMessageIds": ["TaskEvent.TaskRemoved"],
                "ExcludeRegistryPrefixes": ["ResourceEvent"]}),
    );
    assert_eq!(status, StatusCode::CREATED, "{subscription}");
    assert_eq!(
        subscription["ExcludeMessageIds"],
        json!(["TaskEvent.TaskRemoved"])
    );
    assert_eq!(
        subscription["ExcludeRegistryPrefixes"],
        json!(["ResourceEvent"])
    );
    let uri = subscription["@odata.id"].as_str().unwrap();
    assert_eq!(
        r.get_ok(uri)["ExcludeMessageIds"],
        json!(["TaskEvent.TaskRemoved"])
    );
    let (status, error) = r.post(
        SUBSCRIPTIONS,
        &json!({"Destination": receiver.url, "Protocol": "Redfish",
                "ExcludeRegistryPrefixes": ["Nope"]}),
    );
    assert_eq!(
        (status, message_key(&error).as_str()),
        (StatusCode::BAD_REQUEST, "PropertyValueNotInList")
    );

    let submit = |message_id: &str, args: Value| {
        let (status, body) = r.post(
            "/redfish/v1/EventService/Actions/EventService.SubmitTestEvent",
            &json!({"MessageId": message_id, "MessageArgs": args}),
        );
        assert_eq!(status, StatusCode::NO_CONTENT, "{message_id}: {body}");
    };
    // Excluded: by message ID (any version), by registry; then one that
    // is not, which arrives after them (one destination's deliveries
    // keep their order).
    submit("TaskEvent.1.0.TaskRemoved", json!(["1"]));
    submit("ResourceEvent.1.4.ResourceCreated", json!([]));
    let (_, volume) = r.post(VOLUMES, &json!({"CapacityBytes": 16 * MIB}));
    assert!(volume["@odata.id"].is_string(), "{volume}");
    submit("TaskEvent.1.0.TaskAborted", json!(["2"]));
    receiver.wait_for("the event not excluded", STARTUP_TIMEOUT, |e| {
        e["Events"][0]["Message"]
            .as_str()
            .is_some_and(|m| m.contains("'2'"))
    });
    std::thread::sleep(Duration::from_millis(500));
    let ids: Vec<String> = receiver
        .received()
        .iter()
        .map(|e| e["Events"][0]["MessageId"].as_str().unwrap().to_string())
        .collect();
    assert!(
        ids.iter()
            .all(|id| !id.starts_with("ResourceEvent.") && !id.ends_with(".TaskRemoved")),
        "{ids:?}"
    );
    assert!(ids.iter().any(|id| id.ends_with(".TaskAborted")), "{ids:?}");
}

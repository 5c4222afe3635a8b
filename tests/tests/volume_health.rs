//! Volume health through Redfish (issue 15): `Volume.CheckConsistency` on
//! a RAID1 volume runs as a task to `Completed` with 0 mismatched blocks
//! (RAID0 refuses it; a second one while the first runs is refused).
//! Then a leg's cluster is SIGKILLed while a host writes: a
//! `StorageDevice.VolumeDegraded` event reaches the SSE stream and the
//! volume shows the condition; once the supervisor has restarted the
//! cluster, `VolumeRebuilding` and `VolumeOK` follow and the condition is
//! gone.

use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::StatusCode;
use serde_json::{Value, json};
use shoal_tests::launcher::dataplane_launcher;
use shoal_tests::nbd_client::{self, connect};
use shoal_tests::redfish_client::{RedfishClient, message_key};
use shoal_tests::{Appliance, STARTUP_TIMEOUT};

const VOLUMES: &str = "/redfish/v1/Storage/appliance/Volumes";
const CONTROLLERS: &str = "/redfish/v1/Storage/appliance/Controllers";
const MIB: u64 = 1 << 20;
const CHUNK: usize = 64 << 10;

/// The SSE stream with `filter`: its events, as they arrive.
fn open_stream(r: &RedfishClient, filter: &str) -> mpsc::Receiver<Value> {
    let client = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(None)
        .build()
        .unwrap();
    let response = client
        .get(r.url("/redfish/v1/EventService/SSE"))
        .query(&[("$filter", filter)])
        .header("accept", "text/event-stream")
        .basic_auth("admin", Some(&r.password))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (events, arriving) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(response).lines() {
            let Ok(line) = line else { return };
            if let Some(data) = line.strip_prefix("data:") {
                let event: Value = serde_json::from_str(data.trim()).unwrap();
                if events.send(event).is_err() {
                    return;
                }
            }
        }
    });
    arriving
}

/// The next event record on `stream` about `origin`, with every message
/// ID passed on the way (oldest first).
fn next_about(stream: &mpsc::Receiver<Value>, origin: &str, seen: &mut Vec<String>) -> Value {
    loop {
        let event = stream
            .recv_timeout(STARTUP_TIMEOUT)
            .unwrap_or_else(|e| panic!("no event about {origin} (seen {seen:?}): {e}"));
        let record = event["Events"][0].clone();
        if record["OriginOfCondition"]["@odata.id"] == origin {
            seen.push(record["MessageId"].as_str().unwrap().to_string());
            return record;
        }
    }
}

/// Waits for the event about `origin` whose message key is `key`.
fn wait_event(
    stream: &mpsc::Receiver<Value>,
    origin: &str,
    key: &str,
    seen: &mut Vec<String>,
) -> Value {
    loop {
        let record = next_about(stream, origin, seen);
        if record["MessageId"]
            .as_str()
            .is_some_and(|m| m.starts_with("StorageDevice.") && m.ends_with(&format!(".{key}")))
        {
            return record;
        }
    }
}

/// POSTs `Volume.CheckConsistency` of `volume`: the status, the Location
/// header and the body.
fn check(r: &RedfishClient, volume: &str) -> (StatusCode, Option<String>, Value) {
    let response = r
        .client
        .post(r.url(&format!("{volume}/Actions/Volume.CheckConsistency")))
        .json(&json!({}))
        .basic_auth("admin", Some(&r.password))
        .send()
        .unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string());
    (status, location, response.json().unwrap())
}

fn wait_volume(r: &RedfishClient, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = r.get_ok(path);
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "volume never {what}: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The cluster holding `bdev` as a raid.
fn owner(appliance: &Appliance, clusters: u32, bdev: &str) -> Option<u32> {
    (0..clusters).find(|&cluster| {
        appliance
            .dataplane_rpc(cluster, "bdev_get_bdevs", Some(json!({"name": bdev})))
            .is_ok_and(|list| list[0]["driver_specific"]["raid"].is_object())
    })
}

#[test]
fn a_raid1_volume_is_checked_as_a_task_and_reports_its_health() {
    let started = Instant::now();
    let clusters = 4;
    let builder = Appliance::builder(clusters);
    // While `<dir>/slow-start-<i>` exists, cluster i waits 4 s before it
    // starts: a killed leg stays away long enough to be seen degraded.
    let dir = builder.dir().to_path_buf();
    let launcher = dataplane_launcher(
        &dir,
        &format!("[ -e '{}/slow-start-'\"$2\" ] && sleep 4", dir.display()),
    );
    let appliance = builder
        .set("memory.region_mib", 64)
        .set("dataplane.drive_size_mib", 128)
        .set("binaries.dataplane", launcher.display().to_string())
        .start_ready();
    let r = RedfishClient::new(&appliance);
    let stream = open_stream(&r, "RegistryPrefix eq 'StorageDevice'");

    // RAID0 has nothing to compare: no action, and a POST is refused.
    let (status, striped) = r.post(
        VOLUMES,
        &json!({"Name": "striped", "CapacityBytes": 8 * MIB, "RAIDType": "RAID0"}),
    );
    assert_eq!(status, StatusCode::CREATED, "{striped}");
    let striped = striped["@odata.id"].as_str().unwrap().to_string();
    assert!(r.get_ok(&striped)["Actions"]["#Volume.CheckConsistency"].is_null());
    let (status, _, refused) = check(&r, &striped);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(message_key(&refused), "ActionNotSupported");

    let (status, volume) = r.post(
        VOLUMES,
        &json!({"Name": "mirror", "CapacityBytes": 32 * MIB, "RAIDType": "RAID1"}),
    );
    assert_eq!(status, StatusCode::CREATED, "{volume}");
    let path = volume["@odata.id"].as_str().unwrap().to_string();
    let id = volume["Id"].as_str().unwrap().to_string();
    let bdev = format!("volume{id}");
    let volume = wait_volume(&r, &path, "OK", |v| v["Status"]["Health"] == "OK");
    assert_eq!(volume["Status"]["Conditions"], json!([]), "{volume}");
    assert_eq!(
        volume["Actions"]["#Volume.CheckConsistency"]["target"],
        format!("{path}/Actions/Volume.CheckConsistency")
    );

    // The check is a task; a second one meanwhile is refused.
    let (status, monitor, task) = check(&r, &path);
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    let monitor = monitor.expect("a Location header");
    assert!(monitor.starts_with("/redfish/v1/TaskService/TaskMonitors/"));
    let (status, _, busy) = check(&r, &path);
    assert_eq!(status, StatusCode::CONFLICT, "{busy}");
    assert_eq!(message_key(&busy), "ResourceInUse");
    let task_uri = task["@odata.id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let task = loop {
        let task = r.get_ok(&task_uri);
        if task["TaskState"] != "Running" {
            break task;
        }
        assert!(Instant::now() < deadline, "the check never ended: {task}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(task["TaskState"], "Completed", "{task}");
    assert_eq!(task["TaskStatus"], "OK", "{task}");
    assert_eq!(task["PercentComplete"], 100);
    // 32 MiB of 512-byte or 4-KiB blocks, all compared, none differing.
    let description = task["Description"].as_str().unwrap();
    assert!(
        description.starts_with("Checked ") && description.ends_with(": 0 mismatched"),
        "{description}"
    );
    let ids: Vec<&str> = task["Messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["MessageId"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["TaskEvent.1.0.TaskStarted", "TaskEvent.1.0.TaskCompletedOK"]
    );
    let (status, body) = r.get(&monitor);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["@odata.id"], path.as_str());
    let raid = appliance.dataplane_call(
        owner(&appliance, clusters, &bdev).unwrap(),
        "bdev_get_bdevs",
        json!({"name": bdev}),
    );
    let last = &raid[0]["driver_specific"]["raid"]["shoal"]["last_check"];
    assert_eq!(last["mismatched_blocks"], 0, "{last}");
    assert_eq!(last["sequence"], 1, "{last}");

    // A host writes through the owner while the other leg's cluster is
    // killed: the raid loses that leg.
    let first_owner = owner(&appliance, clusters, &bdev).unwrap();
    let victim = [0, 1].into_iter().find(|&c| c != first_owner).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written) = (Arc::clone(&stop), Arc::clone(&written));
        let port = appliance.nbd_port(first_owner);
        let bdev = bdev.clone();
        std::thread::spawn(move || {
            let mut s = connect(port, &bdev);
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let data = vec![0x5a; CHUNK];
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let offset = (seq % (32 * MIB / CHUNK as u64)) * CHUNK as u64;
                assert_eq!(nbd_client::write(&mut s, seq, offset, &data), 0);
                written.fetch_add(1, Ordering::Relaxed);
                seq += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    while written.load(Ordering::Relaxed) < 20 {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::write(dir.join(format!("slow-start-{victim}")), b"").unwrap();
    let before = appliance.cluster(victim as usize);
    let restarts = before["restarts"].as_u64().unwrap();
    kill(
        Pid::from_raw(before["pid"].as_i64().unwrap() as i32),
        Signal::SIGKILL,
    )
    .unwrap();

    let mut seen = Vec::new();
    let degraded = wait_event(&stream, &path, "VolumeDegraded", &mut seen);
    assert_eq!(seen, ["StorageDevice.1.5.VolumeDegraded"], "only the news");
    assert_eq!(degraded["MessageSeverity"], "Warning");
    assert_eq!(
        degraded["MessageArgs"],
        json!([path, format!("{CONTROLLERS}/cluster{first_owner}")])
    );
    let volume = wait_volume(&r, &path, "degraded", |v| {
        v["Status"]["Health"] == "Warning"
    });
    let conditions = volume["Status"]["Conditions"].as_array().unwrap();
    assert_eq!(conditions.len(), 1, "{volume}");
    assert_eq!(
        conditions[0]["MessageId"], "StorageDevice.1.5.VolumeDegraded",
        "{volume}"
    );
    assert_eq!(conditions[0]["Severity"], "Warning");
    assert_eq!(
        conditions[0]["OriginOfCondition"]["@odata.id"],
        path.as_str()
    );
    // A check would compare against a leg that is not there.
    let (status, _, refused) = check(&r, &path);
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(message_key(&refused), "ResourceInUse");

    // The supervisor restarts the cluster; its leg is rebuilt.
    std::fs::remove_file(dir.join(format!("slow-start-{victim}"))).unwrap();
    appliance.wait_for("the leg's cluster restarted", STARTUP_TIMEOUT, |s| {
        s["clusters"][victim as usize]["state"] == "running"
            && s["clusters"][victim as usize]["restarts"].as_u64() > Some(restarts)
    });
    wait_event(&stream, &path, "VolumeRebuilding", &mut seen);
    let ok = wait_event(&stream, &path, "VolumeOK", &mut seen);
    assert_eq!(ok["MessageSeverity"], "OK");
    assert_eq!(
        seen,
        [
            "StorageDevice.1.5.VolumeDegraded",
            "StorageDevice.1.5.VolumeRebuilding",
            "StorageDevice.1.5.VolumeOK"
        ]
    );
    let volume = wait_volume(&r, &path, "OK again", |v| v["Status"]["Health"] == "OK");
    assert_eq!(volume["Status"]["Conditions"], json!([]), "{volume}");
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    eprintln!("volume health test took {:?}", started.elapsed());
}

//! Volume health through Redfish (issue 15): `Volume.CheckConsistency` on
//! a RAID1 volume runs as a task to `Completed` with 0 mismatched blocks
//! (RAID0 refuses it; a second one while the first runs is refused).
//! Then a leg's cluster is SIGKILLed while a host writes: a
//! `StorageDevice.VolumeDegraded` event reaches the SSE stream and the
//! volume shows the condition; once the supervisor has restarted the
//! cluster, `VolumeRebuilding` and `VolumeOK` follow and the condition is
//! gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use shoal_tests::Appliance;
use shoal_tests::launcher::{hold_back, let_back, slow_start_launcher};
use shoal_tests::nbd_client::{self, connect};
use shoal_tests::redfish_client::{RedfishClient, message_key};
use shoal_tests::sse::EventStream;

const VOLUMES: &str = "/redfish/v1/Storage/appliance/Volumes";
const CONTROLLERS: &str = "/redfish/v1/Storage/appliance/Controllers";
const MIB: u64 = 1 << 20;
const CHUNK: usize = 64 << 10;

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

/// Polls `path` until `done` holds (30 s at most).
fn wait_volume(r: &RedfishClient, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    r.wait_for(path, what, Duration::from_secs(30), done)
}

/// Polls the task of a check's 202 answer until it no longer runs.
fn wait_task(r: &RedfishClient, accepted: &Value) -> Value {
    let task_uri = accepted["@odata.id"].as_str().unwrap();
    r.wait_for(task_uri, "the check to end", Duration::from_secs(30), |t| {
        t["TaskState"] != "Running"
    })
}

#[test]
fn a_raid1_volume_is_checked_as_a_task_and_reports_its_health() {
    let started = Instant::now();
    let clusters = 4;
    let builder = Appliance::builder(clusters);
    // A killed leg stays away 4 s: long enough to be seen degraded.
    let dir = builder.dir().to_path_buf();
    let launcher = slow_start_launcher(&dir, 4);
    let appliance = builder
        .set("memory.region_mib", 64)
        .set("dataplane.drive_size_mib", 128)
        .set("binaries.dataplane", launcher.display().to_string())
        .start_ready();
    let r = RedfishClient::new(&appliance);
    let stream = EventStream::open(&r, "RegistryPrefix eq 'StorageDevice'");

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
    let task = wait_task(&r, &task);
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
    let (first_owner, raid) = appliance.raid_holder(clusters, &bdev).unwrap();
    let last = &raid["shoal"]["last_check"];
    assert_eq!(last["mismatched_blocks"], 0, "{last}");
    assert_eq!(last["sequence"], 1, "{last}");

    // A host writes through the owner while the other leg's cluster is
    // killed: the raid loses that leg.
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
    hold_back(&dir, victim);
    let restarts = appliance.kill_cluster(victim);

    let mut seen = Vec::new();
    let degraded = stream.wait_about(&path, "StorageDevice", "VolumeDegraded", &mut seen);
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
    let_back(&dir, victim);
    appliance.wait_restarted(victim, restarts);
    stream.wait_about(&path, "StorageDevice", "VolumeRebuilding", &mut seen);
    let ok = stream.wait_about(&path, "StorageDevice", "VolumeOK", &mut seen);
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

//! Volume health through Redfish (issue 15): `Volume.CheckConsistency` on
//! a RAID1 volume runs as a task to `Completed` with 0 mismatched blocks
//! (RAID0 refuses it; a second one while the first runs is refused).
//! Then a leg's cluster is SIGKILLed while a host writes: a
//! `StorageDevice.VolumeDegraded` event reaches the SSE stream and the
//! volume shows the condition; once the supervisor has restarted the
//! cluster, `VolumeRebuilding` and `VolumeOK` follow and the condition is
//! gone. A leg changed behind the raid's back (in its drive file) makes
//! the check complete with a warning and the count of differing blocks.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use shoal_tests::Appliance;
use shoal_tests::launcher::{hold_back, let_back, redundancy_appliance};
use shoal_tests::nbd_client::{self, connect};
use shoal_tests::pattern_writer::pattern;
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
    // A killed leg stays away 4 s: long enough to be seen degraded.
    let (appliance, dir) = redundancy_appliance(clusters, 4);
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

/// Where the data of leg `leg` of the raid `raid` (as `bdev_get_bdevs`
/// describes it on its owner, with `block_size`-byte blocks) starts: the
/// drive file under the leg's part, and the byte offset in it (the part's
/// offset on its drive, then the raid's superblock and bitmap area).
fn leg_data_in_drive(
    appliance: &Appliance,
    clusters: u32,
    raid: &Value,
    block_size: u64,
    leg: usize,
) -> (PathBuf, u64) {
    let member = &raid["base_bdevs_list"][leg];
    let name = member["name"].as_str().expect("the leg is present");
    let data_offset = member["data_offset"].as_u64().unwrap() * block_size;
    // The leg's own cluster holds it as a part of its drive (elsewhere it
    // is a remote bdev, or absent).
    let part = (0..clusters)
        .find_map(|cluster| {
            let list = appliance
                .dataplane_rpc(cluster, "bdev_get_bdevs", Some(json!({"name": name})))
                .ok()?;
            list[0]["driver_specific"]["part"]
                .is_object()
                .then(|| (cluster, list[0].clone()))
        })
        .map(|(cluster, part)| {
            let spec = &part["driver_specific"]["part"];
            let offset =
                spec["offset_blocks"].as_u64().unwrap() * part["block_size"].as_u64().unwrap();
            (
                cluster,
                spec["base_bdev"].as_str().unwrap().to_string(),
                offset,
            )
        });
    let (cluster, drive, part_offset) =
        part.unwrap_or_else(|| panic!("no cluster holds {name} as a part of its drive"));
    let drive = appliance.dataplane_call(cluster, "bdev_get_bdevs", json!({"name": drive}));
    let file = drive[0]["driver_specific"]["uring"]["filename"]
        .as_str()
        .unwrap_or_else(|| panic!("the drive is not a file: {drive}"));
    (PathBuf::from(file), part_offset + data_offset)
}

#[test]
fn a_check_of_a_raid1_volume_reports_a_leg_changed_behind_its_back() {
    let started = Instant::now();
    let clusters = 2;
    let appliance = Appliance::builder(clusters)
        .set("memory.region_mib", 64)
        .set("dataplane.drive_size_mib", 128)
        .start_ready();
    let r = RedfishClient::new(&appliance);
    let capacity = 16 * MIB;
    let (status, volume) = r.post(
        VOLUMES,
        &json!({"Name": "scrubbed", "CapacityBytes": capacity, "RAIDType": "RAID1"}),
    );
    assert_eq!(status, StatusCode::CREATED, "{volume}");
    let path = volume["@odata.id"].as_str().unwrap().to_string();
    let bdev = format!("volume{}", volume["Id"].as_str().unwrap());
    wait_volume(&r, &path, "OK", |v| v["Status"]["Health"] == "OK");
    let (owner, raid) = appliance.raid_holder(clusters, &bdev).unwrap();
    let block_size =
        appliance.dataplane_call(owner, "bdev_get_bdevs", json!({"name": bdev}))[0]["block_size"]
            .as_u64()
            .unwrap();

    // A known pattern through NBD (to both legs), at 4 MiB into the volume.
    let at = 4 * MIB;
    let written = pattern(7, MIB as usize);
    let mut s = connect(appliance.nbd_port(owner), &bdev);
    assert_eq!(nbd_client::write(&mut s, 1, at, &written), 0);
    drop(s);
    // Each leg's drive file holds it where the mapping says: this is
    // where a leg's data lies.
    let legs: Vec<(PathBuf, u64)> = (0..2)
        .map(|leg| leg_data_in_drive(&appliance, clusters, &raid, block_size, leg))
        .collect();
    assert_ne!(legs[0].0, legs[1].0, "the legs share a drive: {legs:?}");
    for (leg, (file, start)) in legs.iter().enumerate() {
        let mut back = vec![0; written.len()];
        std::fs::File::open(file)
            .and_then(|f| f.read_exact_at(&mut back, start + at))
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        assert!(
            back == written,
            "leg {leg} does not hold the pattern at {}",
            start + at
        );
    }

    // Leg 1 changes behind the raid's back: 16 KiB of other bytes, 64 KiB
    // into the pattern, written to its drive file (the dataplane reads it
    // with O_DIRECT, which sees the synced page cache).
    let changed = 16 << 10;
    let inside = 64 << 10;
    let other: Vec<u8> = written[inside..inside + changed]
        .iter()
        .map(|b| !b)
        .collect();
    let (file, start) = &legs[1];
    let drive = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    drive
        .write_all_at(&other, start + at + inside as u64)
        .unwrap();
    drive.sync_all().unwrap();
    drop(drive);

    let (status, _, task) = check(&r, &path);
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    let task = wait_task(&r, &task);
    assert_eq!(task["TaskState"], "Completed", "{task}");
    assert_eq!(task["TaskStatus"], "Warning", "{task}");
    assert_eq!(task["PercentComplete"], 100);
    // Every block compared, and exactly the changed ones differ.
    let mismatched = changed as u64 / block_size;
    assert_eq!(
        task["Description"],
        format!(
            "Checked {} blocks of {block_size} bytes of volume scrubbed: {mismatched} mismatched",
            capacity / block_size
        ),
        "{task}"
    );
    let messages = task["Messages"].as_array().unwrap();
    let ids: Vec<&str> = messages
        .iter()
        .map(|m| m["MessageId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{task}");
    assert_eq!(
        ids[..2],
        [
            "TaskEvent.1.0.TaskStarted",
            "TaskEvent.1.0.TaskCompletedWarning"
        ]
    );
    assert!(
        ids[2].starts_with("Base.") && ids[2].ends_with(".UndeterminedFault"),
        "{task}"
    );
    let resolution = messages[2]["Resolution"].as_str().unwrap();
    assert!(
        resolution.starts_with(&format!(
            "{mismatched} of {} blocks differ",
            capacity / block_size
        )),
        "{resolution}"
    );
    let (_, raid) = appliance.raid_holder(clusters, &bdev).unwrap();
    let last = &raid["shoal"]["last_check"];
    assert_eq!(last["mismatched_blocks"], mismatched, "{last}");
    assert_eq!(last["repaired"], false, "{last}");
    eprintln!("mismatch check test took {:?}", started.elapsed());
}

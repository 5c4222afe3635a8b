//! Redundant volumes through Redfish (issue 15): a RAID1 volume is one raid
//! on an owner cluster, forwarded to by every other cluster. Writes through
//! a non-owner's NBD path go on without an error while the owner is killed
//! with SIGKILL: the forwarder holds them, the reconciler moves the raid to
//! the other leg's cluster and retargets the forwarders. When the old owner
//! is back its leg rejoins and resyncs, and every acknowledged write reads
//! back with the mirrors identical.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::StatusCode;
use serde_json::{Value, json};
use shoal_tests::launcher::dataplane_launcher;
use shoal_tests::nbd_client::{self, connect};
use shoal_tests::redfish_client::RedfishClient;
use shoal_tests::{Appliance, STARTUP_TIMEOUT};

const VOLUMES: &str = "/redfish/v1/Storage/appliance/Volumes";
const MIB: u64 = 1 << 20;
const CHUNK: usize = 64 << 10;

fn pattern(seq: u64) -> Vec<u8> {
    (0..CHUNK)
        .map(|i| (seq as usize * 31 + i / 4096 + i) as u8)
        .collect()
}

/// The cluster whose `bdev` is a mirror raid, and that raid's description.
fn owner(appliance: &Appliance, clusters: u32, bdev: &str) -> Option<(u32, Value)> {
    (0..clusters).find_map(|cluster| {
        let list = appliance
            .dataplane_rpc(cluster, "bdev_get_bdevs", Some(json!({"name": bdev})))
            .ok()?;
        let raid = list[0]["driver_specific"]["raid"].clone();
        raid.is_object().then_some((cluster, raid))
    })
}

/// A dataplane launcher that waits 4 s before starting cluster `i` while
/// `<dir>/slow-start-<i>` exists: the killed owner stays away long enough
/// for the raid to move, then comes back.
fn slow_launcher(dir: &std::path::Path) -> std::path::PathBuf {
    dataplane_launcher(
        dir,
        &format!("[ -e '{}/slow-start-'\"$2\" ] && sleep 4", dir.display()),
    )
}

/// Waits until the volume's Redfish `Status.Health` is `health`.
fn wait_health(r: &RedfishClient, path: &str, health: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = r.get(path);
        if body["Status"]["Health"] == health {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "volume never became {health}: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_raid1_volume_survives_the_kill_of_its_owner_with_writes_through_another_cluster() {
    survives_the_kill_of_its_owner(3, "RAID1", "raid1", 2);
}

#[test]
fn a_raid10_volume_survives_the_kill_of_its_owner_with_writes_through_another_cluster() {
    survives_the_kill_of_its_owner(4, "RAID10", "raid10", 4);
}

/// `raid_type` over the first `legs` of `clusters` data clusters: the
/// owner is killed while a host writes through a cluster that neither owns
/// the volume nor will.
fn survives_the_kill_of_its_owner(clusters: u32, raid_type: &str, level: &str, legs: u32) {
    let builder = Appliance::builder(clusters);
    let launcher = slow_launcher(builder.dir());
    let dir = builder.dir().to_path_buf();
    let appliance = builder
        .set("memory.region_mib", 64)
        .set("dataplane.drive_size_mib", 128)
        .set("binaries.dataplane", launcher.display().to_string())
        .start_ready();
    let r = RedfishClient::new(&appliance);
    let (status, volume) = r.post(
        VOLUMES,
        &json!({"Name": "mirror", "CapacityBytes": 32 * MIB, "RAIDType": raid_type}),
    );
    assert_eq!(status, StatusCode::CREATED, "{volume}");
    assert_eq!(volume["RAIDType"], raid_type);
    assert_eq!(volume["CapacityBytes"], 32 * MIB);
    let id = volume["Id"].as_str().unwrap().to_string();
    let path = format!("{VOLUMES}/{id}");
    assert_eq!(volume["WriteHoleProtectionPolicy"], "Off");
    assert_eq!(volume["RecoverableCapacitySourceCount"], 0);
    wait_health(&r, &path, "OK");
    let bdev = format!("volume{id}");
    let (first_owner, raid) = owner(&appliance, clusters, &bdev).expect("a cluster holds the raid");
    assert_eq!(raid["raid_level"], level, "{raid}");
    assert_eq!(raid["superblock"], true);
    assert_eq!(raid["shoal"]["degraded"], false, "{raid}");
    assert!(first_owner < legs, "the owner holds a leg: {first_owner}");
    // The next owner: the first running leg cluster from the volume's
    // rotation point (storage::owner::choose_owner).
    let start = id.parse::<u32>().unwrap() % legs;
    let survivor = (0..legs)
        .map(|i| (start + i) % legs)
        .find(|&c| c != first_owner)
        .unwrap();
    let writer_cluster = (0..clusters)
        .find(|c| *c != first_owner && *c != survivor)
        .unwrap();
    // The writer's cluster forwards to the owner.
    let forwarder =
        appliance.dataplane_call(writer_cluster, "bdev_get_bdevs", json!({"name": bdev}));
    assert_eq!(
        forwarder[0]["driver_specific"]["remote"]["cluster"], first_owner,
        "{forwarder}"
    );

    let port = appliance.nbd_port(writer_cluster);
    let slots = 32 * MIB / CHUNK as u64;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let log: Arc<Mutex<Vec<(u64, u32)>>> = Arc::default();
    let writer = {
        let (stop, sent, log) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&log));
        let bdev = bdev.clone();
        std::thread::spawn(move || {
            let mut s = connect(port, &bdev);
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                let error =
                    nbd_client::write(&mut s, seq, (seq % slots) * CHUNK as u64, &pattern(seq));
                log.lock().unwrap().push((seq, error));
                sent.fetch_add(1, Ordering::Relaxed);
                seq += 1;
            }
        })
    };
    let wait_sent = |n: u64| {
        let target = sent.load(Ordering::Relaxed) + n;
        while sent.load(Ordering::Relaxed) < target {
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    wait_sent(200);
    std::fs::write(dir.join(format!("slow-start-{first_owner}")), b"").unwrap();
    let before = appliance.cluster(first_owner as usize);
    kill(
        Pid::from_raw(before["pid"].as_i64().unwrap() as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    let restarts = before["restarts"].as_u64().unwrap();
    // The raid moves to the surviving leg's cluster; writes go on.
    appliance.wait_for("the raid moved", Duration::from_secs(20), |_| {
        owner(&appliance, clusters, &bdev).is_some_and(|(c, _)| c == survivor)
    });
    wait_sent(200);
    let degraded = wait_health(&r, &path, "Warning");
    assert_eq!(degraded["Status"]["State"], "Enabled", "{degraded}");
    let moved = owner(&appliance, clusters, &bdev).unwrap().1;
    let forwarder =
        appliance.dataplane_call(writer_cluster, "bdev_get_bdevs", json!({"name": bdev}));
    assert_eq!(
        forwarder[0]["driver_specific"]["remote"]["cluster"], survivor,
        "{forwarder}"
    );

    // The old owner returns as a leg cluster; its leg rejoins and resyncs.
    std::fs::remove_file(dir.join(format!("slow-start-{first_owner}"))).unwrap();
    appliance.wait_for("the old owner restarted", STARTUP_TIMEOUT, |s| {
        s["clusters"][first_owner as usize]["state"] == "running"
            && s["clusters"][first_owner as usize]["restarts"].as_u64() > Some(restarts)
    });
    appliance.wait_for("the mirror healed", Duration::from_secs(60), |_| {
        owner(&appliance, clusters, &bdev)
            .is_some_and(|(c, raid)| c == survivor && raid["shoal"]["degraded"] == false)
    });
    wait_sent(100);
    wait_health(&r, &path, "OK");
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    let log = log.lock().unwrap().clone();
    let errors: Vec<_> = log.iter().filter(|e| e.1 != 0).collect();
    assert!(
        errors.is_empty(),
        "I/O errors at the host: {errors:?} (after the move: {moved})"
    );
    let mut latest = std::collections::HashMap::new();
    for &(seq, _) in &log {
        latest.insert(seq % slots, seq);
    }
    for cluster in 0..clusters {
        let mut s = connect(appliance.nbd_port(cluster), &bdev);
        for (&slot, &seq) in &latest {
            let back = nbd_client::read(&mut s, 1_000_000 + seq, slot * CHUNK as u64, CHUNK as u32)
                .unwrap();
            assert!(
                back == pattern(seq),
                "slot {slot}: write {seq} lost, read through cluster {cluster}"
            );
        }
    }
    appliance.dataplane_call(
        survivor,
        "bdev_raid_check_consistency",
        json!({"name": bdev}),
    );
    appliance.wait_for("the check finished", Duration::from_secs(60), |_| {
        owner(&appliance, clusters, &bdev).is_some_and(|(_, raid)| {
            raid["process"].is_null() && !raid["shoal"]["last_check"].is_null()
        })
    });
    let check = owner(&appliance, clusters, &bdev).unwrap().1["shoal"]["last_check"].clone();
    assert_eq!(check["finished"], true, "{check}");
    assert_eq!(check["mismatched_blocks"], 0, "{check}");
}

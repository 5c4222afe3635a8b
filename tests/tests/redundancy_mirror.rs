//! A raid1 with a superblock over a local leg and a leg on another data
//! cluster: writes through NBD go on without an error while the other
//! cluster is killed with SIGKILL; when it is back, the leg rejoins,
//! resyncs only what the bitmap names, and every acknowledged write reads
//! back, with the mirrors identical. And when the cluster holding the raid
//! itself is killed, the raid is assembled again from its legs'
//! superblocks, with every acknowledged write and the mirrors resynced.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use shoal_tests::Appliance;
use shoal_tests::nbd_client::{self, connect};

const LEG_BYTES: u64 = 36 << 20;
const BLOCK: u64 = 4096;
const CHUNK: usize = 64 << 10;

fn pattern(seq: u64) -> Vec<u8> {
    (0..CHUNK)
        .map(|i| (seq as usize * 29 + i / 4096 + i) as u8)
        .collect()
}

fn raid(appliance: &Appliance) -> Value {
    appliance.dataplane_call(0, "bdev_raid_get_bdevs", json!({"category": "all"}))[0].clone()
}

#[test]
fn raid1_survives_the_kill_of_a_leg_cluster_and_resyncs_it_on_return() {
    let appliance = Appliance::builder(2)
        .set("memory.region_mib", 64)
        .start_ready();
    appliance.file_bdev(0, "a", LEG_BYTES, BLOCK);
    appliance.file_bdev(1, "b", LEG_BYTES, BLOCK);
    appliance.dataplane_call(
        0,
        "bdev_remote_create",
        json!({"name": "rb", "cluster": 1, "remote_bdev": "b"}),
    );
    appliance.dataplane_call(
        0,
        "bdev_raid_create",
        json!({"name": "m", "raid_level": "raid1", "base_bdevs": ["a", "rb"], "superblock": true}),
    );
    let info = raid(&appliance);
    assert_eq!(info["state"], "online", "{info}");
    assert_eq!(info["superblock"], true);
    appliance.dataplane_call(0, "nbd_start_disk", json!({"bdev_name": "m"}));
    let port = appliance.nbd_port(0);
    let volume_bytes = LEG_BYTES - (4 << 20);
    let slots = volume_bytes / CHUNK as u64;

    // Writes of distinct chunks in a loop, each logged with its result.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let log: Arc<Mutex<Vec<(u64, u32)>>> = Arc::default();
    let writer = {
        let (stop, sent, log) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&log));
        std::thread::spawn(move || {
            let mut s = connect(port, "m");
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                // Mostly the first quarter, so the bitmap has clean regions.
                let slot = if seq % 8 == 0 {
                    seq % slots
                } else {
                    seq % (slots / 4)
                };
                let error = nbd_client::write(&mut s, seq, slot * CHUNK as u64, &pattern(seq));
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
    let before = appliance.cluster(1);
    kill(
        Pid::from_raw(before["pid"].as_i64().unwrap() as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    let restarts = before["restarts"].as_u64().unwrap();
    wait_sent(200);
    let degraded = raid(&appliance);
    assert_eq!(degraded["shoal"]["degraded"], true, "{degraded}");
    assert_eq!(degraded["shoal"]["legs"][1]["state"], "failed");

    appliance.wait_for("cluster 1 restarted", shoal_tests::STARTUP_TIMEOUT, |s| {
        s["clusters"][1]["state"] == "running"
            && s["clusters"][1]["restarts"].as_u64() > Some(restarts)
    });
    // The restarted cluster opens its leg file again; the raid takes the
    // leg back and rebuilds it from the bitmap while writes go on.
    appliance.file_bdev(1, "b", LEG_BYTES, BLOCK);
    appliance.dataplane_call(
        0,
        "bdev_raid_add_base_bdev",
        json!({"raid_bdev": "m", "base_bdev": "rb"}),
    );
    appliance.wait_for("the leg resynced", Duration::from_secs(60), |_| {
        raid(&appliance)["shoal"]["degraded"] == false
    });
    wait_sent(100);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    let log = log.lock().unwrap().clone();
    let errors: Vec<_> = log.iter().filter(|e| e.1 != 0).collect();
    assert!(errors.is_empty(), "I/O errors at the client: {errors:?}");
    let synced = raid(&appliance);
    let last = &synced["shoal"]["last_process"];
    assert_eq!(last["type"], "rebuild", "{synced}");
    assert_eq!(last["finished"], true);
    let volume_blocks = volume_bytes / BLOCK;
    assert!(
        last["blocks"].as_u64().unwrap() < volume_blocks,
        "a returning leg resyncs from the bitmap, not whole: {synced}"
    );

    // Every acknowledged write reads back (the latest one of each slot).
    let mut s = connect(port, "m");
    let mut latest = std::collections::HashMap::new();
    for &(seq, _) in &log {
        let slot = if seq % 8 == 0 {
            seq % slots
        } else {
            seq % (slots / 4)
        };
        latest.insert(slot, seq);
    }
    for (&slot, &seq) in &latest {
        let back =
            nbd_client::read(&mut s, 1_000_000 + seq, slot * CHUNK as u64, CHUNK as u32).unwrap();
        assert!(back == pattern(seq), "slot {slot}: write {seq} lost");
    }
    // And the mirrors are identical.
    let check = appliance.raid_check(0, "m", Duration::from_secs(60));
    assert_eq!(check["mismatched_blocks"], 0, "{check}");
    assert_eq!(check["checked_blocks"], volume_blocks);
}

fn make_raid(appliance: &Appliance, uuid: &str) {
    appliance.dataplane_call(
        0,
        "bdev_remote_create",
        json!({"name": "rb", "cluster": 1, "remote_bdev": "b"}),
    );
    appliance.dataplane_call(
        0,
        "bdev_raid_create",
        json!({"name": "m", "raid_level": "raid1", "base_bdevs": ["a", "rb"],
               "superblock": true, "uuid": uuid}),
    );
    appliance.dataplane_call(0, "nbd_start_disk", json!({"bdev_name": "m"}));
}

#[test]
fn raid1_reassembles_after_the_kill_of_its_own_cluster_with_every_acknowledged_write() {
    let appliance = Appliance::builder(2)
        .set("memory.region_mib", 64)
        .start_ready();
    let uuid = "6f1d2c3b-9a8e-4d7c-b6a5-0123456789ab";
    appliance.file_bdev(0, "a", LEG_BYTES, BLOCK);
    appliance.file_bdev(1, "b", LEG_BYTES, BLOCK);
    make_raid(&appliance, uuid);
    let port = appliance.nbd_port(0);
    let slots = (LEG_BYTES - (4 << 20)) / CHUNK as u64;

    // Acknowledged writes are logged; the connection dies with the
    // cluster, which ends the writer (its one unacknowledged write may or
    // may not have landed).
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let writer = {
        let acked = Arc::clone(&acked);
        std::thread::spawn(move || {
            let mut s = connect(port, "m");
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            for seq in 0.. {
                let slot = seq % slots;
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    nbd_client::write(&mut s, seq, slot * CHUNK as u64, &pattern(seq))
                }));
                match outcome {
                    Ok(0) => acked.lock().unwrap().push(seq),
                    _ => return seq,
                }
            }
            unreachable!()
        })
    };
    while acked.lock().unwrap().len() < 300 {
        std::thread::sleep(Duration::from_millis(2));
    }
    let before = appliance.cluster(0);
    kill(
        Pid::from_raw(before["pid"].as_i64().unwrap() as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    let restarts = before["restarts"].as_u64().unwrap();
    let unacknowledged = writer.join().unwrap();
    appliance.wait_for("cluster 0 restarted", shoal_tests::STARTUP_TIMEOUT, |s| {
        s["clusters"][0]["state"] == "running"
            && s["clusters"][0]["restarts"].as_u64() > Some(restarts)
    });
    appliance.file_bdev(0, "a", LEG_BYTES, BLOCK);
    make_raid(&appliance, uuid);
    appliance.wait_for("the resync finished", Duration::from_secs(60), |_| {
        let info = raid(&appliance);
        info["process"].is_null() && !info["shoal"]["last_process"].is_null()
    });
    let info = raid(&appliance);
    assert_eq!(info["shoal"]["degraded"], false, "{info}");
    assert_eq!(info["shoal"]["last_process"]["type"], "resync", "{info}");

    let acked = acked.lock().unwrap().clone();
    let mut latest = std::collections::HashMap::new();
    for &seq in &acked {
        latest.insert(seq % slots, seq);
    }
    let mut s = connect(port, "m");
    for (&slot, &seq) in &latest {
        let back =
            nbd_client::read(&mut s, 1_000_000 + seq, slot * CHUNK as u64, CHUNK as u32).unwrap();
        let in_flight = unacknowledged % slots == slot && back == pattern(unacknowledged);
        assert!(
            back == pattern(seq) || in_flight,
            "slot {slot}: write {seq} lost"
        );
    }
    let check = appliance.raid_check(0, "m", Duration::from_secs(60));
    assert_eq!(check["mismatched_blocks"], 0, "{check}");
}

//! Forwarding remote bdevs (the non-owner side of a redundant volume):
//! with `hold_timeout_ms`, I/O survives the death of the target cluster
//! and goes on once the target is back or the bdev was repointed with
//! `bdev_remote_set_target`; it fails with EIO only at the timeout.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use shoal_tests::Appliance;
use shoal_tests::nbd_client::{self, connect};

const BLOCKS: u64 = 4096;
const BLOCK: usize = 4096;
const CHUNK: usize = 64 << 10;

/// One write: (sequence, sent, done, NBD error).
type Sent = (u64, Instant, Instant, u32);

fn start(clusters: u32) -> Appliance {
    Appliance::builder(clusters)
        .set("memory.region_mib", 64)
        .start_ready()
}

fn malloc(appliance: &Appliance, cluster: u32, name: &str, blocks: u64) {
    appliance.dataplane_call(
        cluster,
        "bdev_malloc_create",
        json!({"name": name, "num_blocks": blocks, "block_size": BLOCK}),
    );
}

/// On cluster 0: `fwd`, a remote bdev to cluster 1's `t` holding I/O for
/// `hold_ms`, exported over NBD.
fn forwarding_bdev(appliance: &Appliance, hold_ms: u64) {
    appliance.dataplane_call(
        0,
        "bdev_remote_create",
        json!({"name": "fwd", "cluster": 1, "remote_bdev": "t", "hold_timeout_ms": hold_ms}),
    );
    appliance.dataplane_call(0, "nbd_start_disk", json!({"bdev_name": "fwd"}));
}

fn pattern(seq: u64) -> Vec<u8> {
    (0..CHUNK)
        .map(|i| (seq as usize * 31 + i / 512 + i) as u8)
        .collect()
}

fn kill_cluster(appliance: &Appliance, cluster: usize) -> u64 {
    let before = appliance.cluster(cluster);
    kill(
        Pid::from_raw(before["pid"].as_i64().unwrap() as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    before["restarts"].as_u64().unwrap()
}

#[test]
fn held_io_survives_the_targets_death_and_goes_to_the_new_target() {
    let appliance = start(3);
    malloc(&appliance, 1, "t", BLOCKS);
    malloc(&appliance, 2, "t", BLOCKS);
    forwarding_bdev(&appliance, 10_000);
    let port = appliance.nbd_port(0);

    // Writes of distinct chunks, in a loop, each recorded with when it
    // was sent and whether it succeeded.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let log: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let writer = {
        let (stop, sent, log) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&log));
        std::thread::spawn(move || {
            let mut s = connect(port, "fwd");
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let slots = BLOCKS * BLOCK as u64 / CHUNK as u64;
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                let at = Instant::now();
                let error =
                    nbd_client::write(&mut s, seq, (seq % slots) * CHUNK as u64, &pattern(seq));
                log.lock().unwrap().push((seq, at, Instant::now(), error));
                sent.fetch_add(1, Ordering::Relaxed);
                seq += 1;
            }
        })
    };
    while sent.load(Ordering::Relaxed) < 50 {
        std::thread::sleep(Duration::from_millis(5));
    }
    kill_cluster(&appliance, 1);
    let killed = Instant::now();
    appliance.wait_for("cluster 1 seen down", Duration::from_secs(10), |s| {
        s["clusters"][1]["state"] != "running"
    });
    let seen_down = Instant::now();
    // Let I/O pile up on the dead target, then repoint.
    std::thread::sleep(Duration::from_millis(300));
    let answer = appliance.dataplane_call(
        0,
        "bdev_remote_set_target",
        json!({"name": "fwd", "cluster": 2, "remote_bdev": "t"}),
    );
    assert_eq!(answer, true);
    let retargeted = Instant::now();
    let at_retarget = sent.load(Ordering::Relaxed);
    while sent.load(Ordering::Relaxed) < at_retarget + 50 {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    let log = log.lock().unwrap().clone();
    let errors: Vec<_> = log.iter().filter(|e| e.3 != 0).collect();
    assert!(errors.is_empty(), "I/O errors at the client: {errors:?}");
    // The write that was held across the retarget took at least as long
    // as the hold; it completed after the retarget.
    let held = log
        .iter()
        .find(|e| e.1 < retargeted && e.2 >= retargeted)
        .expect("a write was in flight across the retarget");
    eprintln!(
        "held write {} completed {:?} after the kill, {:?} after the retarget",
        held.0,
        held.2.duration_since(killed),
        held.2.duration_since(retargeted)
    );
    let described = appliance.dataplane_call(0, "bdev_get_bdevs", json!({"name": "fwd"}));
    let remote = &described[0]["driver_specific"]["remote"];
    assert_eq!(remote["cluster"], 2, "{described}");
    assert_eq!(remote["hold_timeout_ms"], 10_000, "{described}");
    assert_eq!(remote["held_requests"], 0, "{described}");

    // Every write sent once cluster 1 was seen dead landed on cluster 2.
    let mut s = connect(port, "fwd");
    let slots = BLOCKS * BLOCK as u64 / CHUNK as u64;
    let mut checked = 0;
    for (seq, _, _, _) in log.iter().filter(|e| e.1 > seen_down) {
        let later = log.iter().any(|e| e.0 > *seq && e.0 % slots == seq % slots);
        if later {
            continue;
        }
        let back = nbd_client::read(
            &mut s,
            1_000_000 + seq,
            (seq % slots) * CHUNK as u64,
            CHUNK as u32,
        )
        .unwrap();
        assert!(back == pattern(*seq), "write {seq} did not reach cluster 2");
        checked += 1;
    }
    assert!(checked > 0);
}

#[test]
fn held_io_waits_for_the_restarted_target_and_fails_only_at_the_timeout() {
    let appliance = start(2);
    malloc(&appliance, 1, "t", BLOCKS);
    forwarding_bdev(&appliance, 10_000);
    let port = appliance.nbd_port(0);
    let mut s = connect(port, "fwd");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(nbd_client::write(&mut s, 1, 0, &pattern(1)), 0);

    // Target dies and comes back empty: a write waits through both, and
    // completes once the target bdev is made again.
    let restarts = kill_cluster(&appliance, 1);
    let writer = std::thread::spawn(move || {
        let at = Instant::now();
        let error = nbd_client::write(&mut s, 2, 0, &pattern(2));
        (error, at.elapsed(), s)
    });
    appliance.wait_for("cluster 1 restarted", shoal_tests::STARTUP_TIMEOUT, |s| {
        s["clusters"][1]["state"] == "running"
            && s["clusters"][1]["restarts"].as_u64() > Some(restarts)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!writer.is_finished(), "the held write did not wait");
    malloc(&appliance, 1, "t", BLOCKS);
    let (error, took, mut s) = writer.join().unwrap();
    assert_eq!(error, 0, "held write failed after {took:?}");
    let back = nbd_client::read(&mut s, 3, 0, CHUNK as u32).unwrap();
    assert!(back == pattern(2));

    // Now a short hold and a target that never comes back (its bdev is
    // gone): EIO at the timeout, not before.
    drop(s);
    appliance.dataplane_call(0, "nbd_stop_disk", json!({"nbd_device": "fwd"}));
    appliance.dataplane_call(0, "bdev_remote_delete", json!({"name": "fwd"}));
    forwarding_bdev(&appliance, 700);
    let mut s = connect(port, "fwd");
    appliance.dataplane_call(1, "bdev_malloc_delete", json!({"name": "t"}));
    let at = Instant::now();
    let error = nbd_client::write(&mut s, 4, 0, &pattern(4));
    let took = at.elapsed();
    assert_eq!(error, 5, "NBD EIO");
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "failed after {took:?}"
    );
}

#[test]
fn a_remote_bdev_is_repointed_only_at_a_bdev_of_the_same_geometry() {
    let appliance = start(3);
    malloc(&appliance, 1, "t", BLOCKS);
    malloc(&appliance, 2, "small", BLOCKS / 2);
    malloc(&appliance, 0, "local", BLOCKS);
    forwarding_bdev(&appliance, 1000);
    let refused = |params: serde_json::Value| {
        let error = appliance
            .dataplane_rpc(0, "bdev_remote_set_target", Some(params.clone()))
            .expect_err(&format!("{params} was accepted"));
        eprintln!("{params}: {error}");
    };
    refused(json!({"name": "fwd", "cluster": 2, "remote_bdev": "small"}));
    refused(json!({"name": "fwd", "cluster": 2, "remote_bdev": "absent"}));
    refused(json!({"name": "fwd", "cluster": 0, "remote_bdev": "local"}));
    refused(json!({"name": "local", "cluster": 1, "remote_bdev": "t"}));
    refused(json!({"name": "fwd", "cluster": 2}));
    let too_long = appliance.dataplane_rpc(
        0,
        "bdev_remote_create",
        Some(json!({"name": "x", "cluster": 1, "remote_bdev": "t", "hold_timeout_ms": 60_001})),
    );
    assert!(too_long.is_err(), "{too_long:?}");
    // Still pointing where it did.
    let described = appliance.dataplane_call(0, "bdev_get_bdevs", json!({"name": "fwd"}));
    assert_eq!(described[0]["driver_specific"]["remote"]["cluster"], 1);
    assert_eq!(
        described[0]["driver_specific"]["remote"]["remote_bdev"],
        "t"
    );
}

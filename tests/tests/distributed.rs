//! The distributed volume: a raid0 whose legs are one bdev on each of four
//! data clusters, three of them reached through remote bdevs over the
//! inter-cluster rings. Exported from one cluster, written there, read
//! back through another cluster's export; the backing files show each
//! strip on the cluster the strip map says; nothing is copied on the way.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use shoal_tests::nbd_client::{self, connect};
use shoal_tests::{Appliance, have_tool, run};

const CLUSTERS: u32 = 4;
const LEG_BYTES: u64 = 32 << 20;
const STRIP: usize = 64 << 10;

fn rpc(appliance: &Appliance, cluster: u32, method: &str, params: Value) -> Value {
    appliance
        .dataplane_rpc(cluster, method, Some(params))
        .unwrap_or_else(|e| panic!("{method} on cluster {cluster} failed: {e}"))
}

/// An appliance with a region large enough for a useful pool per cluster.
fn start() -> Appliance {
    let appliance = Appliance::builder(CLUSTERS)
        .set("memory.region_mib", 128)
        .start();
    appliance.wait_for("all children running", shoal_tests::STARTUP_TIMEOUT, |s| {
        s["state"] == "running"
    });
    appliance
}

/// On `cluster`, a raid0 named `dvol` over every cluster's `leg<k>`, in
/// cluster order: the local one directly, the others as remote bdevs.
fn build_distributed_volume(appliance: &Appliance, cluster: u32) {
    let mut legs = Vec::new();
    for k in 0..CLUSTERS {
        if k == cluster {
            legs.push(format!("leg{k}"));
        } else {
            let name = format!("remote{k}");
            rpc(
                appliance,
                cluster,
                "bdev_remote_create",
                json!({"name": name, "cluster": k, "remote_bdev": format!("leg{k}")}),
            );
            legs.push(name);
        }
    }
    rpc(
        appliance,
        cluster,
        "bdev_raid_create",
        json!({"name": "dvol", "raid_level": "raid0", "strip_size_kb": STRIP / 1024, "base_bdevs": legs}),
    );
    rpc(
        appliance,
        cluster,
        "nbd_start_disk",
        json!({"bdev_name": "dvol"}),
    );
}

#[test]
fn a_volume_striped_over_four_clusters_is_served_from_any_of_them_without_copies() {
    if !have_tool("nbdcopy", "libnbd-bin") {
        return;
    }
    let appliance = start();
    let dir = appliance.dir.path();
    for k in 0..CLUSTERS {
        let file = dir.join(format!("leg{k}.img"));
        std::fs::File::create(&file)
            .unwrap()
            .set_len(LEG_BYTES)
            .unwrap();
        rpc(
            &appliance,
            k,
            "bdev_uring_create",
            json!({"name": format!("leg{k}"), "filename": file, "block_size": 4096}),
        );
    }
    build_distributed_volume(&appliance, 0);
    build_distributed_volume(&appliance, 2);
    let volume = rpc(&appliance, 2, "bdev_get_bdevs", json!({"name": "dvol"}));
    assert_eq!(
        volume[0]["num_blocks"].as_u64().unwrap() * 4096,
        LEG_BYTES * u64::from(CLUSTERS)
    );

    // 64 MiB of random data in through cluster 0, out through cluster 2.
    let input = dir.join("in.img");
    let mut data = vec![0u8; 64 << 20];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    std::fs::write(&input, &data).unwrap();
    // Bounded queue depth: 2 x 16 requests of 256 KiB fit the pool.
    let bounded = ["--connections=2", "--requests=16", "--request-size=262144"];
    let mut args: Vec<&str> = bounded.to_vec();
    let uri0 = appliance.nbd_uri(0, "dvol");
    args.extend([input.to_str().unwrap(), &uri0]);
    run("nbdcopy", &args);
    let output = dir.join("out.img");
    let uri2 = appliance.nbd_uri(2, "dvol");
    let mut args: Vec<&str> = bounded.to_vec();
    args.extend([uri2.as_str(), output.to_str().unwrap()]);
    run("nbdcopy", &args);
    let output_data = std::fs::read(&output).unwrap();
    assert_eq!(output_data.len(), (LEG_BYTES * 4) as usize);
    assert!(
        output_data[..data.len()] == data[..],
        "cluster 2 reads back what cluster 0 wrote"
    );
    assert!(output_data[data.len()..].iter().all(|&b| b == 0));

    // Strip n of the volume is strip n/4 of cluster n%4's leg file.
    let legs: Vec<Vec<u8>> = (0..CLUSTERS)
        .map(|k| std::fs::read(dir.join(format!("leg{k}.img"))).unwrap())
        .collect();
    for n in 0..data.len() / STRIP {
        let at = (n / CLUSTERS as usize) * STRIP;
        assert!(
            legs[n % CLUSTERS as usize][at..at + STRIP] == data[n * STRIP..(n + 1) * STRIP],
            "strip {n} is not at {at} of leg {}",
            n % CLUSTERS as usize
        );
    }

    // The payload crossed clusters by reference only.
    for cluster in [0, 2] {
        let iostat = rpc(&appliance, cluster, "bdev_get_iostat", json!({}));
        assert_eq!(iostat["inter_cluster_bytes_copied"], 0, "{iostat}");
        let remotes: Vec<&Value> = iostat["bdevs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["name"].as_str().unwrap().starts_with("remote"))
            .collect();
        assert_eq!(remotes.len(), 3);
        for remote in remotes {
            assert_eq!(remote["inter_cluster_bytes_copied"], 0, "{remote}");
            assert!(
                remote["num_read_ops"].as_u64().unwrap()
                    + remote["num_write_ops"].as_u64().unwrap()
                    > 0,
                "{remote}"
            );
        }
    }
    let stats = rpc(&appliance, 0, "interconnect_get_stats", json!({}));
    assert_eq!(stats["ready"], true, "{stats}");
    for peer in stats["peers"].as_array().unwrap() {
        let outbound = &peer["outbound"];
        assert!(outbound["submitted"].as_u64().unwrap() > 0, "{stats}");
        assert_eq!(outbound["submitted"], outbound["completed"], "{stats}");
        assert_eq!(outbound["errors"], 0, "{stats}");
        assert_eq!(outbound["in_flight"], 0, "{stats}");
    }
    assert!(
        stats["pool"]["allocations"].as_u64().unwrap() > 0,
        "{stats}"
    );
    let served = rpc(&appliance, 1, "interconnect_get_stats", json!({}));
    let from0 = &served["peers"][0];
    assert_eq!(from0["cluster"], 0);
    assert!(from0["inbound"]["served"].as_u64().unwrap() > 0, "{served}");
    assert_eq!(from0["inbound"]["errors"], 0, "{served}");
}

#[test]
fn killing_a_cluster_fails_io_to_it_within_seconds_and_its_new_life_serves_again() {
    let appliance = start();
    for k in 0..CLUSTERS {
        rpc(
            &appliance,
            k,
            "bdev_malloc_create",
            json!({"name": format!("leg{k}"), "num_blocks": LEG_BYTES / 4096, "block_size": 4096}),
        );
    }
    build_distributed_volume(&appliance, 0);
    let port = appliance.nbd_port(0);

    // A client writing 256 KiB requests (a strip on every cluster each)
    // until one fails.
    let written = Arc::new(AtomicU64::new(0));
    let (failed_tx, failed_rx) = mpsc::channel();
    let writer = {
        let written = Arc::clone(&written);
        std::thread::spawn(move || {
            let mut s = connect(port, "dvol");
            let chunk = vec![0x5a; 256 << 10];
            let volume = LEG_BYTES * u64::from(CLUSTERS);
            for cookie in 0.. {
                let offset = (cookie * chunk.len() as u64) % volume;
                let error = nbd_client::write(&mut s, cookie, offset, &chunk);
                if error != 0 {
                    let _ = failed_tx.send((Instant::now(), error));
                    return;
                }
                written.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while written.load(Ordering::Relaxed) < 20 {
        assert!(Instant::now() < deadline, "the workload does not run");
        std::thread::sleep(Duration::from_millis(10));
    }

    let before = appliance.cluster(1);
    let victim = before["pid"].as_i64().unwrap() as i32;
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    let killed_at = Instant::now();
    let (failed_at, error) = failed_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the client saw no error within 10 s of the kill: it hangs");
    let after = failed_at.duration_since(killed_at);
    eprintln!("the client saw NBD error {error} {after:?} after the kill");
    assert!(after < Duration::from_secs(5), "error after {after:?}");
    assert_eq!(error, 5, "NBD EIO");
    writer.join().unwrap();

    // Cluster 1 comes back empty; once its leg is re-created, the same
    // volume on cluster 0 works again with no change there.
    let restarts = before["restarts"].as_u64().unwrap();
    appliance.wait_for("cluster 1 restarted", shoal_tests::STARTUP_TIMEOUT, |s| {
        s["clusters"][1]["state"] == "running"
            && s["clusters"][1]["restarts"].as_u64() > Some(restarts)
    });
    rpc(
        &appliance,
        1,
        "bdev_malloc_create",
        json!({"name": "leg1", "num_blocks": LEG_BYTES / 4096, "block_size": 4096}),
    );
    let mut s = connect(port, "dvol");
    let pattern: Vec<u8> = (0..4 << 20)
        .map(|i: u32| (i * 7 + i / 4096) as u8)
        .collect();
    // The first requests may still meet cluster 0's view of the old life
    // for up to one liveness tick; retry briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut cookie = 0;
    loop {
        cookie += 1;
        let error = nbd_client::write(&mut s, cookie, 0, &pattern);
        if error == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "writes keep failing: {error}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let back = nbd_client::read(&mut s, cookie + 1, 0, pattern.len() as u32).unwrap();
    assert!(back == pattern, "fresh write/read cycle differs");
    let stats = rpc(&appliance, 0, "interconnect_get_stats", json!({}));
    let peer1 = &stats["peers"][0];
    assert_eq!(peer1["cluster"], 1);
    assert!(peer1["peer_restarts"].as_u64().unwrap() >= 1, "{stats}");
    assert!(
        peer1["outbound"]["errors"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert_eq!(peer1["outbound"]["in_flight"], 0, "{stats}");
}

/// A forwarder names an lvol by its `lvs/lvol` alias, which stays the same
/// wherever the store is opened: the cluster holding the store serves it
/// under the alias, and a write through another cluster lands in the lvol.
#[test]
fn an_lvol_is_reached_from_another_cluster_by_its_lvs_alias() {
    let appliance = start();
    rpc(
        &appliance,
        1,
        "bdev_malloc_create",
        json!({"name": "base1", "num_blocks": LEG_BYTES / 4096, "block_size": 4096}),
    );
    rpc(
        &appliance,
        1,
        "bdev_lvol_create_lvstore",
        json!({"bdev_name": "base1", "lvs_name": "pool1", "cluster_sz": 1 << 20}),
    );
    rpc(
        &appliance,
        1,
        "bdev_lvol_create",
        json!({"lvs_name": "pool1", "lvol_name": "thin", "size_in_mib": 8, "thin_provision": true}),
    );
    rpc(
        &appliance,
        0,
        "bdev_remote_create",
        json!({"name": "fwd", "cluster": 1, "remote_bdev": "pool1/thin"}),
    );
    let forwarder = rpc(&appliance, 0, "bdev_get_bdevs", json!({"name": "fwd"}));
    assert_eq!(forwarder[0]["num_blocks"].as_u64(), Some((8 << 20) / 4096));
    rpc(&appliance, 0, "nbd_start_disk", json!({"bdev_name": "fwd"}));
    rpc(
        &appliance,
        1,
        "nbd_start_disk",
        json!({"bdev_name": "pool1/thin"}),
    );

    let pattern: Vec<u8> = (0..256 << 10)
        .map(|i: u32| (i * 13 + i / 512) as u8)
        .collect();
    let mut through0 = connect(appliance.nbd_port(0), "fwd");
    assert_eq!(nbd_client::write(&mut through0, 1, 3 << 20, &pattern), 0);
    let mut on1 = connect(appliance.nbd_port(1), "pool1/thin");
    let back = nbd_client::read(&mut on1, 2, 3 << 20, pattern.len() as u32).unwrap();
    assert!(back == pattern, "the lvol holds what cluster 0 wrote");
    let lvol = &rpc(
        &appliance,
        1,
        "bdev_lvol_get_lvols",
        json!({"lvs_name": "pool1"}),
    )[0];
    assert_eq!(lvol["num_allocated_clusters"], 1, "{lvol}");
}

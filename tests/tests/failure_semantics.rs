//! Failure semantics (issue 15): however a data cluster fails, I/O to it
//! fails within a bounded time instead of hanging.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use shoal_tests::Appliance;
use shoal_tests::launcher::dataplane_launcher;
use shoal_tests::nbd_client::{self, connect};

const LEG_BYTES: u64 = 8 << 20;

/// A dataplane launcher that `kill -9`s itself before the real binary can
/// map the region and claim its slot whenever `<dir>/die-before-join-<i>`
/// exists: a cluster that dies before it joins, as one whose binary or
/// environment is broken does.
fn dying_launcher(dir: &std::path::Path) -> std::path::PathBuf {
    dataplane_launcher(
        dir,
        &format!(
            "[ -e '{}/die-before-join-'\"$2\" ] && kill -9 $$",
            dir.display()
        ),
    )
}

#[test]
fn io_to_a_cluster_that_died_before_joining_the_region_fails_within_seconds() {
    let builder = Appliance::builder(2).set("memory.region_mib", 32);
    let launcher = dying_launcher(builder.dir());
    let flag = builder.dir().join("die-before-join-1");
    let appliance = builder
        .set("binaries.dataplane", launcher.display().to_string())
        // Give up on the cluster after two quick failures: it is then left
        // down for good, the case that hung forever.
        .set("supervisor.crash_loop_limit", 2)
        .set("management.enabled", false)
        .start_ready();
    appliance.dataplane_call(
        1,
        "bdev_malloc_create",
        json!({"name": "leg1", "num_blocks": LEG_BYTES / 4096, "block_size": 4096}),
    );
    appliance.dataplane_call(
        0,
        "bdev_remote_create",
        json!({"name": "remote1", "cluster": 1, "remote_bdev": "leg1"}),
    );
    appliance.dataplane_call(0, "nbd_start_disk", json!({"bdev_name": "remote1"}));
    let mut s = connect(appliance.nbd_port(0), "remote1");
    assert_eq!(nbd_client::write(&mut s, 1, 0, &[0x11; 4096]), 0);

    // From now on every new life of cluster 1 dies before it joins.
    std::fs::write(&flag, b"").unwrap();
    let victim = appliance.cluster(1)["pid"].as_i64().unwrap() as i32;
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    let status = appliance.wait_for("cluster 1 failed", Duration::from_secs(30), |s| {
        s["clusters"][1]["state"] == "failed"
    });
    assert!(
        status["clusters"][1]["last_exit"]
            .as_str()
            .is_some_and(|e| e.contains("SIGKILL")),
        "{status}"
    );

    // Reads and writes through cluster 0 to the dead leg answer EIO at
    // once; before the fix they waited for a cluster that never comes.
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    for cookie in 2..6u64 {
        let started = Instant::now();
        let error = if cookie % 2 == 0 {
            nbd_client::read(&mut s, cookie, 0, 4096).err().unwrap_or(0)
        } else {
            nbd_client::write(&mut s, cookie, 4096, &[0x22; 4096])
        };
        let took = started.elapsed();
        eprintln!("request {cookie} to the dead leg: NBD error {error} after {took:?}");
        assert_eq!(error, 5, "NBD EIO");
        assert!(took < Duration::from_secs(2), "answered after {took:?}");
    }
    let stats = appliance.dataplane_call(0, "interconnect_get_stats", json!({}));
    assert_eq!(stats["peers"][0]["outbound"]["in_flight"], 0, "{stats}");

    // Once the cluster can start again and an operator restarts it, the
    // same remote bdev serves again when the leg is back.
    std::fs::remove_file(&flag).unwrap();
    appliance
        .rpc("appliance_restart_cluster", Some(json!({"cluster": 1})))
        .unwrap();
    appliance.wait_for("cluster 1 running", shoal_tests::STARTUP_TIMEOUT, |s| {
        s["clusters"][1]["state"] == "running"
    });
    appliance.dataplane_call(
        1,
        "bdev_malloc_create",
        json!({"name": "leg1", "num_blocks": LEG_BYTES / 4096, "block_size": 4096}),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut cookie = 10;
    loop {
        cookie += 1;
        if nbd_client::write(&mut s, cookie, 0, &[0x33; 4096]) == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the new life does not serve");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        nbd_client::read(&mut s, cookie + 1, 0, 4096).unwrap(),
        vec![0x33; 4096]
    );
}

//! Redundant volumes under a real client (issue 15): fio's nbd engine
//! (libnbd) writes a Redfish RAID1, RAID10, RAID5 or RAID6 volume with
//! crc32c verify through a cluster that does not own it, while leg clusters
//! are SIGKILLed (two at once for RAID6) and kept away for 5 s. fio must
//! finish its writes and its verify pass without one I/O error; the volume
//! shows Warning while a leg is away, the legs are rebuilt when their
//! clusters return, Status is OK again, a second fio verify-only pass reads
//! every block back through the owner and through a killed cluster, and
//! `#Volume.CheckConsistency` finds no mismatch.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use shoal_tests::have_tool;
use shoal_tests::launcher::{hold_back, let_back, redundancy_appliance};
use shoal_tests::redfish_client::RedfishClient;

const VOLUMES: &str = "/redfish/v1/Storage/appliance/Volumes";
const MIB: u64 = 1 << 20;
const CLUSTERS: u32 = 4;
/// 64 MiB at 64 KiB and 100 writes a second: about 10 s of writes, so the
/// kills, the time away and the return all fall inside them.
const ASKED: u64 = 64 * MIB;
const WRITE_RATE_IOPS: &str = "100";

#[test]
fn a_raid1_volume_keeps_fio_verify_going_through_the_kill_of_a_leg_cluster() {
    keeps_fio_verify_going("RAID1", 2, 1);
}

#[test]
fn a_raid10_volume_keeps_fio_verify_going_through_the_kill_of_a_leg_cluster() {
    keeps_fio_verify_going("RAID10", 4, 1);
}

#[test]
fn a_raid5_volume_keeps_fio_verify_going_through_the_kill_of_a_leg_cluster() {
    keeps_fio_verify_going("RAID5", 4, 1);
}

#[test]
fn a_raid6_volume_keeps_fio_verify_going_through_the_kill_of_two_leg_clusters() {
    keeps_fio_verify_going("RAID6", 4, 2);
}

/// fio's arguments for the verified random write of the whole volume;
/// the same arguments with `--verify_only` check a previous run's data
/// (fio repeats its random offsets: `randrepeat` is on by default).
fn fio_args(port: u16, export: &str, capacity: u64) -> Vec<String> {
    vec![
        "--name=verify".into(),
        "--ioengine=nbd".into(),
        format!("--uri=nbd://127.0.0.1:{port}/{export}"),
        "--rw=randwrite".into(),
        "--bs=64k".into(),
        format!("--size={capacity}"),
        "--iodepth=4".into(),
        "--verify=crc32c".into(),
        "--verify_fatal=1".into(),
        "--do_verify=1".into(),
        // No verify state file left in the working directory.
        "--verify_state_save=0".into(),
        "--output-format=json".into(),
    ]
}

fn spawn_fio(args: &[String]) -> Child {
    Command::new("fio")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fio")
}

/// Waits for fio and returns its job's JSON; fails on any error.
fn fio_result(child: Child, what: &str) -> Value {
    let output = child.wait_with_output().expect("wait for fio");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "fio ({what}) failed: {}\n{stdout}\n{stderr}",
        output.status
    );
    // libnbd may print a line before the JSON document.
    let json = &stdout[stdout.find('{').unwrap_or(0)..];
    let report: Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("fio ({what}) printed no JSON ({e}): {stdout}"));
    let job = report["jobs"][0].clone();
    assert_eq!(job["error"], 0, "fio ({what}) reported an error: {job}");
    job
}

/// A `raid_type` volume over `legs` clusters; `kills` leg clusters that do
/// not own it are killed together during fio's writes through a cluster
/// that neither owns it nor is killed.
fn keeps_fio_verify_going(raid_type: &str, legs: u32, kills: usize) {
    if !have_tool("fio", "fio") {
        return;
    }
    let (appliance, dir) = redundancy_appliance(CLUSTERS, 5);
    let r = RedfishClient::new(&appliance);
    let (status, volume) = r.post(
        VOLUMES,
        &json!({"Name": "verified", "CapacityBytes": ASKED, "RAIDType": raid_type}),
    );
    assert_eq!(status, StatusCode::CREATED, "{volume}");
    assert_eq!(volume["MediaSpanCount"], legs, "{volume}");
    let capacity = volume["CapacityBytes"].as_u64().unwrap();
    let id = volume["Id"].as_str().unwrap().to_string();
    let path = format!("{VOLUMES}/{id}");
    let bdev = format!("volume{id}");
    let health = |h: &'static str| {
        r.wait_for(&path, h, Duration::from_secs(30), |b| {
            b["Status"]["Health"] == h
        })
    };
    health("OK");
    let (owner, _) = appliance
        .raid_holder(CLUSTERS, &bdev)
        .expect("a cluster holds the raid");
    // Legs are on the first `legs` clusters (the default placement).
    let killed: Vec<u32> = (0..legs).filter(|&c| c != owner).take(kills).collect();
    let writer = (0..CLUSTERS)
        .find(|c| *c != owner && !killed.contains(c))
        .expect("a cluster to write through");

    let args = fio_args(appliance.nbd_port(writer), &bdev, capacity);
    let mut paced = args.clone();
    // Writes only: the verify pass reads at full speed.
    paced.push(format!("--rate_iops=,{WRITE_RATE_IOPS}"));
    let fio = spawn_fio(&paced);
    std::thread::sleep(Duration::from_secs(2));
    for &cluster in &killed {
        hold_back(&dir, cluster);
    }
    let restarts: Vec<u64> = killed.iter().map(|&c| appliance.kill_cluster(c)).collect();
    let degraded = health("Warning");
    assert_eq!(degraded["Status"]["State"], "Enabled", "{degraded}");
    for (&cluster, &count) in killed.iter().zip(&restarts) {
        let_back(&dir, cluster);
        appliance.wait_restarted(cluster, count);
    }
    let job = fio_result(fio, "write and verify during the kills");
    assert_eq!(job["write"]["io_bytes"], capacity, "{job}");
    assert_eq!(job["read"]["io_bytes"], capacity, "the verify pass: {job}");

    // The returned legs are rebuilt; then the volume is whole again.
    let healed = r.wait_for(&path, "the rebuild to end", Duration::from_secs(90), |b| {
        b["Operations"].as_array().is_none_or(Vec::is_empty) && b["Status"]["Health"] == "OK"
    });
    assert_eq!(healed["Status"]["State"], "Enabled", "{healed}");
    let (_, raid) = appliance.raid_holder(CLUSTERS, &bdev).unwrap();
    assert_eq!(raid["shoal"]["degraded"], false, "{raid}");
    assert_eq!(raid["shoal"]["last_process"]["type"], "rebuild", "{raid}");

    // Every block again, through the owner and through a killed cluster.
    for cluster in [owner, killed[0]] {
        let mut verify_only = fio_args(appliance.nbd_port(cluster), &bdev, capacity);
        verify_only.push("--verify_only".into());
        let job = fio_result(spawn_fio(&verify_only), "verify only");
        assert_eq!(
            job["read"]["io_bytes"], capacity,
            "cluster {cluster}: {job}"
        );
    }
    let (task, counts) = r.check_consistency(&path);
    assert_eq!(task["TaskStatus"], "OK", "{task}");
    assert_eq!(counts.mismatched_blocks, 0, "{task}");
    assert_eq!(counts.checked_bytes(), capacity, "{task}");
}

//! Redundant volumes through Redfish (issue 15): a RAID1 volume is one raid
//! on an owner cluster, forwarded to by every other cluster. Writes through
//! a non-owner's NBD path go on without an error while the owner is killed
//! with SIGKILL: the forwarder holds them, the reconciler moves the raid to
//! the other leg's cluster and retargets the forwarders. When the old owner
//! is back its leg rejoins and resyncs, and every acknowledged write reads
//! back with the mirrors identical.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use shoal_tests::launcher::{hold_back, let_back, redundancy_appliance};
use shoal_tests::pattern_writer::{PatternWriter, every_slot};
use shoal_tests::redfish_client::RedfishClient;

const VOLUMES: &str = "/redfish/v1/Storage/appliance/Volumes";
const MIB: u64 = 1 << 20;
const CHUNK: usize = 64 << 10;

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
    // The killed owner stays away 4 s: long enough for the raid to move.
    let (appliance, dir) = redundancy_appliance(clusters, 4);
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
    let health = |h: &'static str| {
        r.wait_for(&path, h, Duration::from_secs(20), |b| {
            b["Status"]["Health"] == h
        })
    };
    health("OK");
    let bdev = format!("volume{id}");
    let owner = || appliance.raid_holder(clusters, &bdev);
    let (first_owner, raid) = owner().expect("a cluster holds the raid");
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

    let writer = PatternWriter::start(
        appliance.nbd_port(writer_cluster),
        &bdev,
        32 * MIB,
        CHUNK,
        every_slot,
    );
    writer.wait_sent(200);
    hold_back(&dir, first_owner);
    let restarts = appliance.kill_cluster(first_owner);
    // The raid moves to the surviving leg's cluster; writes go on.
    appliance.wait_for("the raid moved", Duration::from_secs(20), |_| {
        owner().is_some_and(|(c, _)| c == survivor)
    });
    writer.wait_sent(200);
    let degraded = health("Warning");
    assert_eq!(degraded["Status"]["State"], "Enabled", "{degraded}");
    let moved = owner().unwrap().1;
    let forwarder =
        appliance.dataplane_call(writer_cluster, "bdev_get_bdevs", json!({"name": bdev}));
    assert_eq!(
        forwarder[0]["driver_specific"]["remote"]["cluster"], survivor,
        "{forwarder}"
    );

    // The old owner returns as a leg cluster; its leg rejoins and resyncs.
    let_back(&dir, first_owner);
    appliance.wait_restarted(first_owner, restarts);
    appliance.wait_for("the mirror healed", Duration::from_secs(60), |_| {
        owner().is_some_and(|(c, raid)| c == survivor && raid["shoal"]["degraded"] == false)
    });
    writer.wait_sent(100);
    health("OK");
    let log = writer.finish();
    let errors = log.errors();
    assert!(
        errors.is_empty(),
        "I/O errors at the host: {errors:?} (after the move: {moved})"
    );
    for cluster in 0..clusters {
        log.verify(appliance.nbd_port(cluster), &bdev);
    }
    let (task, counts) = r.check_consistency(&path);
    assert_eq!(counts.mismatched_blocks, 0, "{task}");
    assert_eq!(task["TaskStatus"], "OK", "{task}");
}

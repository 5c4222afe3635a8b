//! Parity volumes through Redfish (issue 15): a RAID6 (raid5f for RAID5)
//! volume is one raid on an owner cluster with a leg on each of four data
//! clusters, forwarded to by every other cluster. A host writes through a
//! forwarding cluster while two leg clusters (one for RAID5) are killed
//! with SIGKILL at once: no write fails, the volume is Enabled/Warning.
//! When the clusters are back their legs rejoin, Operations shows the
//! rebuild until it ends, Status is OK again, every acknowledged write
//! reads back through every cluster and `Volume.CheckConsistency` finds
//! nothing amiss.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use shoal_tests::launcher::{hold_back, let_back, redundancy_appliance};
use shoal_tests::pattern_writer::{PatternWriter, every_slot};
use shoal_tests::redfish_client::RedfishClient;

const VOLUMES: &str = "/redfish/v1/Storage/appliance/Volumes";
const POOL: &str = "/redfish/v1/Storage/appliance/StoragePools/default";
const MIB: u64 = 1 << 20;
const CLUSTERS: u32 = 4;
/// One 64 KiB strip: every host write is a partial-stripe
/// reconstruct-write, some of them with legs away.
const CHUNK: usize = 64 << 10;

#[test]
fn a_raid6_volume_survives_the_kill_of_two_leg_clusters_at_once() {
    // Two data legs of 32 MiB: the capacity asked for is whole stripes.
    survives_the_kill_of_leg_clusters("RAID6", "raid6", 64 * MIB, 64 * MIB, 2);
}

#[test]
fn a_raid5_volume_survives_the_kill_of_a_leg_cluster() {
    // Three data legs: 64 MiB rounds up to 3 x 22 MiB.
    survives_the_kill_of_leg_clusters("RAID5", "raid5f", 64 * MIB, 66 * MIB, 1);
}

/// A `raid_type` volume of `asked` bytes (made `capacity`) over all four
/// clusters; `kills` leg clusters that neither own the volume nor carry
/// the host's writes are killed together.
fn survives_the_kill_of_leg_clusters(
    raid_type: &str,
    level: &str,
    asked: u64,
    capacity: u64,
    kills: usize,
) {
    // The killed clusters stay away 5 s, long enough to see the volume
    // degraded with writes going on.
    let (appliance, dir) = redundancy_appliance(CLUSTERS, 5);
    let r = RedfishClient::new(&appliance);
    let pool = r.get_ok(POOL);
    assert_eq!(
        pool["SupportedRAIDTypes"],
        json!(["RAID0", "None", "RAID1", "RAID10", "RAID5", "RAID6"])
    );

    let (status, volume) = r.post(
        VOLUMES,
        &json!({"Name": "parity", "CapacityBytes": asked, "RAIDType": raid_type}),
    );
    assert_eq!(status, StatusCode::CREATED, "{volume}");
    assert_eq!(volume["RAIDType"], raid_type);
    assert_eq!(volume["CapacityBytes"], capacity, "{volume}");
    assert_eq!(volume["MediaSpanCount"], CLUSTERS);
    assert_eq!(volume["StripSizeBytes"], 64 << 10);
    assert_eq!(volume["RecoverableCapacitySourceCount"], 0);
    let id = volume["Id"].as_str().unwrap().to_string();
    let path = format!("{VOLUMES}/{id}");
    let bdev = format!("volume{id}");
    let owner = || appliance.raid_holder(CLUSTERS, &bdev);
    let (owner_cluster, raid) = owner().expect("a cluster holds the raid");
    assert_eq!(raid["raid_level"], level, "{raid}");
    assert_eq!(raid["superblock"], true);
    assert_eq!(raid["strip_size_kb"], 64);
    assert_eq!(raid["shoal"]["tolerated_failures"], kills, "{raid}");
    // The policy is what the dataplane says it does, not a promise.
    let journaled = raid["shoal"]["write_hole_protection"] == "journal";
    let (_, body) = r.get(&path);
    assert_eq!(
        body["WriteHoleProtectionPolicy"],
        if journaled { "Journaling" } else { "Off" },
        "{body}"
    );
    // Zeroed through the raid on creation: data and parity agree already.
    check_parity(&r, &path, capacity);
    // Neither grown nor initialised: the raid's metadata is sized at
    // creation and lies on the legs.
    let (status, refused) = r.patch(&path, &json!({"CapacityBytes": 2 * capacity}));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let (status, refused) = r.post(&format!("{path}/Actions/Volume.Initialize"), &json!({}));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");

    let health = |h: &'static str| {
        r.wait_for(&path, h, Duration::from_secs(30), |b| {
            b["Status"]["Health"] == h
        })
    };
    health("OK");
    // The host writes through the next cluster, which forwards to the
    // owner; the kills take the others.
    let writer_cluster = (owner_cluster + 1) % CLUSTERS;
    let killed: Vec<u32> = (0..CLUSTERS)
        .filter(|c| *c != owner_cluster && *c != writer_cluster)
        .take(kills)
        .collect();
    let forwarder =
        appliance.dataplane_call(writer_cluster, "bdev_get_bdevs", json!({"name": bdev}));
    assert_eq!(
        forwarder[0]["driver_specific"]["remote"]["cluster"], owner_cluster,
        "{forwarder}"
    );
    let writer = PatternWriter::start(
        appliance.nbd_port(writer_cluster),
        &bdev,
        capacity,
        CHUNK,
        every_slot,
    );
    writer.wait_sent(200);
    for &cluster in &killed {
        hold_back(&dir, cluster);
    }
    let restarts: Vec<u64> = killed.iter().map(|&c| appliance.kill_cluster(c)).collect();

    // As many legs away as the level tolerates: a warning, writes go on.
    let degraded = health("Warning");
    assert_eq!(degraded["Status"]["State"], "Enabled", "{degraded}");
    writer.wait_sent(200);
    let (_, raid) = owner().expect("the owner still holds the raid");
    assert_eq!(raid["state"], "online", "{raid}");
    for &cluster in &killed {
        let leg = &raid["shoal"]["legs"][cluster as usize];
        assert_ne!(leg["state"], "online", "leg {cluster}: {raid}");
    }

    // Back: the legs rejoin and are rebuilt, which Operations shows.
    for (&cluster, &count) in killed.iter().zip(&restarts) {
        let_back(&dir, cluster);
        appliance.wait_restarted(cluster, count);
    }
    let mut rebuilding = false;
    let healed = r.wait_for(&path, "the rebuild to end", Duration::from_secs(90), |b| {
        let operations = b["Operations"].as_array().cloned().unwrap_or_default();
        if operations.iter().any(|o| o["Operation"] == "Rebuild") {
            rebuilding = true;
        }
        rebuilding && operations.is_empty() && b["Status"]["Health"] == "OK"
    });
    assert_eq!(healed["Status"]["State"], "Enabled", "{healed}");
    writer.wait_sent(100);
    let log = writer.finish();
    let errors = log.errors();
    assert!(errors.is_empty(), "I/O errors at the host: {errors:?}");
    let (still_owner, raid) = owner().unwrap();
    assert_eq!(still_owner, owner_cluster, "the owner never went away");
    assert_eq!(raid["shoal"]["degraded"], false, "{raid}");
    assert_eq!(raid["shoal"]["last_process"]["type"], "rebuild", "{raid}");

    // Every acknowledged write, through every cluster, killed ones too.
    for cluster in 0..CLUSTERS {
        log.verify(appliance.nbd_port(cluster), &bdev);
    }
    check_parity(&r, &path, capacity);
}

/// Checks the volume through `#Volume.CheckConsistency` and asserts that
/// it covered the whole volume and found no block whose parity disagrees.
fn check_parity(r: &RedfishClient, path: &str, capacity: u64) {
    let (task, counts) = r.check_consistency(path);
    assert_eq!(task["TaskStatus"], "OK", "{task}");
    assert_eq!(counts.mismatched_blocks, 0, "{task}");
    assert_eq!(counts.checked_bytes(), capacity, "{task}");
}

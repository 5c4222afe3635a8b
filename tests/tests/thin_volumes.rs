//! Thin volumes through Swordfish (issue 16): a thin pool is an lvol store
//! on a RAID1 volume, opened on that volume's owner; a volume in it is an
//! lvol, 250 times the pool's size (over-provisioned, and reported so), served
//! by every cluster: the owner through the lvol's `pool<P>/volume<V>`
//! alias, the others by forwarding there. A host writes through a cluster
//! that neither owns the pool's volume nor will while the owner is killed
//! with SIGKILL: the raid moves, the new owner examines the store, the
//! forwarders follow, and every acknowledged write reads back through
//! every cluster, and again after a whole-appliance restart. Then deletes
//! are refused or done in every order.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use shoal_tests::Appliance;
use shoal_tests::launcher::{hold_back, let_back, redundancy_appliance};
use shoal_tests::nbd_client::{self, connect};
use shoal_tests::pattern_writer::{PatternWriter, every_slot};
use shoal_tests::redfish_client::{RedfishClient, message_key};
use shoal_tests::sse::EventStream;

const VOLUMES: &str = "/redfish/v1/Storage/appliance/Volumes";
const POOLS: &str = "/redfish/v1/Storage/appliance/StoragePools";
const MIB: u64 = 1 << 20;
const CHUNK: usize = 64 << 10;
/// The part of the thin volume the host writes: the store's clusters it
/// takes, of the pool's ~40.
const WRITTEN: u64 = 16 * MIB;
/// The thin volume: 10 GiB, 250 times the pool.
const THIN_BYTES: u64 = 10 << 30;

fn data(body: &Value) -> &Value {
    &body["Capacity"]["Data"]
}

/// The cluster with store `name` open, and the store.
fn store_holder(
    appliance: &shoal_tests::Appliance,
    clusters: u32,
    name: &str,
) -> Option<(u32, Value)> {
    (0..clusters).find_map(|c| {
        let stores = appliance
            .dataplane_rpc(c, "bdev_lvol_get_lvstores", Some(json!({})))
            .ok()?;
        let store = stores
            .as_array()?
            .iter()
            .find(|s| s["name"] == name)?
            .clone();
        Some((c, store))
    })
}

#[test]
fn a_thin_volume_in_a_raid1_pool_survives_the_kill_of_the_pools_owner() {
    let clusters = 3;
    let (mut appliance, dir) = redundancy_appliance(clusters, 4);
    let r = RedfishClient::new(&appliance);
    // A pool on a RAID1 volume: one capacity source, the volume.
    let (base_path, pool_path) = raid1_pool(&r);
    let base_id = base_path.rsplit('/').next().unwrap().to_string();
    let (status, refused) = r.post(
        POOLS,
        &json!({"Name": "other", "CapacitySources": [{"ProvidingVolumes": [
            {"@odata.id": format!("{VOLUMES}/999")}]}]}),
    );
    assert_eq!(status, StatusCode::NOT_FOUND, "{refused}");
    let pool = r.get_ok(&pool_path);
    let pool_id = pool["Id"].as_str().unwrap().to_string();
    assert_eq!(
        pool["SupportedProvisioningPolicies"],
        json!(["Thin", "Fixed"])
    );
    assert_eq!(pool["SupportedRAIDTypes"], json!(["RAID1"]));
    let pool_bytes = data(&pool)["AllocatedBytes"].as_u64().unwrap();
    assert!(pool_bytes > 32 * MIB && pool_bytes <= 48 * MIB, "{pool}");
    assert_eq!(data(&pool)["ConsumedBytes"], 0, "{pool}");
    let members = r.get_ok(POOLS);
    assert_eq!(members["Members@odata.count"], 2, "{members}");
    let store = format!("pool{pool_id}");
    let (first_owner, _) = store_holder(&appliance, clusters, &store).expect("the store is open");
    let (raid_owner, _) = appliance
        .raid_holder(clusters, &format!("volume{base_id}"))
        .expect("a cluster holds the raid");
    assert_eq!(first_owner, raid_owner, "the store opens where its raid is");
    // The pool's volume is no host's any more.
    let exports = appliance.dataplane_call(0, "nbd_get_disks", json!({}));
    assert!(
        exports
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["nbd_device"] != format!("volume{base_id}").as_str()),
        "{exports}"
    );

    // A 10 GiB thin volume in a pool of ~40 MiB on drives of 128 MiB.
    let (status, volume) = r.post(
        VOLUMES,
        &json!({"Name": "thin one", "CapacityBytes": THIN_BYTES,
                "CapacitySources": [{"ProvidingPools": [{"@odata.id": pool_path}]}]}),
    );
    assert_eq!(status, StatusCode::CREATED, "{volume}");
    assert_eq!(volume["ProvisioningPolicy"], "Thin");
    assert_eq!(volume["CapacityBytes"], THIN_BYTES);
    assert_eq!(data(&volume)["ProvisionedBytes"], THIN_BYTES);
    assert_eq!(data(&volume)["AllocatedBytes"], 0, "{volume}");
    assert_eq!(
        volume["Links"]["ProvidingStoragePool"]["@odata.id"],
        pool_path.as_str()
    );
    let id = volume["Id"].as_str().unwrap().to_string();
    let path = format!("{VOLUMES}/{id}");
    let pool = r.get_ok(&pool_path);
    assert_eq!(data(&pool)["ProvisionedBytes"], THIN_BYTES, "{pool}");
    // Fixed volumes must fit.
    let (status, too_big) = r.post(
        VOLUMES,
        &json!({"CapacityBytes": 1024 * MIB, "ProvisioningPolicy": "Fixed",
                "CapacitySources": [{"ProvidingPools": [{"@odata.id": pool_path}]}]}),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{too_big}");
    assert_eq!(message_key(&too_big), "InsufficientStorage");

    // RAID1 takes clusters 0 and 1. The survivor: the other leg's
    // cluster; the writer: the third.
    assert!(first_owner < 2, "the owner holds a leg: {first_owner}");
    let survivor = 1 - first_owner;
    let writer_cluster = (0..clusters)
        .find(|c| *c != first_owner && *c != survivor)
        .unwrap();
    let export = format!("volume{id}");
    let forwarder =
        appliance.dataplane_call(writer_cluster, "bdev_get_bdevs", json!({"name": export}));
    assert_eq!(
        forwarder[0]["driver_specific"]["remote"]["remote_bdev"],
        format!("{store}/volume{id}").as_str(),
        "{forwarder}"
    );
    let writer = PatternWriter::start(
        appliance.nbd_port(writer_cluster),
        &export,
        WRITTEN,
        CHUNK,
        every_slot,
    );
    writer.wait_sent(200);
    hold_back(&dir, first_owner);
    let restarts = appliance.kill_cluster(first_owner);
    appliance.wait_for("the store reopened", Duration::from_secs(30), |_| {
        store_holder(&appliance, clusters, &store).is_some_and(|(c, _)| c == survivor)
    });
    writer.wait_sent(300);
    let_back(&dir, first_owner);
    appliance.wait_restarted(first_owner, restarts);
    r.wait_for(&path, "OK", Duration::from_secs(60), |b| {
        b["Status"]["Health"] == "OK"
    });
    wait_exported(&appliance, clusters, &[&export]);
    writer.wait_sent(100);
    let log = writer.finish();
    assert!(
        log.errors().is_empty(),
        "I/O errors at the host: {:?}",
        log.errors()
    );
    for cluster in 0..clusters {
        log.verify(appliance.nbd_port(cluster), &export);
    }
    // A whole-appliance restart: every cluster starts empty, the store is
    // examined on the pool volume's owner again, nothing is lost.
    appliance.restart();
    let r = RedfishClient::new(&appliance);
    r.wait_for(&path, "OK", Duration::from_secs(60), |b| {
        b["Status"]["Health"] == "OK"
    });
    wait_exported(&appliance, clusters, &[&export]);
    for cluster in 0..clusters {
        log.verify(appliance.nbd_port(cluster), &export);
    }
    // Only what was written is allocated, and the pool says so.
    let volume = r.wait_for(&path, "allocated", Duration::from_secs(10), |v| {
        data(v)["AllocatedBytes"] == WRITTEN
    });
    assert_eq!(data(&volume)["AllocatedBytes"], WRITTEN, "{volume}");
    let pool = r.get_ok(&pool_path);
    assert_eq!(data(&pool)["ConsumedBytes"], WRITTEN, "{pool}");
    assert_eq!(data(&pool)["AllocatedBytes"], pool_bytes, "{pool}");

    // Deletes: the pool and its volume are refused while in use.
    let (status, body) = r.delete(&pool_path);
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(message_key(&body), "ResourceInUse");
    let (status, body) = r.delete(&base_path);
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = r.delete(&path);
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = r.delete(&pool_path);
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(store_holder(&appliance, clusters, &store).is_none());
    let (status, _) = r.get(&pool_path);
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = r.delete(&base_path);
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

/// A RAID1 volume of 48 MiB and a thin pool on it: (volume path, pool path).
fn raid1_pool(r: &RedfishClient) -> (String, String) {
    let (status, base) = r.post(
        VOLUMES,
        &json!({"Name": "pool volume", "CapacityBytes": 48 * MIB, "RAIDType": "RAID1"}),
    );
    assert_eq!(status, StatusCode::CREATED, "{base}");
    let base_path = base["@odata.id"].as_str().unwrap().to_string();
    r.wait_for(&base_path, "OK", Duration::from_secs(20), |b| {
        b["Status"]["Health"] == "OK"
    });
    let (status, pool) = r.post(
        POOLS,
        &json!({"Name": "thin", "CapacitySources": [{"ProvidingVolumes": [
            {"@odata.id": base_path}]}]}),
    );
    assert_eq!(status, StatusCode::CREATED, "{pool}");
    (base_path, pool["@odata.id"].as_str().unwrap().to_string())
}

/// `bytes` of `fill`, each 4 KiB block tagged so a misplaced one shows.
fn fill(tag: u8, bytes: usize) -> Vec<u8> {
    (0..bytes)
        .map(|i| tag.wrapping_add((i / 4096) as u8))
        .collect()
}

/// Waits until every cluster exports `exports` over NBD (a restarted
/// cluster gets them back within a pass or two).
fn wait_exported(appliance: &Appliance, clusters: u32, exports: &[&String]) {
    appliance.wait_for(
        "every cluster exports the volumes",
        Duration::from_secs(30),
        |_| {
            (0..clusters).all(|c| {
                let Ok(disks) = appliance.dataplane_rpc(c, "nbd_get_disks", Some(json!({}))) else {
                    return false;
                };
                exports.iter().all(|e| {
                    disks
                        .as_array()
                        .is_some_and(|d| d.iter().any(|d| d["nbd_device"] == e.as_str()))
                })
            })
        },
    );
}

fn write_at(appliance: &Appliance, cluster: u32, export: &str, offset: u64, data: &[u8]) -> u32 {
    let mut s = connect(appliance.nbd_port(cluster), export);
    let mut error = 0;
    for (cookie, piece) in data.chunks(MIB as usize).enumerate() {
        error = nbd_client::write(&mut s, cookie as u64, offset + cookie as u64 * MIB, piece);
        if error != 0 {
            break;
        }
    }
    error
}

fn replica(
    r: &RedfishClient,
    source: &str,
    kind: &str,
    pool: &str,
    name: &str,
) -> (StatusCode, Value) {
    r.post(
        &format!("{source}/Actions/Volume.CreateReplicaTarget"),
        &json!({"ReplicaType": kind, "ReplicaUpdateMode": "Asynchronous",
                "TargetStoragePool": pool, "VolumeName": name}),
    )
}

#[test]
fn a_snapshot_keeps_the_old_data_a_clone_writes_its_own_and_deletes_go_in_any_order() {
    let clusters = 3;
    let (appliance, _dir) = redundancy_appliance(clusters, 1);
    let r = RedfishClient::new(&appliance);
    let (_, pool) = raid1_pool(&r);
    let (status, origin) = r.post(
        VOLUMES,
        &json!({"Name": "origin", "CapacityBytes": 16 * MIB,
                "CapacitySources": [{"ProvidingPools": [{"@odata.id": pool}]}]}),
    );
    assert_eq!(status, StatusCode::CREATED, "{origin}");
    let origin_path = origin["@odata.id"].as_str().unwrap().to_string();
    let origin_export = format!("volume{}", origin["Id"].as_str().unwrap());
    let old = fill(0x10, 4 * MIB as usize);
    assert_eq!(write_at(&appliance, 2, &origin_export, 0, &old), 0);

    // The snapshot: read-only, the origin's data as it was.
    let (status, snap) = replica(&r, &origin_path, "Snapshot", &pool, "snap");
    assert_eq!(status, StatusCode::CREATED, "{snap}");
    assert_eq!(snap["ReplicaInfo"]["ReplicaType"], "Snapshot");
    assert_eq!(snap["ReplicaInfo"]["ReplicaRole"], "Target");
    assert_eq!(
        snap["ReplicaInfo"]["Replica"]["@odata.id"],
        origin_path.as_str()
    );
    assert_eq!(snap["AccessCapabilities"], json!(["Read"]));
    assert_eq!(snap["CapacityBytes"], 16 * MIB);
    let snap_path = snap["@odata.id"].as_str().unwrap().to_string();
    let snap_export = format!("volume{}", snap["Id"].as_str().unwrap());
    let origin = r.get_ok(&origin_path);
    assert_eq!(
        origin["ReplicaTargets"],
        json!([{"@odata.id": snap_path}]),
        "{origin}"
    );
    let new = fill(0x80, 2 * MIB as usize);
    assert_eq!(write_at(&appliance, 2, &origin_export, 0, &new), 0);
    assert_ne!(
        write_at(&appliance, 2, &snap_export, 0, &new),
        0,
        "a snapshot takes no write"
    );
    // Refused: a snapshot of a snapshot, a clone of a writable volume,
    // a bad update mode.
    let (status, body) = replica(&r, &snap_path, "Snapshot", &pool, "again");
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = replica(&r, &origin_path, "Clone", &pool, "bad clone");
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = r.post(
        &format!("{snap_path}/Actions/Volume.CreateReplicaTarget"),
        &json!({"ReplicaType": "Clone", "ReplicaUpdateMode": "Synchronous", "TargetStoragePool": pool}),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(message_key(&body), "ActionParameterValueNotInList");
    let action = format!("{snap_path}/Actions/Volume.CreateReplicaTarget");
    for (garbage, key) in [
        (
            json!({"ReplicaType": "Clone", "ReplicaUpdateMode": "Asynchronous",
                "TargetStoragePool": pool, "Colour": 1}),
            "ActionParameterUnknown",
        ),
        (
            json!({"ReplicaUpdateMode": "Asynchronous", "TargetStoragePool": pool}),
            "ActionParameterMissing",
        ),
        (
            json!({"ReplicaType": 7, "ReplicaUpdateMode": "Asynchronous", "TargetStoragePool": pool}),
            "ActionParameterValueTypeError",
        ),
        (
            json!({"ReplicaType": "Mirror", "ReplicaUpdateMode": "Asynchronous", "TargetStoragePool": pool}),
            "ActionParameterValueNotInList",
        ),
    ] {
        let (status, body) = r.post(&action, &garbage);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{garbage}: {body}");
        assert_eq!(message_key(&body), key, "{garbage}");
    }
    // Only a clone is split from its snapshot.
    let (status, body) = r.post(
        &format!("{origin_path}/Actions/Volume.SplitReplication"),
        &json!({"TargetVolume": snap_path}),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(message_key(&body), "ActionParameterValueNotInList");

    // A clone of the snapshot, written on its own.
    let (status, clone) = replica(&r, &snap_path, "Clone", &pool, "clone");
    assert_eq!(status, StatusCode::CREATED, "{clone}");
    assert_eq!(clone["ReplicaInfo"]["ReplicaType"], "Clone");
    assert_eq!(clone["AccessCapabilities"], json!(["Read", "Write"]));
    let clone_path = clone["@odata.id"].as_str().unwrap().to_string();
    let clone_export = format!("volume{}", clone["Id"].as_str().unwrap());
    let own = fill(0xc0, MIB as usize);
    assert_eq!(write_at(&appliance, 1, &clone_export, 3 * MIB, &own), 0);

    let mut origin_now = old.clone();
    origin_now[..new.len()].copy_from_slice(&new);
    let mut clone_now = old.clone();
    clone_now[3 * MIB as usize..].copy_from_slice(&own);
    let expect = |what: &str| {
        for cluster in 0..clusters {
            for (export, want) in [
                (&origin_export, &origin_now),
                (&snap_export, &old),
                (&clone_export, &clone_now),
            ] {
                let back = appliance.nbd_read_all(cluster, export, want.len());
                assert!(back == **want, "{export} on cluster {cluster} {what}");
            }
        }
    };
    expect("after the writes");

    // Every cluster killed in turn; everything reads back each time.
    for victim in 0..clusters {
        let restarts = appliance.kill_cluster(victim);
        appliance.wait_restarted(victim, restarts);
        for path in [&origin_path, &snap_path, &clone_path] {
            r.wait_for(path, "OK", Duration::from_secs(60), |b| {
                b["Status"]["Health"] == "OK"
            });
        }
        wait_exported(
            &appliance,
            clusters,
            &[&origin_export, &snap_export, &clone_export],
        );
        expect(&format!("after cluster {victim} was killed"));
    }

    // The snapshot goes only once one volume at most reads through it.
    let (status, body) = r.delete(&snap_path);
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(message_key(&body), "ResourceInUse");
    // Split the clone off (inflate): it holds all its data itself, every
    // cluster of it (it is Fixed from then on).
    let (status, accepted) = r.post(
        &format!("{snap_path}/Actions/Volume.SplitReplication"),
        &json!({"TargetVolume": clone_path}),
    );
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let task_uri = accepted["@odata.id"].as_str().unwrap().to_string();
    let task = r.wait_for(&task_uri, "the split", Duration::from_secs(60), |t| {
        t["TaskState"] != "Running" && t["TaskState"] != "New"
    });
    assert_eq!(task["TaskState"], "Completed", "{task}");
    let clone = r.wait_for(
        &clone_path,
        "the split clone",
        Duration::from_secs(10),
        |v| data(v)["AllocatedBytes"] == 16 * MIB,
    );
    assert!(clone.get("ReplicaInfo").is_none(), "{clone}");
    assert_eq!(clone["ProvisioningPolicy"], "Fixed", "{clone}");
    let snap = r.get_ok(&snap_path);
    assert_eq!(snap["ReplicaTargets@odata.count"], 0, "{snap}");
    // Now only the origin reads through the snapshot: it merges into it.
    let (status, body) = r.delete(&snap_path);
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    for cluster in 0..clusters {
        let back = appliance.nbd_read_all(cluster, &clone_export, clone_now.len());
        assert!(back == clone_now, "the split clone on cluster {cluster}");
    }
    let (status, body) = r.delete(&clone_path);
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    for cluster in 0..clusters {
        let back = appliance.nbd_read_all(cluster, &origin_export, origin_now.len());
        assert!(
            back == origin_now,
            "the origin after its snapshot merged into it"
        );
    }
    // The origin grows online, everywhere; it never shrinks.
    let (status, body) = r.patch(&origin_path, &json!({"CapacityBytes": 32 * MIB}));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["CapacityBytes"], 32 * MIB);
    appliance.wait_for("the forwarders grew", Duration::from_secs(10), |_| {
        (0..clusters).all(|c| {
            appliance
                .dataplane_rpc(c, "bdev_get_bdevs", Some(json!({"name": origin_export})))
                .ok()
                .and_then(|b| b[0]["num_blocks"].as_u64())
                .is_none_or(|blocks| blocks * 512 == 32 * MIB)
        })
    });
    let (status, body) = r.patch(&origin_path, &json!({"CapacityBytes": 8 * MIB}));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let back = appliance.nbd_read_all(2, &origin_export, 32 * MIB as usize);
    assert!(
        back[..origin_now.len()] == origin_now[..],
        "grown, the data stays"
    );
    assert!(
        back[origin_now.len()..].iter().all(|b| *b == 0),
        "and the growth reads zeroes"
    );
    let origin = r.wait_for(&origin_path, "the merge", Duration::from_secs(10), |v| {
        data(v)["AllocatedBytes"] == 4 * MIB
    });
    assert_eq!(origin["ReplicaTargets@odata.count"], 0, "{origin}");
    let (status, body) = r.delete(&origin_path);
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

/// A full pool: first writes fail with ENOSPC at the host (through a
/// forwarding cluster too), nothing written before is lost, and writes go
/// on once a volume's deletion gives clusters back.
#[test]
fn a_full_pool_fails_new_writes_with_enospc_keeps_the_rest_and_recovers() {
    let clusters = 2;
    let (appliance, _dir) = redundancy_appliance(clusters, 1);
    let r = RedfishClient::new(&appliance);
    let (_, pool) = raid1_pool(&r);
    let pool_bytes = data(&r.get_ok(&pool))["AllocatedBytes"].as_u64().unwrap();
    // Warnings below 50 % and 10 % remaining.
    let (status, body) = r.patch(&pool, &json!({"LowSpaceWarningThresholdPercents": [101]}));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = r.patch(
        &pool,
        &json!({"LowSpaceWarningThresholdPercents": [10, 50]}),
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["LowSpaceWarningThresholdPercents"], json!([50, 10]));
    let events = EventStream::open(&r, "RegistryPrefix eq 'ResourceEvent'");
    let thin = |name: &str| {
        let (status, volume) = r.post(
            VOLUMES,
            &json!({"Name": name, "CapacityBytes": 256 * MIB,
                    "CapacitySources": [{"ProvidingPools": [{"@odata.id": pool}]}]}),
        );
        assert_eq!(status, StatusCode::CREATED, "{volume}");
        (
            volume["@odata.id"].as_str().unwrap().to_string(),
            format!("volume{}", volume["Id"].as_str().unwrap()),
        )
    };
    let (filler_path, filler) = thin("filler");
    let (_, victim) = thin("victim");
    // The filler takes all but 8 MiB of the pool.
    let filled = pool_bytes - 8 * MIB;
    assert_eq!(
        write_at(&appliance, 0, &filler, 0, &fill(0x20, filled as usize)),
        0
    );
    // The other volume, written through both clusters (one forwards),
    // runs out after the 8 MiB left.
    let mut written = 0u64;
    let mut error = 0;
    let mut s = [
        connect(appliance.nbd_port(0), &victim),
        connect(appliance.nbd_port(1), &victim),
    ];
    for cookie in 0..32u64 {
        let piece = fill(0x40 + cookie as u8, MIB as usize);
        error = nbd_client::write(&mut s[(cookie % 2) as usize], cookie, cookie * MIB, &piece);
        if error != 0 {
            break;
        }
        written += MIB;
    }
    assert_eq!(error, 28, "NBD ENOSPC once the pool is full");
    assert_eq!(written, 8 * MIB, "every free cluster was used first");
    // The pool's figures are the store's as the last pass saw them.
    let pool_now = r.wait_for(&pool, "full", Duration::from_secs(10), |p| {
        data(p)["ConsumedBytes"] == pool_bytes
    });
    assert_eq!(pool_now["RemainingCapacityPercent"], 0, "{pool_now}");
    let mut seen = Vec::new();
    for threshold in [50, 10] {
        let record = events.wait_about(
            &pool,
            "ResourceEvent",
            "ResourceWarningThresholdExceeded",
            &mut seen,
        );
        assert_eq!(record["MessageArgs"][1], threshold.to_string(), "{record}");
    }
    // Nothing acknowledged is lost, on either volume.
    let back = appliance.nbd_read_all(1, &filler, filled as usize);
    assert!(back == fill(0x20, filled as usize), "the filler is whole");
    for cookie in 0..written / MIB {
        let piece = nbd_client::read(&mut s[0], 100 + cookie, cookie * MIB, MIB as u32).unwrap();
        assert!(
            piece == fill(0x40 + cookie as u8, MIB as usize),
            "victim MiB {cookie}"
        );
    }
    // Space given back: the write that failed now succeeds.
    let (status, body) = r.delete(&filler_path);
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let piece = fill(0x60, MIB as usize);
    assert_eq!(nbd_client::write(&mut s[1], 200, written, &piece), 0);
    for threshold in [50, 10] {
        let record = events.wait_about(
            &pool,
            "ResourceEvent",
            "ResourceWarningThresholdCleared",
            &mut seen,
        );
        assert_eq!(record["MessageArgs"][1], threshold.to_string(), "{record}");
    }
}

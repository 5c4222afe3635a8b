//! Thin volumes through Swordfish (issue 16): a thin pool is an lvol store
//! on a RAID1 volume, opened on that volume's owner; a volume in it is an
//! lvol, larger than the pool (over-provisioned, and reported so), served
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
use shoal_tests::launcher::{hold_back, let_back, redundancy_appliance};
use shoal_tests::pattern_writer::{PatternWriter, every_slot};
use shoal_tests::redfish_client::{RedfishClient, message_key};

const VOLUMES: &str = "/redfish/v1/Storage/appliance/Volumes";
const POOLS: &str = "/redfish/v1/Storage/appliance/StoragePools";
const MIB: u64 = 1 << 20;
const CHUNK: usize = 64 << 10;
/// The part of the thin volume the host writes: the store's clusters it
/// takes, of the pool's ~40.
const WRITTEN: u64 = 16 * MIB;

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
    let (status, base) = r.post(
        VOLUMES,
        &json!({"Name": "pool volume", "CapacityBytes": 48 * MIB, "RAIDType": "RAID1"}),
    );
    assert_eq!(status, StatusCode::CREATED, "{base}");
    let base_id = base["Id"].as_str().unwrap().to_string();
    let base_path = format!("{VOLUMES}/{base_id}");
    r.wait_for(&base_path, "OK", Duration::from_secs(20), |b| {
        b["Status"]["Health"] == "OK"
    });

    // A pool on it: one capacity source, the volume.
    let (status, refused) = r.post(
        POOLS,
        &json!({"Name": "thin", "CapacitySources": [{"ProvidingVolumes": [
            {"@odata.id": format!("{VOLUMES}/999")}]}]}),
    );
    assert_eq!(status, StatusCode::NOT_FOUND, "{refused}");
    let (status, pool) = r.post(
        POOLS,
        &json!({"Name": "thin", "CapacitySources": [{"ProvidingVolumes": [
            {"@odata.id": base_path}]}]}),
    );
    assert_eq!(status, StatusCode::CREATED, "{pool}");
    let pool_path = pool["@odata.id"].as_str().unwrap().to_string();
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

    // A 1 GiB thin volume in a pool of ~40 MiB.
    let (status, volume) = r.post(
        VOLUMES,
        &json!({"Name": "thin one", "CapacityBytes": 1024 * MIB,
                "CapacitySources": [{"ProvidingPools": [{"@odata.id": pool_path}]}]}),
    );
    assert_eq!(status, StatusCode::CREATED, "{volume}");
    assert_eq!(volume["ProvisioningPolicy"], "Thin");
    assert_eq!(volume["CapacityBytes"], 1024 * MIB);
    assert_eq!(data(&volume)["ProvisionedBytes"], 1024 * MIB);
    assert_eq!(data(&volume)["AllocatedBytes"], 0, "{volume}");
    assert_eq!(
        volume["Links"]["ProvidingStoragePool"]["@odata.id"],
        pool_path.as_str()
    );
    let id = volume["Id"].as_str().unwrap().to_string();
    let path = format!("{VOLUMES}/{id}");
    let pool = r.get_ok(&pool_path);
    assert_eq!(data(&pool)["ProvisionedBytes"], 1024 * MIB, "{pool}");
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
    for cluster in 0..clusters {
        log.verify(appliance.nbd_port(cluster), &export);
    }
    // Only what was written is allocated, and the pool says so.
    let volume = r.get_ok(&path);
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

//! The upgrade to thin pools (issue 16): a state directory written by the
//! service before pools existed (`tests/fixtures/state-before-pools.tar.gz`:
//! main at d64628c, two data clusters, a RAID0 and a RAID1 volume of 8 MiB
//! each filled with a pattern over NBD, an initiator endpoint and a
//! connection to the RAID0 volume, stopped with SIGTERM) starts under
//! this service with nothing converted: its volumes are served as Fixed
//! extents of the drives with every byte as written, the connection is
//! there, and a thin pool can be made beside them.

use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use shoal_tests::Appliance;
use shoal_tests::nbd_client::{self, connect};
use shoal_tests::redfish_client::RedfishClient;

const VOLUMES: &str = "/redfish/v1/Storage/appliance/Volumes";
const POOLS: &str = "/redfish/v1/Storage/appliance/StoragePools";
const MIB: u64 = 1 << 20;

/// What the fixture's maker wrote to volume `tag`, byte `i`.
fn pattern(tag: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(7) + i / 4096) as u8 ^ tag)
        .collect()
}

#[test]
fn a_state_dir_from_before_pools_serves_its_volumes_as_fixed_and_takes_a_pool() {
    // A region large enough for 1 MiB pool buffers: the RAID1's leg on the
    // other cluster is rebuilt through them (the clean stop left it behind).
    let builder = Appliance::builder(2)
        .set("dataplane.drive_size_mib", 64)
        .set("memory.region_mib", 64);
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/state-before-pools.tar.gz"
    );
    let untar = Command::new("tar")
        .args(["-xzf", fixture, "-C"])
        .arg(builder.dir())
        .status()
        .expect("run tar");
    assert!(untar.success(), "tar -xzf {fixture}");
    let appliance = builder.start_ready();
    let r = RedfishClient::new(&appliance);

    let volumes = r.get_ok(&format!("{VOLUMES}?$expand=.($levels=1)"));
    let members = volumes["Members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{volumes}");
    for (volume, raid_type, tag) in [(&members[0], "RAID0", 0x11), (&members[1], "RAID1", 0x22)] {
        assert_eq!(volume["RAIDType"], raid_type, "{volume}");
        assert_eq!(volume["ProvisioningPolicy"], "Fixed", "{volume}");
        assert_eq!(volume["CapacityBytes"], 8 * MIB, "{volume}");
        assert_eq!(
            volume["Links"]["ProvidingStoragePool"]["@odata.id"],
            "/redfish/v1/Storage/appliance/StoragePools/default"
        );
        assert!(volume.get("ReplicaInfo").is_none());
        let path = volume["@odata.id"].as_str().unwrap();
        r.wait_for(path, "OK", Duration::from_secs(60), |v| {
            v["Status"]["Health"] == "OK"
        });
        let export = format!("volume{}", volume["Id"].as_str().unwrap());
        for cluster in 0..2 {
            let back = appliance.nbd_read_all(cluster, &export, 8 * MIB as usize);
            assert!(
                back == pattern(tag, back.len()),
                "{export} on cluster {cluster} reads what was written before the upgrade"
            );
        }
    }
    let connections = r.get_ok("/redfish/v1/Fabrics/NVMeoF/Connections");
    assert_eq!(connections["Members@odata.count"], 1, "{connections}");

    // New beside old: a thin pool on a new RAID1 volume, a volume in it.
    let (status, mirror) = r.post(
        VOLUMES,
        &json!({"Name": "pool volume", "CapacityBytes": 24 * MIB, "RAIDType": "RAID1"}),
    );
    assert_eq!(status, StatusCode::CREATED, "{mirror}");
    let (status, pool) = r.post(
        POOLS,
        &json!({"Name": "thin", "CapacitySources": [{"ProvidingVolumes": [
            {"@odata.id": mirror["@odata.id"]}]}]}),
    );
    assert_eq!(status, StatusCode::CREATED, "{pool}");
    let (status, thin) = r.post(
        VOLUMES,
        &json!({"Name": "thin", "CapacityBytes": 256 * MIB,
                "CapacitySources": [{"ProvidingPools": [{"@odata.id": pool["@odata.id"]}]}]}),
    );
    assert_eq!(status, StatusCode::CREATED, "{thin}");
    let export = format!("volume{}", thin["Id"].as_str().unwrap());
    let data = pattern(0x33, MIB as usize);
    let mut s = connect(appliance.nbd_port(1), &export);
    assert_eq!(nbd_client::write(&mut s, 1, 100 * MIB, &data), 0);
    let mut s = connect(appliance.nbd_port(0), &export);
    assert_eq!(
        nbd_client::read(&mut s, 2, 100 * MIB, MIB as u32).unwrap(),
        data
    );
}

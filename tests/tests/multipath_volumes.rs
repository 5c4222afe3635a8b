//! Multipath on redundant volumes made through Redfish: two hosts' paths
//! through two different data clusters write at once to the same stripes
//! (4 KiB writes to interleaved blocks of one small area, so nearly every
//! stripe takes writes from both paths while the other's are in flight).
//! Every cluster forwards to the one that owns the volume's raid, which
//! orders the writes and computes the parity, so afterwards every write
//! reads back through every cluster and the consistency check finds no
//! mismatch between mirrors or between data and parity.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use shoal_tests::Appliance;
use shoal_tests::nbd_client::{self, connect};
use shoal_tests::redfish_client::RedfishClient;

const VOLUMES: &str = "/redfish/v1/Storage/appliance/Volumes";
const MIB: u64 = 1 << 20;
const BLOCK: u64 = 4096;
const CLUSTERS: u32 = 4;
/// The area both paths write: 1024 blocks, 4 MiB.
const HOT_BLOCKS: u64 = 1024;
const WRITES_PER_PATH: u64 = 1500;

fn pattern(path: u64, seq: u64) -> Vec<u8> {
    let mut block: Vec<u8> = (0..BLOCK)
        .map(|i| (i as u8).wrapping_add((seq as u8) ^ (path as u8 * 0x55)))
        .collect();
    block[..8].copy_from_slice(&path.to_le_bytes());
    block[8..16].copy_from_slice(&seq.to_le_bytes());
    block
}

/// Path `path` writes the blocks ≡ path (mod 2), in a scrambled order.
fn block_of(path: u64, seq: u64) -> u64 {
    let x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20;
    (x % (HOT_BLOCKS / 2)) * 2 + path
}

fn writes_from_two_paths_keep_the_volume_consistent(raid_type: &str) {
    let appliance = Appliance::builder(CLUSTERS)
        .set("memory.region_mib", 64)
        .set("dataplane.drive_size_mib", 128)
        .start_ready();
    let r = RedfishClient::new(&appliance);
    let (status, volume) = r.post(
        VOLUMES,
        &json!({"Name": "multipath", "CapacityBytes": 24 * MIB, "RAIDType": raid_type}),
    );
    assert_eq!(status, StatusCode::CREATED, "{volume}\n{}", appliance.log());
    let id = volume["Id"].as_str().unwrap().to_string();
    let bdev = format!("volume{id}");
    let path = format!("{VOLUMES}/{id}");
    appliance.wait_for("the volume is OK", Duration::from_secs(30), |_| {
        r.get(&path).1["Status"]["Health"] == "OK"
    });
    let owner = || appliance.raid_holder(CLUSTERS, &bdev);
    let (holder, _) = owner().expect("a cluster holds the raid");
    // Two paths, neither through the owner: both are forwarded.
    let paths: Vec<u32> = (0..CLUSTERS).filter(|&c| c != holder).take(2).collect();

    let writers: Vec<_> = paths
        .iter()
        .enumerate()
        .map(|(path, &cluster)| {
            let port = appliance.nbd_port(cluster);
            let bdev = bdev.clone();
            std::thread::spawn(move || {
                let mut s = connect(port, &bdev);
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let path = path as u64;
                let mut last = HashMap::new();
                for seq in 0..WRITES_PER_PATH {
                    let block = block_of(path, seq);
                    let error = nbd_client::write(&mut s, seq, block * BLOCK, &pattern(path, seq));
                    assert_eq!(error, 0, "path {path}: write {seq} failed");
                    last.insert(block, pattern(path, seq));
                }
                last
            })
        })
        .collect();
    let mut expected = HashMap::new();
    for writer in writers {
        expected.extend(writer.join().unwrap());
    }

    for cluster in 0..CLUSTERS {
        let mut s = connect(appliance.nbd_port(cluster), &bdev);
        for (n, (&block, content)) in expected.iter().enumerate() {
            let back = nbd_client::read(&mut s, n as u64, block * BLOCK, BLOCK as u32).unwrap();
            assert!(
                &back == content,
                "{raid_type}: block {block} read through cluster {cluster} is not its last write"
            );
        }
    }
    let (task, counts) = r.check_consistency(&path);
    assert_eq!(counts.mismatched_blocks, 0, "{raid_type}: {task}");
    assert!(counts.checked_blocks > 0, "{task}");
}

#[test]
fn raid1_writes_from_two_paths_keep_the_mirrors_identical() {
    writes_from_two_paths_keep_the_volume_consistent("RAID1");
}

#[test]
fn raid10_writes_from_two_paths_keep_the_mirrors_identical() {
    writes_from_two_paths_keep_the_volume_consistent("RAID10");
}

#[test]
fn raid5_writes_from_two_paths_keep_the_parity_right() {
    writes_from_two_paths_keep_the_volume_consistent("RAID5");
}

#[test]
fn raid6_writes_from_two_paths_keep_the_parity_right() {
    writes_from_two_paths_keep_the_volume_consistent("RAID6");
}

//! A raid6 with one leg on each of four data clusters (three reached
//! through remote bdevs): writes through NBD go on without an error while
//! two leg clusters are killed with SIGKILL at once; when they are back,
//! their legs rejoin and are rebuilt from the bitmap, every acknowledged
//! write reads back, and the parity check finds no mismatch.

use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::Appliance;
use shoal_tests::pattern_writer::PatternWriter;

const LEG_BYTES: u64 = 36 << 20;
const BLOCK: u64 = 4096;
/// Half a stripe (two data strips of 64 KiB): every write is a
/// reconstruct-write, some of them with a leg away.
const CHUNK: usize = 64 << 10;
const LEGS: [(u32, &str); 4] = [(0, "a"), (1, "b"), (2, "c"), (3, "d")];

fn raid(appliance: &Appliance) -> Value {
    appliance.dataplane_call(0, "bdev_raid_get_bdevs", json!({"category": "all"}))[0].clone()
}

/// The slot write `seq` goes to: mostly the first quarter of the volume,
/// so the bitmap keeps clean regions a returning leg skips.
fn slot_of(seq: u64, slots: u64) -> u64 {
    if seq.is_multiple_of(8) {
        seq % slots
    } else {
        seq % (slots / 4)
    }
}

#[test]
fn raid6_survives_the_kill_of_two_leg_clusters_and_rebuilds_them_on_return() {
    let appliance = Appliance::builder(4)
        .set("memory.region_mib", 64)
        .start_ready();
    let mut base_bdevs = Vec::new();
    for (cluster, name) in LEGS {
        appliance.file_bdev(cluster, name, LEG_BYTES, BLOCK);
        if cluster == 0 {
            base_bdevs.push(name.to_string());
        } else {
            let remote = format!("r{name}");
            appliance.dataplane_call(
                0,
                "bdev_remote_create",
                json!({"name": remote, "cluster": cluster, "remote_bdev": name}),
            );
            base_bdevs.push(remote);
        }
    }
    appliance.dataplane_call(
        0,
        "bdev_raid_create",
        json!({"name": "p", "raid_level": "raid6", "base_bdevs": base_bdevs,
               "strip_size_kb": 64, "superblock": true}),
    );
    let info = raid(&appliance);
    assert_eq!(info["state"], "online", "{info}");
    assert_eq!(info["shoal"]["tolerated_failures"], 2, "{info}");
    appliance.dataplane_call(0, "nbd_start_disk", json!({"bdev_name": "p"}));
    let port = appliance.nbd_port(0);
    // Two data legs of whole 64 KiB strips after the 4 MiB metadata.
    let volume_bytes = 2 * (LEG_BYTES - (4 << 20));

    let writer = PatternWriter::start(port, "p", volume_bytes, CHUNK, slot_of);
    writer.wait_sent(200);
    // Two leg clusters at once: all raid6 tolerates.
    let killed = [2, 3];
    let restarts = killed.map(|cluster| appliance.kill_cluster(cluster));
    writer.wait_sent(200);
    let degraded = raid(&appliance);
    assert_eq!(degraded["shoal"]["degraded"], true, "{degraded}");
    assert_eq!(degraded["state"], "online", "{degraded}");
    assert_eq!(
        degraded["shoal"]["legs"][2]["state"], "failed",
        "{degraded}"
    );
    assert_eq!(
        degraded["shoal"]["legs"][3]["state"], "failed",
        "{degraded}"
    );

    for (cluster, count) in killed.into_iter().zip(restarts) {
        appliance.wait_restarted(cluster, count);
    }
    // The restarted clusters open their leg files again; the raid takes
    // the legs back and rebuilds them while writes go on.
    for (cluster, name) in &LEGS[2..] {
        appliance.file_bdev(*cluster, name, LEG_BYTES, BLOCK);
        appliance.dataplane_call(
            0,
            "bdev_raid_add_base_bdev",
            json!({"raid_bdev": "p", "base_bdev": format!("r{name}")}),
        );
    }
    appliance.wait_for("the legs rebuilt", Duration::from_secs(90), |_| {
        raid(&appliance)["shoal"]["degraded"] == false
    });
    writer.wait_sent(100);
    let log = writer.finish();
    let errors = log.errors();
    assert!(errors.is_empty(), "I/O errors at the client: {errors:?}");
    let rebuilt = raid(&appliance);
    let last = &rebuilt["shoal"]["last_process"];
    assert_eq!(last["type"], "rebuild", "{rebuilt}");
    assert_eq!(last["finished"], true, "{rebuilt}");

    // Every acknowledged write reads back (the latest one of each slot).
    log.verify(port, "p");
    // And the parity agrees with the data everywhere.
    let check = appliance.raid_check(0, "p", Duration::from_secs(90));
    assert_eq!(check["mismatched_blocks"], 0, "{check}");
    assert_eq!(check["checked_blocks"], volume_bytes / BLOCK);
}

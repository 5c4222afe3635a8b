//! The write hole, with real processes: a degraded raid5f (one leg away)
//! takes 4 KiB writes from several NBD connections, so every write is a
//! partial-stripe write that updates a data strip and the parity in place
//! on two other clusters. The cluster holding the raid is killed with
//! SIGKILL in the middle; the raid is assembled again on a leg cluster,
//! the journal replays what was half written, and every acknowledged
//! write reads back, first degraded (the absent leg's strips rebuilt from
//! data and parity, which a torn stripe would get wrong), then after the
//! absent leg is rebuilt, with a parity check finding no mismatch.
//!
//! What fails here without the journal is the assertion that the kill
//! left records to replay; a torn stripe itself is rare with remote legs
//! (their clusters finish what was submitted to them before the kill), so
//! the tearing is made by hand, deterministically, in the dataplane's
//! `raid::journal_tests`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use shoal_tests::Appliance;
use shoal_tests::nbd_client::{self, connect};

const LEG_BYTES: u64 = 36 << 20;
const BLOCK: u64 = 4096;
/// Writes land in the first 8 MiB of the volume: stripes see many writes.
const HOT_BLOCKS: u64 = 2048;
const WRITERS: u64 = 4;

/// Write `seq` of writer `writer`: the two numbers, then filler.
fn pattern(writer: u64, seq: u64) -> Vec<u8> {
    let mut block: Vec<u8> = (0..BLOCK)
        .map(|i| (i as u8) ^ (seq as u8).wrapping_mul(7) ^ writer as u8)
        .collect();
    block[..8].copy_from_slice(&writer.to_le_bytes());
    block[8..16].copy_from_slice(&seq.to_le_bytes());
    block
}

/// Writer `writer`'s blocks are those ≡ writer (mod WRITERS), so each
/// block has one writer and its writes have one order.
fn block_of(writer: u64, seq: u64) -> u64 {
    let mut x = (writer << 32 | seq).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 29;
    (x % (HOT_BLOCKS / WRITERS)) * WRITERS + writer
}

fn remote(appliance: &Appliance, on: u32, name: &str, cluster: u32, leg: &str) {
    appliance.dataplane_call(
        on,
        "bdev_remote_create",
        json!({"name": name, "cluster": cluster, "remote_bdev": leg}),
    );
}

fn raid(appliance: &Appliance, cluster: u32) -> Value {
    appliance.dataplane_call(cluster, "bdev_raid_get_bdevs", json!({"category": "all"}))[0].clone()
}

/// One writer's log: (block, seq, acknowledged).
type Log = Vec<(u64, u64, bool)>;

/// What each written block may hold: the last acknowledged write (zeroes
/// before any), or a later write that was in flight when the raid died.
fn expected(logs: &[Log]) -> HashMap<u64, Vec<Vec<u8>>> {
    let mut out: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
    for (writer, log) in logs.iter().enumerate() {
        for &(block, seq, acked) in log {
            let content = pattern(writer as u64, seq);
            // A block first written by a write in flight may still be
            // unwritten.
            let allowed = out
                .entry(block)
                .or_insert_with(|| vec![vec![0; BLOCK as usize]]);
            if acked {
                *allowed = vec![content];
            } else {
                allowed.push(content);
            }
        }
    }
    out
}

fn verify(port: u16, allowed: &HashMap<u64, Vec<Vec<u8>>>, when: &str) {
    let mut s = connect(port, "p");
    for (n, (&block, contents)) in allowed.iter().enumerate() {
        let back = nbd_client::read(&mut s, n as u64, block * BLOCK, BLOCK as u32).unwrap();
        assert!(
            contents.contains(&back),
            "{when}: block {block} holds neither its last acknowledged write nor one in flight \
             (it holds writer {} seq {})",
            u64::from_le_bytes(back[..8].try_into().unwrap()),
            u64::from_le_bytes(back[8..16].try_into().unwrap()),
        );
    }
}

#[test]
fn a_raid5f_owner_killed_mid_write_while_degraded_loses_no_acknowledged_write() {
    let appliance = Appliance::builder(4)
        .set("memory.region_mib", 64)
        .start_ready();
    for (cluster, name) in [(1, "b"), (2, "c"), (3, "d")] {
        appliance.file_bdev(cluster, name, LEG_BYTES, BLOCK);
        remote(&appliance, 0, &format!("r{name}"), cluster, name);
    }
    appliance.dataplane_call(
        0,
        "bdev_raid_create",
        json!({"name": "p", "raid_level": "raid5f", "base_bdevs": ["rb", "rc", "rd"],
               "strip_size_kb": 64, "superblock": true}),
    );
    // Leg d is away from here on: every write also carries its data in
    // the parity.
    appliance.dataplane_call(0, "bdev_raid_remove_base_bdev", json!({"name": "rd"}));
    let before = raid(&appliance, 0);
    assert_eq!(before["shoal"]["degraded"], true, "{before}");
    assert_eq!(before["shoal"]["write_hole_protection"], "journal");
    let uuid = before["uuid"].as_str().unwrap().to_string();
    appliance.dataplane_call(0, "nbd_start_disk", json!({"bdev_name": "p"}));
    let port = appliance.nbd_port(0);

    let acked = Arc::new(AtomicU64::new(0));
    let broken = Arc::new(AtomicBool::new(false));
    let logs: Vec<Arc<Mutex<Log>>> = (0..WRITERS).map(|_| Arc::default()).collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (acked, log) = (Arc::clone(&acked), Arc::clone(&logs[writer as usize]));
            let broken = Arc::clone(&broken);
            std::thread::spawn(move || {
                let mut s = connect(port, "p");
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                for seq in 0.. {
                    let block = block_of(writer, seq);
                    log.lock().unwrap().push((block, seq, false));
                    match nbd_client::try_write(&mut s, seq, block * BLOCK, &pattern(writer, seq)) {
                        Ok(0) => {
                            log.lock().unwrap().last_mut().unwrap().2 = true;
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(error) => panic!("write {seq} failed with NBD error {error}"),
                        Err(_) if broken.load(Ordering::Relaxed) => return,
                        Err(error) => panic!("connection broke before the kill: {error}"),
                    }
                }
            })
        })
        .collect();
    while acked.load(Ordering::Relaxed) < 3000 {
        std::thread::sleep(Duration::from_millis(5));
    }
    broken.store(true, Ordering::Relaxed);
    let owner = appliance.cluster(0);
    kill(
        Pid::from_raw(owner["pid"].as_i64().unwrap() as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    for writer in writers {
        writer.join().unwrap();
    }
    let logs: Vec<Log> = logs.iter().map(|l| l.lock().unwrap().clone()).collect();
    let allowed = expected(&logs);

    // Cluster 1 takes the raid over with its own leg and cluster 2's;
    // leg d stays away (its name is not registered there yet).
    remote(&appliance, 1, "rc1", 2, "c");
    appliance.dataplane_call(
        1,
        "bdev_raid_create",
        json!({"name": "p", "raid_level": "raid5f", "base_bdevs": ["b", "rc1", "rd1"],
               "strip_size_kb": 64, "superblock": true, "uuid": uuid}),
    );
    let taken = raid(&appliance, 1);
    assert_eq!(taken["state"], "online", "{taken}");
    let journal = &taken["shoal"]["journal"];
    let found = journal["replayed_at_assembly"].as_u64().unwrap()
        + journal["discarded_at_assembly"].as_u64().unwrap();
    assert!(found > 0, "the kill left no record to replay: {taken}");
    appliance.dataplane_call(1, "nbd_start_disk", json!({"bdev_name": "p"}));
    let port = appliance.nbd_port(1);
    verify(port, &allowed, "degraded, after the replay");

    // Leg d returns and is rebuilt from the replayed stripes.
    remote(&appliance, 1, "rd1", 3, "d");
    appliance.dataplane_call(
        1,
        "bdev_raid_add_base_bdev",
        json!({"raid_bdev": "p", "base_bdev": "rd1"}),
    );
    appliance.wait_for("leg d rebuilt", Duration::from_secs(90), |_| {
        raid(&appliance, 1)["shoal"]["degraded"] == false
    });
    verify(port, &allowed, "after the rebuild");
    let check = appliance.raid_check(1, "p", Duration::from_secs(90));
    assert_eq!(check["mismatched_blocks"], 0, "{check}");
}

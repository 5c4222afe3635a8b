//! The lvol store's crash consistency on a real dataplane: a host writes
//! and trims a thin lvol over NBD while snapshots are taken and deleted
//! over JSON-RPC, and the dataplane is SIGKILLed at a random moment, again
//! and again (`SHOAL_LVOL_CRASH_ITERATIONS`, 200 by default). After each
//! kill shoald restarts it, the store is found again on its file
//! (`bdev_examine`), and:
//! - every acknowledged write reads back, every acknowledged trim reads
//!   zeroes; the one operation in flight at the kill shows wholly or (per
//!   block) not at all;
//! - every acknowledged snapshot exists and holds what the lvol held when
//!   it was taken (one snapshot read back per iteration, in turn), and an
//!   acknowledged delete stays deleted;
//! - no cluster is lost or counted twice: the store's free clusters and
//!   the lvols' allocated ones add up to its data clusters.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_appliance::jsonrpc::CallError;
use shoal_tests::Appliance;
use shoal_tests::nbd_client::{CMD_READ, CMD_WRITE, connect, request};

const BLOCK: u64 = 4096;
/// The lvol: 2048 blocks; the store's clusters are 16 blocks, so writes
/// and trims keep allocating and freeing.
const LVOL_MIB: u64 = 8;
const LVOL_BLOCKS: u64 = LVOL_MIB * (1 << 20) / BLOCK;
const CLUSTER_BYTES: u64 = 64 * 1024;
/// Room for the lvol and a few snapshots' worth of overwritten clusters.
const BASE_BYTES: u64 = 48 << 20;
const CMD_TRIM: u16 = 4;
/// Snapshots kept: with this many, the next snapshot op deletes the
/// oldest instead.
const SNAPSHOTS_KEPT: usize = 3;

/// What a block holds: 0 is zeroes, else the tag of the write.
fn contents(tag: u64, block: u64) -> Vec<u8> {
    if tag == 0 {
        return vec![0; BLOCK as usize];
    }
    let mut data = vec![(tag % 251) as u8 + 1; BLOCK as usize];
    data[..8].copy_from_slice(&tag.to_le_bytes());
    data[8..16].copy_from_slice(&block.to_le_bytes());
    data
}

/// The tag a block read back holds, if it is one `contents` makes.
fn tag_of(data: &[u8], block: u64) -> Option<u64> {
    let tag = u64::from_le_bytes(data[..8].try_into().unwrap());
    (contents(tag, block) == data).then_some(tag)
}

#[derive(Debug, Clone)]
enum Pending {
    Write { block: u64, tag: u64 },
    Trim { start: u64, blocks: u64 },
    Snapshot { name: String, image: Vec<u64> },
    Delete { name: String },
}

#[derive(Debug, Default)]
struct Model {
    /// Tag per block of the live lvol.
    live: Vec<u64>,
    /// Acknowledged snapshots, oldest first, with what they hold.
    snapshots: Vec<(String, Vec<u64>)>,
    pending: Option<Pending>,
    acknowledged: u64,
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One request and its simple reply; `Err` once the connection breaks.
fn exchange(s: &mut TcpStream, message: &[u8], cookie: u64) -> std::io::Result<u32> {
    s.write_all(message)?;
    let mut reply = [0u8; 16];
    s.read_exact(&mut reply)?;
    if reply[8..16] != cookie.to_be_bytes() {
        return Err(std::io::Error::other("a reply to another request"));
    }
    Ok(u32::from_be_bytes(reply[4..8].try_into().unwrap()))
}

/// A failed call is the kill; an answer refusing it is a bug.
fn killed(error: CallError) -> std::io::Error {
    match error {
        CallError::Rpc(refused) => panic!("refused: {refused}"),
        other => std::io::Error::other(other.to_string()),
    }
}

/// Writes, trims, snapshots and deletes until the dataplane is gone.
fn workload(appliance: &Appliance, model: &Mutex<Model>, iteration: u64, seed: u64) {
    let mut rng = Rng(seed | 1);
    let mut nbd = connect(appliance.nbd_port(0), "live");
    nbd.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for seq in 1.. {
        let cookie = seq;
        let pick = rng.below(100);
        let op = if pick < 80 {
            Pending::Write {
                block: rng.below(LVOL_BLOCKS),
                tag: iteration << 32 | seq,
            }
        } else if pick < 90 {
            let blocks = 1 + rng.below(48);
            Pending::Trim {
                start: rng.below(LVOL_BLOCKS - blocks),
                blocks,
            }
        } else if model.lock().unwrap().snapshots.len() < SNAPSHOTS_KEPT {
            Pending::Snapshot {
                name: format!("s{iteration}-{seq}"),
                image: model.lock().unwrap().live.clone(),
            }
        } else {
            Pending::Delete {
                name: model.lock().unwrap().snapshots[0].0.clone(),
            }
        };
        model.lock().unwrap().pending = Some(op.clone());
        let done = match &op {
            Pending::Write { block, tag } => {
                let mut message = request(CMD_WRITE, cookie, block * BLOCK, BLOCK as u32);
                message.extend_from_slice(&contents(*tag, *block));
                exchange(&mut nbd, &message, cookie).map(|error| assert_eq!(error, 0))
            }
            Pending::Trim { start, blocks } => {
                let message = request(CMD_TRIM, cookie, start * BLOCK, (blocks * BLOCK) as u32);
                exchange(&mut nbd, &message, cookie).map(|error| assert_eq!(error, 0))
            }
            Pending::Snapshot { name, .. } => appliance
                .dataplane_rpc(
                    0,
                    "bdev_lvol_snapshot",
                    Some(json!({"lvol_name": "crashlvs/live", "snapshot_name": name})),
                )
                .map(drop)
                .map_err(killed),
            Pending::Delete { name } => appliance
                .dataplane_rpc(
                    0,
                    "bdev_lvol_delete",
                    Some(json!({"name": format!("crashlvs/{name}")})),
                )
                .map(drop)
                .map_err(killed),
        };
        if done.is_err() {
            return; // killed: `pending` is what was in flight
        }
        let mut m = model.lock().unwrap();
        m.pending = None;
        m.acknowledged += 1;
        match op {
            Pending::Write { block, tag } => m.live[block as usize] = tag,
            Pending::Trim { start, blocks } => {
                m.live[start as usize..(start + blocks) as usize].fill(0);
            }
            Pending::Snapshot { name, image } => m.snapshots.push((name, image)),
            Pending::Delete { name } => m.snapshots.retain(|(n, _)| *n != name),
        }
    }
}

/// Reads the whole of `export` as one tag per block.
fn read_tags(appliance: &Appliance, export: &str) -> Vec<Option<u64>> {
    let mut nbd = connect(appliance.nbd_port(0), export);
    let chunk = 64;
    let mut tags = Vec::with_capacity(LVOL_BLOCKS as usize);
    for first in (0..LVOL_BLOCKS).step_by(chunk) {
        let cookie = first + 1;
        nbd.write_all(&request(
            CMD_READ,
            cookie,
            first * BLOCK,
            (chunk as u64 * BLOCK) as u32,
        ))
        .unwrap();
        let mut reply = [0u8; 16];
        nbd.read_exact(&mut reply).unwrap();
        assert_eq!(
            u32::from_be_bytes(reply[4..8].try_into().unwrap()),
            0,
            "read of {export}"
        );
        let mut data = vec![0u8; chunk * BLOCK as usize];
        nbd.read_exact(&mut data).unwrap();
        for (i, block) in data.chunks(BLOCK as usize).enumerate() {
            tags.push(tag_of(block, first + i as u64));
        }
    }
    tags
}

/// Exports lvol `name` by its alias (its bdev is named by its uuid).
fn export(appliance: &Appliance, name: &str, export: &str, read_only: bool) {
    appliance.dataplane_call(
        0,
        "nbd_start_disk",
        json!({"bdev_name": format!("crashlvs/{name}"), "nbd_device": export, "read_only": read_only}),
    );
}

fn lvols(appliance: &Appliance) -> Vec<Value> {
    let lvols = appliance.dataplane_call(0, "bdev_lvol_get_lvols", json!({"lvs_name": "crashlvs"}));
    lvols.as_array().unwrap().clone()
}

/// Brings the store back on a restarted dataplane and exports the lvol.
fn reopen(appliance: &Appliance) -> Vec<Value> {
    appliance.file_bdev(0, "lvbase", BASE_BYTES, BLOCK);
    appliance.dataplane_call(0, "bdev_examine", json!({"name": "lvbase"}));
    let lvols = lvols(appliance);
    export(appliance, "live", "live", false);
    lvols
}

/// Checks the store against the model after a kill and folds the
/// operation that was in flight into it, as it turned out.
fn verify(appliance: &Appliance, model: &mut Model, iteration: u64) {
    let lvols = reopen(appliance);
    let names: Vec<&str> = lvols.iter().map(|l| l["name"].as_str().unwrap()).collect();
    let store =
        &appliance.dataplane_call(0, "bdev_lvol_get_lvstores", json!({"lvs_name": "crashlvs"}))[0];
    let allocated: u64 = lvols
        .iter()
        .map(|l| l["num_allocated_clusters"].as_u64().unwrap())
        .sum();
    assert_eq!(
        allocated + store["free_clusters"].as_u64().unwrap(),
        store["total_data_clusters"].as_u64().unwrap(),
        "iteration {iteration}: clusters lost or counted twice: {lvols:?} {store}"
    );

    let live = read_tags(appliance, "live");
    let pending = model.pending.take();
    for (block, read) in live.iter().enumerate() {
        let want = model.live[block];
        let alternative = match &pending {
            Some(Pending::Write { block: b, tag }) if *b as usize == block => Some(*tag),
            Some(Pending::Trim { start, blocks })
                if (*start as usize..(*start + *blocks) as usize).contains(&block) =>
            {
                Some(0)
            }
            _ => None,
        };
        let read = read.unwrap_or_else(|| {
            panic!("iteration {iteration}: block {block} is neither a write nor zeroes")
        });
        assert!(
            read == want || Some(read) == alternative,
            "iteration {iteration}: block {block} reads tag {read:#x}, acknowledged {want:#x} (in flight: {pending:?})"
        );
        model.live[block] = read;
    }

    match pending {
        Some(Pending::Snapshot { name, image }) if names.contains(&name.as_str()) => {
            model.snapshots.push((name, image));
        }
        Some(Pending::Delete { name }) if !names.contains(&name.as_str()) => {
            model.snapshots.retain(|(n, _)| *n != name);
        }
        _ => {}
    }
    let mut expected: Vec<&str> = model.snapshots.iter().map(|(n, _)| n.as_str()).collect();
    expected.push("live");
    expected.sort();
    let mut found = names.clone();
    found.sort();
    assert_eq!(found, expected, "iteration {iteration}: the lvols");

    if !model.snapshots.is_empty() {
        let (name, image) = &model.snapshots[iteration as usize % model.snapshots.len()];
        export(appliance, name, "snap", true);
        let tags = read_tags(appliance, "snap");
        appliance.dataplane_call(0, "nbd_stop_disk", json!({"nbd_device": "snap"}));
        for (block, read) in tags.iter().enumerate() {
            assert_eq!(
                *read,
                Some(image[block]),
                "iteration {iteration}: block {block} of snapshot {name}"
            );
        }
    }
}

#[test]
fn a_thin_lvol_and_its_snapshots_survive_kill_9_at_random_points() {
    let iterations: u64 = std::env::var("SHOAL_LVOL_CRASH_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let mut seed_bytes = [0u8; 8];
    getrandom::fill(&mut seed_bytes).unwrap();
    let seed = std::env::var("SHOAL_LVOL_CRASH_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::from_le_bytes(seed_bytes));
    eprintln!("seed {seed} (SHOAL_LVOL_CRASH_SEED to repeat), {iterations} iterations");
    let appliance = Appliance::builder(1)
        .set("supervisor.restart_backoff_initial_ms", 10)
        .set("supervisor.restart_backoff_max_ms", 10)
        .set("supervisor.crash_loop_limit", 100_000)
        .set("supervisor.crash_loop_window_s", 1)
        .start_ready();
    appliance.file_bdev(0, "lvbase", BASE_BYTES, BLOCK);
    appliance.dataplane_call(
        0,
        "bdev_lvol_create_lvstore",
        json!({"bdev_name": "lvbase", "lvs_name": "crashlvs", "cluster_sz": CLUSTER_BYTES}),
    );
    appliance.dataplane_call(
        0,
        "bdev_lvol_create",
        json!({"lvol_name": "live", "size_in_mib": LVOL_MIB, "thin_provision": true, "lvs_name": "crashlvs"}),
    );
    export(&appliance, "live", "live", false);
    let model = Mutex::new(Model {
        live: vec![0; LVOL_BLOCKS as usize],
        ..Model::default()
    });
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    let mut in_flight = HashMap::<&str, u64>::new();
    for iteration in 1..=iterations {
        let run_for = Duration::from_millis(20 + rng.below(280));
        let workload_seed = rng.below(u64::MAX);
        std::thread::scope(|scope| {
            scope.spawn(|| workload(&appliance, &model, iteration, workload_seed));
            std::thread::sleep(run_for);
            let restarts = appliance.kill_cluster(0);
            // The workload sees its connection break and returns.
            appliance.wait_restarted(0, restarts);
        });
        let mut m = model.lock().unwrap();
        let kind = match &m.pending {
            Some(Pending::Write { .. }) => "write",
            Some(Pending::Trim { .. }) => "trim",
            Some(Pending::Snapshot { .. }) => "snapshot",
            Some(Pending::Delete { .. }) => "delete",
            None => "nothing",
        };
        *in_flight.entry(kind).or_default() += 1;
        verify(&appliance, &mut m, iteration);
    }
    let acknowledged = model.lock().unwrap().acknowledged;
    eprintln!(
        "{iterations} kills in {:?}: {acknowledged} operations acknowledged; in flight at the kill: {in_flight:?}",
        started.elapsed()
    );
    assert!(
        acknowledged >= iterations * 5,
        "the workload hardly ran ({acknowledged} operations in {iterations} iterations)"
    );
}

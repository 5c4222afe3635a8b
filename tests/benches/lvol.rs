//! Thin lvols against fixed extents, snapshot creation against chain
//! length, and reads through a snapshot chain against an inflated lvol,
//! all on one real dataplane in one run.
//!
//!     cargo bench -p shoal-tests --bench lvol
//!     SECONDS=5 ROUNDS=3 DEPTH=32 cargo bench -p shoal-tests --bench lvol
//!
//! One data cluster (one reactor). The fixed volume is what Redfish
//! builds today: a part of a malloc drive. The thin one is an lvol of the
//! same size on a store (1 MiB clusters) on another malloc drive. Both are
//! exported over NBD on loopback and driven by the same pipelined client
//! (`shoal_tests::load`, one connection, DEPTH in flight), the two taking
//! turns per round; each figure is the median of ROUNDS.
//! - first writes: one 4 KiB write at the start of every cluster of a new
//!   thin lvol, one at a time (each allocates a cluster and zeroes the
//!   rest of it), against the same writes to the fixed volume;
//! - 4 KiB random writes and reads once every cluster is allocated;
//! - `bdev_lvol_snapshot` round trips (JSON-RPC included) with 1 and with
//!   100 snapshots already in the chain, on a small and on a large lvol;
//! - 4 KiB random reads of an lvol whose clusters are spread over a
//!   10-deep snapshot chain, then of the same lvol inflated.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_tests::Appliance;
use shoal_tests::load::{self, Access, Client, Figures, NbdConnection, Op, Workload};
use shoal_tests::nbd_client;

const BLOCK: u64 = 4096;
const MIB: u64 = 1 << 20;
/// The volume under test, fixed and thin.
const VOLUME_MIB: u64 = 256;
const CLUSTER_BYTES: u64 = MIB;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

struct Bench {
    appliance: Appliance,
    depth: u16,
    duration: Duration,
}

impl Bench {
    fn rpc(&self, method: &str, params: Value) -> Value {
        self.appliance
            .dataplane_rpc(0, method, Some(params))
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    fn export(&self, bdev: &str, export: &str) {
        self.rpc(
            "nbd_start_disk",
            json!({"bdev_name": bdev, "nbd_device": export}),
        );
    }

    fn unexport(&self, export: &str) {
        self.rpc("nbd_stop_disk", json!({"nbd_device": export}));
    }

    fn run(&self, export: &str, op: Op) -> Figures {
        let port = self.appliance.nbd_port(0);
        let connect = |_: usize| -> Box<dyn Client> {
            Box::new(NbdConnection::new(
                nbd_client::connect(port, export),
                BLOCK as usize,
            ))
        };
        load::measure(
            &connect,
            Workload::new(op, Access::Random, BLOCK),
            VOLUME_MIB * MIB,
            1,
            self.depth,
            self.duration,
        )
    }

    /// Writes every block of `export` once, 1 MiB at a time.
    fn fill(&self, export: &str) {
        let port = self.appliance.nbd_port(0);
        let mut nbd = nbd_client::connect(port, export);
        let data = vec![0xa5; MIB as usize];
        for (i, offset) in (0..VOLUME_MIB * MIB).step_by(MIB as usize).enumerate() {
            assert_eq!(nbd_client::write(&mut nbd, i as u64, offset, &data), 0);
        }
    }

    /// IOPS of one 4 KiB write at the start of each cluster of `export`,
    /// one at a time.
    fn first_writes(&self, export: &str) -> f64 {
        let mut nbd = nbd_client::connect(self.appliance.nbd_port(0), export);
        let data = vec![0x77; BLOCK as usize];
        let clusters = VOLUME_MIB * MIB / CLUSTER_BYTES;
        let started = Instant::now();
        for cluster in 0..clusters {
            let error = nbd_client::write(&mut nbd, cluster, cluster * CLUSTER_BYTES, &data);
            assert_eq!(error, 0);
        }
        clusters as f64 / started.elapsed().as_secs_f64()
    }

    fn lvol(&self, name: &str, mib: u64) -> String {
        self.rpc(
            "bdev_lvol_create",
            json!({"lvol_name": name, "size_in_mib": mib, "thin_provision": true, "lvs_name": "bench"}),
        )
        .as_str()
        .unwrap()
        .to_string()
    }

    fn allocated(&self, name: &str) -> u64 {
        self.rpc("bdev_lvol_get_lvols", json!({"lvs_name": "bench"}))
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap()["num_allocated_clusters"]
            .as_u64()
            .unwrap()
    }

    fn delete(&self, bdev: &str) {
        self.rpc("bdev_lvol_delete", json!({"name": bdev}));
    }

    /// Milliseconds of one `bdev_lvol_snapshot` of `origin`.
    fn snapshot_ms(&self, origin: &str, name: &str) -> f64 {
        let started = Instant::now();
        self.rpc(
            "bdev_lvol_snapshot",
            json!({"lvol_name": origin, "snapshot_name": name}),
        );
        started.elapsed().as_secs_f64() * 1e3
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rounds = env("ROUNDS", 3);
    let bench = Bench {
        appliance: Appliance::start_ready(1),
        depth: env("DEPTH", 32) as u16,
        duration: Duration::from_secs(env("SECONDS", 4)),
    };
    // The fixed volume: a part of a drive, as Redfish lays volumes out.
    bench.rpc(
        "bdev_malloc_create",
        json!({"name": "drive", "num_blocks": (VOLUME_MIB + 16) * MIB / 512, "block_size": 512}),
    );
    bench.rpc(
        "bdev_part_create",
        json!({"name": "fixed", "base_bdev": "drive", "offset_blocks": 2048, "num_blocks": VOLUME_MIB * MIB / 512}),
    );
    // The store: room for two copies of the volume and the chains.
    let store_mib = 3 * VOLUME_MIB;
    bench.rpc(
        "bdev_malloc_create",
        json!({"name": "lvbase", "num_blocks": store_mib * MIB / 512, "block_size": 512}),
    );
    bench.rpc(
        "bdev_lvol_create_lvstore",
        json!({"bdev_name": "lvbase", "lvs_name": "bench", "cluster_sz": CLUSTER_BYTES}),
    );
    bench.export("fixed", "fixed");
    bench.fill("fixed");

    println!(
        "lvol vs fixed extents: one data cluster (1 reactor), malloc drives, {VOLUME_MIB} MiB volumes, {} KiB clusters",
        CLUSTER_BYTES / 1024
    );
    println!(
        "NBD on loopback, 1 connection x depth {}, {} s per run, median of {rounds} rounds\n",
        bench.depth,
        bench.duration.as_secs()
    );

    // First writes: every round on a new thin lvol.
    let (mut fresh, mut fixed_first) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let name = format!("fresh{round}");
        let bdev = bench.lvol(&name, VOLUME_MIB);
        bench.export(&bdev, "fresh");
        fresh.push(bench.first_writes("fresh"));
        assert_eq!(bench.allocated(&name), VOLUME_MIB * MIB / CLUSTER_BYTES);
        bench.unexport("fresh");
        bench.delete(&bdev);
        fixed_first.push(bench.first_writes("fixed"));
    }
    let mut fixed_write = Vec::new();

    // Allocated: one thin lvol written whole first.
    let thin = bench.lvol("thin", VOLUME_MIB);
    bench.export(&thin, "thin");
    bench.fill("thin");
    let (mut thin_write, mut thin_read, mut fixed_read) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        thin_write.push(bench.run("thin", Op::Write).iops);
        fixed_write.push(bench.run("fixed", Op::Write).iops);
        thin_read.push(bench.run("thin", Op::Read).iops);
        fixed_read.push(bench.run("fixed", Op::Read).iops);
    }
    bench.unexport("thin");
    bench.delete(&thin);
    let fixed_write = median(fixed_write);
    let fixed_read = median(fixed_read);
    println!("| 4 KiB random | fixed IOPS | thin IOPS | thin / fixed |");
    println!("|---|---|---|---|");
    let (fresh, fixed_first) = (median(fresh), median(fixed_first));
    println!(
        "| write at depth 1, one per cluster: first writes (each allocates) | {fixed_first:.0} | {fresh:.0} | {:.2} |",
        fresh / fixed_first
    );
    let w = median(thin_write);
    println!(
        "| write, every cluster allocated | {fixed_write:.0} | {w:.0} | {:.2} |",
        w / fixed_write
    );
    let r = median(thin_read);
    println!(
        "| read, every cluster allocated | {fixed_read:.0} | {r:.0} | {:.2} |\n",
        r / fixed_read
    );

    // Snapshot creation against chain length and volume size.
    println!("| snapshot of | 1st snapshot | 100th snapshot (99 in the chain) |");
    println!("|---|---|---|");
    for (label, mib) in [("a 16 MiB lvol", 16), ("a 64 GiB thin lvol", 64 * 1024)] {
        let name = format!("chain{mib}");
        let bdev = bench.lvol(&name, mib);
        let times: Vec<f64> = (0..100)
            .map(|i| bench.snapshot_ms(&bdev, &format!("{name}-s{i}")))
            .collect();
        // The median of the first and of the last few, against noise.
        let first = median(times[..5].to_vec());
        let last = median(times[95..].to_vec());
        println!("| {label} | {first:.2} ms | {last:.2} ms |");
        for i in (0..100).rev() {
            bench.delete(&format!("bench/{name}-s{i}"));
        }
        bench.delete(&bdev);
    }
    println!(
        "(each the median of 5 round trips of `bdev_lvol_snapshot`, JSON-RPC over the Unix socket included)\n"
    );

    // Reads through a 10-deep chain: layer k writes every 10th cluster
    // (offset k), then is snapshotted, so the live lvol reads each
    // cluster from a different depth.
    let deep = bench.lvol("deep", VOLUME_MIB);
    bench.export(&deep, "deep");
    {
        let mut nbd = nbd_client::connect(bench.appliance.nbd_port(0), "deep");
        let data = vec![0x3c; CLUSTER_BYTES as usize];
        let clusters = VOLUME_MIB * MIB / CLUSTER_BYTES;
        for layer in 0..10u64 {
            for cluster in (layer..clusters).step_by(10) {
                let error = nbd_client::write(&mut nbd, cluster, cluster * CLUSTER_BYTES, &data);
                assert_eq!(error, 0);
            }
            bench.rpc(
                "bdev_lvol_snapshot",
                json!({"lvol_name": "bench/deep", "snapshot_name": format!("deep-s{layer}")}),
            );
        }
    }
    let chained = median(
        (0..rounds)
            .map(|_| bench.run("deep", Op::Read).iops)
            .collect(),
    );
    bench.rpc("bdev_lvol_inflate", json!({"name": "bench/deep"}));
    let inflated = median(
        (0..rounds)
            .map(|_| bench.run("deep", Op::Read).iops)
            .collect(),
    );
    println!("| 4 KiB random read | through a 10-deep chain | inflated | chain / inflated |");
    println!("|---|---|---|---|");
    println!(
        "| IOPS | {chained:.0} | {inflated:.0} | {:.2} |",
        chained / inflated
    );
}

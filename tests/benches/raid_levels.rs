//! raid0, raid1, raid5f and raid6 side by side in one run, through NBD and
//! NVMe/TCP, healthy and degraded, and the rebuild rate of each redundant
//! level.
//!
//!     cargo bench -p shoal-tests --bench raid_levels
//!     SECONDS=5 LEG_MIB=260 cargo bench -p shoal-tests --bench raid_levels
//!     LEVELS=raid6 cargo bench -p shoal-tests --bench raid_levels
//!
//! An appliance with four data clusters (one reactor each). Every raid is
//! laid out as a Redfish volume of that level is: one leg per cluster (raid1
//! on clusters 0 and 1), the raid held by cluster 0 (the owner), the other
//! clusters' legs reached through remote bdevs over the inter-cluster
//! rings. Legs are malloc bdevs of LEG_MIB (the redundant levels keep a
//! 4 MiB superblock area of them), strips 64 KiB. Cluster 0 exports the raid
//! over NBD and NVMe/TCP on loopback; the load is the project's pipelined
//! client (`shoal_tests::load`): CONNECTIONS connections with DEPTH
//! requests in flight each, for 4 KiB random reads and writes and 128 KiB
//! sequential reads and writes (each connection its own slice of the
//! volume), after the volume was written once whole. NVMe writes above the 4 KiB in-capsule size go on R2T, as from
//! the Linux host.
//!
//! Degraded: the leg on the last cluster is removed from the raid
//! (`bdev_raid_remove_base_bdev`), so reads of its strips are rebuilt from
//! the survivors and writes skip it. Rebuild: a fresh leg on that cluster
//! is added (`bdev_raid_add_base_bdev`, a full rebuild, no rate limit) with
//! no host I/O, timed from the call until the raid reports every leg in
//! sync. Every raid exists for the whole run and the levels take turns
//! per workload, ROUNDS times (2); each figure is the median round.
//! Prints one table; the ratio column is against raid0 through the
//! same protocol and workload.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_tests::Appliance;
use shoal_tests::load::{self, Access, Client, Figures, NbdConnection, NvmeQueue, Op, Workload};
use shoal_tests::nbd_client;
use shoal_tests::nvme_initiator::Initiator;

const CLUSTERS: u32 = 4;
const BLOCK: u64 = 4096;
const STRIP_KB: u64 = 64;
/// What a redundant raid keeps at the start of each leg (superblock,
/// bitmap, journal): the dataplane's `raid::superblock` reserve.
const RESERVED_MIB: u64 = 4;
const IN_CAPSULE_BYTES: usize = 4096;
const HOST: &str = "nqn.2026-12.io.shoal:bench-host";

const WORKLOADS: [Workload; 4] = [
    Workload::new(Op::Read, Access::Random, 4096),
    Workload::new(Op::Write, Access::Random, 4096),
    Workload::new(Op::Read, Access::Sequential, 128 << 10),
    Workload::new(Op::Write, Access::Sequential, 128 << 10),
];

struct Level {
    raid_level: &'static str,
    legs: u32,
    redundant: bool,
}

const LEVELS: [Level; 4] = [
    Level {
        raid_level: "raid0",
        legs: 4,
        redundant: false,
    },
    Level {
        raid_level: "raid1",
        legs: 2,
        redundant: true,
    },
    Level {
        raid_level: "raid5f",
        legs: 4,
        redundant: true,
    },
    Level {
        raid_level: "raid6",
        legs: 4,
        redundant: true,
    },
];

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Bench {
    appliance: Appliance,
    leg_mib: u64,
    connections: usize,
    depth: u16,
    duration: Duration,
}

/// One raid under test, exported by cluster 0.
struct Target {
    name: String,
    nqn: String,
    bytes: u64,
    /// Names on cluster 0 of the raid's base bdevs, and the leg bdevs
    /// behind them as (cluster, name).
    bases: Vec<String>,
    legs: Vec<(u32, String)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    Nbd,
    Nvme,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Nbd => "NBD",
            Protocol::Nvme => "NVMe/TCP",
        }
    }
}

impl Bench {
    fn call(&self, cluster: u32, method: &str, params: Value) -> Value {
        self.appliance.dataplane_call(cluster, method, params)
    }

    /// A malloc leg on `cluster`, and the name cluster 0 reaches it by.
    fn leg(&self, cluster: u32, name: &str) -> String {
        self.call(
            cluster,
            "bdev_malloc_create",
            json!({"name": name, "num_blocks": self.leg_mib * (1 << 20) / BLOCK, "block_size": BLOCK}),
        );
        if cluster == 0 {
            return name.to_string();
        }
        let remote = format!("{name}-remote");
        self.call(
            0,
            "bdev_remote_create",
            json!({"name": remote, "cluster": cluster, "remote_bdev": name}),
        );
        remote
    }

    fn create(&self, level: &Level) -> Target {
        let name = level.raid_level.to_string();
        let legs: Vec<(u32, String)> = (0..level.legs)
            .map(|k| (k, format!("{name}-leg{k}")))
            .collect();
        let bases: Vec<String> = legs
            .iter()
            .map(|(cluster, leg)| self.leg(*cluster, leg))
            .collect();
        let mut params = json!({
            "name": name,
            "raid_level": level.raid_level,
            "base_bdevs": bases,
            "superblock": level.redundant,
        });
        if level.raid_level != "raid1" {
            params["strip_size_kb"] = json!(STRIP_KB);
        }
        self.call(0, "bdev_raid_create", params);
        let bdev = &self.call(0, "bdev_get_bdevs", json!({"name": name}))[0];
        let bytes = bdev["num_blocks"].as_u64().unwrap() * bdev["block_size"].as_u64().unwrap();
        self.call(0, "nbd_start_disk", json!({"bdev_name": name}));
        let nqn = format!("nqn.2026-12.io.shoal:bench-{name}");
        self.call(
            0,
            "nvmf_create_subsystem",
            json!({"nqn": nqn, "allow_any_host": true}),
        );
        self.call(
            0,
            "nvmf_subsystem_add_ns",
            json!({"nqn": nqn, "namespace": {"bdev_name": name}}),
        );
        let portal = self.appliance.nvmf_address(0);
        self.call(
            0,
            "nvmf_subsystem_add_listener",
            json!({"nqn": nqn, "listen_address": {"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": portal.port().to_string()}}),
        );
        Target {
            name,
            nqn,
            bytes,
            bases,
            legs,
        }
    }

    /// Writes the whole volume once, untimed: every leg page is touched
    /// (malloc memory is faulted in on first write) and reads later see
    /// written stripes, not a fresh array.
    fn fill(&self, target: &Target) {
        const CHUNK: u64 = 1 << 20;
        let mut stream = nbd_client::connect(self.appliance.nbd_port(0), &target.name);
        let data = vec![0xa5u8; CHUNK as usize];
        for (cookie, offset) in (0..target.bytes).step_by(CHUNK as usize).enumerate() {
            let len = CHUNK.min(target.bytes - offset) as usize;
            let error = nbd_client::write(&mut stream, cookie as u64, offset, &data[..len]);
            assert_eq!(error, 0, "filling {} at {offset}", target.name);
        }
    }

    fn destroy(&self, target: &Target) {
        self.call(0, "nvmf_delete_subsystem", json!({"nqn": target.nqn}));
        self.call(0, "nbd_stop_disk", json!({"nbd_device": target.name}));
        self.call(0, "bdev_raid_delete", json!({"name": target.name}));
        for (base, (cluster, leg)) in target.bases.iter().zip(&target.legs) {
            if *cluster != 0 {
                self.call(0, "bdev_remote_delete", json!({"name": base}));
            }
            self.call(*cluster, "bdev_malloc_delete", json!({"name": leg}));
        }
    }

    fn run(&self, target: &Target, protocol: Protocol, workload: Workload) -> Figures {
        let max_bytes = workload.block_bytes as usize;
        let nbd_port = self.appliance.nbd_port(0);
        let portal = self.appliance.nvmf_address(0);
        // NVMe/TCP: one controller (its admin queue lives for the run),
        // an I/O queue per connection.
        let controller = (protocol == Protocol::Nvme).then(|| {
            let mut admin = Initiator::connect(portal, false, false).expect("admin queue");
            let cntlid = admin.start_admin(&target.nqn, HOST, 0).expect("controller");
            (admin, cntlid)
        });
        let next_qid = std::sync::atomic::AtomicU16::new(1);
        let make = |_: usize| -> Box<dyn Client> {
            let Some((_, cntlid)) = &controller else {
                return Box::new(NbdConnection::new(
                    nbd_client::connect(nbd_port, &target.name),
                    max_bytes,
                ));
            };
            let qid = next_qid.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut queue = Initiator::connect(portal, false, false).expect("I/O queue");
            let cqe = queue
                .fabric_connect_with(qid, 127, *cntlid, &target.nqn, HOST, 0, true)
                .expect("connect");
            assert!(cqe.ok(), "{cqe:?}");
            Box::new(NvmeQueue::new(queue, BLOCK, IN_CAPSULE_BYTES, max_bytes))
        };
        load::measure(
            &make,
            workload,
            target.bytes,
            self.connections,
            self.depth,
            self.duration,
        )
    }

    fn raid(&self, name: &str) -> Value {
        self.call(0, "bdev_raid_get_bdevs", json!({"category": "all"}))
            .as_array()
            .unwrap()
            .iter()
            .find(|raid| raid["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("raid {name} not listed"))
    }

    /// Takes the last leg out: the raid runs degraded.
    fn degrade(&self, target: &Target) {
        let base = target.bases.last().unwrap();
        self.call(0, "bdev_raid_remove_base_bdev", json!({"name": base}));
        assert_eq!(
            self.raid(&target.name)["shoal"]["degraded"],
            true,
            "{} not degraded after removing {base}",
            target.name
        );
    }

    /// Adds a fresh leg where the removed one was and times its rebuild;
    /// returns MiB of leg data per second. The fresh leg takes the
    /// removed one's place in `target`, so `destroy` finds it.
    fn rebuild(&self, target: &mut Target) -> f64 {
        let (cluster, _) = *target.legs.last().unwrap();
        let spare = format!("{}-spare", target.name);
        let base = self.leg(cluster, &spare);
        let (old_cluster, old_leg) = target.legs.pop().unwrap();
        let old_base = target.bases.pop().unwrap();
        if old_cluster != 0 {
            self.call(0, "bdev_remote_delete", json!({"name": old_base}));
        }
        self.call(old_cluster, "bdev_malloc_delete", json!({"name": old_leg}));
        target.legs.push((cluster, spare));
        target.bases.push(base.clone());
        self.call(
            0,
            "bdev_raid_set_options",
            json!({"process_max_bandwidth_mb_sec": 0}),
        );
        let began = Instant::now();
        self.call(
            0,
            "bdev_raid_add_base_bdev",
            json!({"raid_bdev": target.name, "base_bdev": base}),
        );
        let deadline = began + Duration::from_secs(600);
        loop {
            let raid = self.raid(&target.name);
            if raid["shoal"]["degraded"] == false && raid["process"].is_null() {
                break;
            }
            assert!(Instant::now() < deadline, "rebuild did not end: {raid}");
            std::thread::sleep(Duration::from_millis(20));
        }
        (self.leg_mib - RESERVED_MIB) as f64 / began.elapsed().as_secs_f64()
    }
}

#[derive(Clone, Copy)]
struct Row {
    level: &'static str,
    state: &'static str,
    protocol: Protocol,
    workload: Workload,
    figures: Figures,
}

/// One row per (level, state, protocol, workload): the run with the
/// median IOPS of its rounds, in the order first measured.
fn medians(runs: Vec<Row>) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    let same = |a: &Row, b: &Row| {
        a.level == b.level
            && a.state == b.state
            && a.protocol == b.protocol
            && a.workload == b.workload
    };
    for run in &runs {
        if rows.iter().any(|r| same(r, run)) {
            continue;
        }
        let mut rounds: Vec<&Row> = runs.iter().filter(|r| same(r, run)).collect();
        rounds.sort_by(|a, b| a.figures.iops.total_cmp(&b.figures.iops));
        let median = rounds[rounds.len() / 2];
        rows.push(*median);
    }
    rows.sort_by_key(|r| {
        (
            LEVELS.iter().position(|l| l.raid_level == r.level),
            r.state != "healthy",
        )
    });
    rows
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not: run
    // only when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let appliance = Appliance::builder(CLUSTERS)
        .set("management.enabled", false)
        .set("memory.region_mib", 256)
        .set("supervisor.heartbeat_timeout_ms", 2000)
        .start_ready();
    let bench = Bench {
        appliance,
        leg_mib: env("LEG_MIB", 132),
        connections: env("CONNECTIONS", 2) as usize,
        depth: env("DEPTH", 16) as u16,
        duration: Duration::from_secs(env("SECONDS", 3)),
    };
    bench.call(0, "nvmf_create_transport", json!({"trtype": "TCP"}));

    let rounds = env("ROUNDS", 2).max(1);
    // LEVELS=raid0,raid6 measures only those (raid0 always: the ratios
    // are against it).
    let only = std::env::var("LEVELS").ok();
    let wanted = |level: &Level| {
        level.raid_level == "raid0"
            || only
                .as_deref()
                .is_none_or(|list| list.split(',').any(|l| l == level.raid_level))
    };
    let levels: Vec<&Level> = LEVELS.iter().filter(|l| wanted(l)).collect();
    // Every raid exists at once and the levels take turns per workload and
    // round, so a drift of the machine (another process, the page cache)
    // spreads over all of them instead of biasing the one measured last.
    let mut targets: Vec<Target> = levels.iter().map(|l| bench.create(l)).collect();
    for target in &targets {
        bench.fill(target);
    }
    let mut runs: Vec<Row> = Vec::new();
    for state in ["healthy", "degraded"] {
        if state == "degraded" {
            for (level, target) in levels.iter().zip(&targets) {
                if level.redundant {
                    bench.degrade(target);
                }
            }
        }
        for _ in 0..rounds {
            for workload in WORKLOADS {
                for protocol in [Protocol::Nbd, Protocol::Nvme] {
                    for (level, target) in levels.iter().zip(&targets) {
                        if state == "degraded" && !level.redundant {
                            continue;
                        }
                        let figures = bench.run(target, protocol, workload);
                        runs.push(Row {
                            level: level.raid_level,
                            state,
                            protocol,
                            workload,
                            figures,
                        });
                    }
                }
            }
        }
    }
    let mut rebuilds: Vec<(&str, f64)> = Vec::new();
    for (level, target) in levels.iter().zip(&mut targets) {
        if level.redundant {
            rebuilds.push((level.raid_level, bench.rebuild(target)));
        }
    }
    for target in &targets {
        bench.destroy(target);
    }
    let rows = medians(runs);

    println!(
        "raid levels, {CLUSTERS} data clusters (1 reactor each), legs {} MiB malloc, one per cluster, \
         raid on cluster 0; {} connections x depth {}, {} s per run, median of {rounds} rounds\n",
        bench.leg_mib,
        bench.connections,
        bench.depth,
        bench.duration.as_secs()
    );
    println!("| raid | state | protocol | workload | IOPS | MiB/s | p50 | p99 | vs raid0 |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        let raid0 = rows
            .iter()
            .find(|r| {
                r.level == "raid0" && r.protocol == row.protocol && r.workload == row.workload
            })
            .expect("raid0 measured first");
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} µs | {:.0} µs | {:.2} |",
            row.level,
            row.state,
            row.protocol.name(),
            row.workload.name(),
            row.figures.iops,
            row.figures.mib_per_s,
            row.figures.p50_us,
            row.figures.p99_us,
            row.figures.iops / raid0.figures.iops
        );
    }
    println!(
        "\n| raid | rebuild of one {} MiB leg, no host I/O |",
        bench.leg_mib - RESERVED_MIB
    );
    println!("|---|---|");
    for (level, mib_per_s) in rebuilds {
        println!("| {level} | {mib_per_s:.0} MiB/s |");
    }
}

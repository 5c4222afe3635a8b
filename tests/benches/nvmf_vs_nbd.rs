//! 4 KiB random reads and writes against one volume through NVMe/TCP and
//! through NBD, from the same userspace harness, side by side in one run.
//!
//!     cargo bench -p shoal-tests --bench nvmf_vs_nbd
//!     SECONDS=10 CONNECTIONS=2 DEPTH=32 cargo bench -p shoal-tests --bench nvmf_vs_nbd
//!
//! An appliance with one data cluster (one reactor) serves a 256 MiB malloc
//! bdev over both protocols on loopback. Each client thread owns one
//! connection (an NVMe I/O queue, or an NBD connection) and keeps DEPTH
//! requests in flight: the same pipelining for both protocols, so the
//! ratio compares the targets, not the clients. The NVMe queues disable
//! SQ flow control as Linux's `nvme connect-all` does, so reads complete
//! with the C2HData SUCCESS flag (one PDU, like NBD's one reply). Prints
//! IOPS and latency percentiles per protocol and workload, and the
//! NVMe/NBD ratios.

use std::time::Duration;

use serde_json::json;
use shoal_tests::Appliance;
use shoal_tests::load::{self, Access, Client, NbdConnection, NvmeQueue, Op, Workload};
use shoal_tests::nbd_client;
use shoal_tests::nvme_initiator::Initiator;

const BLOCK: u64 = 4096;
const VOLUME_BYTES: u64 = 256 << 20;
const NQN: &str = "nqn.2026-11.io.shoal:bench";
const HOST: &str = "nqn.2026-11.io.shoal:bench-host";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing
    // else we need. Run only when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let seconds = env("SECONDS", 8);
    let connections = env("CONNECTIONS", 2) as usize;
    let depth = env("DEPTH", 16) as u16;

    let appliance = Appliance::start_ready(1);
    let rpc = |method: &str, params: serde_json::Value| {
        appliance
            .dataplane_rpc(0, method, Some(params))
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    };
    rpc(
        "bdev_malloc_create",
        json!({"name": "vol", "num_blocks": VOLUME_BYTES / 512, "block_size": 512}),
    );
    rpc("nbd_start_disk", json!({"bdev_name": "vol"}));
    rpc("nvmf_create_transport", json!({"trtype": "TCP"}));
    rpc(
        "nvmf_create_subsystem",
        json!({"nqn": NQN, "allow_any_host": true}),
    );
    rpc(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "vol"}}),
    );
    let portal = appliance.nvmf_address(0);
    rpc(
        "nvmf_subsystem_add_listener",
        json!({"nqn": NQN, "listen_address": {"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": portal.port().to_string()}}),
    );
    let nbd_port = appliance.nbd_port(0);

    let mut admin = Initiator::connect(portal, false, false).expect("admin queue");
    let cntlid = admin.start_admin(NQN, HOST, 0).expect("controller");
    let next_qid = std::sync::atomic::AtomicU16::new(1);
    let nvme = |_: usize| -> Box<dyn Client> {
        let qid = next_qid.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut queue = Initiator::connect(portal, false, false).expect("I/O queue");
        let cqe = queue
            .fabric_connect_with(qid, 127, cntlid, NQN, HOST, 0, true)
            .expect("connect");
        assert!(cqe.ok(), "{cqe:?}");
        Box::new(NvmeQueue::new(queue, 512, 4096, BLOCK as usize))
    };
    let nbd = |_: usize| -> Box<dyn Client> {
        Box::new(NbdConnection::new(
            nbd_client::connect(nbd_port, "vol"),
            BLOCK as usize,
        ))
    };

    println!("NVMe/TCP vs NBD, one data cluster (1 reactor), 256 MiB malloc bdev, loopback");
    println!("{connections} connections x depth {depth}, {seconds} s per run\n");
    println!(
        "| workload | NVMe/TCP IOPS | p50 | p99 | NBD IOPS | p50 | p99 | IOPS ratio NVMe/NBD |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let duration = Duration::from_secs(seconds);
    for op in [Op::Write, Op::Read] {
        let workload = Workload::new(op, Access::Random, BLOCK);
        let n = load::measure(&nvme, workload, VOLUME_BYTES, connections, depth, duration);
        let b = load::measure(&nbd, workload, VOLUME_BYTES, connections, depth, duration);
        println!(
            "| {} | {:.0} | {:.0} µs | {:.0} µs | {:.0} | {:.0} µs | {:.0} µs | {:.2} |",
            workload.name(),
            n.iops,
            n.p50_us,
            n.p99_us,
            b.iops,
            b.p50_us,
            b.p99_us,
            n.iops / b.iops
        );
    }
    drop(admin);
}

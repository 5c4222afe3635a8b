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

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::json;
use shoal_tests::Appliance;
use shoal_tests::nbd_client;
use shoal_tests::nvme_initiator::{self, Initiator, Sqe};

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

/// A small xorshift generator: random block numbers without a crate.
struct Random(u64);

impl Random {
    fn next_block(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % (VOLUME_BYTES / BLOCK)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Workload {
    RandRead,
    RandWrite,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::RandRead => "4k randread",
            Workload::RandWrite => "4k randwrite",
        }
    }
}

/// One client connection's protocol.
trait Client: Send {
    /// Sends one request tagged `tag`.
    fn submit(&mut self, tag: u16, workload: Workload, block: u64);
    /// Waits for one completion; returns its tag.
    fn complete(&mut self) -> u16;
}

struct NvmeClient {
    queue: Initiator,
    payload: Vec<u8>,
}

impl Client for NvmeClient {
    fn submit(&mut self, tag: u16, workload: Workload, block: u64) {
        let slba = block * (BLOCK / 512);
        let blocks = (BLOCK / 512) as u32;
        let (opcode, sgl, data): (u8, u8, &[u8]) = match workload {
            Workload::RandRead => (0x02, 0x5a, &[]),
            Workload::RandWrite => (0x01, 0x01, &self.payload),
        };
        let mut sqe = Sqe::new(opcode)
            .nsid(1)
            .u64_at(40, slba)
            .cdw(12, blocks - 1)
            .0;
        sqe[2..4].copy_from_slice(&tag.to_le_bytes());
        sqe[32..36].copy_from_slice(&(BLOCK as u32).to_le_bytes());
        sqe[39] = sgl;
        let pdu =
            nvme_initiator::build_pdu(nvme_initiator::CAPSULE_CMD, 0, &sqe, data, false, false);
        self.queue.stream().write_all(&pdu).expect("send capsule");
    }

    fn complete(&mut self) -> u16 {
        loop {
            let pdu = self.queue.recv().expect("receive PDU");
            match pdu.pdu_type {
                nvme_initiator::CAPSULE_RESP => {
                    let status = u16::from_le_bytes([pdu.specific[14], pdu.specific[15]]) >> 1;
                    assert_eq!(status, 0, "NVMe error status");
                    return u16::from_le_bytes([pdu.specific[12], pdu.specific[13]]);
                }
                nvme_initiator::C2H_DATA if pdu.flags & 0x08 != 0 => {
                    return u16::from_le_bytes([pdu.specific[0], pdu.specific[1]]);
                }
                nvme_initiator::C2H_DATA => {}
                other => panic!("unexpected PDU {other:#x}"),
            }
        }
    }
}

struct NbdClient {
    stream: TcpStream,
    payload: Vec<u8>,
    reading: std::collections::HashMap<u16, bool>,
}

impl Client for NbdClient {
    fn submit(&mut self, tag: u16, workload: Workload, block: u64) {
        let (command, payload): (u16, &[u8]) = match workload {
            Workload::RandRead => (nbd_client::CMD_READ, &[]),
            Workload::RandWrite => (nbd_client::CMD_WRITE, &self.payload),
        };
        let mut message = nbd_client::request(command, u64::from(tag), block * BLOCK, BLOCK as u32);
        message.extend_from_slice(payload);
        self.stream.write_all(&message).expect("send request");
        self.reading.insert(tag, workload == Workload::RandRead);
    }

    fn complete(&mut self) -> u16 {
        let (error, cookie) = nbd_client::simple_reply(&mut self.stream);
        assert_eq!(error, 0, "NBD error");
        let tag = cookie as u16;
        if self.reading.remove(&tag) == Some(true) {
            let mut data = vec![0u8; BLOCK as usize];
            self.stream.read_exact(&mut data).expect("read data");
        }
        tag
    }
}

struct Result {
    ios: u64,
    latencies_ns: Vec<u64>,
}

fn run_client(
    mut client: Box<dyn Client>,
    workload: Workload,
    depth: u16,
    seconds: u64,
    seed: u64,
    start: Arc<Barrier>,
) -> Result {
    let mut random = Random(seed | 1);
    let mut submitted = vec![Instant::now(); usize::from(depth)];
    start.wait();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    for tag in 0..depth {
        submitted[usize::from(tag)] = Instant::now();
        client.submit(tag, workload, random.next_block());
    }
    let mut latencies_ns = Vec::with_capacity(1 << 20);
    let mut outstanding = depth;
    while outstanding > 0 {
        let tag = client.complete();
        latencies_ns.push(submitted[usize::from(tag)].elapsed().as_nanos() as u64);
        if Instant::now() < deadline {
            submitted[usize::from(tag)] = Instant::now();
            client.submit(tag, workload, random.next_block());
        } else {
            outstanding -= 1;
        }
    }
    Result {
        ios: latencies_ns.len() as u64,
        latencies_ns,
    }
}

struct Figures {
    iops: f64,
    p50_us: f64,
    p99_us: f64,
}

fn measure(
    make: &dyn Fn(usize) -> Box<dyn Client>,
    workload: Workload,
    connections: usize,
    depth: u16,
    seconds: u64,
) -> Figures {
    let start = Arc::new(Barrier::new(connections + 1));
    let began = Instant::now();
    let threads: Vec<_> = (0..connections)
        .map(|i| {
            let client = make(i);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                run_client(
                    client,
                    workload,
                    depth,
                    seconds,
                    0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1),
                    start,
                )
            })
        })
        .collect();
    start.wait();
    let started = Instant::now();
    let mut latencies: Vec<u64> = Vec::new();
    let mut ios = 0;
    for thread in threads {
        let result = thread.join().expect("client thread");
        ios += result.ios;
        latencies.extend(result.latencies_ns);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _ = began;
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)] as f64 / 1000.0
    };
    Figures {
        iops: ios as f64 / elapsed,
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
    }
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
    let payload = vec![0x5au8; BLOCK as usize];
    let nvme = |_: usize| -> Box<dyn Client> {
        let qid = next_qid.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut queue = Initiator::connect(portal, false, false).expect("I/O queue");
        let cqe = queue
            .fabric_connect_with(qid, 127, cntlid, NQN, HOST, 0, true)
            .expect("connect");
        assert!(cqe.ok(), "{cqe:?}");
        Box::new(NvmeClient {
            queue,
            payload: payload.clone(),
        })
    };
    let nbd = |_: usize| -> Box<dyn Client> {
        Box::new(NbdClient {
            stream: nbd_client::connect(nbd_port, "vol"),
            payload: payload.clone(),
            reading: std::collections::HashMap::new(),
        })
    };

    println!("NVMe/TCP vs NBD, one data cluster (1 reactor), 256 MiB malloc bdev, loopback");
    println!("{connections} connections x depth {depth}, {seconds} s per run\n");
    println!(
        "| workload | NVMe/TCP IOPS | p50 | p99 | NBD IOPS | p50 | p99 | IOPS ratio NVMe/NBD |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for workload in [Workload::RandWrite, Workload::RandRead] {
        let n = measure(&nvme, workload, connections, depth, seconds);
        let b = measure(&nbd, workload, connections, depth, seconds);
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

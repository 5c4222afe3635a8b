//! A pipelined block load for benchmarks: client threads, each owning one
//! connection (an NVMe/TCP I/O queue or an NBD connection), keep a fixed
//! number of requests in flight for a fixed time. Both protocols get the
//! same pipelining, so a ratio between two runs compares the targets, not
//! the clients.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::nbd_client;
use crate::nvme_initiator::{self, Initiator, Sqe};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    Read,
    Write,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    Random,
    /// Each connection walks its own slice of the target in order.
    Sequential,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Workload {
    pub op: Op,
    pub access: Access,
    pub block_bytes: u64,
}

impl Workload {
    pub const fn new(op: Op, access: Access, block_bytes: u64) -> Self {
        Self {
            op,
            access,
            block_bytes,
        }
    }

    /// fio's way of naming it: `4k randread`, `128k write`.
    pub fn name(&self) -> String {
        let op = match self.op {
            Op::Read => "read",
            Op::Write => "write",
        };
        let access = match self.access {
            Access::Random => "rand",
            Access::Sequential => "",
        };
        format!("{}k {access}{op}", self.block_bytes / 1024)
    }
}

/// One connection's protocol: requests are tagged, completions may come
/// in any order.
pub trait Client: Send {
    fn submit(&mut self, tag: u16, op: Op, offset: u64, bytes: u32);
    /// Waits for one completion; returns its tag.
    fn complete(&mut self) -> u16;
}

/// An NVMe/TCP I/O queue. Writes carry their data in the capsule when it
/// fits the controller's in-capsule size, else send it on R2T as H2CData,
/// as the Linux host does.
pub struct NvmeQueue {
    queue: Initiator,
    lba_bytes: u64,
    in_capsule_bytes: usize,
    payload: Vec<u8>,
}

impl NvmeQueue {
    /// `queue` has done Fabrics Connect on an I/O queue of a controller
    /// whose namespace 1 has `lba_bytes` blocks and which takes up to
    /// `in_capsule_bytes` of write data in a command capsule.
    pub fn new(
        queue: Initiator,
        lba_bytes: u64,
        in_capsule_bytes: usize,
        max_bytes: usize,
    ) -> Self {
        Self {
            queue,
            lba_bytes,
            in_capsule_bytes,
            payload: vec![0x5a; max_bytes],
        }
    }

    fn send_on_r2t(&mut self, pdu: &nvme_initiator::Pdu) {
        let cccid = &pdu.specific[0..2];
        let ttag = &pdu.specific[2..4];
        let r2to = u32::from_le_bytes(pdu.specific[4..8].try_into().unwrap()) as usize;
        let r2tl = u32::from_le_bytes(pdu.specific[8..12].try_into().unwrap()) as usize;
        let chunk = (self.queue.maxh2cdata as usize).max(4096);
        let mut offset = r2to;
        while offset < r2to + r2tl {
            let len = chunk.min(r2to + r2tl - offset);
            let last = offset + len == r2to + r2tl;
            let mut specific = [0u8; 16];
            specific[0..2].copy_from_slice(cccid);
            specific[2..4].copy_from_slice(ttag);
            specific[4..8].copy_from_slice(&(offset as u32).to_le_bytes());
            specific[8..12].copy_from_slice(&(len as u32).to_le_bytes());
            let data = &self.payload[offset - r2to..offset - r2to + len];
            let pdu = nvme_initiator::build_pdu(
                nvme_initiator::H2C_DATA,
                if last { 0x04 } else { 0 },
                &specific,
                data,
                false,
                false,
            );
            self.queue.stream().write_all(&pdu).expect("send H2CData");
            offset += len;
        }
    }
}

impl Client for NvmeQueue {
    fn submit(&mut self, tag: u16, op: Op, offset: u64, bytes: u32) {
        let blocks = (u64::from(bytes) / self.lba_bytes) as u32;
        let in_capsule = op == Op::Write && bytes as usize <= self.in_capsule_bytes;
        let (opcode, sgl) = match op {
            Op::Read => (0x02, 0x5a),
            Op::Write if in_capsule => (0x01, 0x01),
            Op::Write => (0x01, 0x5a),
        };
        let mut sqe = Sqe::new(opcode)
            .nsid(1)
            .u64_at(40, offset / self.lba_bytes)
            .cdw(12, blocks - 1)
            .0;
        sqe[2..4].copy_from_slice(&tag.to_le_bytes());
        sqe[32..36].copy_from_slice(&bytes.to_le_bytes());
        sqe[39] = sgl;
        let data: &[u8] = if in_capsule {
            &self.payload[..bytes as usize]
        } else {
            &[]
        };
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
                nvme_initiator::R2T => self.send_on_r2t(&pdu),
                other => panic!("unexpected PDU {other:#x}"),
            }
        }
    }
}

/// An NBD connection (simple replies, cookies as tags).
pub struct NbdConnection {
    stream: TcpStream,
    payload: Vec<u8>,
    /// Bytes to read after the reply, per tag in flight (0 for writes).
    reading: HashMap<u16, usize>,
    scratch: Vec<u8>,
}

impl NbdConnection {
    pub fn new(stream: TcpStream, max_bytes: usize) -> Self {
        Self {
            stream,
            payload: vec![0x5a; max_bytes],
            reading: HashMap::new(),
            scratch: vec![0; max_bytes],
        }
    }
}

impl Client for NbdConnection {
    fn submit(&mut self, tag: u16, op: Op, offset: u64, bytes: u32) {
        let command = match op {
            Op::Read => nbd_client::CMD_READ,
            Op::Write => nbd_client::CMD_WRITE,
        };
        let mut message = nbd_client::request(command, u64::from(tag), offset, bytes);
        if op == Op::Write {
            message.extend_from_slice(&self.payload[..bytes as usize]);
        }
        self.stream.write_all(&message).expect("send request");
        let to_read = if op == Op::Read { bytes as usize } else { 0 };
        self.reading.insert(tag, to_read);
    }

    fn complete(&mut self) -> u16 {
        let (error, cookie) = nbd_client::simple_reply(&mut self.stream);
        assert_eq!(error, 0, "NBD error");
        let tag = cookie as u16;
        let to_read = self.reading.remove(&tag).unwrap_or(0);
        if to_read > 0 {
            self.stream
                .read_exact(&mut self.scratch[..to_read])
                .expect("read data");
        }
        tag
    }
}

/// Where one connection's requests go.
struct Offsets {
    access: Access,
    block_bytes: u64,
    /// The connection's slice of the target, in blocks.
    first: u64,
    blocks: u64,
    next: u64,
    random: u64,
}

impl Offsets {
    fn next(&mut self) -> u64 {
        let block = match self.access {
            Access::Random => {
                // xorshift64: random block numbers without a crate.
                self.random ^= self.random << 13;
                self.random ^= self.random >> 7;
                self.random ^= self.random << 17;
                self.random % self.blocks
            }
            Access::Sequential => {
                let block = self.next;
                self.next = (self.next + 1) % self.blocks;
                block
            }
        };
        (self.first + block) * self.block_bytes
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Figures {
    pub iops: f64,
    pub mib_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

fn run_client(
    mut client: Box<dyn Client>,
    workload: Workload,
    mut offsets: Offsets,
    depth: u16,
    duration: Duration,
    start: Arc<Barrier>,
) -> Vec<u64> {
    let bytes = workload.block_bytes as u32;
    let mut submitted = vec![Instant::now(); usize::from(depth)];
    start.wait();
    let deadline = Instant::now() + duration;
    for tag in 0..depth {
        submitted[usize::from(tag)] = Instant::now();
        client.submit(tag, workload.op, offsets.next(), bytes);
    }
    let mut latencies_ns = Vec::with_capacity(1 << 20);
    let mut outstanding = depth;
    while outstanding > 0 {
        let tag = client.complete();
        latencies_ns.push(submitted[usize::from(tag)].elapsed().as_nanos() as u64);
        if Instant::now() < deadline {
            submitted[usize::from(tag)] = Instant::now();
            client.submit(tag, workload.op, offsets.next(), bytes);
        } else {
            outstanding -= 1;
        }
    }
    latencies_ns
}

/// Runs `workload` over the first `target_bytes` of a target through
/// `connections` clients made by `make` (given the connection's index),
/// `depth` requests in flight each, for `duration`.
pub fn measure(
    make: &dyn Fn(usize) -> Box<dyn Client>,
    workload: Workload,
    target_bytes: u64,
    connections: usize,
    depth: u16,
    duration: Duration,
) -> Figures {
    let start = Arc::new(Barrier::new(connections + 1));
    let slice_blocks = target_bytes / workload.block_bytes / connections as u64;
    assert!(
        slice_blocks > 0,
        "target too small for {connections} connections"
    );
    let threads: Vec<_> = (0..connections)
        .map(|i| {
            let client = make(i);
            let start = Arc::clone(&start);
            let offsets = match workload.access {
                Access::Random => Offsets {
                    access: Access::Random,
                    block_bytes: workload.block_bytes,
                    first: 0,
                    blocks: slice_blocks * connections as u64,
                    next: 0,
                    random: 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1),
                },
                Access::Sequential => Offsets {
                    access: Access::Sequential,
                    block_bytes: workload.block_bytes,
                    first: i as u64 * slice_blocks,
                    blocks: slice_blocks,
                    next: 0,
                    random: 0,
                },
            };
            std::thread::spawn(move || {
                run_client(client, workload, offsets, depth, duration, start)
            })
        })
        .collect();
    start.wait();
    let started = Instant::now();
    let mut latencies: Vec<u64> = Vec::new();
    for thread in threads {
        latencies.extend(thread.join().expect("client thread"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)] as f64 / 1000.0
    };
    let iops = latencies.len() as f64 / elapsed;
    Figures {
        iops,
        mib_per_s: iops * workload.block_bytes as f64 / f64::from(1 << 20),
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
    }
}

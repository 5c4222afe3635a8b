//! What a peer without credentials can make a data cluster hold, probed
//! on the real dataplane: NVMe/TCP queues before Fabrics Connect (commands,
//! buffers, R2T, time), connected queues beyond their depth, idle JSON-RPC
//! connections, and accept loops that run out of file descriptors. Each
//! probe reads the dataplane's VmRSS from /proc and checks that legitimate
//! clients still get their answers.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_appliance::jsonrpc::call_blocking;
use shoal_tests::Appliance;
use shoal_tests::nvme_initiator::{self, Data, Initiator, Sqe};

const SUBNQN: &str = "nqn.2026-11.io.shoal:bounds";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:7d3e6f2b-1a5c-4e8f-8b62-4d2e3c8f9a01";
const BLOCK: usize = 512;
/// Growth of the dataplane's RSS a probe may cause at most.
const RSS_GROWTH_LIMIT_KIB: u64 = 64 * 1024;
/// Time a legitimate client may wait for its answer during a probe.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// The connect deadline of `nvmf::connection::CONNECT_TIMEOUT`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The idle timeout of `jsonrpc::server::IDLE_TIMEOUT`.
const RPC_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// `jsonrpc::server::MAX_CONNECTIONS`.
const RPC_MAX_CONNECTIONS: usize = 64;

/// One data cluster with a malloc namespace exported to `HOST`.
fn target() -> Appliance {
    let appliance = Appliance::start_ready(1);
    appliance.dataplane_call(0, "nvmf_create_transport", json!({"trtype": "TCP"}));
    appliance.dataplane_call(
        0,
        "bdev_malloc_create",
        json!({"name": "m0", "num_blocks": 8192, "block_size": BLOCK}),
    );
    appliance.dataplane_call(
        0,
        "nvmf_create_subsystem",
        json!({"nqn": SUBNQN, "serial_number": "SHOAL0002", "model_number": "Shoal bounds"}),
    );
    appliance.dataplane_call(
        0,
        "nvmf_subsystem_add_host",
        json!({"nqn": SUBNQN, "host": HOST}),
    );
    appliance.dataplane_call(
        0,
        "nvmf_subsystem_add_ns",
        json!({"nqn": SUBNQN, "namespace": {"bdev_name": "m0"}}),
    );
    let portal = appliance.nvmf_address(0);
    appliance.dataplane_call(0, "nvmf_subsystem_add_listener",
        json!({"nqn": SUBNQN, "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": portal.port().to_string()}}),
    );
    appliance
}

fn dataplane_pid(appliance: &Appliance) -> i32 {
    appliance.cluster(0)["pid"]
        .as_i64()
        .expect("data cluster 0 has a pid") as i32
}

fn dataplane_socket(appliance: &Appliance) -> PathBuf {
    appliance.state_dir.join("dataplane-0.sock")
}

/// VmRSS of `pid` in KiB.
fn vm_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

/// Samples the RSS of `pid` until `stop`, keeping the largest; sets
/// `stop` itself once the growth passes the limit, so that a probe against
/// an unbounded target fails quickly instead of exhausting the machine.
fn watch_rss(pid: i32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let baseline = vm_rss_kib(pid);
    std::thread::spawn(move || {
        let mut peak = baseline;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(vm_rss_kib(pid));
            if peak - baseline > RSS_GROWTH_LIMIT_KIB {
                stop.store(true, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        peak - baseline
    })
}

fn ic_req() -> [u8; 128] {
    let mut ic = [0u8; 128];
    ic[0] = nvme_initiator::IC_REQ;
    ic[2] = 128;
    ic[4..8].copy_from_slice(&128u32.to_le_bytes());
    ic
}

/// A Write of `length` bytes whose data the controller is to ask for (a
/// transport SGL), as a command capsule PDU.
fn write_capsule(cid: u16, length: u32) -> Vec<u8> {
    let mut sqe = Sqe::new(0x01).nsid(1).cdw(12, length / BLOCK as u32 - 1);
    sqe.set_cid(cid);
    sqe.sgl(0x5a, length);
    nvme_initiator::build_pdu(nvme_initiator::CAPSULE_CMD, 0, &sqe.0, &[], false, false)
}

/// Reads PDUs from `stream` until it ends (or times out): the types seen.
fn drain_pdu_types(mut stream: TcpStream) -> Vec<u8> {
    let mut types = Vec::new();
    while let Ok(pdu) = nvme_initiator::read_pdu(&mut stream, false, false) {
        types.push(pdu.pdu_type);
    }
    types
}

/// True once the peer has closed `stream` (EOF or reset) within `timeout`.
fn closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// A JSON-RPC call on the dataplane socket: its answer, and how long it took.
fn timed_rpc(socket: &std::path::Path, method: &str) -> (Result<Value, String>, Duration) {
    let started = Instant::now();
    let result = call_blocking(
        socket,
        method,
        Some(json!({})),
        ANSWER_WITHIN + ANSWER_WITHIN,
    )
    .map_err(|e| e.to_string());
    (result, started.elapsed())
}

/// A host that connects properly and reads a block: how long it took.
fn timed_nvme_read(portal: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let mut admin = Initiator::connect(portal, false, false).map_err(|e| e.to_string())?;
    let cntlid = admin
        .start_admin(SUBNQN, HOST, 0)
        .map_err(|e| e.to_string())?;
    let mut io = Initiator::connect(portal, false, false).map_err(|e| e.to_string())?;
    let cqe = io
        .fabric_connect(1, 31, cntlid, SUBNQN, HOST, 0)
        .map_err(|e| e.to_string())?;
    if !cqe.ok() {
        return Err(format!("I/O queue Connect failed: {cqe:?}"));
    }
    let (cqe, data) = io.read(1, 0, 8, BLOCK).map_err(|e| e.to_string())?;
    if !cqe.ok() || data.len() != 8 * BLOCK {
        return Err(format!("read failed: {cqe:?}, {} bytes", data.len()));
    }
    Ok(started.elapsed())
}

/// Finding: ICReq then thousands of Write capsules with a transport SGL,
/// never Connect, got a buffer and an R2T each (32 MB to 1.07 GB RSS).
#[test]
fn capsules_before_connect_get_no_buffers_and_end_the_connection() {
    const PROBES: usize = 4;
    const CAPSULES: u16 = 8192;
    const CHUNK: u16 = 256;
    let appliance = target();
    let pid = dataplane_pid(&appliance);
    let portal = appliance.nvmf_address(0);
    let stop = Arc::new(AtomicBool::new(false));
    let rss = watch_rss(pid, Arc::clone(&stop));
    let r2ts = Arc::new(AtomicUsize::new(0));
    let open_after_burst = Arc::new(AtomicUsize::new(0));
    let rounds = Arc::new(AtomicUsize::new(0));

    // Probes reconnect and repeat until the legitimate clients are done.
    let probes: Vec<_> = (0..PROBES)
        .map(|_| {
            let (stop, r2ts, open_after_burst, rounds) = (
                Arc::clone(&stop),
                Arc::clone(&r2ts),
                Arc::clone(&open_after_burst),
                Arc::clone(&rounds),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut stream) = Initiator::raw(portal) else {
                        continue;
                    };
                    let reader = std::thread::spawn({
                        let stream = stream.try_clone().unwrap();
                        move || drain_pdu_types(stream)
                    });
                    let _ = stream.write_all(&ic_req());
                    let mut cid = 0u16;
                    let mut sent_all = true;
                    while cid < CAPSULES && !stop.load(Ordering::Relaxed) {
                        let burst: Vec<u8> = (cid..cid + CHUNK)
                            .flat_map(|c| write_capsule(c, 131_072))
                            .collect();
                        if stream.write_all(&burst).is_err() {
                            sent_all = false;
                            break;
                        }
                        cid += CHUNK;
                    }
                    // Generous: on a loaded 2-core machine the close can lag (the
                    // bound under test is "closed", not how fast).
                    if sent_all && !closed_within(&mut stream, Duration::from_secs(10)) {
                        open_after_burst.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                    let types = reader.join().unwrap();
                    r2ts.fetch_add(
                        types.iter().filter(|&&t| t == nvme_initiator::R2T).count(),
                        Ordering::Relaxed,
                    );
                    rounds.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(500));
    let socket = dataplane_socket(&appliance);
    let (bdevs, rpc_took) = timed_rpc(&socket, "bdev_get_bdevs");
    let nvme = timed_nvme_read(portal);
    // Let the probes run a while longer.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for probe in probes {
        probe.join().unwrap();
    }
    let growth = rss.join().unwrap();
    eprintln!(
        "{} probe rounds; RSS growth {growth} KiB; bdev_get_bdevs {rpc_took:?}; NVMe connect+read {nvme:?}",
        rounds.load(Ordering::Relaxed)
    );

    assert_eq!(r2ts.load(Ordering::Relaxed), 0, "R2T sent before Connect");
    assert!(
        growth < RSS_GROWTH_LIMIT_KIB,
        "dataplane RSS grew by {growth} KiB"
    );
    assert_eq!(
        open_after_burst.load(Ordering::Relaxed),
        0,
        "connections stayed open after capsules before Connect"
    );
    assert!(bdevs.is_ok(), "bdev_get_bdevs: {bdevs:?}");
    assert!(rpc_took < ANSWER_WITHIN, "bdev_get_bdevs took {rpc_took:?}");
    let nvme_took = nvme.expect("a proper host connects and reads");
    assert!(
        nvme_took < ANSWER_WITHIN,
        "NVMe connect+read took {nvme_took:?}"
    );

    // A single early command: the termination says PDU sequence error.
    let mut host = Initiator::connect(portal, false, false).unwrap();
    host.send(
        nvme_initiator::CAPSULE_CMD,
        0,
        &write_capsule(1, 4096)[8..72],
        &[],
    )
    .unwrap();
    let pdu = host.recv().unwrap();
    assert_eq!(pdu.pdu_type, nvme_initiator::C2H_TERM_REQ);
    assert_eq!(u16::from_le_bytes([pdu.specific[0], pdu.specific[1]]), 0x02);
    assert_eq!(appliance.status()["clusters"][0]["state"], "running");
}

/// A connected I/O queue of 32 entries that sends thousands of Writes
/// asking for R2T (never sending data), and an admin queue that sends
/// thousands of Identify commands without reading the answers: both are
/// ended at the queue depth, holding at most that many buffers.
#[test]
fn connected_queues_are_held_to_their_depth() {
    const SQSIZE: u16 = 31;
    let appliance = target();
    let pid = dataplane_pid(&appliance);
    let portal = appliance.nvmf_address(0);

    let mut admin = Initiator::connect(portal, false, false).unwrap();
    let cntlid = admin.start_admin(SUBNQN, HOST, 0).unwrap();
    let mut io = Initiator::connect(portal, false, false).unwrap();
    assert!(
        io.fabric_connect(1, SQSIZE, cntlid, SUBNQN, HOST, 0)
            .unwrap()
            .ok()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let rss = watch_rss(pid, Arc::clone(&stop));
    let mut stream = io.stream().try_clone().unwrap();
    let reader = std::thread::spawn({
        let stream = stream.try_clone().unwrap();
        move || drain_pdu_types(stream)
    });
    for chunk in 0..32u16 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let burst: Vec<u8> = (chunk * 256..(chunk + 1) * 256)
            .flat_map(|cid| write_capsule(cid, 131_072))
            .collect();
        if stream.write_all(&burst).is_err() {
            break;
        }
    }
    let closed = closed_within(&mut stream, Duration::from_secs(3));
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let types = reader.join().unwrap();
    let r2ts = types.iter().filter(|&&t| t == nvme_initiator::R2T).count();

    // The admin queue's host stops reading and keeps sending Identify.
    let mut identify = Sqe::new(0x06).cdw(10, 1);
    identify.sgl(0x5a, 4096);
    let mut admin_stream = Initiator::connect(portal, false, false).unwrap();
    admin_stream.start_admin(SUBNQN, HOST, 0).unwrap();
    let mut admin_stream = admin_stream.stream().try_clone().unwrap();
    admin_stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut sent = 0usize;
    'send: for _ in 0..400 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut burst = Vec::new();
        for _ in 0..256 {
            identify.set_cid(sent as u16);
            sent += 1;
            burst.extend(nvme_initiator::build_pdu(
                nvme_initiator::CAPSULE_CMD,
                0,
                &identify.0,
                &[],
                false,
                false,
            ));
        }
        if admin_stream.write_all(&burst).is_err() {
            break 'send;
        }
    }
    // The connection ends within the close timeout although we never read.
    let started = Instant::now();
    let mut admin_closed = false;
    while started.elapsed() < Duration::from_secs(10) {
        let mut probe = [0u8; 1];
        admin_stream.set_nonblocking(true).unwrap();
        // A closed connection refuses writes (EPIPE/ECONNRESET).
        if admin_stream
            .write(&probe)
            .is_err_and(|e| e.kind() != ErrorKind::WouldBlock)
        {
            admin_closed = true;
            break;
        }
        let _ = admin_stream.read(&mut probe);
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let growth = rss.join().unwrap();
    eprintln!(
        "I/O queue: {r2ts} R2T for {} PDUs received; admin queue: {sent} Identify sent; RSS growth {growth} KiB",
        types.len()
    );

    assert!(closed, "the I/O queue beyond its depth was not ended");
    assert!(
        r2ts <= usize::from(SQSIZE) + 1,
        "{r2ts} R2T on a queue of {} entries",
        SQSIZE + 1
    );
    assert!(
        admin_closed,
        "the admin queue that never reads was not ended"
    );
    assert!(
        growth < RSS_GROWTH_LIMIT_KIB,
        "dataplane RSS grew by {growth} KiB"
    );
    // Lengths above the transfer limit fail the command, no R2T.
    let mut admin = Initiator::connect(portal, false, false).unwrap();
    let cntlid = admin.start_admin(SUBNQN, HOST, 0).unwrap();
    let mut io = Initiator::connect(portal, false, false).unwrap();
    assert!(
        io.fabric_connect(2, 31, cntlid, SUBNQN, HOST, 0)
            .unwrap()
            .ok()
    );
    let huge = vec![0u8; 4 << 20];
    let (cqe, _) = io
        .command(
            Sqe::new(0x01)
                .nsid(1)
                .cdw(12, (huge.len() / BLOCK) as u32 - 1),
            Data::OnRequest(&huge),
        )
        .unwrap();
    assert_eq!(cqe.status(), (0, 0x0f), "data SGL length invalid");
    assert!(timed_nvme_read(portal).is_ok());
}

/// Finding: nothing limited the time between ICReq and Connect, so idle
/// connections piled up. Both an idle queue and one stalled halfway
/// through a PDU are closed at the connect deadline; a host that connects
/// in time stays.
#[test]
fn queues_not_connected_in_time_are_closed() {
    let appliance = target();
    let portal = appliance.nvmf_address(0);
    let started = Instant::now();
    let mut idle = Initiator::connect(portal, false, false).unwrap();
    let mut stalled = Initiator::connect(portal, false, false).unwrap();
    // Half a command capsule header.
    stalled
        .stream()
        .write_all(&[nvme_initiator::CAPSULE_CMD, 0, 72, 0])
        .unwrap();
    let mut connected = Initiator::connect(portal, false, false).unwrap();
    connected.start_admin(SUBNQN, HOST, 0).unwrap();

    let wait = CONNECT_TIMEOUT + Duration::from_secs(5);
    assert!(closed_within(idle.stream(), wait), "idle queue still open");
    let idle_closed_after = started.elapsed();
    assert!(
        closed_within(stalled.stream(), Duration::from_secs(2)),
        "stalled queue still open"
    );
    assert!(
        idle_closed_after >= CONNECT_TIMEOUT - Duration::from_secs(1),
        "closed after {idle_closed_after:?}, before the deadline"
    );
    let (cqe, _) = connected.property_get(0x1c, false).unwrap();
    assert!(cqe.ok(), "the connected host is unaffected");
}

/// A JSON-RPC connection that says nothing, on the dataplane's socket.
fn idle_rpc_connection(socket: &std::path::Path) -> UnixStream {
    let stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    stream
}

fn rpc_closed(mut stream: &UnixStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

/// Finding: 64 idle connections to a JSON-RPC socket kept the reconciler
/// out (no idle timeout). A new client now takes the slot of the one idle
/// longest, and idle connections are closed after the idle timeout.
#[test]
fn idle_rpc_connections_cannot_keep_clients_out() {
    let appliance = target();
    let socket = dataplane_socket(&appliance);
    let started = Instant::now();
    let idle: Vec<UnixStream> = (0..RPC_MAX_CONNECTIONS + 8)
        .map(|_| idle_rpc_connection(&socket))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for attempt in 0..3 {
        let (answer, took) = timed_rpc(&socket, "bdev_get_bdevs");
        assert!(answer.is_ok(), "call {attempt}: {answer:?}");
        assert!(took < ANSWER_WITHIN, "call {attempt} took {took:?}");
    }
    // A connection that trickles bytes is idle all the same.
    let mut trickler = UnixStream::connect(&socket).unwrap();
    while started.elapsed() < RPC_IDLE_TIMEOUT - Duration::from_secs(2) {
        trickler.write_all(b" ").unwrap();
        std::thread::sleep(Duration::from_secs(1));
    }
    let still_open = idle.iter().filter(|s| !rpc_closed(s)).count();
    assert!(still_open > 0, "idle connections closed before the timeout");
    std::thread::sleep(RPC_IDLE_TIMEOUT + Duration::from_secs(3) - started.elapsed());
    let still_open = idle.iter().filter(|s| !rpc_closed(s)).count();
    assert_eq!(
        still_open, 0,
        "idle connections open after the idle timeout"
    );
    trickler
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(rpc_closed(&trickler), "the trickling connection stays");
    assert!(timed_rpc(&socket, "bdev_get_bdevs").0.is_ok());
}

/// Sets the soft and hard RLIMIT_NOFILE of `pid`; returns the old one.
fn set_nofile(pid: i32, limit: libc::rlimit) -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both pointers are to live rlimit values.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &limit, &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    old
}

fn open_fds(pid: i32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64
}

/// Finding: out of descriptors, the JSON-RPC accept loop retried EMFILE
/// without pause (~277k log lines/s). Now every accept loop backs off,
/// logs once, and accepts again once descriptors are free.
#[test]
fn accept_loops_back_off_when_out_of_descriptors() {
    let appliance = target();
    let pid = dataplane_pid(&appliance);
    let portal = appliance.nvmf_address(0);
    let socket = dataplane_socket(&appliance);

    let headroom = 16;
    let limit = open_fds(pid) + headroom;
    let old = set_nofile(
        pid,
        libc::rlimit {
            rlim_cur: limit,
            rlim_max: old_hard(pid),
        },
    );
    // Use up the descriptors with NVMe/TCP connections that say nothing.
    let mut peers: Vec<TcpStream> = (0..headroom * 2)
        .filter_map(|_| TcpStream::connect(portal).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // One JSON-RPC client waits in the backlog while accept fails.
    let waiting = std::thread::spawn({
        let socket = socket.clone();
        move || call_blocking(&socket, "bdev_get_bdevs", None, Duration::from_secs(2))
    });
    let log_before = appliance.log().lines().count();
    std::thread::sleep(Duration::from_secs(3));
    let log_lines = appliance.log().lines().count() - log_before;
    let fds_during = open_fds(pid);
    let _ = waiting.join();

    peers.clear();
    set_nofile(pid, old);
    std::thread::sleep(Duration::from_millis(1500));
    let (answer, took) = timed_rpc(&socket, "bdev_get_bdevs");
    let nvme = timed_nvme_read(portal);
    eprintln!(
        "limit {limit}, {fds_during} descriptors open; {log_lines} log lines in 3 s; afterwards bdev_get_bdevs in {took:?}, NVMe connect+read {nvme:?}"
    );
    assert!(
        fds_during >= limit - 1,
        "the probe did not exhaust descriptors"
    );
    assert!(
        log_lines < 100,
        "{log_lines} log lines in 3 s out of descriptors"
    );
    assert!(answer.is_ok(), "bdev_get_bdevs afterwards: {answer:?}");
    assert!(took < ANSWER_WITHIN);
    assert!(nvme.is_ok(), "NVMe afterwards: {nvme:?}");
    assert_eq!(appliance.status()["clusters"][0]["state"], "running");
}

fn old_hard(pid: i32) -> u64 {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a null new limit only reads; `current` is a live rlimit.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut current) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    current.rlim_max
}

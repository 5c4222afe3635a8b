//! What a misbehaving NBD client can make the real dataplane hold: raw NBD
//! frames against `shoal-dataplane` (run by shoald), with the growth of the
//! dataplane's VmRSS measured from /proc.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use shoal_tests::Appliance;
use shoal_tests::nbd_client::{CMD_READ, CMD_WRITE, connect, read, request};

const MIB: u64 = 1 << 20;

/// An appliance with one cluster serving a 64 MiB malloc bdev as `vol0`;
/// returns it with the dataplane's pid.
fn appliance_with_export() -> (Appliance, i32) {
    let appliance = Appliance::start_ready(1);
    appliance.dataplane_call(
        0,
        "bdev_malloc_create",
        json!({"name": "m0", "num_blocks": 16384, "block_size": 4096}),
    );
    appliance.dataplane_call(
        0,
        "nbd_start_disk",
        json!({"bdev_name": "m0", "nbd_device": "vol0"}),
    );
    let pid = appliance.cluster(0)["pid"].as_i64().expect("dataplane pid") as i32;
    (appliance, pid)
}

fn vm_rss_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kib * 1024
}

/// The highest VmRSS seen over `period`.
fn peak_rss(pid: i32, period: Duration) -> u64 {
    let end = Instant::now() + period;
    let mut peak = 0;
    while Instant::now() < end {
        peak = peak.max(vm_rss_bytes(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    peak
}

/// A second, well-behaved client reads 4 KiB; returns how long it took.
fn legitimate_read(port: u16) -> Duration {
    let started = Instant::now();
    let mut client = connect(port, "vol0");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    read(&mut client, 1, 0, 4096).expect("the legitimate read succeeds");
    started.elapsed()
}

#[test]
fn a_client_that_never_reads_its_replies_holds_a_bounded_amount_of_memory() {
    let (appliance, pid) = appliance_with_export();
    let port = appliance.nbd_port(0);
    // Warm up the paths a read takes, so the baseline includes them.
    legitimate_read(port);
    let baseline = vm_rss_bytes(pid);

    // 512 reads of 4 MiB (2 GiB of replies), and never a byte read back.
    let mut greedy = connect(port, "vol0");
    let mut requests = Vec::new();
    for cookie in 0..512u64 {
        requests.extend(request(CMD_READ, cookie, 0, 4 << 20));
    }
    greedy
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    greedy.write_all(&requests).unwrap();

    let growth = peak_rss(pid, Duration::from_secs(3)).saturating_sub(baseline);
    eprintln!(
        "VmRSS growth with 512 unread 4 MiB reads: {} MiB",
        growth / MIB
    );
    assert!(
        growth < 64 * MIB,
        "the dataplane grew by {} MiB for a client that reads nothing",
        growth / MIB
    );
    let took = legitimate_read(port);
    eprintln!("a second client's 4 KiB read took {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    drop(greedy);
}

#[test]
fn write_headers_whose_payload_trickles_in_hold_a_bounded_amount_of_memory() {
    let (appliance, pid) = appliance_with_export();
    let port = appliance.nbd_port(0);
    legitimate_read(port);
    let baseline = vm_rss_bytes(pid);

    // 16 connections each announce a 32 MiB write and send half of it.
    const CONNECTIONS: usize = 16;
    let half = vec![0x5au8; 16 << 20];
    let senders: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let half = half.clone();
            let mut client = connect(port, "vol0");
            std::thread::spawn(move || {
                client
                    .set_write_timeout(Some(Duration::from_secs(4)))
                    .unwrap();
                let mut message = request(CMD_WRITE, i as u64, 0, 32 << 20);
                message.extend_from_slice(&half);
                // Beyond the budget the server stops reading: the write times out.
                let _ = client.write_all(&message);
                client
            })
        })
        .collect();

    let growth = peak_rss(pid, Duration::from_secs(5)).saturating_sub(baseline);
    let clients: Vec<TcpStream> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    eprintln!(
        "VmRSS growth with {CONNECTIONS} half-sent 32 MiB writes: {} MiB",
        growth / MIB
    );
    assert!(
        growth < 128 * MIB,
        "the dataplane grew by {} MiB for writes whose payload never completes",
        growth / MIB
    );
    drop(clients);
}

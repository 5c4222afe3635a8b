//! Cross-process stress of a request/completion ring pair in a real shared
//! region: this process pushes 10 million descriptors into the 0 -> 1
//! request ring while a second process pops them and echoes each into the
//! completion ring. Each side checks that every descriptor arrives exactly
//! once, in order, with its fields intact.

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use shoal_appliance::region::layout::Backing;
use shoal_appliance::region::ring::{Descriptor, Ring};
use shoal_appliance::region::{RegionSpec, SharedRegion};

const DESCRIPTORS: u64 = 10_000_000;
const REGION_BYTES: usize = 8 << 20;
const REGION_ENV: &str = "SHOAL_RING_STRESS_REGION";

/// Fields derived from the tag, so either side can check a descriptor it
/// receives without shared state.
fn descriptor(tag: u64) -> Descriptor {
    Descriptor {
        tag,
        generation: tag ^ 0x5555,
        target: tag.rotate_left(17),
        offset_blocks: tag * 3,
        num_blocks: tag % 257,
        buf_offset: tag << 12,
        buf_len: tag as u32,
        op: (tag % 7) as u16,
        flags: (tag % 3) as u16,
        status: -((tag % 11) as i32),
        target_generation: (tag >> 32) as u32,
    }
}

/// Spins politely: two processes may share one CPU.
fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

#[test]
fn ten_million_descriptors_cross_processes_once_each_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("region");
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    file.set_len(REGION_BYTES as u64).unwrap();
    let spec = RegionSpec {
        cluster_count: 2,
        page_size: 4096,
        backing: Backing::SharedMemory,
    };
    let region = SharedRegion::initialise(&file, &path, REGION_BYTES, spec, false).unwrap();

    let mut echo = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "echo_side", "--ignored", "--nocapture"])
        .env(REGION_ENV, &path)
        .spawn()
        .unwrap();

    // SAFETY: this process is the only pusher of the request ring and the
    // only popper of the completion ring; the echo process does the rest.
    let (requests, completions) =
        unsafe { (region.request_ring(0, 1), region.completion_ring(0, 1)) };
    let started = Instant::now();
    let (mut sent, mut received) = (0u64, 0u64);
    let mut spins = 0;
    // Set when the echo process is seen gone. It may have pushed its last
    // completions just before exiting, after our last pop: only a pass
    // that finds nothing *after* it was seen gone means it quit early.
    let mut exited = None;
    while received < DESCRIPTORS {
        let mut progressed = false;
        while sent < DESCRIPTORS && requests.push(&descriptor(sent)) {
            sent += 1;
            progressed = true;
        }
        while let Some(completion) = completions.pop() {
            assert_eq!(
                completion,
                descriptor(received),
                "completion {received} lost, duplicated, reordered or torn"
            );
            received += 1;
            progressed = true;
        }
        if progressed {
            spins = 0;
        } else {
            backoff(&mut spins);
            if let Some(status) = exited {
                panic!("echo process exited early ({status}) after {received} completions");
            }
            exited = echo.try_wait().unwrap();
        }
    }
    let elapsed = started.elapsed();
    let status = echo.wait().unwrap();
    assert!(status.success(), "echo process failed: {status}");
    assert_eq!(requests.depth(), 0);
    assert_eq!(completions.depth(), 0);
    assert_eq!(requests.pushed(), DESCRIPTORS);
    eprintln!(
        "{DESCRIPTORS} round trips in {elapsed:?} ({:.0} per second)",
        DESCRIPTORS as f64 / elapsed.as_secs_f64()
    );
}

/// The other process of the stress test; run by it, not on its own.
#[test]
#[ignore = "spawned by ten_million_descriptors_cross_processes_once_each_in_order"]
fn echo_side() {
    let path = std::env::var_os(REGION_ENV).expect("started by the stress test");
    let region = SharedRegion::open(Path::new(&path)).unwrap();
    // SAFETY: this process is the only popper of the request ring and the
    // only pusher of the completion ring.
    let (requests, completions): (Ring, Ring) =
        unsafe { (region.request_ring(0, 1), region.completion_ring(0, 1)) };
    let mut expected = 0u64;
    let mut spins = 0;
    while expected < DESCRIPTORS {
        let Some(request) = requests.pop() else {
            backoff(&mut spins);
            continue;
        };
        spins = 0;
        assert_eq!(request, descriptor(expected), "request {expected}");
        while !completions.push(&request) {
            backoff(&mut spins);
        }
        expected += 1;
    }
}

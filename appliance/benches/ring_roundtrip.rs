//! Round trips through a request/completion ring pair between two
//! processes sharing a region, as two data clusters use them: this process
//! pushes a descriptor and waits for its completion; an echo process (this
//! binary, re-executed) pops requests and pushes them back. Both sides
//! busy-poll, as reactors under load do; the doorbell that wakes an idle
//! reactor is not part of this measurement.
//!
//!   cargo bench -p shoal-appliance --bench ring_roundtrip
//!
//! Criterion measures QD1 round trips and batches of 32. A final pass
//! times 1,000,000 single round trips one by one and prints the median and
//! 99th percentile, which criterion does not report.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use shoal_appliance::region::layout::Backing;
use shoal_appliance::region::ring::{Descriptor, Ring};
use shoal_appliance::region::{RegionSpec, SharedRegion};

const REGION_BYTES: usize = 8 << 20;
const ECHO_ENV: &str = "SHOAL_RING_BENCH_ECHO";

fn echo(path: &Path) -> ! {
    let region = SharedRegion::open(path).expect("open the bench region");
    // SAFETY: the echo process is the only popper of the request ring and
    // the only pusher of the completion ring.
    let (requests, completions) =
        unsafe { (region.request_ring(0, 1), region.completion_ring(0, 1)) };
    loop {
        match requests.pop() {
            Some(request) => {
                while !completions.push(&request) {
                    std::hint::spin_loop();
                }
            }
            None => std::hint::spin_loop(),
        }
    }
}

struct Pair {
    _dir: tempfile::TempDir,
    _region: SharedRegion,
    requests: Ring,
    completions: Ring,
    echo: Child,
}

impl Pair {
    fn start() -> Self {
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
        let echo = Command::new(std::env::current_exe().unwrap())
            .env(ECHO_ENV, &path)
            .spawn()
            .unwrap();
        // SAFETY: this process pushes requests and pops completions only.
        let (requests, completions) =
            unsafe { (region.request_ring(0, 1), region.completion_ring(0, 1)) };
        Self {
            _dir: dir,
            _region: region,
            requests,
            completions,
            echo,
        }
    }

    /// Sends `batch` descriptors and waits for all of them to come back.
    fn round_trip(&self, batch: u64, tag: &mut u64) {
        for _ in 0..batch {
            *tag += 1;
            let descriptor = Descriptor {
                tag: *tag,
                ..Default::default()
            };
            while !self.requests.push(&descriptor) {
                std::hint::spin_loop();
            }
        }
        let mut back = 0;
        while back < batch {
            match self.completions.pop() {
                Some(_) => back += 1,
                None => std::hint::spin_loop(),
            }
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = self.echo.kill();
        let _ = self.echo.wait();
    }
}

fn percentiles(pair: &Pair) {
    let mut tag = 0;
    let mut samples: Vec<Duration> = (0..1_000_000)
        .map(|_| {
            let started = Instant::now();
            pair.round_trip(1, &mut tag);
            started.elapsed()
        })
        .collect();
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    println!(
        "ring round trip, QD1, 1,000,000 samples: median {:?}, p99 {:?}, p99.9 {:?}",
        at(0.5),
        at(0.99),
        at(0.999)
    );
}

fn main() {
    if let Some(path) = std::env::var_os(ECHO_ENV) {
        echo(Path::new(&path));
    }
    let pair = Pair::start();
    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("ring_cross_process");
    for batch in [1u64, 32] {
        group.throughput(Throughput::Elements(batch));
        group.bench_function(format!("round_trip_batch_{batch}"), |b| {
            let mut tag = 0;
            b.iter(|| pair.round_trip(batch, &mut tag));
        });
    }
    group.finish();
    percentiles(&pair);
    criterion.final_summary();
}

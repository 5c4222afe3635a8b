//! The raw bdev I/O path on one core: 4 KiB reads and writes through an
//! I/O channel to a malloc and a null bdev, no network. Criterion reports
//! the time per I/O; I/Os per second per core is its inverse.
//!
//!   cargo bench -p shoal-dataplane --bench bdev_path

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use shoal_dataplane::bdev::malloc::create_malloc;
use shoal_dataplane::bdev::null::create_null;
use shoal_dataplane::bdev::{Bdev, BdevRegistry, BdevSpec, IoBuf, IoKind, IoRequest};

const BLOCK: u32 = 4096;
const BLOCKS: u64 = 16384; // 64 MiB

fn spec(name: &str) -> BdevSpec {
    BdevSpec {
        name: name.into(),
        uuid: None,
        block_size: BLOCK,
        num_blocks: BLOCKS,
    }
}

/// Runs `iters` I/Os, `depth` at a time, on a single-threaded reactor-like
/// runtime and returns the elapsed time.
fn run(bdev: &Arc<Bdev>, kind: IoKind, depth: u64, iters: u64) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let channel = bdev.channel();
        let mut lba = 0u64;
        let mut next_lba = || {
            // A cheap scattered walk over the device.
            lba = (lba + 7919) % BLOCKS;
            lba
        };
        let started = Instant::now();
        let mut done = 0;
        while done < iters {
            let batch = depth.min(iters - done);
            let ios = (0..batch).map(|_| {
                let io = IoRequest::with_kind(kind, next_lba(), IoBuf::new(BLOCK as usize), BLOCK);
                channel.submit(io)
            });
            for completion in join_all(ios).await {
                assert!(completion.result.is_ok());
            }
            done += batch;
        }
        started.elapsed()
    })
}

fn bdev_path(c: &mut Criterion) {
    let registry = BdevRegistry::new();
    let malloc = create_malloc(&registry, spec("malloc0")).unwrap();
    let null = create_null(&registry, spec("null0")).unwrap();
    let mut group = c.benchmark_group("bdev_4k");
    group.throughput(Throughput::Elements(1));
    for (name, bdev) in [("malloc", &malloc), ("null", &null)] {
        for (op, kind) in [("read", IoKind::Read), ("write", IoKind::Write)] {
            for depth in [1u64, 32] {
                group.bench_function(format!("{name}/{op}/qd{depth}"), |b| {
                    b.iter_custom(|iters| run(bdev, kind, depth, iters))
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bdev_path);
criterion_main!(benches);

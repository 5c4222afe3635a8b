//! The raw bdev I/O path on one core: 4 KiB reads and writes through an
//! I/O channel to a malloc and a null bdev, and to raid0 and raid1 (with a
//! superblock and its write-intent bitmap) over two malloc legs, no
//! network; then raid0, raid5f and raid6 over four malloc legs with 4 KiB
//! random I/O and full-stripe writes. Criterion reports the time per I/O;
//! I/Os per second per core is its inverse.
//!
//!   cargo bench -p shoal-dataplane --bench bdev_path

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use shoal_dataplane::bdev::malloc::create_malloc;
use shoal_dataplane::bdev::null::create_null;
use shoal_dataplane::bdev::raid::superblock::RESERVED_BYTES;
use shoal_dataplane::bdev::raid::{RaidConfig, RaidLevel, create_raid};
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
    run_sized(bdev, kind, 1, depth, iters)
}

/// As [`run`], with I/Os of `blocks` blocks at offsets aligned to that.
fn run_sized(bdev: &Arc<Bdev>, kind: IoKind, blocks: u64, depth: u64, iters: u64) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let channel = bdev.channel();
        let mut lba = 0u64;
        let slots = bdev.num_blocks() / blocks;
        let mut next_lba = || {
            // A cheap scattered walk over the device.
            lba = (lba + 7919) % slots;
            lba * blocks
        };
        let started = Instant::now();
        let mut done = 0;
        while done < iters {
            let batch = depth.min(iters - done);
            let ios = (0..batch).map(|_| {
                let buf = IoBuf::new((blocks * u64::from(BLOCK)) as usize);
                let io = IoRequest::with_kind(kind, next_lba(), buf, BLOCK);
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

/// A raid of `level` over two fresh malloc legs (room for the superblock
/// area included, so every raid has the same 64 MiB of data).
fn raid(registry: &BdevRegistry, level: RaidLevel) -> Arc<Bdev> {
    raid_of(registry, level, 2)
}

/// Data legs of `level` over `legs` legs.
fn data_legs(level: RaidLevel, legs: u64) -> u64 {
    match level {
        RaidLevel::Raid1 => 1,
        RaidLevel::Raid5f => legs - 1,
        RaidLevel::Raid6 => legs - 2,
        _ => legs,
    }
}

fn raid_of(registry: &BdevRegistry, level: RaidLevel, count: u64) -> Arc<Bdev> {
    let legs: Vec<String> = (0..count)
        .map(|i| format!("{}x{count}-leg{i}", level.name()))
        .collect();
    let superblock = level.is_redundant();
    let data = BLOCKS.div_ceil(data_legs(level, count));
    let leg_blocks = if superblock {
        data + RESERVED_BYTES / u64::from(BLOCK)
    } else {
        data
    };
    for name in &legs {
        let mut leg = spec(name);
        leg.num_blocks = leg_blocks;
        create_malloc(registry, leg).unwrap();
    }
    let config = RaidConfig {
        name: format!("{}x{count}", level.name()),
        level,
        strip_size_kb: if level == RaidLevel::Raid1 { 0 } else { 64 },
        base_bdevs: legs,
        uuid: None,
        superblock,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new()
        .block_on(&runtime, create_raid(registry, config))
        .unwrap()
}

fn bdev_path(c: &mut Criterion) {
    let registry = BdevRegistry::new();
    let malloc = create_malloc(&registry, spec("malloc0")).unwrap();
    let null = create_null(&registry, spec("null0")).unwrap();
    let raid0 = raid(&registry, RaidLevel::Raid0);
    let raid1 = raid(&registry, RaidLevel::Raid1);
    let mut group = c.benchmark_group("bdev_4k");
    group.throughput(Throughput::Elements(1));
    for (name, bdev) in [
        ("malloc", &malloc),
        ("null", &null),
        ("raid0", &raid0),
        ("raid1", &raid1),
    ] {
        for (op, kind) in [("read", IoKind::Read), ("write", IoKind::Write)] {
            for depth in [1u64, 32] {
                group.bench_function(format!("{name}/{op}/qd{depth}"), |b| {
                    b.iter_custom(|iters| run(bdev, kind, depth, iters))
                });
            }
        }
    }
    group.finish();

    // Four legs, 64 KiB strips: what parity costs against striping.
    let striped = [RaidLevel::Raid0, RaidLevel::Raid5f, RaidLevel::Raid6]
        .map(|level| (level, raid_of(&registry, level, 4)));
    let mut group = c.benchmark_group("stripe4_4k");
    group.throughput(Throughput::Elements(1));
    for (level, bdev) in &striped {
        for (op, kind) in [("read", IoKind::Read), ("write", IoKind::Write)] {
            group.bench_function(format!("{}/{op}/qd32", level.name()), |b| {
                b.iter_custom(|iters| run(bdev, kind, 32, iters))
            });
        }
    }
    group.finish();
    let mut group = c.benchmark_group("stripe4_full_stripe_write");
    for (level, bdev) in &striped {
        let stripe_blocks = 64 * 1024 / u64::from(BLOCK) * data_legs(*level, 4);
        group.throughput(Throughput::Bytes(stripe_blocks * u64::from(BLOCK)));
        group.bench_function(format!("{}/qd4", level.name()), |b| {
            b.iter_custom(|iters| run_sized(bdev, IoKind::Write, stripe_blocks, 4, iters))
        });
    }
    group.finish();
}

criterion_group!(benches, bdev_path);
criterion_main!(benches);

//! The raid5f/raid6 erasure code on one core: encoding a full stripe and
//! rebuilding one or two lost data strips, for 64 KiB and 128 KiB strips.
//! Throughput is the stripe's data bytes (data legs × strip), so the
//! figures read as full-stripe write and degraded read bandwidth per core
//! spent on the code alone.
//!
//!   cargo bench -p shoal-dataplane --bench erasure

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shoal_dataplane::bdev::raid::parity::StripeCode;

const KIB: usize = 1024;
const STRIP_SIZES: [usize; 2] = [64 * KIB, 128 * KIB];
/// (name, data legs, parity legs)
const GEOMETRIES: [(&str, usize, usize); 2] = [("raid6 4+2", 4, 2), ("raid5f 4+1", 4, 1)];

/// A full stripe, data then parity, with bytes that differ per strip.
fn stripe(code: &StripeCode, strip: usize) -> Vec<Vec<u8>> {
    let mut shards: Vec<Vec<u8>> = (0..code.total_shards())
        .map(|shard| {
            (0..strip)
                .map(|byte| (byte * 131 + shard * 7 + byte / 4099) as u8)
                .collect()
        })
        .collect();
    let (data, parity) = shards.split_at_mut(code.data_shards());
    let data: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let mut parity: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
    code.encode(&data, &mut parity).unwrap();
    shards
}

fn erasure(c: &mut Criterion) {
    for (name, data_legs, parity_legs) in GEOMETRIES {
        let code = StripeCode::new(data_legs, parity_legs).unwrap();
        let mut group = c.benchmark_group(name);
        for strip in STRIP_SIZES {
            let mut shards = stripe(&code, strip);
            let strip_kib = format!("{} KiB strips", strip / KIB);
            group.throughput(Throughput::Bytes((data_legs * strip) as u64));

            group.bench_function(BenchmarkId::new("encode", &strip_kib), |b| {
                let (data, parity) = shards.split_at_mut(data_legs);
                let data: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
                let mut parity: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
                b.iter(|| code.encode(black_box(&data), &mut parity).unwrap());
            });

            for lost in 1..=parity_legs {
                let label = format!("reconstruct {lost} lost data");
                group.bench_function(BenchmarkId::new(label, &strip_kib), |b| {
                    // The first `lost` data strips are rebuilt in place on
                    // every iteration; their old contents are ignored.
                    let mut present = vec![true; code.total_shards()];
                    present[..lost].fill(false);
                    let mut refs: Vec<&mut [u8]> =
                        shards.iter_mut().map(Vec::as_mut_slice).collect();
                    b.iter(|| code.reconstruct(&mut refs, black_box(&present)).unwrap());
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, erasure);
criterion_main!(benches);

//! raid5f and raid6 against a model of the volume: partial and full-stripe
//! writes, degraded reads and writes, rebuild, reassembly and the parity
//! check, on malloc legs.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::superblock::RESERVED_BYTES;
use super::{RaidConfig, RaidLevel, Redundant, create_raid};
use crate::bdev::channel::{release_channel, submit};
use crate::bdev::malloc::create_malloc;
use crate::bdev::testing::block_on;
use crate::bdev::{Bdev, BdevRegistry, BdevSpec, IoBuf, IoRequest};

pub(super) const BS: u32 = 512;
/// 2 MiB of data per leg: two 1 MiB bitmap regions.
pub(super) const LEG_DATA_BLOCKS: u64 = 4096;
pub(super) const STRIP_KB: u32 = 16;
pub(super) const STRIP_BLOCKS: u64 = STRIP_KB as u64 * 1024 / BS as u64;

pub(super) fn leg(registry: &BdevRegistry, name: &str) -> Arc<Bdev> {
    let spec = BdevSpec {
        name: name.into(),
        uuid: None,
        block_size: BS,
        num_blocks: RESERVED_BYTES / u64::from(BS) + LEG_DATA_BLOCKS,
    };
    create_malloc(registry, spec).unwrap()
}

pub(super) fn config(level: RaidLevel, legs: &[&str], uuid: Uuid) -> RaidConfig {
    RaidConfig {
        name: "md".into(),
        level,
        strip_size_kb: STRIP_KB,
        base_bdevs: legs.iter().map(|s| s.to_string()).collect(),
        uuid: Some(uuid),
        superblock: true,
    }
}

/// A small deterministic generator (xorshift64), so failures replay.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The volume as it must read, kept alongside the raid.
#[derive(Clone)]
pub(super) struct Model {
    pub(super) bytes: Vec<u8>,
}

impl Model {
    pub(super) fn new(blocks: u64) -> Self {
        Self {
            bytes: vec![0; (blocks * u64::from(BS)) as usize],
        }
    }

    fn blocks(&self) -> u64 {
        self.bytes.len() as u64 / u64::from(BS)
    }
}

pub(super) async fn write(
    raid: &Arc<Bdev>,
    model: &mut Model,
    offset: u64,
    blocks: u64,
    seed: u64,
) {
    let mut buf = IoBuf::new((blocks * u64::from(BS)) as usize);
    let mut rng = Rng(seed | 1);
    for byte in buf.as_mut_slice() {
        *byte = rng.next() as u8;
    }
    let at = (offset * u64::from(BS)) as usize;
    model.bytes[at..at + buf.len()].copy_from_slice(buf.as_slice());
    let done = submit(raid, IoRequest::write(offset, buf, BS)).await;
    assert_eq!(done.result, Ok(()), "write of {blocks} at {offset}");
}

async fn random_writes(raid: &Arc<Bdev>, model: &mut Model, rng: &mut Rng, count: usize) {
    let stripe = raid.num_blocks() / (LEG_DATA_BLOCKS / STRIP_BLOCKS);
    for _ in 0..count {
        // A mix of small unaligned writes, strip-sized ones and writes
        // across stripes (some of them full stripes).
        let blocks = match rng.below(4) {
            0 => 1 + rng.below(8),
            1 => STRIP_BLOCKS,
            2 => stripe,
            _ => 1 + rng.below(3 * stripe),
        };
        let offset = rng.below(model.blocks() - blocks);
        let offset = if rng.below(3) == 0 {
            offset - offset % stripe
        } else {
            offset
        };
        write(raid, model, offset, blocks, rng.next()).await;
    }
}

pub(super) async fn verify(raid: &Arc<Bdev>, model: &Model) {
    let done = submit(raid, IoRequest::read(0, IoBuf::new(model.bytes.len()), BS)).await;
    assert_eq!(done.result, Ok(()));
    let got = done.buf.unwrap();
    if let Some(at) = got
        .as_slice()
        .iter()
        .zip(&model.bytes)
        .position(|(a, b)| a != b)
    {
        panic!(
            "volume differs from the model at block {} ({})",
            at / BS as usize,
            info(raid)
        );
    }
}

pub(super) fn info(raid: &Arc<Bdev>) -> serde_json::Value {
    raid.describe()["driver_specific"]["raid"].clone()
}

fn redundant(raid: &Arc<Bdev>) -> Redundant<'_> {
    Redundant::of(raid).expect("a parity raid")
}

async fn settle(raid: &Arc<Bdev>) {
    for _ in 0..4000 {
        if info(raid)["process"].is_null() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if info(raid)["process"].is_null() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("raid process did not finish: {}", info(raid));
}

async fn check(raid: &Arc<Bdev>, repair: bool) -> serde_json::Value {
    settle(raid).await;
    redundant(raid).request_check(repair).unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    settle(raid).await;
    info(raid)["shoal"]["last_check"].clone()
}

pub(super) fn stop(registry: &BdevRegistry, raid: Arc<Bdev>) {
    let id = raid.id();
    drop(raid);
    registry.unregister("md", "raid").unwrap();
    release_channel(id);
}

pub(super) fn names(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("leg{i}")).collect()
}

pub(super) fn refs(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

/// Writes, then loses `lose` legs, reads and writes degraded, brings them
/// back (rebuilt from the survivors), and checks the parity.
fn survives_losing(level: RaidLevel, legs: usize, lose: &[usize]) {
    let registry = BdevRegistry::new();
    let names = names(legs);
    for name in &names {
        leg(&registry, name);
    }
    let mut rng = Rng(0x5eed ^ legs as u64);
    block_on(async {
        let raid = create_raid(&registry, config(level, &refs(&names), Uuid::new_v4()))
            .await
            .unwrap();
        let data_legs = legs - if level == RaidLevel::Raid6 { 2 } else { 1 };
        assert_eq!(raid.num_blocks(), LEG_DATA_BLOCKS * data_legs as u64);
        let mut model = Model::new(raid.num_blocks());
        random_writes(&raid, &mut model, &mut rng, 60).await;
        verify(&raid, &model).await;
        let report = check(&raid, false).await;
        assert_eq!(report["mismatched_blocks"], 0, "{report}");
        assert_eq!(report["finished"], true, "{report}");

        for &gone in lose {
            redundant(&raid)
                .remove_base_bdev(&names[gone])
                .await
                .unwrap();
        }
        assert_eq!(info(&raid)["shoal"]["degraded"], true);
        assert_eq!(info(&raid)["state"], "online");
        verify(&raid, &model).await;
        random_writes(&raid, &mut model, &mut rng, 60).await;
        verify(&raid, &model).await;
        // One more loss than the level tolerates is refused.
        let last = (0..legs).find(|l| !lose.contains(l)).unwrap();
        if lose.len() == info(&raid)["shoal"]["tolerated_failures"].as_u64().unwrap() as usize {
            assert!(
                redundant(&raid)
                    .remove_base_bdev(&names[last])
                    .await
                    .is_err()
            );
        }

        for &back in lose {
            redundant(&raid)
                .add_base_bdev(&registry, &names[back])
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        settle(&raid).await;
        let now = info(&raid);
        assert_eq!(now["shoal"]["degraded"], false, "{now}");
        assert_eq!(now["shoal"]["last_process"]["type"], "rebuild", "{now}");
        verify(&raid, &model).await;
        let report = check(&raid, false).await;
        assert_eq!(report["mismatched_blocks"], 0, "{report}");

        // Every leg now carries its share: lose the others instead.
        let others: Vec<usize> = (0..legs)
            .filter(|l| !lose.contains(l))
            .take(lose.len())
            .collect();
        for &gone in &others {
            redundant(&raid)
                .remove_base_bdev(&names[gone])
                .await
                .unwrap();
        }
        verify(&raid, &model).await;
    });
}

#[test]
fn raid5f_survives_a_lost_leg_and_rebuilds_it() {
    survives_losing(RaidLevel::Raid5f, 4, &[1]);
}

#[test]
fn raid6_survives_two_lost_legs_and_rebuilds_them() {
    survives_losing(RaidLevel::Raid6, 5, &[0, 3]);
}

#[test]
fn raid6_on_four_legs_survives_two_lost_legs() {
    survives_losing(RaidLevel::Raid6, 4, &[2, 3]);
}

#[test]
fn a_parity_raid_reassembles_with_a_leg_missing_and_rebuilds_a_new_member() {
    let registry = BdevRegistry::new();
    let names = names(5);
    for name in &names {
        leg(&registry, name);
    }
    let uuid = Uuid::new_v4();
    let mut rng = Rng(77);
    block_on(async {
        let raid = create_raid(&registry, config(RaidLevel::Raid6, &refs(&names), uuid))
            .await
            .unwrap();
        let mut model = Model::new(raid.num_blocks());
        random_writes(&raid, &mut model, &mut rng, 40).await;
        stop(&registry, raid);
        // leg2 is gone for good; the array assembles without it.
        registry.unregister("leg2", "malloc").unwrap();
        let raid = create_raid(&registry, config(RaidLevel::Raid6, &refs(&names), uuid))
            .await
            .unwrap();
        let now = info(&raid);
        assert_eq!(now["shoal"]["legs"][2]["state"], "missing", "{now}");
        verify(&raid, &model).await;
        random_writes(&raid, &mut model, &mut rng, 40).await;
        verify(&raid, &model).await;
        // A replacement is rebuilt whole.
        leg(&registry, "spare");
        redundant(&raid)
            .add_base_bdev(&registry, "spare")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        settle(&raid).await;
        let now = info(&raid);
        assert_eq!(now["shoal"]["legs"][2]["name"], "spare", "{now}");
        assert_eq!(now["shoal"]["legs"][2]["state"], "online", "{now}");
        verify(&raid, &model).await;
        let report = check(&raid, false).await;
        assert_eq!(report["mismatched_blocks"], 0, "{report}");
    });
}

#[test]
fn the_check_finds_and_repairs_corrupt_parity() {
    let registry = BdevRegistry::new();
    let names = names(3);
    let legs: Vec<Arc<Bdev>> = names.iter().map(|n| leg(&registry, n)).collect();
    let mut rng = Rng(9);
    block_on(async {
        let raid = create_raid(
            &registry,
            config(RaidLevel::Raid5f, &refs(&names), Uuid::new_v4()),
        )
        .await
        .unwrap();
        let mut model = Model::new(raid.num_blocks());
        write(&raid, &mut model, 0, raid.num_blocks(), rng.next()).await;
        // Corrupt three blocks of stripe 0's parity strip, behind the
        // raid's back (the raid's claim does not stop a direct write).
        let parity_leg = &legs[2];
        let reserved = RESERVED_BYTES / u64::from(BS);
        let junk = IoBuf::from_slice(&vec![0xa5; 3 * BS as usize]);
        let done =
            crate::bdev::channel::submit(parity_leg, IoRequest::write(reserved + 5, junk, BS))
                .await;
        assert_eq!(done.result, Ok(()));
        let report = check(&raid, false).await;
        assert_eq!(report["mismatched_blocks"], 3, "{report}");
        let report = check(&raid, true).await;
        assert_eq!(report["repaired"], true, "{report}");
        let report = check(&raid, false).await;
        assert_eq!(report["mismatched_blocks"], 0, "{report}");
        verify(&raid, &model).await;
    });
}

#[test]
fn bad_parity_configurations_are_refused() {
    let registry = BdevRegistry::new();
    let names = names(4);
    for name in &names {
        leg(&registry, name);
    }
    block_on(async {
        let mut too_few = config(RaidLevel::Raid6, &refs(&names[..3]), Uuid::new_v4());
        assert!(create_raid(&registry, too_few.clone()).await.is_err());
        too_few.level = RaidLevel::Raid5f;
        too_few.strip_size_kb = 3;
        assert!(create_raid(&registry, too_few.clone()).await.is_err());
        too_few.strip_size_kb = 16;
        too_few.superblock = false;
        assert!(create_raid(&registry, too_few).await.is_err());
        // Nothing stayed claimed.
        let ok = create_raid(
            &registry,
            config(RaidLevel::Raid5f, &refs(&names), Uuid::new_v4()),
        )
        .await;
        assert!(ok.is_ok());
    });
}

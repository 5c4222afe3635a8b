//! The write-hole journal against crashes made by hand: the legs are left
//! as a crash in the middle of a partial-stripe write would leave them,
//! then the array is assembled again (degraded, so a wrong parity would
//! rebuild an untouched strip wrong) and read against the model.

use std::sync::Arc;

use uuid::Uuid;

use super::journal::{JOURNAL_BYTES, JOURNAL_OFFSET_BYTES};
use super::parity_map::ParityMap;
use super::stripe_tests::{
    BS, Model, Rng, STRIP_BLOCKS, config, leg, names, refs, stop, verify, write,
};
use super::superblock::RESERVED_BYTES;
use super::{RaidLevel, create_raid};
use crate::bdev::channel::submit;
use crate::bdev::testing::block_on;
use crate::bdev::{Bdev, BdevRegistry, IoBuf, IoRequest};

const RESERVED_BLOCKS: u64 = RESERVED_BYTES / BS as u64;

/// Where a partial write lands: blocks 4..12 of stripe 0's first data
/// strip; the rest of the stripe is not written.
const AT: u64 = 4;
const BLOCKS: u64 = 8;

async fn raw_read(leg: &Arc<Bdev>, offset: u64, blocks: u64) -> Vec<u8> {
    let buf = IoBuf::new((blocks * u64::from(BS)) as usize);
    let done = submit(leg, IoRequest::read(offset, buf, BS)).await;
    assert_eq!(done.result, Ok(()));
    done.buf.unwrap().as_slice().to_vec()
}

/// Writes behind the raid's back (its claim does not stop a direct write).
async fn raw_write(leg: &Arc<Bdev>, offset: u64, bytes: &[u8]) {
    let done = submit(leg, IoRequest::write(offset, IoBuf::from_slice(bytes), BS)).await;
    assert_eq!(done.result, Ok(()));
}

struct Crash {
    registry: BdevRegistry,
    names: Vec<String>,
    legs: Vec<Arc<Bdev>>,
    map: ParityMap,
    level: RaidLevel,
    uuid: Uuid,
}

impl Crash {
    fn new(level: RaidLevel, count: usize) -> Self {
        let registry = BdevRegistry::new();
        let names = names(count);
        let legs = names.iter().map(|n| leg(&registry, n)).collect();
        let parity = if level == RaidLevel::Raid6 { 2 } else { 1 };
        Self {
            registry,
            names,
            legs,
            map: ParityMap::new(count, parity, STRIP_BLOCKS).unwrap(),
            level,
            uuid: Uuid::new_v4(),
        }
    }

    async fn assemble(&self) -> Arc<Bdev> {
        create_raid(
            &self.registry,
            config(self.level, &refs(&self.names), self.uuid),
        )
        .await
        .unwrap()
    }

    /// The legs' blocks under the partial write: data strip 0 at AT and
    /// every parity strip over the same range.
    fn touched(&self) -> Vec<usize> {
        let mut legs = vec![self.map.data_leg(0, 0)];
        legs.extend(self.map.parity_legs(0));
        legs
    }

    async fn snapshot(&self, leg: usize) -> Vec<u8> {
        raw_read(&self.legs[leg], RESERVED_BLOCKS + AT, BLOCKS).await
    }

    async fn put_back(&self, leg: usize, bytes: &[u8]) {
        raw_write(&self.legs[leg], RESERVED_BLOCKS + AT, bytes).await;
    }

    /// Takes `leg` out for good: the next assembly is degraded without it.
    fn lose(&self, leg: usize) {
        self.registry
            .unregister(&self.names[leg], "malloc")
            .unwrap();
    }
}

/// Fills the volume, makes one partial write, and hands back the model
/// before and after it with what the touched legs held before it.
async fn fill_then_partial_write(
    crash: &Crash,
    raid: &Arc<Bdev>,
) -> (Model, Model, Vec<(usize, Vec<u8>)>) {
    let mut rng = Rng(0xc4a5);
    let mut model = Model::new(raid.num_blocks());
    write(raid, &mut model, 0, raid.num_blocks(), rng.next()).await;
    let before = model.clone();
    let mut old = Vec::new();
    for leg in crash.touched() {
        old.push((leg, crash.snapshot(leg).await));
    }
    write(raid, &mut model, AT, BLOCKS, rng.next()).await;
    (before, model, old)
}

/// The crash came after the records and the parity were written but
/// before the data leg was: the replay finishes the write, so the strip
/// of a data leg that is then lost is rebuilt right.
fn torn_in_place_write_is_replayed(level: RaidLevel, legs: usize) {
    let crash = Crash::new(level, legs);
    block_on(async {
        let raid = crash.assemble().await;
        let (_, after, old) = fill_then_partial_write(&crash, &raid).await;
        stop(&crash.registry, raid);
        let (data_leg, data_before) = &old[0];
        crash.put_back(*data_leg, data_before).await;
        // Every data leg the write did not touch is lost, as far as the
        // level allows.
        let untouched: Vec<usize> = (1..crash.map.data_legs())
            .map(|i| crash.map.data_leg(0, i))
            .take(crash.map.parity_legs_per_stripe())
            .collect();
        for &leg in &untouched {
            crash.lose(leg);
        }
        let raid = crash.assemble().await;
        verify(&raid, &after).await;
    });
}

#[test]
fn raid5f_replays_a_write_torn_between_its_legs() {
    torn_in_place_write_is_replayed(RaidLevel::Raid5f, 3);
}

#[test]
fn raid6_replays_a_write_torn_between_its_legs() {
    torn_in_place_write_is_replayed(RaidLevel::Raid6, 5);
}

/// The crash came while the records were written: one participant has
/// none, so no in-place write had started. The record is not replayed
/// (the parity alone would then disagree with the data).
#[test]
fn a_record_one_leg_lacks_is_not_replayed() {
    let crash = Crash::new(RaidLevel::Raid5f, 3);
    block_on(async {
        let raid = crash.assemble().await;
        let (before, _, old) = fill_then_partial_write(&crash, &raid).await;
        stop(&crash.registry, raid);
        for (leg, bytes) in &old {
            crash.put_back(*leg, bytes).await;
        }
        let (data_leg, _) = old[0];
        let wiped = vec![0u8; JOURNAL_BYTES as usize];
        raw_write(
            &crash.legs[data_leg],
            JOURNAL_OFFSET_BYTES / u64::from(BS),
            &wiped,
        )
        .await;
        crash.lose(crash.map.data_leg(0, 1));
        let raid = crash.assemble().await;
        verify(&raid, &before).await;
    });
}

/// A full-stripe write over a stripe whose partial write is still in the
/// journal is journaled too: replaying the older record alone would undo
/// it.
#[test]
fn a_full_stripe_write_after_a_partial_one_is_not_undone_by_the_replay() {
    let crash = Crash::new(RaidLevel::Raid5f, 3);
    block_on(async {
        let raid = crash.assemble().await;
        let (_, mut model, _) = fill_then_partial_write(&crash, &raid).await;
        let stripe = crash.map.stripe_blocks();
        write(&raid, &mut model, 0, stripe, 0x5717).await;
        stop(&crash.registry, raid);
        let raid = crash.assemble().await;
        verify(&raid, &model).await;
        stop(&crash.registry, raid);
        // And again, now that the replay retired the slots.
        let raid = crash.assemble().await;
        verify(&raid, &model).await;
    });
}

//! raid1 and raid10 with superblocks: reassembly, stale legs, the bitmap,
//! rebuild, resync and check, on malloc legs.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::mirror::{self, MirrorRaid};
use super::process;
use super::superblock::RESERVED_BYTES;
use super::{RaidConfig, RaidLevel, create_raid};
use crate::bdev::channel::{release_channel, submit};
use crate::bdev::malloc::create_malloc;
use crate::bdev::testing::block_on;
use crate::bdev::{Bdev, BdevRegistry, BdevSpec, IoBuf, IoRequest};

const BS: u32 = 512;
/// 4 MiB of data per leg: four 1 MiB bitmap regions.
const DATA_BLOCKS: u64 = 8192;
const RESERVED_BLOCKS: u64 = RESERVED_BYTES / BS as u64;

fn leg(registry: &BdevRegistry, name: &str) -> Arc<Bdev> {
    let spec = BdevSpec {
        name: name.into(),
        uuid: None,
        block_size: BS,
        num_blocks: RESERVED_BLOCKS + DATA_BLOCKS,
    };
    create_malloc(registry, spec).unwrap()
}

fn config(level: RaidLevel, legs: &[&str], uuid: Uuid) -> RaidConfig {
    RaidConfig {
        name: "md".into(),
        level,
        strip_size_kb: if level == RaidLevel::Raid10 { 64 } else { 0 },
        base_bdevs: legs.iter().map(|s| s.to_string()).collect(),
        uuid: Some(uuid),
        superblock: true,
    }
}

/// Block `i` of a volume filled with `seed + i`.
fn pattern(blocks: u64, seed: u8) -> IoBuf {
    let mut buf = IoBuf::new(blocks as usize * BS as usize);
    for (i, block) in buf.as_mut_slice().chunks_mut(BS as usize).enumerate() {
        block.fill(seed.wrapping_add(i as u8));
    }
    buf
}

async fn write(bdev: &Arc<Bdev>, offset: u64, data: IoBuf) {
    let done = submit(bdev, IoRequest::write(offset, data, BS)).await;
    assert_eq!(done.result, Ok(()));
}

async fn read(bdev: &Arc<Bdev>, offset: u64, blocks: u64) -> Vec<u8> {
    let done = submit(
        bdev,
        IoRequest::read(offset, IoBuf::new((blocks * BS as u64) as usize), BS),
    )
    .await;
    assert_eq!(done.result, Ok(()));
    done.buf.unwrap().as_slice().to_vec()
}

fn info(raid: &Arc<Bdev>) -> serde_json::Value {
    raid.describe()["driver_specific"]["raid"].clone()
}

fn mirror_of(raid: &Arc<Bdev>) -> &MirrorRaid {
    raid.backend()
        .as_any()
        .and_then(|a| a.downcast_ref::<MirrorRaid>())
        .unwrap()
}

/// Waits until no process runs (bounded).
async fn settle(raid: &Arc<Bdev>) {
    for _ in 0..2000 {
        if !mirror_of(raid).state.process.is_running() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("raid process did not finish: {}", info(raid));
}

fn stop(registry: &BdevRegistry, raid: Arc<Bdev>) {
    let id = raid.id();
    drop(raid);
    registry.unregister("md", "raid").unwrap();
    release_channel(id);
}

async fn check(raid: &Arc<Bdev>, repair: bool) -> serde_json::Value {
    process::request_check(&mirror_of(raid).state, repair).unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    settle(raid).await;
    info(raid)["shoal"]["last_check"].clone()
}

#[test]
fn a_raid1_with_a_superblock_reassembles_with_its_data() {
    let registry = BdevRegistry::new();
    leg(&registry, "a");
    leg(&registry, "b");
    let uuid = Uuid::new_v4();
    block_on(async {
        let raid = create_raid(&registry, config(RaidLevel::Raid1, &["a", "b"], uuid))
            .await
            .unwrap();
        assert_eq!(raid.num_blocks(), DATA_BLOCKS);
        assert_eq!(raid.uuid(), uuid);
        write(&raid, 0, pattern(DATA_BLOCKS, 1)).await;
        stop(&registry, raid);
        let raid = create_raid(&registry, config(RaidLevel::Raid1, &["a", "b"], uuid))
            .await
            .unwrap();
        let info = info(&raid);
        assert_eq!(info["state"], "online");
        assert_eq!(info["superblock"], true);
        assert_eq!(info["shoal"]["degraded"], false);
        assert_eq!(
            read(&raid, 0, DATA_BLOCKS).await,
            pattern(DATA_BLOCKS, 1).as_slice()
        );
        // The unclean stop left the written regions dirty: resynced.
        settle(&raid).await;
        let report = check(&raid, false).await;
        assert_eq!(report["mismatched_blocks"], 0, "{report}");
        assert_eq!(report["checked_blocks"], DATA_BLOCKS);
    });
}

#[test]
fn a_returning_leg_resyncs_only_the_regions_written_while_it_was_away() {
    let registry = BdevRegistry::new();
    leg(&registry, "a");
    let b = leg(&registry, "b");
    block_on(async {
        let raid = create_raid(
            &registry,
            config(RaidLevel::Raid1, &["a", "b"], Uuid::new_v4()),
        )
        .await
        .unwrap();
        write(&raid, 0, pattern(DATA_BLOCKS, 1)).await;
        // Let the cleaner clear the bitmap (two sweeps).
        tokio::time::sleep(process::SWEEP_INTERVAL * 3).await;
        assert_eq!(info(&raid)["shoal"]["dirty_regions"], 0, "{}", info(&raid));

        mirror::remove_base_bdev(mirror_of(&raid), "b")
            .await
            .unwrap();
        assert_eq!(info(&raid)["shoal"]["degraded"], true);
        // One region written while b is away.
        write(&raid, 2048 + 10, pattern(100, 7)).await;
        assert_eq!(info(&raid)["shoal"]["dirty_regions"], 1);
        assert!(b.claimed_by().is_none());

        mirror::add_base_bdev(mirror_of(&raid), &registry, "b")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        settle(&raid).await;
        let info_now = info(&raid);
        assert_eq!(info_now["shoal"]["degraded"], false, "{info_now}");
        // The rebuild covered the one dirty 1 MiB region, not all four.
        let last = info_now["shoal"]["last_process"].clone();
        assert_eq!(last["type"], "rebuild", "{last}");
        assert_eq!(last["blocks"], 2048);
        assert_eq!(last["finished"], true);
        let report = check(&raid, false).await;
        assert_eq!(report["mismatched_blocks"], 0, "{report}");
    });
}

#[test]
fn a_stale_leg_is_never_read_after_reassembly() {
    let registry = BdevRegistry::new();
    leg(&registry, "a");
    leg(&registry, "b");
    let uuid = Uuid::new_v4();
    block_on(async {
        let raid = create_raid(&registry, config(RaidLevel::Raid1, &["a", "b"], uuid))
            .await
            .unwrap();
        write(&raid, 0, pattern(DATA_BLOCKS, 1)).await;
        // b leaves; a gets new data and a newer superblock.
        mirror::remove_base_bdev(mirror_of(&raid), "b")
            .await
            .unwrap();
        write(&raid, 0, pattern(DATA_BLOCKS, 50)).await;
        stop(&registry, raid);
        // b's own superblock still says "all online"; a's newer one wins.
        let raid = create_raid(&registry, config(RaidLevel::Raid1, &["a", "b"], uuid))
            .await
            .unwrap();
        let legs = info(&raid)["shoal"]["legs"].clone();
        assert_eq!(legs[1]["state"], "rebuilding", "{legs}");
        for _ in 0..8 {
            assert_eq!(
                read(&raid, 0, DATA_BLOCKS).await,
                pattern(DATA_BLOCKS, 50).as_slice()
            );
        }
        settle(&raid).await;
        assert_eq!(info(&raid)["shoal"]["degraded"], false);
        let report = check(&raid, false).await;
        assert_eq!(report["mismatched_blocks"], 0, "{report}");
    });
}

#[test]
fn a_missing_leg_is_allowed_and_a_new_member_is_rebuilt_whole() {
    let registry = BdevRegistry::new();
    leg(&registry, "a");
    block_on(async {
        let raid = create_raid(
            &registry,
            config(RaidLevel::Raid1, &["a", "later"], Uuid::new_v4()),
        )
        .await
        .unwrap();
        let info_now = info(&raid);
        assert_eq!(info_now["shoal"]["legs"][1]["state"], "missing");
        assert_eq!(info_now["num_base_bdevs_discovered"], 1);
        write(&raid, 0, pattern(DATA_BLOCKS, 3)).await;
        leg(&registry, "c");
        mirror::add_base_bdev(mirror_of(&raid), &registry, "c")
            .await
            .unwrap();
        settle(&raid).await;
        let info_now = info(&raid);
        assert_eq!(info_now["shoal"]["legs"][1]["name"], "c");
        assert_eq!(info_now["shoal"]["legs"][1]["state"], "online");
        let report = check(&raid, false).await;
        assert_eq!(report["mismatched_blocks"], 0, "{report}");
    });
    // Both legs missing cannot be assembled.
    let registry = BdevRegistry::new();
    block_on(async {
        let refused = create_raid(
            &registry,
            config(RaidLevel::Raid1, &["x", "y"], Uuid::new_v4()),
        )
        .await;
        assert!(refused.is_err());
    });
}

#[test]
fn check_counts_mismatched_blocks_and_repair_fixes_them() {
    let registry = BdevRegistry::new();
    leg(&registry, "a");
    let b = leg(&registry, "b");
    block_on(async {
        let raid = create_raid(
            &registry,
            config(RaidLevel::Raid1, &["a", "b"], Uuid::new_v4()),
        )
        .await
        .unwrap();
        write(&raid, 0, pattern(DATA_BLOCKS, 9)).await;
        // Corrupt three blocks of b behind the raid's back.
        let garbage = IoBuf::from_slice(&[0xEE; 3 * BS as usize]);
        let done = submit(&b, IoRequest::write(RESERVED_BLOCKS + 100, garbage, BS)).await;
        assert_eq!(done.result, Ok(()));
        let report = check(&raid, false).await;
        assert_eq!(report["mismatched_blocks"], 3, "{report}");
        assert_eq!(report["finished"], true);
        assert_eq!(report["sequence"], 1);
        let report = check(&raid, true).await;
        assert_eq!(report["repaired"], true);
        assert_eq!(report["sequence"], 2);
        let report = check(&raid, false).await;
        assert_eq!(report["mismatched_blocks"], 0, "{report}");
        // Each ended check is told apart from the last, even with the
        // same counts.
        let again = check(&raid, false).await;
        assert_eq!(again["sequence"], 4, "{again}");
        assert_eq!(again["checked_blocks"], report["checked_blocks"]);
    });
}

#[test]
fn raid10_stripes_over_mirror_pairs_and_survives_one_leg_per_pair() {
    let registry = BdevRegistry::new();
    for name in ["a", "b", "c", "d"] {
        leg(&registry, name);
    }
    block_on(async {
        let raid = create_raid(
            &registry,
            config(RaidLevel::Raid10, &["a", "b", "c", "d"], Uuid::new_v4()),
        )
        .await
        .unwrap();
        assert_eq!(raid.num_blocks(), 2 * DATA_BLOCKS);
        write(&raid, 0, pattern(2 * DATA_BLOCKS, 5)).await;
        mirror::remove_base_bdev(mirror_of(&raid), "a")
            .await
            .unwrap();
        mirror::remove_base_bdev(mirror_of(&raid), "d")
            .await
            .unwrap();
        // The last mirror of a pair cannot go.
        assert!(
            mirror::remove_base_bdev(mirror_of(&raid), "b")
                .await
                .is_err()
        );
        assert_eq!(
            read(&raid, 0, 2 * DATA_BLOCKS).await,
            pattern(2 * DATA_BLOCKS, 5).as_slice()
        );
        write(&raid, 100, pattern(300, 77)).await;
        mirror::add_base_bdev(mirror_of(&raid), &registry, "a")
            .await
            .unwrap();
        mirror::add_base_bdev(mirror_of(&raid), &registry, "d")
            .await
            .unwrap();
        settle(&raid).await;
        assert_eq!(info(&raid)["shoal"]["degraded"], false, "{}", info(&raid));
        let report = check(&raid, false).await;
        assert_eq!(report["mismatched_blocks"], 0, "{report}");
    });
}

#[test]
fn regions_dirty_at_an_unclean_stop_read_one_leg_until_resynced() {
    let registry = BdevRegistry::new();
    leg(&registry, "a");
    let b = leg(&registry, "b");
    let uuid = Uuid::new_v4();
    block_on(async {
        let raid = create_raid(&registry, config(RaidLevel::Raid1, &["a", "b"], uuid))
            .await
            .unwrap();
        write(&raid, 0, pattern(16, 1)).await;
        stop(&registry, raid);
        // A torn mirror: the write reached a but not b.
        let torn = IoBuf::from_slice(&[0x55; 16 * BS as usize]);
        assert_eq!(
            submit(&b, IoRequest::write(RESERVED_BLOCKS, torn, BS))
                .await
                .result,
            Ok(())
        );
        let raid = create_raid(&registry, config(RaidLevel::Raid1, &["a", "b"], uuid))
            .await
            .unwrap();
        // Every read agrees (leg a), before and after the resync.
        for _ in 0..4 {
            assert_eq!(read(&raid, 0, 16).await, pattern(16, 1).as_slice());
        }
        settle(&raid).await;
        let report = check(&raid, false).await;
        assert_eq!(report["mismatched_blocks"], 0, "{report}");
        assert_eq!(read(&raid, 0, 16).await, pattern(16, 1).as_slice());
    });
}

#[test]
fn geometry_mismatches_are_refused_without_claiming() {
    let registry = BdevRegistry::new();
    leg(&registry, "a");
    leg(&registry, "b");
    leg(&registry, "c");
    let uuid = Uuid::new_v4();
    block_on(async {
        let raid = create_raid(&registry, config(RaidLevel::Raid1, &["a", "b"], uuid))
            .await
            .unwrap();
        stop(&registry, raid);
        let three = create_raid(&registry, config(RaidLevel::Raid1, &["a", "b", "c"], uuid)).await;
        assert!(three.is_err());
        let odd = create_raid(
            &registry,
            config(RaidLevel::Raid10, &["a", "b", "c"], Uuid::new_v4()),
        )
        .await;
        assert!(odd.is_err());
        assert!(registry.list().iter().all(|b| b.claimed_by().is_none()));
    });
}

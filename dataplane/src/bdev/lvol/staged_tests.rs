//! The staged device against a real (malloc) base: what a store commits
//! through it and replays is what a store opened from the base finds.

use std::sync::Arc;

use super::format::DEFAULT_CLUSTER_BYTES;
use super::staged::{self, MetaOp, StagedDevice, metadata_blocks};
use super::store::{LvolStore, StoreOptions};
use crate::bdev::malloc::create_malloc;
use crate::bdev::testing::block_on;
use crate::bdev::{Bdev, BdevRegistry, BdevSpec};

fn base(block_size: u32, bytes: u64) -> Arc<Bdev> {
    let registry = BdevRegistry::new();
    create_malloc(
        &registry,
        BdevSpec {
            name: "base".into(),
            uuid: None,
            block_size,
            num_blocks: bytes / u64::from(block_size),
        },
    )
    .unwrap()
}

#[test]
fn a_store_committed_through_the_staged_device_opens_from_the_base() {
    for block_size in [512, 4096] {
        let base = base(block_size, 64 * DEFAULT_CLUSTER_BYTES);
        block_on(async {
            let channel = base.channel();
            let mut store = LvolStore::format(
                StagedDevice::empty(metadata_blocks(&channel)),
                StoreOptions::new("lvs0"),
            )
            .unwrap();
            let ops = store.device_mut().take();
            assert_eq!(ops.last(), Some(&MetaOp::Flush), "a commit ends durable");
            staged::replay(&channel, ops).await.unwrap();
            let thin = store.create_lvol("thin", 10, true).unwrap();
            let thick = store.create_lvol("thick", 5, false).unwrap();
            let snapshot = store.snapshot(thin, "snap").unwrap();
            staged::replay(&channel, store.device_mut().take())
                .await
                .unwrap();

            let opened = LvolStore::open(staged::load(&channel).await.unwrap()).unwrap();
            assert_eq!(opened.generation(), store.generation());
            assert_eq!(opened.free_clusters(), store.free_clusters());
            for uuid in [thin, thick, snapshot] {
                assert_eq!(opened.get(uuid), store.get(uuid), "block size {block_size}");
            }
        });
    }
}

#[test]
fn changes_not_replayed_are_not_on_the_base() {
    let base = base(4096, 16 * DEFAULT_CLUSTER_BYTES);
    block_on(async {
        let channel = base.channel();
        let mut store = staged::format(&channel, StoreOptions::new("lvs0"))
            .await
            .unwrap();
        let kept = store.create_lvol("kept", 2, true).unwrap();
        staged::replay(&channel, store.device_mut().take())
            .await
            .unwrap();
        store.create_lvol("lost", 2, true).unwrap();
        // Only the pages of the second change reach the base, not its
        // super block: the previous generation stays the newest.
        let ops = store.device_mut().take();
        let pages: Vec<_> = ops
            .iter()
            .take_while(|op| **op != MetaOp::Flush)
            .cloned()
            .collect();
        staged::replay(&channel, pages).await.unwrap();

        let opened = LvolStore::open(staged::load(&channel).await.unwrap()).unwrap();
        assert_eq!(opened.generation(), store.generation() - 1);
        assert!(opened.get(kept).is_some());
        assert!(opened.find("lost").is_none());
    });
}

#[test]
fn a_base_without_a_store_is_refused_on_open() {
    let base = base(4096, 16 * DEFAULT_CLUSTER_BYTES);
    block_on(async {
        let device = staged::load(&base.channel()).await.unwrap();
        assert!(LvolStore::open(device).is_err());
    });
}

#[test]
fn only_blocks_that_divide_a_metadata_block_are_supported() {
    assert_eq!(staged::base_blocks_per_metadata_block(512), Some(8));
    assert_eq!(staged::base_blocks_per_metadata_block(4096), Some(1));
    assert_eq!(staged::base_blocks_per_metadata_block(8192), None);
}

//! The lvol bdev on a malloc base: thin reads and first writes, copy on
//! write under a snapshot, clones, a full store, and a reopen.

use std::sync::Arc;

use super::format::MIN_CLUSTER_BYTES;
use super::store::StoreOptions;
use super::vbdev::{LvolBdev, Lvs};
use crate::bdev::malloc::create_malloc;
use crate::bdev::testing::block_on;
use crate::bdev::{Bdev, BdevRegistry, BdevSpec, IoBuf, IoError, IoKind, IoRequest};

const BS: u32 = 512;
const CLUSTER: u64 = MIN_CLUSTER_BYTES;
const CLUSTER_BLOCKS: u64 = CLUSTER / BS as u64;

struct Fixture {
    registry: BdevRegistry,
    base: Arc<Bdev>,
}

fn fixture(clusters: u64) -> Fixture {
    let registry = BdevRegistry::new();
    // Room for the metadata (two copies of 35+ pages) and `clusters`.
    let bytes = (clusters + 6) * CLUSTER;
    let base = create_malloc(
        &registry,
        BdevSpec {
            name: "base".into(),
            uuid: None,
            block_size: BS,
            num_blocks: bytes / u64::from(BS),
        },
    )
    .unwrap();
    Fixture { registry, base }
}

fn options() -> StoreOptions {
    StoreOptions {
        cluster_bytes: CLUSTER,
        ..StoreOptions::new("lvs0")
    }
}

impl Fixture {
    fn bdev(&self, lvs: &Arc<Lvs>, uuid: uuid::Uuid) -> Arc<Bdev> {
        let (read_only, blocks) = lvs.read(|s| {
            let l = s.get(uuid).unwrap();
            (l.record.read_only, l.record.size_clusters * CLUSTER_BLOCKS)
        });
        self.registry
            .register(
                BdevSpec {
                    name: uuid.to_string(),
                    uuid: Some(uuid),
                    block_size: BS,
                    num_blocks: blocks,
                },
                Box::new(LvolBdev::new(Arc::clone(lvs), uuid, read_only)),
            )
            .unwrap()
    }
}

async fn write(bdev: &Arc<Bdev>, offset: u64, fill: u8, blocks: u64) -> Result<(), IoError> {
    let mut buf = IoBuf::new((blocks * u64::from(BS)) as usize);
    buf.as_mut_slice().fill(fill);
    bdev.channel()
        .submit(IoRequest::write(offset, buf, BS))
        .await
        .result
}

async fn read(bdev: &Arc<Bdev>, offset: u64, blocks: u64) -> Vec<u8> {
    let done = bdev
        .channel()
        .submit(IoRequest::read(
            offset,
            IoBuf::new((blocks * u64::from(BS)) as usize),
            BS,
        ))
        .await;
    done.result.unwrap();
    done.buf.unwrap().as_slice().to_vec()
}

#[test]
fn a_thin_lvol_reads_zeroes_and_allocates_on_first_write_only() {
    let f = fixture(8);
    block_on(async {
        // Stale bytes under the store must never show through.
        write(&f.base, 0, 0xee, f.base.num_blocks()).await.unwrap();
        let lvs = Lvs::create(Arc::clone(&f.base), options()).await.unwrap();
        let uuid = lvs
            .change(|s| s.create_lvol("thin", 4, true))
            .await
            .unwrap();
        let bdev = f.bdev(&lvs, uuid);
        assert!(
            read(&bdev, 0, 4 * CLUSTER_BLOCKS)
                .await
                .iter()
                .all(|b| *b == 0)
        );
        assert_eq!(lvs.read(|s| s.get(uuid).unwrap().allocated_clusters()), 0);

        // Straddles clusters 0 and 1; the rest of both clusters is zero.
        write(&bdev, CLUSTER_BLOCKS - 2, 0x5a, 4).await.unwrap();
        assert_eq!(lvs.read(|s| s.get(uuid).unwrap().allocated_clusters()), 2);
        let back = read(&bdev, 0, 2 * CLUSTER_BLOCKS).await;
        let start = (CLUSTER_BLOCKS as usize - 2) * BS as usize;
        for (i, byte) in back.iter().enumerate() {
            let want = if (start..start + 4 * BS as usize).contains(&i) {
                0x5a
            } else {
                0
            };
            assert_eq!(*byte, want, "byte {i}");
        }
        // A second write to an owned cluster allocates nothing.
        write(&bdev, 0, 0x11, 1).await.unwrap();
        assert_eq!(lvs.read(|s| s.get(uuid).unwrap().allocated_clusters()), 2);
    });
}

#[test]
fn a_snapshot_keeps_what_the_lvol_held_and_a_clone_reads_through_it() {
    let f = fixture(8);
    block_on(async {
        let lvs = Lvs::create(Arc::clone(&f.base), options()).await.unwrap();
        let origin = lvs.change(|s| s.create_lvol("vol", 2, true)).await.unwrap();
        let vol = f.bdev(&lvs, origin);
        write(&vol, 0, 0xaa, 2 * CLUSTER_BLOCKS).await.unwrap();

        let snapshot = lvs.snapshot(origin, "snap").await.unwrap();
        let snap = f.bdev(&lvs, snapshot);
        assert!(
            write(&snap, 0, 0, 1).await.is_err(),
            "a snapshot is read-only"
        );
        // Overwrite one block: its cluster is copied first.
        write(&vol, 3, 0xbb, 1).await.unwrap();
        let now = read(&vol, 0, CLUSTER_BLOCKS).await;
        let bs = BS as usize;
        assert!(now[..3 * bs].iter().all(|b| *b == 0xaa));
        assert!(now[3 * bs..4 * bs].iter().all(|b| *b == 0xbb));
        assert!(now[4 * bs..].iter().all(|b| *b == 0xaa));
        assert!(
            read(&snap, 0, 2 * CLUSTER_BLOCKS)
                .await
                .iter()
                .all(|b| *b == 0xaa)
        );

        let clone = lvs
            .change(|s| s.clone_snapshot(snapshot, "clone"))
            .await
            .unwrap();
        let cloned = f.bdev(&lvs, clone);
        assert!(
            read(&cloned, 0, 2 * CLUSTER_BLOCKS)
                .await
                .iter()
                .all(|b| *b == 0xaa)
        );
        write(&cloned, CLUSTER_BLOCKS, 0xcc, 1).await.unwrap();
        assert!(
            read(&snap, CLUSTER_BLOCKS, 1)
                .await
                .iter()
                .all(|b| *b == 0xaa)
        );
        assert!(
            read(&vol, CLUSTER_BLOCKS, 1)
                .await
                .iter()
                .all(|b| *b == 0xaa)
        );
    });
}

#[test]
fn a_full_store_fails_first_writes_with_no_space_and_keeps_what_was_written() {
    let f = fixture(2);
    block_on(async {
        let lvs = Lvs::create(Arc::clone(&f.base), options()).await.unwrap();
        let total = lvs.read(|s| s.geometry().total_clusters);
        let uuid = lvs
            .change(|s| s.create_lvol("big", total + 4, true))
            .await
            .unwrap();
        let bdev = f.bdev(&lvs, uuid);
        for cluster in 0..total {
            write(&bdev, cluster * CLUSTER_BLOCKS, cluster as u8 + 1, 1)
                .await
                .unwrap();
        }
        assert_eq!(
            write(&bdev, total * CLUSTER_BLOCKS, 9, 1).await,
            Err(IoError::NoSpace)
        );
        for cluster in 0..total {
            let back = read(&bdev, cluster * CLUSTER_BLOCKS, 1).await;
            assert!(back.iter().all(|b| *b == cluster as u8 + 1));
        }
    });
}

#[test]
fn what_was_written_is_there_after_the_store_is_opened_again() {
    let f = fixture(8);
    let uuid = block_on(async {
        let lvs = Lvs::create(Arc::clone(&f.base), options()).await.unwrap();
        let uuid = lvs.change(|s| s.create_lvol("vol", 4, true)).await.unwrap();
        let bdev = f.bdev(&lvs, uuid);
        write(&bdev, 5, 0x42, 3).await.unwrap();
        write(&bdev, 3 * CLUSTER_BLOCKS, 0x43, 1).await.unwrap();
        f.registry.unregister(&uuid.to_string(), "lvol").unwrap();
        lvs.close();
        uuid
    });
    block_on(async {
        let lvs = Lvs::open(Arc::clone(&f.base)).await.unwrap();
        assert_eq!(lvs.read(|s| s.get(uuid).unwrap().allocated_clusters()), 2);
        let bdev = f.bdev(&lvs, uuid);
        assert!(read(&bdev, 5, 3).await.iter().all(|b| *b == 0x42));
        assert!(
            read(&bdev, 3 * CLUSTER_BLOCKS, 1)
                .await
                .iter()
                .all(|b| *b == 0x43)
        );
        assert!(read(&bdev, CLUSTER_BLOCKS, 1).await.iter().all(|b| *b == 0));
    });
}

#[test]
fn a_base_another_bdev_holds_is_refused_untouched() {
    let f = fixture(4);
    block_on(async {
        write(&f.base, 0, 0x77, 64).await.unwrap();
        f.base.claim("raid0").unwrap();
        let refused = Lvs::create(Arc::clone(&f.base), options()).await;
        assert!(matches!(refused, Err(crate::bdev::BdevError::Busy { .. })));
        assert!(read(&f.base, 0, 64).await.iter().all(|b| *b == 0x77));
        f.base.release_claim();

        let lvs = Lvs::create(Arc::clone(&f.base), options()).await.unwrap();
        assert!(f.base.claim("raid0").is_err(), "the store holds its base");
        lvs.close();
        assert!(f.base.claimed_by().is_none());
    });
}

fn allocated_of(store: &super::vbdev::Store, uuid: uuid::Uuid) -> u64 {
    store.get(uuid).unwrap().allocated_clusters()
}

async fn zero(bdev: &Arc<Bdev>, kind: IoKind, offset: u64, blocks: u64) {
    bdev.channel()
        .submit(IoRequest::range(kind, offset, blocks))
        .await
        .result
        .unwrap();
}

#[test]
fn unmap_gives_whole_clusters_back_and_zeroes_the_rest_without_uncovering_a_snapshot() {
    let f = fixture(8);
    block_on(async {
        let lvs = Lvs::create(Arc::clone(&f.base), options()).await.unwrap();
        let uuid = lvs
            .change(|s| s.create_lvol("thin", 4, true))
            .await
            .unwrap();
        let bdev = f.bdev(&lvs, uuid);
        let allocated = |uuid| lvs.read(|s| s.get(uuid).unwrap().allocated_clusters());
        write(&bdev, 0, 0x11, 4 * CLUSTER_BLOCKS).await.unwrap();
        let free = lvs.read(|s| s.free_clusters());

        // Half of cluster 0, all of 1: 1 goes back, 0 is zeroed in place.
        let half = CLUSTER_BLOCKS / 2;
        zero(&bdev, IoKind::Unmap, half, CLUSTER_BLOCKS + half).await;
        assert_eq!(allocated(uuid), 3);
        assert_eq!(lvs.read(|s| s.free_clusters()), free + 1);
        let back = read(&bdev, 0, 4 * CLUSTER_BLOCKS).await;
        let bytes = |blocks: u64| (blocks * u64::from(BS)) as usize;
        assert!(back[..bytes(half)].iter().all(|b| *b == 0x11));
        assert!(
            back[bytes(half)..bytes(2 * CLUSTER_BLOCKS)]
                .iter()
                .all(|b| *b == 0)
        );
        assert!(back[bytes(2 * CLUSTER_BLOCKS)..].iter().all(|b| *b == 0x11));

        // A clone of a snapshot: its unmap must not show the snapshot's
        // data, whether the clone wrote the cluster or not.
        let snap = lvs.snapshot(uuid, "snap").await.unwrap();
        let snap_bdev = f.bdev(&lvs, snap);
        let clone = lvs
            .change(|s| s.clone_snapshot(snap, "clone"))
            .await
            .unwrap();
        let clone_bdev = f.bdev(&lvs, clone);
        write(&clone_bdev, 2 * CLUSTER_BLOCKS, 0x22, CLUSTER_BLOCKS)
            .await
            .unwrap();
        zero(
            &clone_bdev,
            IoKind::WriteZeroes,
            2 * CLUSTER_BLOCKS,
            2 * CLUSTER_BLOCKS,
        )
        .await;
        assert!(
            read(&clone_bdev, 2 * CLUSTER_BLOCKS, 2 * CLUSTER_BLOCKS)
                .await
                .iter()
                .all(|b| *b == 0)
        );
        // Clusters 2 and 3 now hide the snapshot's; the snapshot is whole.
        assert_eq!(allocated(clone), 2);
        assert!(
            read(&snap_bdev, 2 * CLUSTER_BLOCKS, 2 * CLUSTER_BLOCKS)
                .await
                .iter()
                .all(|b| *b == 0x11)
        );
        // A snapshot takes no unmap (the validation layer refuses it).
        assert!(!snap_bdev.supports(IoKind::Unmap));

        // What the unmaps left is what a reopen finds.
        let before = lvs.read(|s| {
            (
                s.free_clusters(),
                allocated_of(s, uuid),
                allocated_of(s, clone),
            )
        });
        for id in [uuid, snap, clone] {
            f.registry.unregister(&id.to_string(), "lvol").unwrap();
        }
        lvs.close();
        drop(lvs);
        let lvs = Lvs::open(Arc::clone(&f.base)).await.unwrap();
        let after = lvs.read(|s| {
            (
                s.free_clusters(),
                allocated_of(s, uuid),
                allocated_of(s, clone),
            )
        });
        assert_eq!(after, before);
        let clone_bdev = f.bdev(&lvs, clone);
        assert!(
            read(&clone_bdev, 0, 4 * CLUSTER_BLOCKS).await[..bytes(half)]
                .iter()
                .all(|b| *b == 0x11)
        );
    });
}

#[test]
fn inflate_and_decouple_copy_the_chain_so_the_snapshot_can_go() {
    let f = fixture(16);
    block_on(async {
        let lvs = Lvs::create(Arc::clone(&f.base), options()).await.unwrap();
        let origin = lvs
            .change(|s| s.create_lvol("origin", 4, true))
            .await
            .unwrap();
        let bdev = f.bdev(&lvs, origin);
        write(&bdev, 0, 0x11, 3 * CLUSTER_BLOCKS).await.unwrap();
        let snap = lvs.snapshot(origin, "snap").await.unwrap();
        write(&bdev, CLUSTER_BLOCKS, 0x22, CLUSTER_BLOCKS)
            .await
            .unwrap();
        let clone = lvs
            .change(|s| s.clone_snapshot(snap, "clone"))
            .await
            .unwrap();
        let clone_bdev = f.bdev(&lvs, clone);

        // Decouple: only what the snapshot holds (3 clusters), stays thin.
        lvs.inflate(clone, false).await.unwrap();
        let (owned, parent, thin) = lvs.read(|s| {
            let l = s.get(clone).unwrap();
            (l.allocated_clusters(), l.record.parent, l.record.thin)
        });
        assert_eq!((owned, parent, thin), (3, None, true));
        // Inflate: every cluster, thick.
        lvs.inflate(origin, true).await.unwrap();
        let (owned, parent, thin) = lvs.read(|s| {
            let l = s.get(origin).unwrap();
            (l.allocated_clusters(), l.record.parent, l.record.thin)
        });
        assert_eq!((owned, parent, thin), (4, None, false));

        lvs.delete(snap).await.unwrap();
        let expect = |fills: [u8; 4]| -> Vec<u8> {
            fills
                .iter()
                .flat_map(|&b| vec![b; CLUSTER as usize])
                .collect()
        };
        assert_eq!(
            read(&bdev, 0, 4 * CLUSTER_BLOCKS).await,
            expect([0x11, 0x22, 0x11, 0])
        );
        assert_eq!(
            read(&clone_bdev, 0, 4 * CLUSTER_BLOCKS).await,
            expect([0x11, 0x11, 0x11, 0])
        );

        // Shrink frees the clusters past the end; growing back reads zeroes.
        let free = lvs.read(|s| s.free_clusters());
        lvs.resize(clone, 1).await.unwrap();
        assert_eq!(lvs.read(|s| s.free_clusters()), free + 2);
        lvs.resize(clone, 4).await.unwrap();
        assert_eq!(lvs.read(|s| s.get(clone).unwrap().allocated_clusters()), 1);
    });
}

#[test]
fn a_thick_lvol_created_or_grown_shows_zeroes_not_a_deleted_lvols_data() {
    let f = fixture(8);
    block_on(async {
        let lvs = Lvs::create(Arc::clone(&f.base), options()).await.unwrap();
        let old = lvs.create_lvol("old", 8, true).await.unwrap();
        let bdev = f.bdev(&lvs, old);
        write(&bdev, 0, 0xee, 8 * CLUSTER_BLOCKS).await.unwrap();
        f.registry.unregister(&old.to_string(), "lvol").unwrap();
        lvs.delete(old).await.unwrap();

        let thick = lvs.create_lvol("thick", 3, false).await.unwrap();
        assert_eq!(lvs.read(|s| s.get(thick).unwrap().allocated_clusters()), 3);
        lvs.resize(thick, 6).await.unwrap();
        let (owned, thin) = lvs.read(|s| {
            let l = s.get(thick).unwrap();
            (l.allocated_clusters(), l.record.thin)
        });
        assert_eq!((owned, thin), (6, false), "grown and backed, still thick");
        let bdev = f.bdev(&lvs, thick);
        assert!(
            read(&bdev, 0, 6 * CLUSTER_BLOCKS)
                .await
                .iter()
                .all(|b| *b == 0)
        );
        // No room for a thick growth: refused before anything changes.
        assert!(matches!(
            lvs.resize(thick, 20).await,
            Err(super::store::StoreError::NoSpace { .. })
        ));
        assert!(matches!(
            lvs.create_lvol("big", 20, false).await,
            Err(super::store::StoreError::NoSpace { .. })
        ));
        assert!(lvs.read(|s| s.find("big").is_none()));
    });
}

#[test]
fn first_writes_side_by_side_allocate_each_cluster_once_and_keep_every_block() {
    // A file base, so completions really come back out of order and the
    // writes interleave at every await (a malloc base never yields).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(14 * CLUSTER)
        .unwrap();
    let registry = BdevRegistry::new();
    let base = crate::bdev::uring::create_uring(
        &registry,
        crate::bdev::uring::UringConfig {
            name: "base".into(),
            filename: path,
            block_size: Some(BS),
            uuid: None,
        },
    )
    .unwrap();
    let f = Fixture { registry, base };
    block_on(async {
        let lvs = Lvs::create(Arc::clone(&f.base), options()).await.unwrap();
        let uuid = lvs
            .change(|s| s.create_lvol("thin", 4, true))
            .await
            .unwrap();
        let bdev = f.bdev(&lvs, uuid);
        let free = lvs.read(|s| s.free_clusters());
        // Four first writes into each of clusters 0 and 2, all in flight
        // at once: each cluster is allocated once and keeps all four.
        let writes = (0..8u64).map(|i| {
            let cluster = if i % 2 == 0 { 0 } else { 2 };
            let offset = cluster * CLUSTER_BLOCKS + (i / 2) * 8;
            write(&bdev, offset, 0x10 + i as u8, 8)
        });
        for done in futures_util::future::join_all(writes).await {
            done.unwrap();
        }
        assert_eq!(lvs.read(|s| s.get(uuid).unwrap().allocated_clusters()), 2);
        assert_eq!(lvs.read(|s| s.free_clusters()), free - 2);
        for i in 0..8u64 {
            let cluster = if i % 2 == 0 { 0 } else { 2 };
            let offset = cluster * CLUSTER_BLOCKS + (i / 2) * 8;
            let back = read(&bdev, offset, 8).await;
            assert!(back.iter().all(|b| *b == 0x10 + i as u8), "write {i}");
        }
    });
}

//! The store's operations one by one, with exact answers, each checked
//! again after a reopen.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::chain::Resolved;
use super::device::MetadataDevice;
use super::device::testing::CrashingDevice;
use super::format::{
    DecodeError, Geometry, MAX_LVOLS, MIN_CLUSTER_BYTES, Owner, PagePlace, SuperBlock, encode_page,
    owner_page_index,
};
use super::store::{LvolStore, StoreError, StoreOptions};

/// Clusters of the test store (64 KiB each).
pub(super) const CLUSTERS: u32 = 64;

/// A base that holds exactly [`CLUSTERS`] clusters after its metadata
/// (both copies are 36 blocks, rounded up to 5 clusters).
pub(super) fn base() -> CrashingDevice {
    CrashingDevice::new(5 * 16 + u64::from(CLUSTERS) * 16)
}

pub(super) fn options() -> StoreOptions {
    StoreOptions {
        cluster_bytes: MIN_CLUSTER_BYTES,
        ..StoreOptions::new("lvs")
    }
}

fn store() -> LvolStore<CrashingDevice> {
    let store = LvolStore::format(base(), options()).unwrap();
    assert_eq!(store.geometry().total_clusters, u64::from(CLUSTERS));
    store
}

fn reopen(store: &LvolStore<CrashingDevice>) -> LvolStore<CrashingDevice> {
    let again = LvolStore::open(store.device().durable()).unwrap();
    again.audit().unwrap();
    assert_eq!(
        describe(&again),
        describe(store),
        "reopen changed the store"
    );
    again
}

/// An lvol as compared across runs and reopens: by name, since uuids are
/// random per run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Described {
    pub size: u64,
    pub thin: bool,
    pub read_only: bool,
    pub parent: Option<String>,
    pub backed: u64,
    pub extents: BTreeMap<u32, u32>,
}

pub(super) type State = (BTreeMap<String, Described>, u32);

pub(super) fn describe<D: MetadataDevice>(store: &LvolStore<D>) -> State {
    let lvols = store
        .lvols()
        .map(|l| {
            let r = &l.record;
            let parent = r.parent.map(|p| store.get(p).unwrap().name().to_owned());
            let d = Described {
                size: r.size_clusters,
                thin: r.thin,
                read_only: r.read_only,
                parent,
                backed: r.backed_clusters,
                extents: l.extents().clone(),
            };
            (r.name.clone(), d)
        })
        .collect();
    (lvols, store.free_clusters())
}

/// Allocates `logical` of `lvol` the way the bdev will: reserve, (write
/// the data), commit.
pub(super) fn write<D: MetadataDevice>(
    store: &mut LvolStore<D>,
    lvol: Uuid,
    logical: u64,
) -> Result<u32, StoreError> {
    let r = store.reserve_cluster(lvol, logical)?;
    let cluster = r.cluster();
    store.commit_cluster(r)?;
    Ok(cluster)
}

fn at(owner: Uuid, cluster: u32) -> Resolved {
    Resolved::Cluster { owner, cluster }
}

#[test]
fn a_formatted_store_opens_empty() {
    let store = store();
    assert_eq!(store.generation(), 1);
    assert_eq!(store.free_clusters(), CLUSTERS);
    let again = reopen(&store);
    assert_eq!(again.uuid(), store.uuid());
    assert_eq!(again.name(), "lvs");
    assert_eq!(again.generation(), 1);
}

#[test]
fn thick_lvols_take_their_clusters_at_creation_thin_ones_on_first_write() {
    let mut store = store();
    let thick = store.create_lvol("thick", 10, false).unwrap();
    let thin = store.create_lvol("thin", 1000, true).unwrap();
    assert_eq!(store.free_clusters(), CLUSTERS - 10);
    let l = store.get(thick).unwrap();
    assert_eq!(
        l.extents()
            .iter()
            .map(|(&a, &b)| (a, b))
            .collect::<Vec<_>>(),
        (0..10).map(|c| (c, c)).collect::<Vec<_>>()
    );
    assert_eq!(store.get(thin).unwrap().allocated_clusters(), 0);
    assert_eq!(store.resolve(thin, 999).unwrap(), Resolved::Zeroes);
    assert_eq!(store.resolve(thick, 4).unwrap(), at(thick, 4));

    assert_eq!(write(&mut store, thin, 500).unwrap(), 10);
    assert_eq!(store.resolve(thin, 500).unwrap(), at(thin, 10));
    assert_eq!(store.get(thin).unwrap().allocated_clusters(), 1);
    assert!(matches!(
        store.reserve_cluster(thin, 500),
        Err(StoreError::AlreadyAllocated { logical: 500, .. })
    ));
    assert!(matches!(
        store.reserve_cluster(thin, 1000),
        Err(StoreError::OutOfRange {
            logical: 1000,
            size: 1000,
            ..
        })
    ));
    reopen(&store);
}

#[test]
fn racing_first_writes_keep_one_cluster_and_free_the_other() {
    let mut store = store();
    let thin = store.create_lvol("thin", 8, true).unwrap();
    let first = store.reserve_cluster(thin, 3).unwrap();
    let second = store.reserve_cluster(thin, 3).unwrap();
    assert_eq!((first.cluster(), second.cluster()), (0, 1));
    assert_eq!(store.free_clusters(), CLUSTERS - 2);
    store.commit_cluster(first).unwrap();
    assert!(matches!(
        store.commit_cluster(second),
        Err(StoreError::AlreadyAllocated { logical: 3, .. })
    ));
    assert_eq!(store.free_clusters(), CLUSTERS - 1);
    // A failed data write gives its reservation back.
    let failed = store.reserve_cluster(thin, 4).unwrap();
    store.release_cluster(failed);
    assert_eq!(store.free_clusters(), CLUSTERS - 1);
    // A reservation is invisible on disk until committed.
    let pending = store.reserve_cluster(thin, 5).unwrap();
    let after_crash = LvolStore::open(store.device().durable()).unwrap();
    assert_eq!(after_crash.free_clusters(), CLUSTERS - 1);
    store.commit_cluster(pending).unwrap();
    reopen(&store);
}

#[test]
fn a_snapshot_freezes_the_origin_which_reads_through_it() {
    let mut store = store();
    let origin = store.create_lvol("vol", 4, true).unwrap();
    write(&mut store, origin, 0).unwrap();
    write(&mut store, origin, 2).unwrap();
    let snap = store.snapshot(origin, "snap").unwrap();
    let s = store.get(snap).unwrap();
    assert!(s.record.read_only);
    assert_eq!(s.record.size_clusters, 4);
    assert_eq!(s.extents(), &BTreeMap::from([(0, 0), (2, 1)]));
    let o = store.get(origin).unwrap();
    assert_eq!(o.name(), "vol", "the origin keeps its name and uuid");
    assert_eq!(o.record.parent, Some(snap));
    assert!(o.record.thin);
    assert_eq!(o.record.backed_clusters, 4);
    assert_eq!(o.allocated_clusters(), 0);
    assert_eq!(store.resolve(origin, 2).unwrap(), at(snap, 1));
    assert_eq!(store.resolve(origin, 1).unwrap(), Resolved::Zeroes);

    // Copy on write: the origin's new cluster hides the snapshot's.
    assert_eq!(write(&mut store, origin, 0).unwrap(), 2);
    assert_eq!(store.resolve(origin, 0).unwrap(), at(origin, 2));
    assert_eq!(store.resolve(snap, 0).unwrap(), at(snap, 0));

    assert!(matches!(
        store.reserve_cluster(snap, 1),
        Err(StoreError::ReadOnly(n)) if n == "snap"
    ));
    assert!(matches!(
        store.snapshot(snap, "again"),
        Err(StoreError::AlreadyASnapshot(n)) if n == "snap"
    ));
    assert!(matches!(
        store.resize(snap, 8),
        Err(StoreError::ReadOnly(_))
    ));
    reopen(&store);
}

#[test]
fn a_snapshot_writes_the_same_few_blocks_whatever_the_lvol_size() {
    let writes_for = |clusters| {
        let mut store = store();
        let vol = store.create_lvol("vol", clusters, false).unwrap();
        let before = store.device().writes();
        store.snapshot(vol, "snap").unwrap();
        store.device().writes() - before
    };
    // Its two table pages (slot 0's, the new slot 1's: one page), the
    // page the previous commit touched in this copy (the same page and
    // one owner page), and the super block.
    assert_eq!(writes_for(2), 3);
    assert_eq!(writes_for(60), 3);
}

#[test]
fn clones_are_writable_children_of_a_snapshot_only() {
    let mut store = store();
    let vol = store.create_lvol("vol", 4, true).unwrap();
    write(&mut store, vol, 1).unwrap();
    assert!(matches!(
        store.clone_snapshot(vol, "c"),
        Err(StoreError::NotASnapshot(n)) if n == "vol"
    ));
    let snap = store.snapshot(vol, "snap").unwrap();
    let clone = store.clone_snapshot(snap, "clone").unwrap();
    let c = store.get(clone).unwrap();
    assert_eq!(c.record.parent, Some(snap));
    assert!(c.record.thin && !c.record.read_only);
    assert_eq!(store.resolve(clone, 1).unwrap(), at(snap, 0));
    assert_eq!(write(&mut store, clone, 1).unwrap(), 1);
    assert_eq!(write(&mut store, vol, 1).unwrap(), 2);
    assert_eq!(store.resolve(clone, 1).unwrap(), at(clone, 1));
    assert_eq!(store.resolve(vol, 1).unwrap(), at(vol, 2));
    assert_eq!(store.resolve(snap, 1).unwrap(), at(snap, 0));
    assert_eq!(
        store.children(snap).map(|l| l.name()).collect::<Vec<_>>(),
        ["vol", "clone"]
    );
    reopen(&store);
}

/// What every cluster of every lvol reads, by name.
fn image<D: MetadataDevice>(store: &LvolStore<D>) -> BTreeMap<String, Vec<Option<u32>>> {
    store
        .lvols()
        .map(|l| {
            let reads = (0..l.record.size_clusters)
                .map(|logical| match store.resolve(l.uuid(), logical).unwrap() {
                    Resolved::Cluster { cluster, .. } => Some(cluster),
                    Resolved::Zeroes => None,
                })
                .collect();
            (l.name().to_owned(), reads)
        })
        .collect()
}

#[test]
fn a_snapshot_with_one_child_is_merged_into_it() {
    let mut store = store();
    let live = store.create_lvol("live", 6, true).unwrap();
    for logical in [0, 1, 2] {
        write(&mut store, live, logical).unwrap();
    }
    let old = store.snapshot(live, "old").unwrap();
    write(&mut store, live, 1).unwrap();
    write(&mut store, live, 3).unwrap();
    // Shrunk and grown back: `live` must keep reading zeroes at 4 and 5
    // whatever the snapshots below hold there.
    let new = store.snapshot(live, "new").unwrap();
    write(&mut store, live, 2).unwrap();
    store.resize(live, 4).unwrap();
    store.resize(live, 6).unwrap();
    let before = image(&store);
    let used = CLUSTERS - store.free_clusters();

    // The oldest first: `new` takes 0 and 2 (it reads them through
    // `old`); `old`'s 1 is hidden by `new`'s and is freed.
    store.delete(old).unwrap();
    let mut expected = before.clone();
    expected.remove("old");
    assert_eq!(image(&store), expected);
    assert_eq!(CLUSTERS - store.free_clusters(), used - 1);
    let n = store.get(new).unwrap();
    assert_eq!((n.record.parent, n.allocated_clusters()), (None, 4));
    let store = &mut reopen(&store);

    // Then the one under the live lvol.
    store.delete(new).unwrap();
    expected.remove("new");
    assert_eq!(image(store), expected);
    let l = store.get(live).unwrap();
    assert_eq!((l.record.parent, l.record.backed_clusters), (None, 0));
    assert_eq!(l.allocated_clusters(), 4);
    assert_eq!(CLUSTERS - store.free_clusters(), 4);
    reopen(store);
}

#[test]
fn deleting_a_snapshot_with_clones_is_refused_clearly() {
    let mut store = store();
    let vol = store.create_lvol("vol", 4, false).unwrap();
    let snap = store.snapshot(vol, "snap").unwrap();
    let clone = store.clone_snapshot(snap, "clone").unwrap();
    let err = store.delete(snap).unwrap_err();
    assert_eq!(
        err.to_string(),
        "snapshot \"snap\" has clones (vol, clone); delete or inflate them first"
    );
    store.delete(clone).unwrap();
    store.delete(vol).unwrap();
    store.delete(snap).unwrap();
    assert_eq!(store.lvols().count(), 0);
    assert_eq!(store.free_clusters(), CLUSTERS);
    assert!(matches!(store.delete(snap), Err(StoreError::NoSuchLvol(_))));
    reopen(&store);
}

#[test]
fn resize_grows_and_shrinks() {
    let mut store = store();
    let thick = store.create_lvol("thick", 2, false).unwrap();
    // Growing allocates nothing (the bdev module backs it as an inflate).
    store.resize(thick, 5).unwrap();
    assert_eq!(store.get(thick).unwrap().allocated_clusters(), 2);
    assert_eq!(store.resolve(thick, 4).unwrap(), Resolved::Zeroes);
    store.resize(thick, 1).unwrap();
    assert_eq!(
        store.get(thick).unwrap().extents(),
        &BTreeMap::from([(0, 0)])
    );
    assert_eq!(store.free_clusters(), CLUSTERS - 1);
    assert!(matches!(
        store.resize(thick, 100),
        Err(StoreError::NoSpace { needed: 99, free }) if free == CLUSTERS - 1
    ));
    assert_eq!(store.get(thick).unwrap().record.size_clusters, 1);
    assert!(matches!(
        store.resize(thick, 0),
        Err(StoreError::BadSize { size: 0 })
    ));

    let thin = store.create_lvol("thin", 4, true).unwrap();
    write(&mut store, thin, 3).unwrap();
    store.resize(thin, 10_000).unwrap();
    assert_eq!(store.get(thin).unwrap().allocated_clusters(), 1);
    store.resize(thin, 3).unwrap();
    assert_eq!(store.get(thin).unwrap().allocated_clusters(), 0);
    assert_eq!(store.free_clusters(), CLUSTERS - 1);
    reopen(&store);
}

#[test]
fn a_shrunk_and_regrown_child_reads_zeroes_not_its_parent_past_the_shrink() {
    let mut store = store();
    let vol = store.create_lvol("vol", 4, false).unwrap();
    let snap = store.snapshot(vol, "snap").unwrap();
    store.resize(vol, 2).unwrap();
    store.resize(vol, 4).unwrap();
    assert_eq!(store.get(vol).unwrap().record.backed_clusters, 2);
    assert_eq!(store.resolve(vol, 1).unwrap(), at(snap, 1));
    assert_eq!(store.resolve(vol, 2).unwrap(), Resolved::Zeroes);
    assert_eq!(store.resolve(vol, 3).unwrap(), Resolved::Zeroes);
    assert!(matches!(
        store.resolve(vol, 4),
        Err(StoreError::OutOfRange { .. })
    ));
    reopen(&store);
}

#[test]
fn unmap_frees_a_thin_lvols_clusters_where_nothing_shows_through() {
    let mut store = store();
    let thick = store.create_lvol("thick", 4, false).unwrap();
    let thin = store.create_lvol("thin", 8, true).unwrap();
    for logical in [0, 1, 5] {
        write(&mut store, thin, logical).unwrap();
    }
    // A thick lvol keeps its clusters: its space was promised.
    assert_eq!(store.unmap_clusters(thick, 0..4).unwrap(), 0);
    assert_eq!(store.get(thick).unwrap().allocated_clusters(), 4);
    let free = store.free_clusters();
    assert_eq!(store.unmap_clusters(thin, 1..8).unwrap(), 2);
    assert_eq!(store.free_clusters(), free + 2);
    assert_eq!(store.resolve(thin, 1).unwrap(), Resolved::Zeroes);
    assert_eq!(store.resolve(thin, 5).unwrap(), Resolved::Zeroes);
    assert!(store.resolve(thin, 0).unwrap() != Resolved::Zeroes);
    // Past the end and unowned: nothing to do, and no commit.
    let generation = store.generation();
    assert_eq!(store.unmap_clusters(thin, 6..100).unwrap(), 0);
    assert_eq!(store.generation(), generation);

    // A clone's cluster over its snapshot's data must stay (freed, the
    // snapshot's data would show through); over nothing it goes.
    let snap = store.snapshot(thin, "snap").unwrap();
    let clone = store.clone_snapshot(snap, "clone").unwrap();
    let over_data = write(&mut store, clone, 0).unwrap();
    write(&mut store, clone, 3).unwrap();
    assert_eq!(store.unmap_clusters(clone, 0..8).unwrap(), 1);
    assert_eq!(store.resolve(clone, 0).unwrap(), at(clone, over_data));
    assert_eq!(store.resolve(clone, 3).unwrap(), Resolved::Zeroes);
    let snapshot = store.find("snap").unwrap().name().to_owned();
    assert!(matches!(
        store.unmap_clusters(snap, 0..8),
        Err(StoreError::ReadOnly(name)) if name == snapshot
    ));
    reopen(&store);
}

/// A base that, like the bdev module's staged device, carries out
/// commits only after the store returns.
struct Deferred(CrashingDevice);

impl MetadataDevice for Deferred {
    fn blocks(&self) -> u64 {
        self.0.blocks()
    }
    fn read_block(&mut self, index: u64) -> std::io::Result<Vec<u8>> {
        self.0.read_block(index)
    }
    fn write_block(&mut self, index: u64, block: &[u8]) -> std::io::Result<()> {
        self.0.write_block(index, block)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
    fn commits_durable_on_return(&self) -> bool {
        false
    }
}

#[test]
fn a_freed_cluster_is_not_reused_before_its_commit_is_on_the_base() {
    let mut store = LvolStore::format(Deferred(base()), options()).unwrap();
    let doomed = store
        .create_lvol("doomed", u64::from(CLUSTERS), false)
        .unwrap();
    let thin = store.create_lvol("thin", 4, true).unwrap();
    store.delete(doomed).unwrap();
    // Until the delete is on the base a cut would bring `doomed` back,
    // and it must not find another lvol's data in its clusters.
    assert!(matches!(
        write(&mut store, thin, 0),
        Err(StoreError::NoSpace { free: 0, .. })
    ));
    assert_eq!(store.free_clusters(), 0);
    store.settle();
    assert_eq!(store.free_clusters(), CLUSTERS);
    write(&mut store, thin, 0).unwrap();
}

#[test]
fn inflate_copies_every_cluster_decouple_only_the_chains() {
    let mut store = store();
    let vol = store.create_lvol("vol", 4, true).unwrap();
    write(&mut store, vol, 1).unwrap(); // cluster 0
    let snap = store.snapshot(vol, "snap").unwrap();
    let a = store.clone_snapshot(snap, "a").unwrap();
    let b = store.clone_snapshot(snap, "b").unwrap();
    write(&mut store, a, 3).unwrap(); // cluster 1

    let plan = store.plan_inflate(a, true).unwrap();
    let steps: Vec<_> = plan
        .steps()
        .iter()
        .map(|s| (s.logical, s.source, s.target))
        .collect();
    assert_eq!(
        steps,
        [
            (0, Resolved::Zeroes, 2),
            (1, at(snap, 0), 3),
            (2, Resolved::Zeroes, 4)
        ]
    );
    store.commit_inflate(plan).unwrap();
    let l = store.get(a).unwrap();
    assert_eq!((l.record.parent, l.record.thin), (None, false));
    assert_eq!(l.allocated_clusters(), 4);

    let plan = store.plan_inflate(b, false).unwrap();
    assert_eq!(plan.steps().len(), 1);
    assert_eq!(plan.steps()[0].source, at(snap, 0));
    store.commit_inflate(plan).unwrap();
    let l = store.get(b).unwrap();
    assert_eq!((l.record.parent, l.record.thin), (None, true));
    assert_eq!(l.extents(), &BTreeMap::from([(1, 5)]));
    assert_eq!(
        store.children(snap).map(|l| l.name()).collect::<Vec<_>>(),
        ["vol"]
    );
    reopen(&store);
}

#[test]
fn inflating_a_thin_lvol_larger_than_the_store_is_refused_up_front() {
    let mut store = store();
    let vol = store.create_lvol("vol", 4, true).unwrap();
    write(&mut store, vol, 2).unwrap();
    let snap = store.snapshot(vol, "snap").unwrap();
    store.resize(vol, u64::from(u32::MAX)).unwrap();
    assert!(matches!(
        store.plan_inflate(vol, true),
        Err(StoreError::NoSpace { needed, free: 63 }) if needed == u64::from(u32::MAX)
    ));
    // Decoupling it walks the snapshot's one cluster, not 2^32 of them.
    let plan = store.plan_inflate(vol, false).unwrap();
    assert_eq!(plan.steps().len(), 1);
    assert_eq!(plan.steps()[0].source, at(snap, 0));
    store.commit_inflate(plan).unwrap();
    reopen(&store);
}

#[test]
fn a_plan_overtaken_by_a_change_is_refused_and_frees_its_clusters() {
    let mut store = store();
    let vol = store.create_lvol("vol", 4, true).unwrap();
    write(&mut store, vol, 0).unwrap();
    let snap = store.snapshot(vol, "snap").unwrap();
    let clone = store.clone_snapshot(snap, "clone").unwrap();
    let plan = store.plan_inflate(clone, true).unwrap();
    assert_eq!(store.free_clusters(), CLUSTERS - 5);
    store.snapshot(clone, "snap2").unwrap();
    assert!(matches!(
        store.commit_inflate(plan),
        Err(StoreError::StalePlan(n)) if n == "clone"
    ));
    assert_eq!(store.free_clusters(), CLUSTERS - 1);

    // A cluster written while the inflate copied keeps the newer data.
    let plan = store.plan_inflate(vol, false).unwrap();
    assert_eq!(plan.steps()[0].target, 1);
    write(&mut store, vol, 0).unwrap();
    store.commit_inflate(plan).unwrap();
    assert_eq!(store.get(vol).unwrap().extents(), &BTreeMap::from([(0, 2)]));
    assert_eq!(store.free_clusters(), CLUSTERS - 2);
    store.audit().unwrap();
}

#[test]
fn space_names_and_slots_are_bounded() {
    let mut store = store();
    assert!(matches!(
        store.create_lvol("big", u64::from(CLUSTERS) + 1, false),
        Err(StoreError::NoSpace {
            needed: 65,
            free: 64
        })
    ));
    assert_eq!(
        store.free_clusters(),
        CLUSTERS,
        "a refused create takes nothing"
    );
    let full = store
        .create_lvol("full", u64::from(CLUSTERS), false)
        .unwrap();
    let thin = store.create_lvol("thin", 2, true).unwrap();
    assert!(matches!(
        store.reserve_cluster(thin, 0),
        Err(StoreError::NoSpace { needed: 1, free: 0 })
    ));
    store.delete(full).unwrap();
    write(&mut store, thin, 0).unwrap();

    assert!(matches!(
        store.create_lvol("thin", 1, true),
        Err(StoreError::NameTaken(n)) if n == "thin"
    ));
    assert!(matches!(
        store.create_lvol(&"n".repeat(64), 1, true),
        Err(StoreError::BadName { .. })
    ));
    for i in 1..MAX_LVOLS {
        store.create_lvol(&format!("v{i}"), 1, true).unwrap();
    }
    assert!(matches!(
        store.create_lvol("one-more", 1, true),
        Err(StoreError::TooManyLvols)
    ));
    reopen(&store);
}

#[test]
fn every_cluster_of_a_ten_deep_chain_resolves_through_the_store() {
    let mut store = store();
    let vol = store.create_lvol("vol", 12, true).unwrap();
    let mut snaps = Vec::new();
    for i in 0..10u64 {
        // Layer i writes logical clusters i and i + 2.
        write(&mut store, vol, i).unwrap();
        write(&mut store, vol, i + 2).unwrap();
        snaps.push(store.snapshot(vol, &format!("snap{i}")).unwrap());
    }
    let expect = |logical: u64| -> Resolved {
        // The newest layer that wrote it: i == logical, or i == logical-2.
        let layer = if logical < 10 { logical } else { logical - 2 };
        // Clusters were handed out in write order, two per layer: layer
        // i's i is cluster 2i, its i + 2 is 2i + 1.
        let cluster = 2 * layer + u64::from(logical != layer);
        at(snaps[layer as usize], cluster as u32)
    };
    let store = reopen(&store);
    for logical in 0..12 {
        assert_eq!(
            store.resolve(vol, logical).unwrap(),
            expect(logical),
            "{logical}"
        );
    }
    assert_eq!(store.get(snaps[9]).unwrap().record.parent, Some(snaps[8]));
    assert_eq!(store.resolve(snaps[0], 1).unwrap(), Resolved::Zeroes);
    assert_eq!(store.resolve(snaps[0], 2).unwrap(), at(snaps[0], 1));
}

#[test]
fn a_corrupt_page_of_the_newest_copy_is_reported_with_its_place() {
    let mut store = store();
    let vol = store.create_lvol("vol", 4, false).unwrap();
    store.delete(vol).unwrap();
    let generation = store.generation();
    let copy = (generation % 2) as u8;
    let g = store.geometry();
    let dev = store.device_mut();
    let at = g.page_at(copy, 35);
    let mut block = dev.read_block(at).unwrap();
    block[100] ^= 1;
    dev.write_block(at, &block).unwrap();
    assert!(matches!(
        LvolStore::open(store.device().durable()),
        Err(StoreError::CorruptPage {
            copy: c,
            index: 35,
            source: DecodeError::Checksum
        }) if c == copy
    ));
}

#[test]
fn a_base_without_a_store_says_so() {
    let err = LvolStore::open(base()).err().unwrap();
    assert!(matches!(
        err,
        StoreError::NoStore {
            copy_a: DecodeError::NoMagic,
            copy_b: DecodeError::NoMagic
        }
    ));
}

#[test]
fn a_second_format_replaces_the_first_store_whole() {
    let mut store = store();
    store.create_lvol("old", 4, false).unwrap();
    let old = store.uuid();
    let again = LvolStore::format(store.device().durable(), options()).unwrap();
    let opened = LvolStore::open(again.device().durable()).unwrap();
    assert_ne!(opened.uuid(), old);
    assert_eq!(opened.lvols().count(), 0);
    assert_eq!(opened.free_clusters(), CLUSTERS);
}

#[test]
fn an_owner_table_naming_a_dead_lvol_is_refused_at_open() {
    let mut store = store();
    let vol = store.create_lvol("vol", 1, false).unwrap();
    let slot_of_vol = 0;
    store.delete(vol).unwrap();
    // Seal, by hand, an owner page that still gives cluster 0 to the
    // deleted lvol's slot: a bug, not a crash, could leave this.
    let generation = store.generation();
    let copy = (generation % 2) as u8;
    let g = store.geometry();
    let index = owner_page_index(0);
    let place = PagePlace {
        store_uuid: store.uuid(),
        copy,
        index,
    };
    let mut payload = Owner::Lvol {
        slot: slot_of_vol,
        logical: 0,
    }
    .encode()
    .to_vec();
    for _ in 1..CLUSTERS {
        payload.extend_from_slice(&Owner::Free.encode());
    }
    let page = encode_page(place, generation, &payload);
    store
        .device_mut()
        .write_block(g.page_at(copy, index), &page)
        .unwrap();
    let err = LvolStore::open(store.device().durable()).err().unwrap();
    assert_eq!(
        err.to_string(),
        "lvol store metadata is inconsistent: cluster 0 names free slot 0"
    );
    // The super block is untouched by all this.
    let dev = &mut store.device().durable();
    let sb = SuperBlock::decode(&dev.read_block(Geometry::super_block_at(copy)).unwrap());
    assert_eq!(sb.unwrap().generation, generation);
}

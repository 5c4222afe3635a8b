//! The lvol store in memory and its crash-consistent commit.
//!
//! Every change follows one shape: check everything that can refuse, then
//! change the in-memory state (marking the pages it touched dirty), then
//! commit. The change is acknowledged only when the
//! commit returns; if the commit fails the in-memory state is ahead of
//! the disk and the store refuses everything until it is opened again.
//!
//! # Commit: two alternating copies
//!
//! The metadata exists twice (copies A and B, see
//! [`Geometry`]). Generation `g` is written into
//! copy `g % 2`: first the pages changed since that copy was last written
//! (every one of them sealed with `g`), a flush, then the copy's super
//! block (sealed, naming `g`), a flush. Open takes the valid super block
//! with the higher generation and reads that copy.
//!
//! Why this scheme and not a log: the state is small and fixed in size
//! (a table of [`MAX_LVOLS`] records and one entry per cluster), so a
//! second copy costs little, needs no replay, no checkpoint and no log
//! space management; a commit writes the touched pages (two, for the
//! common first write of a cluster: its owner page and, in the other
//! copy, what the previous commit touched) plus a super block.
//!
//! Why it survives a cut at any single block write: until the super block
//! of `g` is whole on disk, the other copy (generation `g - 1`, complete
//! and flushed before `g` began) is the newest valid one, and the copy
//! being written is ignored; a torn super block fails its CRC. Pages of
//! `g` reach the disk before its super block (the flush between them), so
//! a whole super block of `g` always leads whole pages. A page that a cut
//! commit wrote is newer than its copy's super block, which
//! [`decode_page`] reports, never trusts.
//!
//! After open the copy that lost is not trusted at all: the next commit
//! rewrites all of its pages.
//!
//! # Clusters: allocated in two steps
//!
//! A thin lvol's first write to a cluster [`reserve_cluster`]s it (taken in
//! memory, free on disk), writes the data, then [`commit_cluster`]s it.
//! A cut before the commit leaves the cluster free on disk: nothing leaks
//! and no lvol ever maps a cluster whose data was not written. Inflate and
//! decouple do the same for many clusters ([`plan_inflate`], copy,
//! [`commit_inflate`]).
//!
//! The owner table is the only record of which cluster is used: a cluster
//! is used exactly when it names an lvol, so the allocation map and the
//! extent tables cannot disagree, and open rebuilds both from it (a pass
//! that also refuses a table naming a dead lvol, a cluster past an lvol's
//! end, or two clusters for one logical cluster).
//!
//! [`reserve_cluster`]: LvolStore::reserve_cluster
//! [`commit_cluster`]: LvolStore::commit_cluster
//! [`plan_inflate`]: LvolStore::plan_inflate
//! [`commit_inflate`]: LvolStore::commit_inflate

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;

use uuid::Uuid;

use super::allocator::ClusterAllocator;
use super::chain::{self, Link, Resolved};
use super::device::MetadataDevice;
use super::format::{
    DEFAULT_CLUSTER_BYTES, DecodeError, Geometry, GeometryError, LVOL_RECORD_BYTES, LvolRecord,
    MAX_LVOL_CLUSTERS, MAX_LVOLS, OWNER_ENTRY_BYTES, OWNERS_PER_PAGE, Owner, PagePlace,
    RECORDS_PER_PAGE, SuperBlock, TABLE_PAGES, check_name, decode_page, encode_page,
    owner_page_index, table_page_index,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata I/O failed: {0}")]
    Device(#[from] io::Error),
    #[error("no lvol store on this base (copy A: {copy_a}; copy B: {copy_b})")]
    NoStore {
        copy_a: DecodeError,
        copy_b: DecodeError,
    },
    #[error("lvol store metadata copy {copy} page {index} is corrupt: {source}")]
    CorruptPage {
        copy: u8,
        index: u32,
        source: DecodeError,
    },
    #[error("lvol store metadata is inconsistent: {0}")]
    Inconsistent(String),
    #[error(transparent)]
    Geometry(#[from] GeometryError),
    #[error("lvol store lost a metadata write; open it again")]
    NeedsReopen,
    #[error("bad name {name:?}: {why}")]
    BadName { name: String, why: &'static str },
    #[error("an lvol named {0:?} already exists in this store")]
    NameTaken(String),
    #[error("no lvol {0} in this store")]
    NoSuchLvol(Uuid),
    #[error("the store already holds {MAX_LVOLS} lvols")]
    TooManyLvols,
    #[error("an lvol is 1 to {MAX_LVOL_CLUSTERS} clusters, not {size}")]
    BadSize { size: u64 },
    #[error("needs {needed} free clusters, the store has {free}")]
    NoSpace { needed: u64, free: u32 },
    #[error("lvol {0:?} is a snapshot: read-only")]
    ReadOnly(String),
    #[error("lvol {0:?} is not a snapshot; only a snapshot can be cloned")]
    NotASnapshot(String),
    #[error("lvol {0:?} is already a snapshot; clone it to snapshot a writable copy")]
    AlreadyASnapshot(String),
    #[error("cluster {logical} is past the end of lvol {name:?} ({size} clusters)")]
    OutOfRange {
        name: String,
        logical: u64,
        size: u64,
    },
    #[error("cluster {logical} of lvol {name:?} is already allocated")]
    AlreadyAllocated { name: String, logical: u32 },
    #[error("snapshot {name:?} has clones ({}); delete or inflate them first", clones.join(", "))]
    HasClones { name: String, clones: Vec<String> },
    #[error("lvol {0:?} changed since the plan was made; plan again")]
    StalePlan(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How a store is made.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub name: String,
    pub uuid: Uuid,
    pub cluster_bytes: u64,
}

impl StoreOptions {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            uuid: Uuid::new_v4(),
            cluster_bytes: DEFAULT_CLUSTER_BYTES,
        }
    }
}

/// One lvol as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lvol {
    pub record: LvolRecord,
    /// Its lvol table slot: what its clusters' owner entries name.
    slot: u32,
    /// Logical cluster → data cluster, for the clusters it owns.
    extents: BTreeMap<u32, u32>,
}

impl Lvol {
    pub fn uuid(&self) -> Uuid {
        self.record.uuid
    }

    pub fn name(&self) -> &str {
        &self.record.name
    }

    /// Clusters this lvol owns (SPDK's `num_allocated_clusters`); its
    /// consumed bytes are these times the cluster size.
    pub fn allocated_clusters(&self) -> u64 {
        self.extents.len() as u64
    }

    pub fn extents(&self) -> &BTreeMap<u32, u32> {
        &self.extents
    }
}

/// A cluster taken for a first write and not yet recorded: write its data,
/// then [`LvolStore::commit_cluster`] (or [`LvolStore::release_cluster`]).
/// Only the store makes one, so only a reserved cluster is committed.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a reservation holds a cluster until committed or released"]
pub struct Reservation {
    lvol: Uuid,
    logical: u32,
    cluster: u32,
}

impl Reservation {
    pub fn lvol(&self) -> Uuid {
        self.lvol
    }

    pub fn logical(&self) -> u32 {
        self.logical
    }

    /// The data cluster to write.
    pub fn cluster(&self) -> u32 {
        self.cluster
    }
}

/// One cluster an inflate or decouple gives an lvol: fill `target` from
/// `source` (a parent's cluster, or zeroes), then commit the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InflateStep {
    pub logical: u32,
    pub source: Resolved,
    pub target: u32,
}

/// The clusters an inflate or decouple reserved.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a plan holds clusters until committed or released"]
pub struct InflatePlan {
    lvol: Uuid,
    /// `true`: every cluster (inflate, the lvol becomes thick); `false`:
    /// only those the chain holds (decouple, the lvol stays thin).
    all_clusters: bool,
    parent: Option<Uuid>,
    steps: Vec<InflateStep>,
}

impl InflatePlan {
    pub fn lvol(&self) -> Uuid {
        self.lvol
    }

    /// The copies to make before the commit.
    pub fn steps(&self) -> &[InflateStep] {
        &self.steps
    }
}

/// Pages of one copy that must be written at its next commit.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dirty {
    All,
    Pages(BTreeSet<u32>),
}

/// An open lvol store.
pub struct LvolStore<D: MetadataDevice> {
    device: D,
    uuid: Uuid,
    name: String,
    geometry: Geometry,
    /// The newest generation on disk.
    generation: u64,
    slots: Vec<Option<Lvol>>,
    by_uuid: HashMap<Uuid, u32>,
    owners: Vec<Owner>,
    allocator: ClusterAllocator,
    /// Clusters free in the owner table whose commit may not be on the
    /// base yet: still used in `allocator` until [`settle`](Self::settle).
    freed: Vec<u32>,
    dirty: [Dirty; 2],
    /// A commit failed: memory is ahead of the disk.
    poisoned: bool,
}

impl<D: MetadataDevice> LvolStore<D> {
    /// Makes an empty store on `device`, over whatever was there.
    pub fn format(device: D, options: StoreOptions) -> Result<Self> {
        check_name(&options.name).map_err(|why| StoreError::BadName {
            name: options.name.clone(),
            why,
        })?;
        let geometry = Geometry::new(device.blocks(), options.cluster_bytes)?;
        let mut store = Self {
            device,
            uuid: options.uuid,
            name: options.name,
            geometry,
            generation: 0,
            slots: vec![None; MAX_LVOLS],
            by_uuid: HashMap::new(),
            owners: vec![Owner::Free; geometry.total_clusters as usize],
            allocator: ClusterAllocator::new(geometry.total_clusters as u32),
            freed: Vec::new(),
            dirty: [Dirty::All, Dirty::All],
            poisoned: false,
        };
        // A store formatted before left two valid super blocks; wipe both
        // first, or a cut format could leave the old store's copy newest.
        let blank = vec![0u8; super::format::METADATA_BLOCK_BYTES];
        store.guard(|s| {
            for copy in 0..2 {
                s.device
                    .write_block(Geometry::super_block_at(copy), &blank)?;
            }
            s.device.flush()?;
            Ok(())
        })?;
        store.commit()?;
        Ok(store)
    }

    /// Opens the store on `device`: the newest whole copy.
    pub fn open(mut device: D) -> Result<Self> {
        let decode = |d: &mut D, copy| -> Result<Result<SuperBlock, DecodeError>> {
            Ok(SuperBlock::decode(
                &d.read_block(Geometry::super_block_at(copy))?,
            ))
        };
        let (a, b) = (decode(&mut device, 0)?, decode(&mut device, 1)?);
        let newest = match (a, b) {
            (Ok(a), Ok(b)) if a.store_uuid != b.store_uuid => {
                return Err(StoreError::Inconsistent(format!(
                    "the copies belong to two stores ({} and {})",
                    a.store_uuid, b.store_uuid
                )));
            }
            (Ok(a), Ok(b)) => {
                if a.generation > b.generation {
                    a
                } else {
                    b
                }
            }
            (Ok(one), Err(_)) | (Err(_), Ok(one)) => one,
            (Err(copy_a), Err(copy_b)) => return Err(StoreError::NoStore { copy_a, copy_b }),
        };
        let geometry = newest.geometry;
        if geometry.device_blocks > device.blocks() {
            return Err(StoreError::Inconsistent(format!(
                "the store spans {} blocks, the base has {}",
                geometry.device_blocks,
                device.blocks()
            )));
        }
        let mut records = vec![None; MAX_LVOLS];
        let mut owners = vec![Owner::Free; geometry.total_clusters as usize];
        for index in 1..=geometry.pages_per_copy() {
            let place = PagePlace {
                store_uuid: newest.store_uuid,
                copy: newest.copy,
                index,
            };
            let block = device.read_block(geometry.page_at(newest.copy, index))?;
            let corrupt = |source| StoreError::CorruptPage {
                copy: newest.copy,
                index,
                source,
            };
            let payload = decode_page(&block, place, newest.generation).map_err(corrupt)?;
            if index as usize <= TABLE_PAGES {
                let first = (index as usize - 1) * RECORDS_PER_PAGE;
                for (i, bytes) in payload
                    .chunks_exact(LVOL_RECORD_BYTES)
                    .enumerate()
                    .take(MAX_LVOLS.saturating_sub(first))
                {
                    records[first + i] = LvolRecord::decode(bytes).map_err(corrupt)?;
                }
            } else {
                let first = (index as usize - 1 - TABLE_PAGES) * OWNERS_PER_PAGE;
                for (i, bytes) in payload
                    .chunks_exact(OWNER_ENTRY_BYTES)
                    .enumerate()
                    .take(owners.len().saturating_sub(first))
                {
                    owners[first + i] = Owner::decode(bytes).map_err(corrupt)?;
                }
            }
        }
        let mut store = Self {
            device,
            uuid: newest.store_uuid,
            name: newest.name,
            geometry,
            generation: newest.generation,
            slots: vec![None; MAX_LVOLS],
            by_uuid: HashMap::new(),
            owners,
            allocator: ClusterAllocator::new(geometry.total_clusters as u32),
            freed: Vec::new(),
            dirty: [Dirty::Pages(BTreeSet::new()), Dirty::Pages(BTreeSet::new())],
            poisoned: false,
        };
        // The losing copy may hold half a cut commit: rewrite it whole.
        store.dirty[usize::from(1 - newest.copy)] = Dirty::All;
        store.rebuild(records)?;
        Ok(store)
    }

    /// The reclaim-at-open pass: lvols from their records, extents and
    /// the allocation map from the owner table, every cross-reference
    /// checked.
    fn rebuild(&mut self, records: Vec<Option<LvolRecord>>) -> Result<()> {
        let bad = |why: String| Err(StoreError::Inconsistent(why));
        let mut names = BTreeSet::new();
        for (slot, record) in records.into_iter().enumerate() {
            let Some(record) = record else { continue };
            if !names.insert(record.name.clone()) {
                return bad(format!("two lvols named {:?}", record.name));
            }
            if self.by_uuid.insert(record.uuid, slot as u32).is_some() {
                return bad(format!("two lvols with uuid {}", record.uuid));
            }
            self.slots[slot] = Some(Lvol {
                record,
                slot: slot as u32,
                extents: BTreeMap::new(),
            });
        }
        for lvol in self.slots.iter().flatten() {
            let r = &lvol.record;
            if let Some(parent) = r.parent {
                let Some(p) = self.get(parent) else {
                    return bad(format!("{:?}'s parent {parent} is missing", r.name));
                };
                if !p.record.read_only {
                    return bad(format!("{:?}'s parent {:?} is writable", r.name, p.name()));
                }
                if r.backed_clusters > p.record.size_clusters {
                    return bad(format!("{:?} reads past its parent's end", r.name));
                }
            }
        }
        for lvol in self.slots.iter().flatten() {
            self.chain_depth(lvol).ok_or_else(|| {
                StoreError::Inconsistent(format!("{:?}'s chain loops", lvol.name()))
            })?;
        }
        for (cluster, owner) in self.owners.iter().enumerate() {
            let Owner::Lvol { slot, logical } = *owner else {
                continue;
            };
            let Some(lvol) = self.slots[slot as usize].as_mut() else {
                return bad(format!("cluster {cluster} names free slot {slot}"));
            };
            if u64::from(logical) >= lvol.record.size_clusters {
                return bad(format!(
                    "cluster {cluster} is {:?}'s {logical}, past its end",
                    lvol.record.name
                ));
            }
            if let Some(other) = lvol.extents.insert(logical, cluster as u32) {
                return bad(format!(
                    "clusters {other} and {cluster} are both {:?}'s {logical}",
                    lvol.record.name
                ));
            }
            self.allocator
                .mark(cluster as u32)
                .expect("each cluster visited once");
        }
        Ok(())
    }

    /// Hops from `lvol` to the root of its chain; `None` if it loops.
    fn chain_depth(&self, lvol: &Lvol) -> Option<usize> {
        let mut at = lvol;
        for depth in 0..=MAX_LVOLS {
            match at.record.parent {
                None => return Some(depth),
                Some(parent) => at = self.get(parent)?,
            }
        }
        None
    }

    pub fn uuid(&self) -> Uuid {
        self.uuid
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn free_clusters(&self) -> u32 {
        self.allocator.free()
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    pub fn lvols(&self) -> impl Iterator<Item = &Lvol> {
        self.slots.iter().flatten()
    }

    pub fn get(&self, uuid: Uuid) -> Option<&Lvol> {
        let slot = *self.by_uuid.get(&uuid)?;
        self.slots[slot as usize].as_ref()
    }

    pub fn find(&self, name: &str) -> Option<&Lvol> {
        self.lvols().find(|l| l.name() == name)
    }

    fn lvol(&self, uuid: Uuid) -> Result<&Lvol> {
        self.get(uuid).ok_or(StoreError::NoSuchLvol(uuid))
    }

    fn lvol_mut(&mut self, uuid: Uuid) -> &mut Lvol {
        let slot = self.by_uuid[&uuid];
        self.slots[slot as usize].as_mut().expect("indexed")
    }

    /// Where logical cluster `logical` of `lvol` reads from.
    pub fn resolve(&self, lvol: Uuid, logical: u64) -> Result<Resolved> {
        let l = self.lvol(lvol)?;
        if logical >= l.record.size_clusters {
            return Err(StoreError::OutOfRange {
                name: l.name().to_owned(),
                logical,
                size: l.record.size_clusters,
            });
        }
        Ok(chain::resolve(l, logical as u32, |id| self.get(id)))
    }

    /// Lvols whose parent is `uuid`.
    pub fn children(&self, uuid: Uuid) -> impl Iterator<Item = &Lvol> {
        self.lvols().filter(move |l| l.record.parent == Some(uuid))
    }

    // ---- changes ----

    /// A new lvol of `size_clusters`; a thick one gets its clusters now
    /// (holding whatever they held: clearing them, SPDK's `clear_method`,
    /// is the bdev's job before the lvol is exposed).
    pub fn create_lvol(&mut self, name: &str, size_clusters: u64, thin: bool) -> Result<Uuid> {
        self.check_usable()?;
        self.check_new_name(name)?;
        check_size(size_clusters)?;
        let slot = self.free_slot()?;
        let clusters = if thin {
            Vec::new()
        } else {
            self.take_clusters(size_clusters)?
        };
        let uuid = Uuid::new_v4();
        self.put_lvol(
            slot,
            LvolRecord {
                uuid,
                name: name.to_owned(),
                size_clusters,
                thin,
                read_only: false,
                parent: None,
                backed_clusters: 0,
            },
        );
        for (logical, cluster) in clusters.into_iter().enumerate() {
            self.set_owner(uuid, logical as u32, cluster);
        }
        self.commit()?;
        Ok(uuid)
    }

    /// Takes a free cluster for the first write of `logical` in `lvol`.
    pub fn reserve_cluster(&mut self, lvol: Uuid, logical: u64) -> Result<Reservation> {
        self.check_usable()?;
        let l = self.writable(lvol)?;
        let name = l.name().to_owned();
        if logical >= l.record.size_clusters {
            return Err(StoreError::OutOfRange {
                name,
                logical,
                size: l.record.size_clusters,
            });
        }
        let logical = logical as u32;
        if l.extents.contains_key(&logical) {
            return Err(StoreError::AlreadyAllocated { name, logical });
        }
        let cluster = self.take_clusters(1)?[0];
        Ok(Reservation {
            lvol,
            logical,
            cluster,
        })
    }

    /// Records a reserved cluster as `lvol`'s, its data being written.
    /// Refused (and the cluster freed) if the lvol changed meanwhile so
    /// the cluster no longer fits: deleted, shrunk past it, or the same
    /// cluster committed by a racing write.
    pub fn commit_cluster(&mut self, reservation: Reservation) -> Result<()> {
        self.check_usable()?;
        let Reservation {
            lvol,
            logical,
            cluster,
        } = reservation;
        let fits = self.writable(lvol).and_then(|l| {
            if u64::from(logical) >= l.record.size_clusters {
                Err(StoreError::StalePlan(l.name().to_owned()))
            } else if l.extents.contains_key(&logical) {
                Err(StoreError::AlreadyAllocated {
                    name: l.name().to_owned(),
                    logical,
                })
            } else {
                Ok(())
            }
        });
        if let Err(e) = fits {
            self.allocator.release(cluster).expect("reserved");
            return Err(e);
        }
        self.set_owner(lvol, logical, cluster);
        self.commit()
    }

    /// Gives a reserved cluster back (its write failed).
    pub fn release_cluster(&mut self, reservation: Reservation) {
        if !self.poisoned {
            self.allocator
                .release(reservation.cluster)
                .expect("reserved");
        }
    }

    /// Freezes `origin` into a new read-only snapshot named `name` and
    /// makes `origin` an empty thin child of it. Returns the snapshot.
    ///
    /// Constant time whatever the lvol's size: the snapshot takes over
    /// the origin's table slot, so the owner entries of its clusters,
    /// which name the slot, stay as they are; the origin (same uuid, same
    /// name) moves to a new slot with no clusters. Two records change.
    pub fn snapshot(&mut self, origin: Uuid, name: &str) -> Result<Uuid> {
        self.check_usable()?;
        let o = self.lvol(origin)?;
        if o.record.read_only {
            return Err(StoreError::AlreadyASnapshot(o.name().to_owned()));
        }
        self.check_new_name(name)?;
        let new_slot = self.free_slot()?;
        let snapshot = Uuid::new_v4();
        let old_slot = self.by_uuid[&origin];
        let mut frozen = self.slots[old_slot as usize].take().expect("indexed");
        let size = frozen.record.size_clusters;
        let child = LvolRecord {
            thin: true,
            parent: Some(snapshot),
            backed_clusters: size,
            ..frozen.record.clone()
        };
        frozen.record.uuid = snapshot;
        frozen.record.name = name.to_owned();
        frozen.record.read_only = true;
        self.by_uuid.insert(snapshot, old_slot);
        self.slots[old_slot as usize] = Some(frozen);
        self.touch_slot(old_slot);
        self.put_lvol(new_slot, child);
        self.commit()?;
        Ok(snapshot)
    }

    /// A writable thin child of `snapshot`. Returns the clone.
    pub fn clone_snapshot(&mut self, snapshot: Uuid, name: &str) -> Result<Uuid> {
        self.check_usable()?;
        let s = self.lvol(snapshot)?;
        if !s.record.read_only {
            return Err(StoreError::NotASnapshot(s.name().to_owned()));
        }
        let size = s.record.size_clusters;
        self.check_new_name(name)?;
        let slot = self.free_slot()?;
        let uuid = Uuid::new_v4();
        self.put_lvol(
            slot,
            LvolRecord {
                uuid,
                name: name.to_owned(),
                size_clusters: size,
                thin: true,
                read_only: false,
                parent: Some(snapshot),
                backed_clusters: size,
            },
        );
        self.commit()?;
        Ok(uuid)
    }

    /// Reserves what an inflate (`all_clusters`: every cluster the lvol
    /// does not own) or a decouple (only those its chain holds) needs.
    /// Fill each step's target, then [`commit_inflate`](Self::commit_inflate).
    pub fn plan_inflate(&mut self, lvol: Uuid, all_clusters: bool) -> Result<InflatePlan> {
        self.check_usable()?;
        let l = self.writable(lvol)?;
        let parent = l.record.parent;
        let size = l.record.size_clusters;
        let missing = size - l.allocated_clusters();
        // Refuse before walking: a thin lvol may be far larger than the
        // store, and an inflate of it far larger than its free space.
        if all_clusters && missing > u64::from(self.allocator.free()) {
            return Err(StoreError::NoSpace {
                needed: missing,
                free: self.allocator.free(),
            });
        }
        let candidates: BTreeSet<u32> = if all_clusters {
            (0..size as u32).collect()
        } else {
            // Only what an ancestor holds can come through the chain.
            std::iter::successors(l.record.parent.and_then(|p| self.get(p)), |a| {
                a.record.parent.and_then(|p| self.get(p))
            })
            .flat_map(|a| a.extents.keys().copied())
            .filter(|&logical| u64::from(logical) < size)
            .collect()
        };
        let wanted: Vec<(u32, Resolved)> = candidates
            .into_iter()
            .filter(|logical| !l.extents.contains_key(logical))
            .map(|logical| {
                let source = self.resolve(lvol, u64::from(logical)).expect("in range");
                (logical, source)
            })
            .filter(|(_, source)| all_clusters || *source != Resolved::Zeroes)
            .collect();
        let targets = self.take_clusters(wanted.len() as u64)?;
        Ok(InflatePlan {
            lvol,
            all_clusters,
            parent,
            steps: wanted
                .into_iter()
                .zip(targets)
                .map(|((logical, source), target)| InflateStep {
                    logical,
                    source,
                    target,
                })
                .collect(),
        })
    }

    /// Records an inflate or decouple whose targets are filled: the lvol
    /// owns them and reads through no parent. A step whose cluster the
    /// lvol meanwhile wrote (or shrank away) is freed, the newer data
    /// kept.
    pub fn commit_inflate(&mut self, plan: InflatePlan) -> Result<()> {
        self.check_usable()?;
        let current = self.writable(plan.lvol).map(|l| l.record.parent);
        if current.as_ref().ok() != Some(&plan.parent) {
            let name = self
                .get(plan.lvol)
                .map_or_else(|| plan.lvol.to_string(), |l| l.name().to_owned());
            self.release_inflate(plan);
            return Err(StoreError::StalePlan(name));
        }
        for step in &plan.steps {
            let l = self.lvol(plan.lvol)?;
            if u64::from(step.logical) >= l.record.size_clusters
                || l.extents.contains_key(&step.logical)
            {
                self.allocator.release(step.target).expect("reserved");
            } else {
                self.set_owner(plan.lvol, step.logical, step.target);
            }
        }
        let l = self.lvol_mut(plan.lvol);
        l.record.parent = None;
        l.record.backed_clusters = 0;
        if plan.all_clusters {
            l.record.thin = false;
        }
        let slot = l.slot;
        self.touch_slot(slot);
        self.commit()
    }

    /// Gives an abandoned plan's clusters back.
    pub fn release_inflate(&mut self, plan: InflatePlan) {
        if !self.poisoned {
            for step in plan.steps {
                self.allocator.release(step.target).expect("reserved");
            }
        }
    }

    /// Grows or shrinks `lvol` to `size_clusters`. Shrinking frees the
    /// clusters past the end, and the parent's clusters there stop showing
    /// through. Growing allocates nothing: the new clusters read zeroes. A
    /// thick lvol is refused a growth its store has no room for; the bdev
    /// module then backs the new clusters as an inflate does (reserve,
    /// zero, commit), so a cut never leaves a cluster another lvol wrote
    /// readable through this one.
    pub fn resize(&mut self, lvol: Uuid, size_clusters: u64) -> Result<()> {
        self.check_usable()?;
        check_size(size_clusters)?;
        let l = self.writable(lvol)?;
        let old = l.record.size_clusters;
        let thin = l.record.thin;
        let dropped: Vec<u32> = l
            .extents
            .keys()
            .rev()
            .take_while(|&&logical| u64::from(logical) >= size_clusters)
            .copied()
            .collect();
        if size_clusters > old && !thin && size_clusters - old > u64::from(self.allocator.free()) {
            return Err(StoreError::NoSpace {
                needed: size_clusters - old,
                free: self.allocator.free(),
            });
        }
        for logical in dropped {
            let cluster = self.lvol_mut(lvol).extents.remove(&logical).expect("owned");
            self.set_free(cluster);
        }
        let l = self.lvol_mut(lvol);
        l.record.size_clusters = size_clusters;
        l.record.backed_clusters = l.record.backed_clusters.min(size_clusters);
        let slot = l.slot;
        self.touch_slot(slot);
        self.commit()
    }

    /// Gives back the clusters a thin `lvol` owns among logical clusters
    /// `logical` (an unmap or write-zeroes covering them whole), where
    /// nothing of the chain below shows through once they are gone, so
    /// they read as zeroes after. Returns how many were freed; the caller
    /// zeroes the rest in place: a thick lvol keeps its clusters (its
    /// space was promised), and a clone's cluster over a snapshot's data
    /// must stay to hide it.
    pub fn unmap_clusters(&mut self, lvol: Uuid, logical: std::ops::Range<u64>) -> Result<u64> {
        self.check_usable()?;
        let l = self.writable(lvol)?;
        if !l.record.thin {
            return Ok(0);
        }
        let start = logical.start.min(l.record.size_clusters) as u32;
        let end = logical.end.min(l.record.size_clusters) as u32;
        let freeable: Vec<(u32, u32)> = l
            .extents
            .range(start..end)
            .filter(|&(&at, _)| self.below(l, at) == Resolved::Zeroes)
            .map(|(&at, &cluster)| (at, cluster))
            .collect();
        if freeable.is_empty() {
            return Ok(0);
        }
        for &(at, cluster) in &freeable {
            self.lvol_mut(lvol).extents.remove(&at);
            self.set_free(cluster);
        }
        self.commit()?;
        Ok(freeable.len() as u64)
    }

    /// What `logical` of `l` would read if `l` did not own it.
    fn below(&self, l: &Lvol, logical: u32) -> Resolved {
        if u64::from(logical) >= l.record.backed_clusters {
            return Resolved::Zeroes;
        }
        match l.record.parent.and_then(|p| self.get(p)) {
            Some(parent) => chain::resolve(parent, logical, |id| self.get(id)),
            None => Resolved::Zeroes,
        }
    }

    /// Deletes `lvol` and frees its clusters. A snapshot with one child
    /// (the next snapshot of a chain, its origin, or a single clone) is
    /// merged into it, as SPDK does: each of its clusters that the child
    /// reads through it becomes the child's, the rest are freed, and the
    /// child reads through the snapshot's parent. What every lvol reads is
    /// unchanged, and it is one commit (owner pages and two records), so a
    /// cut leaves it whole or not at all. A snapshot with several children
    /// is refused: they read through it.
    pub fn delete(&mut self, lvol: Uuid) -> Result<()> {
        self.check_usable()?;
        let l = self.lvol(lvol)?;
        let children: Vec<Uuid> = self.children(lvol).map(|c| c.uuid()).collect();
        if children.len() > 1 {
            return Err(StoreError::HasClones {
                name: l.name().to_owned(),
                clones: children
                    .iter()
                    .map(|c| self.get(*c).expect("a child").name().to_owned())
                    .collect(),
            });
        }
        let slot = self.by_uuid.remove(&lvol).expect("found");
        let gone = self.slots[slot as usize].take().expect("indexed");
        self.touch_slot(slot);
        let Some(&child) = children.first() else {
            for &cluster in gone.extents.values() {
                self.set_free(cluster);
            }
            return self.commit();
        };
        let c = self.lvol(child).expect("a child");
        let seen = c.record.backed_clusters;
        let taken: Vec<(u32, u32)> = gone
            .extents
            .iter()
            .filter(|&(&logical, _)| u64::from(logical) < seen && !c.extents.contains_key(&logical))
            .map(|(&logical, &cluster)| (logical, cluster))
            .collect();
        for (&logical, &cluster) in &gone.extents {
            if taken.binary_search(&(logical, cluster)).is_err() {
                self.set_free(cluster);
            }
        }
        for (logical, cluster) in taken {
            self.set_owner(child, logical, cluster);
        }
        let c = self.lvol_mut(child);
        c.record.parent = gone.record.parent;
        // Past the snapshot's own backing the child read zeroes through it
        // (unless the snapshot owned the cluster, which it now has).
        c.record.backed_clusters = seen.min(gone.record.backed_clusters);
        let child_slot = c.slot;
        self.touch_slot(child_slot);
        self.commit()
    }

    // ---- helpers for the changes ----

    fn check_usable(&self) -> Result<()> {
        if self.poisoned {
            Err(StoreError::NeedsReopen)
        } else {
            Ok(())
        }
    }

    fn check_new_name(&self, name: &str) -> Result<()> {
        check_name(name).map_err(|why| StoreError::BadName {
            name: name.to_owned(),
            why,
        })?;
        if self.find(name).is_some() {
            return Err(StoreError::NameTaken(name.to_owned()));
        }
        Ok(())
    }

    fn writable(&self, uuid: Uuid) -> Result<&Lvol> {
        let l = self.lvol(uuid)?;
        if l.record.read_only {
            return Err(StoreError::ReadOnly(l.name().to_owned()));
        }
        Ok(l)
    }

    fn free_slot(&self) -> Result<u32> {
        self.slots
            .iter()
            .position(Option::is_none)
            .map(|s| s as u32)
            .ok_or(StoreError::TooManyLvols)
    }

    /// `count` clusters taken in memory, all or none.
    fn take_clusters(&mut self, count: u64) -> Result<Vec<u32>> {
        let free = self.allocator.free();
        u32::try_from(count)
            .ok()
            .and_then(|n| self.allocator.allocate_many(n))
            .ok_or(StoreError::NoSpace {
                needed: count,
                free,
            })
    }

    fn put_lvol(&mut self, slot: u32, record: LvolRecord) {
        self.by_uuid.insert(record.uuid, slot);
        self.slots[slot as usize] = Some(Lvol {
            record,
            slot,
            extents: BTreeMap::new(),
        });
        self.touch_slot(slot);
    }

    fn set_owner(&mut self, uuid: Uuid, logical: u32, cluster: u32) {
        let l = self.lvol_mut(uuid);
        l.extents.insert(logical, cluster);
        let slot = l.slot;
        self.owners[cluster as usize] = Owner::Lvol { slot, logical };
        self.touch(owner_page_index(cluster));
    }

    /// Frees `cluster` in the owner table; the allocator gets it back
    /// once the commit is on the base (see [`settle`](Self::settle)).
    fn set_free(&mut self, cluster: u32) {
        self.owners[cluster as usize] = Owner::Free;
        self.freed.push(cluster);
        self.touch(owner_page_index(cluster));
    }

    fn touch_slot(&mut self, slot: u32) {
        self.touch(table_page_index(slot as usize));
    }

    fn touch(&mut self, page: u32) {
        for dirty in &mut self.dirty {
            if let Dirty::Pages(pages) = dirty {
                pages.insert(page);
            }
        }
    }

    // ---- the commit ----

    /// Writes generation `generation + 1` into its copy: dirty pages,
    /// flush, super block, flush. See the module docs.
    fn commit(&mut self) -> Result<()> {
        let generation = self.generation + 1;
        let copy = (generation % 2) as u8;
        let pages: Vec<u32> = match &self.dirty[usize::from(copy)] {
            Dirty::All => (1..=self.geometry.pages_per_copy()).collect(),
            Dirty::Pages(pages) => pages.iter().copied().collect(),
        };
        let super_block = SuperBlock {
            store_uuid: self.uuid,
            name: self.name.clone(),
            generation,
            copy,
            geometry: self.geometry,
        };
        self.guard(|s| {
            for &index in &pages {
                let place = PagePlace {
                    store_uuid: s.uuid,
                    copy,
                    index,
                };
                let block = encode_page(place, generation, &s.page_payload(index));
                s.device
                    .write_block(s.geometry.page_at(copy, index), &block)?;
            }
            s.device.flush()?;
            s.device
                .write_block(Geometry::super_block_at(copy), &super_block.encode())?;
            s.device.flush()?;
            Ok(())
        })?;
        self.generation = generation;
        self.dirty[usize::from(copy)] = Dirty::Pages(BTreeSet::new());
        if self.device.commits_durable_on_return() {
            self.settle();
        }
        Ok(())
    }

    /// Every commit so far is on the base: the clusters they freed may be
    /// allocated again. The bdev module calls it after each replay; a
    /// device that writes at once needs no call.
    pub fn settle(&mut self) {
        if self.poisoned {
            return;
        }
        for cluster in self.freed.drain(..) {
            self.allocator.release(cluster).expect("was used");
        }
    }

    /// Runs metadata I/O; a failure poisons the store.
    fn guard(&mut self, io: impl FnOnce(&mut Self) -> io::Result<()>) -> Result<()> {
        io(self).map_err(|e| {
            self.poisoned = true;
            StoreError::Device(e)
        })
    }

    fn page_payload(&self, index: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(super::format::PAGE_PAYLOAD_BYTES);
        if index as usize <= TABLE_PAGES {
            let first = (index as usize - 1) * RECORDS_PER_PAGE;
            let last = (first + RECORDS_PER_PAGE).min(MAX_LVOLS);
            for slot in &self.slots[first..last] {
                match slot {
                    Some(l) => out.extend_from_slice(&l.record.encode()),
                    None => out.extend_from_slice(&[0; LVOL_RECORD_BYTES]),
                }
            }
        } else {
            let first = (index as usize - 1 - TABLE_PAGES) * OWNERS_PER_PAGE;
            let last = (first + OWNERS_PER_PAGE).min(self.owners.len());
            for owner in &self.owners[first..last] {
                out.extend_from_slice(&owner.encode());
            }
        }
        out
    }
}

impl<D: MetadataDevice> LvolStore<D> {
    /// The base, for the module that carries out what the store wrote
    /// (the staged device's recorded operations).
    pub(super) fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }
}

#[cfg(test)]
impl<D: MetadataDevice> LvolStore<D> {
    /// Every invariant between the owner table, the extents and the
    /// allocation map: no cluster both free and used, none used twice,
    /// none used and unowned (a leak), counts agreeing.
    pub(super) fn audit(&self) -> Result<(), String> {
        let mut owned = 0u32;
        for (cluster, owner) in self.owners.iter().enumerate() {
            let cluster = cluster as u32;
            match *owner {
                Owner::Free => {
                    if self.allocator.is_used(cluster) {
                        return Err(format!("cluster {cluster} is free but marked used"));
                    }
                }
                Owner::Lvol { slot, logical } => {
                    owned += 1;
                    if !self.allocator.is_used(cluster) {
                        return Err(format!("cluster {cluster} is owned but marked free"));
                    }
                    let Some(l) = &self.slots[slot as usize] else {
                        return Err(format!("cluster {cluster} names free slot {slot}"));
                    };
                    if l.extents.get(&logical) != Some(&cluster) {
                        return Err(format!(
                            "cluster {cluster} is not {:?}'s {logical}",
                            l.name()
                        ));
                    }
                }
            }
        }
        let extents: usize = self.lvols().map(|l| l.extents.len()).sum();
        if extents != owned as usize || self.allocator.used() != owned {
            return Err(format!(
                "{owned} owned clusters, {extents} extents, {} marked used",
                self.allocator.used()
            ));
        }
        Ok(())
    }
}

fn check_size(size_clusters: u64) -> Result<()> {
    if size_clusters == 0 || size_clusters > MAX_LVOL_CLUSTERS {
        Err(StoreError::BadSize {
            size: size_clusters,
        })
    } else {
        Ok(())
    }
}

impl Link for Lvol {
    fn uuid(&self) -> Uuid {
        self.record.uuid
    }

    fn parent(&self) -> Option<Uuid> {
        self.record.parent
    }

    fn backed_clusters(&self) -> u64 {
        self.record.backed_clusters
    }

    fn cluster_of(&self, logical: u32) -> Option<u32> {
        self.extents.get(&logical).copied()
    }
}

//! The lvol bdev module: an open store on its base bdev ([`Lvs`]) and one
//! bdev per lvol ([`LvolBdev`]), whose I/O goes through the chain.
//!
//! - **Reads** of each cluster go to the data cluster the chain resolves
//!   (the lvol's own, or the nearest snapshot's), or read as zeroes.
//! - **Writes** to a cluster the lvol owns go straight to it. The first
//!   write to any other cluster allocates: reserve a cluster, fill the
//!   part of it the write does not cover (from the snapshot it read
//!   through, else zeroes), write the data, commit, and only then
//!   complete. First writes take turns per logical cluster (`allocating`),
//!   so two of them never race for one cluster, while first writes to
//!   different clusters fill and write side by side.
//! - **Durability:** a write completes only once the metadata it relied on
//!   is on the base. A write that found its cluster owned in a generation
//!   still being replayed waits for that replay (`durable`), or a crash
//!   could lose a cluster a completed write went to.
//! - **Unmap and write-zeroes** leave the range reading zeroes. Whole
//!   clusters of a thin lvol go back to the store where nothing shows
//!   through from a snapshot below; the rest is zeroed in place (a thick
//!   lvol keeps its clusters: its space was promised).
//! - **Snapshots and unmaps** take the lvol's `gate` exclusively; every
//!   read and write holds it shared. So no write lands in a cluster that
//!   has just become the snapshot's, and no read or write reaches a
//!   cluster an unmap gave back (another lvol may have it by then). A
//!   freed cluster is not allocated again until the commit that freed it
//!   is on the base ([`LvolStore::settle`]).

use shoal_appliance::locks::Recover;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::chain::Resolved;
use super::format::Geometry;
use super::staged::{self, StagedDevice};
use super::store::{LvolStore, StoreError, StoreOptions};
use super::turns::Turns;
use crate::bdev::{
    BackendChannel, Bdev, BdevBackend, BdevError, IoBuf, IoChannel, IoCompletion, IoError,
    IoFuture, IoKind, IoRequest,
};

pub type Store = LvolStore<StagedDevice>;

/// An open lvol store on its base bdev.
pub struct Lvs {
    base: Arc<Bdev>,
    geometry: Geometry,
    /// Base blocks per metadata block (the geometry counts in those).
    per: u64,
    store: Mutex<Store>,
    /// One change (and its replay) at a time, so commits reach the base
    /// in the order they were made.
    changes: tokio::sync::Mutex<()>,
    /// First writes take turns per logical cluster (see the module docs).
    allocating: Turns<(Uuid, u64)>,
    /// The newest generation whose commit is on the base.
    durable: tokio::sync::watch::Sender<u64>,
    /// A replay failed: the base is behind memory; changes are refused
    /// until the store is opened again.
    failed: AtomicBool,
    /// Per lvol, held shared by writes and exclusively by a snapshot.
    gates: Mutex<std::collections::HashMap<Uuid, Arc<tokio::sync::RwLock<()>>>>,
}

impl std::fmt::Debug for Lvs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lvs")
            .field("base", &self.base.name())
            .finish()
    }
}

pub(super) fn store_error(error: StoreError) -> BdevError {
    match error {
        StoreError::Device(source) => BdevError::Io {
            context: "lvol store metadata".into(),
            source,
        },
        StoreError::NameTaken(name) => BdevError::Exists(name),
        StoreError::NoSuchLvol(uuid) => BdevError::NotFound(uuid.to_string()),
        StoreError::NoSpace { .. } => BdevError::Io {
            context: error.to_string(),
            source: std::io::Error::from_raw_os_error(nix::libc::ENOSPC),
        },
        StoreError::HasClones { .. } => BdevError::Busy {
            name: String::new(),
            user: error.to_string(),
        },
        other => BdevError::Invalid(other.to_string()),
    }
}

impl Lvs {
    /// The claim an open store holds on its base.
    pub fn claim_owner(name: &str) -> String {
        format!("lvs {name}")
    }

    fn blocks_per_metadata_block(base: &Bdev) -> Result<u64, BdevError> {
        staged::base_blocks_per_metadata_block(base.block_size()).ok_or_else(|| {
            BdevError::Invalid(format!(
                "an lvol store needs a base with 512-byte to 4 KiB blocks, {} has {}",
                base.name(),
                base.block_size()
            ))
        })
    }

    /// An open store over `base`, which the caller claimed for it.
    fn with_store(base: Arc<Bdev>, store: Store) -> Result<Arc<Self>, BdevError> {
        let per = Self::blocks_per_metadata_block(&base)?;
        let geometry = store.geometry();
        let (durable, _) = tokio::sync::watch::channel(store.generation());
        Ok(Arc::new(Self {
            base,
            geometry,
            per,
            store: Mutex::new(store),
            changes: tokio::sync::Mutex::new(()),
            allocating: Turns::default(),
            durable,
            failed: AtomicBool::new(false),
            gates: Mutex::new(Default::default()),
        }))
    }

    /// `bdev_lvol_create_lvstore`: formats a store on `base` (over
    /// whatever it held) and opens it. Runs on a reactor.
    pub async fn create(base: Arc<Bdev>, options: StoreOptions) -> Result<Arc<Self>, BdevError> {
        Self::blocks_per_metadata_block(&base)?;
        // Claimed before anything is written: a base that a raid or a
        // writable export holds is refused untouched.
        base.claim(&Self::claim_owner(&options.name))?;
        let formatted =
            staged::format(&base.channel(), options)
                .await
                .map_err(|error| match error {
                    StoreError::Device(source) => BdevError::Io {
                        context: format!("writing the lvol store on {}", base.name()),
                        source,
                    },
                    other => store_error(other),
                });
        formatted
            .and_then(|store| Self::with_store(Arc::clone(&base), store))
            .inspect_err(|_| base.release_claim())
    }

    /// Opens the store on `base`. Runs on a reactor.
    pub async fn open(base: Arc<Bdev>) -> Result<Arc<Self>, BdevError> {
        let name = base.name().to_string();
        Self::examine(base)
            .await?
            .ok_or_else(|| BdevError::Invalid(format!("no lvol store on {name}")))
    }

    /// SPDK's examine: opens the store on `base` if it holds one
    /// (`None`: neither super block is a store's). A store that is there
    /// but does not open (a corrupt page, an inconsistent table) is an
    /// error, never taken for an empty base. Runs on a reactor.
    pub async fn examine(base: Arc<Bdev>) -> Result<Option<Arc<Self>>, BdevError> {
        Self::blocks_per_metadata_block(&base)?;
        let device = staged::load(&base.channel())
            .await
            .map_err(|source| BdevError::Io {
                context: format!("reading the lvol store on {}", base.name()),
                source,
            })?;
        let store = match Store::open(device) {
            Ok(store) => store,
            Err(StoreError::NoStore { .. }) => return Ok(None),
            Err(other) => return Err(store_error(other)),
        };
        base.claim(&Self::claim_owner(store.name()))?;
        Self::with_store(Arc::clone(&base), store)
            .inspect_err(|_| base.release_claim())
            .map(Some)
    }

    pub fn base(&self) -> &Arc<Bdev> {
        &self.base
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Reads the store in memory (cheap: no I/O).
    pub fn read<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        f(&self.store.locked())
    }

    /// Makes one change and waits until it is on the base.
    pub async fn change<T>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _turn = self.changes.lock().await;
        if self.failed.load(Ordering::Acquire) {
            return Err(StoreError::NeedsReopen);
        }
        let (result, ops, generation) = {
            let mut store = self.store.locked();
            let result = f(&mut store);
            (result, store.device_mut().take(), store.generation())
        };
        if !ops.is_empty() {
            if let Err(e) = staged::replay(&self.base.channel(), ops).await {
                tracing::error!(base = self.base.name(), error = %e, "lvol store metadata write failed");
                self.failed.store(true, Ordering::Release);
                return Err(StoreError::Device(e));
            }
            // The clusters this commit freed may be taken again now.
            self.store.locked().settle();
            self.durable.send_replace(generation);
        }
        result
    }

    /// Waits until generation `generation` is on the base.
    async fn durable_at(&self, generation: u64) -> Result<(), IoError> {
        if *self.durable.borrow() >= generation {
            return Ok(());
        }
        let mut watch = self.durable.subscribe();
        loop {
            if *watch.borrow_and_update() >= generation {
                return Ok(());
            }
            if self.failed.load(Ordering::Acquire) || watch.changed().await.is_err() {
                return Err(IoError::Io);
            }
        }
    }

    /// The gate of lvol `uuid` (see the module docs).
    pub fn gate(&self, uuid: Uuid) -> Arc<tokio::sync::RwLock<()>> {
        Arc::clone(self.gates.locked().entry(uuid).or_default())
    }

    /// Where data cluster `cluster` starts on the base, in base blocks.
    fn cluster_start(&self, cluster: u32) -> u64 {
        self.geometry.cluster_offset_blocks(cluster) * self.per
    }

    fn cluster_blocks(&self) -> u64 {
        self.geometry.cluster_blocks() * self.per
    }

    /// Freezes `origin` into snapshot `name` while no write to it is in
    /// flight (see the module docs); returns the snapshot's uuid.
    pub async fn snapshot(&self, origin: Uuid, name: &str) -> Result<Uuid, StoreError> {
        let gate = self.gate(origin);
        let _frozen = gate.write().await;
        self.change(|store| store.snapshot(origin, name)).await
    }

    /// Deletes lvol `uuid` (its bdev already gone) once no I/O to it is
    /// in flight: its clusters may go to another lvol. A snapshot merged
    /// into its only child also waits for the child's I/O, whose clusters
    /// change owner under it.
    pub async fn delete(&self, uuid: Uuid) -> Result<(), StoreError> {
        let gate = self.gate(uuid);
        let _alone = gate.write().await;
        let child = self.read(|s| {
            let mut children = s.children(uuid).map(|c| c.uuid());
            match (children.next(), children.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        });
        let child_gate = child.map(|c| self.gate(c));
        let _child_alone = match &child_gate {
            Some(gate) => Some(gate.write().await),
            None => None,
        };
        self.change(|store| store.delete(uuid)).await?;
        self.gates.locked().remove(&uuid);
        Ok(())
    }

    /// A new lvol. A thick one is made thin, then inflated: its clusters
    /// are reserved, zeroed and only then committed, so neither the host
    /// nor a cut ever shows what they held before. A thick creation that
    /// fails half way is deleted again.
    pub async fn create_lvol(
        &self,
        name: &str,
        clusters: u64,
        thin: bool,
    ) -> Result<Uuid, StoreError> {
        if !thin {
            let free = self.read(|s| s.free_clusters());
            if clusters > u64::from(free) {
                return Err(StoreError::NoSpace {
                    needed: clusters,
                    free,
                });
            }
        }
        let uuid = self
            .change(|store| store.create_lvol(name, clusters, true))
            .await?;
        if !thin && let Err(error) = self.inflate(uuid, true).await {
            if let Err(undo) = self.delete(uuid).await {
                tracing::error!(lvol = name, error = %undo, "deleting a half-made thick lvol failed");
            }
            return Err(error);
        }
        Ok(uuid)
    }

    /// Resizes lvol `uuid` to `clusters` once no I/O to it is in flight
    /// (a shrink frees the clusters past the new end). A thick lvol's new
    /// clusters are backed as in [`create_lvol`](Self::create_lvol).
    pub async fn resize(&self, uuid: Uuid, clusters: u64) -> Result<(), StoreError> {
        let thick = {
            let gate = self.gate(uuid);
            let _alone = gate.write().await;
            self.change(|store| store.resize(uuid, clusters)).await?;
            self.read(|s| s.get(uuid).is_some_and(|l| !l.record.thin))
        };
        if thick {
            self.inflate(uuid, true).await?;
        }
        Ok(())
    }

    /// `bdev_lvol_inflate` (`all_clusters`) or `bdev_lvol_decouple_parent`:
    /// copies what lvol `uuid` reads through its parent into clusters of
    /// its own, then records them and drops the parent. Online: a host
    /// write meanwhile wins over the copy of its cluster (see
    /// [`LvolStore::commit_inflate`]).
    pub async fn inflate(&self, uuid: Uuid, all_clusters: bool) -> Result<(), StoreError> {
        let plan = self.store.locked().plan_inflate(uuid, all_clusters)?;
        let channel = self.base.channel();
        let cluster_blocks = self.cluster_blocks();
        for step in plan.steps().to_vec() {
            if let Err(error) = self
                .copy_into(&channel, step.source, step.target, 0..cluster_blocks)
                .await
            {
                self.store.locked().release_inflate(plan);
                return Err(StoreError::Device(std::io::Error::other(format!(
                    "copying cluster {} of the lvol: {error}",
                    step.logical
                ))));
            }
        }
        self.change(|store| store.commit_inflate(plan)).await
    }

    /// Fills blocks `range` of data cluster `target` from the same blocks
    /// of `source` (a cluster, or zeroes), in [`CHUNK_BYTES`] pieces.
    async fn copy_into(
        &self,
        channel: &IoChannel,
        source: Resolved,
        target: u32,
        range: std::ops::Range<u64>,
    ) -> Result<(), IoError> {
        let to = self.cluster_start(target) + range.start;
        let Resolved::Cluster { cluster, .. } = source else {
            return zero_blocks(channel, to, range.end - range.start).await;
        };
        let block_size = channel.bdev().block_size();
        let chunk = (CHUNK_BYTES / u64::from(block_size)).max(1);
        let from = self.cluster_start(cluster) + range.start;
        let mut at = 0;
        while at < range.end - range.start {
            let n = chunk.min(range.end - range.start - at);
            let buf = IoBuf::for_io((n * u64::from(block_size)) as usize);
            let read = channel
                .submit(IoRequest::read(from + at, buf, block_size))
                .await;
            read.result?;
            let data = read.buf.expect("a read returns its buffer");
            channel
                .submit(IoRequest::write(to + at, data, block_size))
                .await
                .result?;
            at += n;
        }
        Ok(())
    }

    /// Gives the base back (the store's bdevs are gone).
    pub fn close(&self) {
        self.base.release_claim();
    }
}

/// Largest write-zeroes or copy issued at once while clearing or filling
/// clusters.
const CHUNK_BYTES: u64 = 1 << 20;

/// Zeroes `blocks` blocks of `channel`'s bdev from `offset`.
async fn zero_blocks(channel: &IoChannel, offset: u64, blocks: u64) -> Result<(), IoError> {
    let block_size = channel.bdev().block_size();
    let chunk = (CHUNK_BYTES / u64::from(block_size)).max(1);
    let mut at = 0;
    while at < blocks {
        let n = chunk.min(blocks - at);
        if channel.bdev().supports(IoKind::WriteZeroes) {
            channel
                .submit(IoRequest::range(IoKind::WriteZeroes, offset + at, n))
                .await
                .result?;
        } else {
            let mut zeroes = IoBuf::for_io((n * u64::from(block_size)) as usize);
            zeroes.as_mut_slice().fill(0);
            channel
                .submit(IoRequest::write(offset + at, zeroes, block_size))
                .await
                .result?;
        }
        at += n;
    }
    Ok(())
}

/// One lvol (or snapshot) as a bdev.
pub struct LvolBdev {
    lvs: Arc<Lvs>,
    uuid: Uuid,
    read_only: bool,
    gate: Arc<tokio::sync::RwLock<()>>,
}

impl LvolBdev {
    pub fn new(lvs: Arc<Lvs>, uuid: Uuid, read_only: bool) -> Self {
        let gate = lvs.gate(uuid);
        Self {
            lvs,
            uuid,
            read_only,
            gate,
        }
    }

    pub fn lvs(&self) -> &Arc<Lvs> {
        &self.lvs
    }

    pub fn lvol(&self) -> Uuid {
        self.uuid
    }
}

impl BdevBackend for LvolBdev {
    fn module(&self) -> &'static str {
        "lvol"
    }

    fn product_name(&self) -> &'static str {
        "Logical Volume"
    }

    fn supports(&self, kind: IoKind) -> bool {
        match kind {
            IoKind::Read | IoKind::Flush => true,
            IoKind::Write | IoKind::Unmap | IoKind::WriteZeroes => !self.read_only,
            IoKind::Reset => false,
        }
    }

    fn create_channel(&self) -> Box<dyn BackendChannel> {
        Box::new(LvolChannel(std::rc::Rc::new(Path {
            lvs: Arc::clone(&self.lvs),
            uuid: self.uuid,
            gate: Arc::clone(&self.gate),
            base: self.lvs.base.channel(),
        })))
    }

    /// The store was resized first ([`Lvs::resize`]); the bdev may take
    /// what the lvol now has.
    fn prepare_growth(&self, blocks: u64) -> Result<(), BdevError> {
        let clusters = self
            .lvs
            .read(|s| s.get(self.uuid).map(|l| l.record.size_clusters))
            .ok_or_else(|| BdevError::NotFound(self.uuid.to_string()))?;
        let has = clusters * self.lvs.cluster_blocks();
        if blocks > has {
            return Err(BdevError::Invalid(format!(
                "lvol {} has {has} blocks, not {blocks}; resize it",
                self.uuid
            )));
        }
        Ok(())
    }

    fn driver_specific(&self) -> Option<(&'static str, serde_json::Value)> {
        let lvs = &self.lvs;
        let (store_uuid, described) = lvs.read(|store| {
            let lvol = store.get(self.uuid);
            (
                store.uuid(),
                lvol.map(|l| {
                    serde_json::json!({
                        "name": l.name(),
                        "thin_provision": l.record.thin,
                        "snapshot": l.record.read_only,
                        "base_snapshot": l.record.parent.and_then(|p| store.get(p)).map(|p| p.name().to_string()),
                        "clone": l.record.parent.is_some(),
                        "clones": store.children(self.uuid).map(|c| c.name().to_string()).collect::<Vec<_>>(),
                        "num_allocated_clusters": l.allocated_clusters(),
                    })
                }),
            )
        });
        let mut value = described.unwrap_or(serde_json::Value::Null);
        if let Some(map) = value.as_object_mut() {
            map.insert("lvol_store_uuid".into(), store_uuid.to_string().into());
            map.insert("base_bdev".into(), lvs.base.name().into());
        }
        Some(("lvol", value))
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// What one reactor's channel of an lvol bdev needs.
struct Path {
    lvs: Arc<Lvs>,
    uuid: Uuid,
    gate: Arc<tokio::sync::RwLock<()>>,
    base: std::rc::Rc<IoChannel>,
}

struct LvolChannel(std::rc::Rc<Path>);

impl BackendChannel for LvolChannel {
    fn submit(&self, io: IoRequest) -> IoFuture {
        let path = std::rc::Rc::clone(&self.0);
        Box::pin(async move { path.run(io).await })
    }
}

/// One piece of a request inside one logical cluster.
struct Piece {
    logical: u64,
    /// Blocks into the cluster.
    within: u64,
    blocks: u64,
    /// Blocks into the request.
    at: u64,
}

fn pieces(offset: u64, blocks: u64, cluster_blocks: u64) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < blocks {
        let block = offset + at;
        let within = block % cluster_blocks;
        let n = (cluster_blocks - within).min(blocks - at);
        out.push(Piece {
            logical: block / cluster_blocks,
            within,
            blocks: n,
            at,
        });
        at += n;
    }
    out
}

fn io_error(error: StoreError) -> IoError {
    match error {
        StoreError::NoSpace { .. } => IoError::NoSpace,
        StoreError::ReadOnly(_) => IoError::Invalid("the lvol is a read-only snapshot"),
        StoreError::NoSuchLvol(_) => IoError::Removed,
        _ => IoError::Io,
    }
}

impl Path {
    async fn run(&self, mut io: IoRequest) -> IoCompletion {
        let block_size = self.base.bdev().block_size();
        let result = match io.kind {
            IoKind::Flush => {
                if self.base.bdev().supports(IoKind::Flush) {
                    self.base
                        .submit(IoRequest::range(IoKind::Flush, 0, 0))
                        .await
                        .result
                } else {
                    Ok(())
                }
            }
            IoKind::Read | IoKind::Write => {
                let buf = io
                    .buf
                    .take()
                    .expect("validated: reads and writes carry a buffer");
                let pieces = pieces(io.offset_blocks, io.num_blocks, self.lvs.cluster_blocks());
                let bs = block_size as usize;
                // SAFETY: the pieces are disjoint ranges of the buffer and
                // each view is used by one I/O only; `buf` outlives them
                // (it is returned after every piece completed).
                let views: Vec<IoBuf> = pieces
                    .iter()
                    .map(|p| unsafe { buf.view(p.at as usize * bs, p.blocks as usize * bs) })
                    .collect();
                let write = io.kind == IoKind::Write;
                let _shared = self.gate.read().await;
                let runs = pieces.iter().zip(views).map(|(piece, view)| async move {
                    if write {
                        self.write_piece(piece, view, io.fua).await
                    } else {
                        self.read_piece(piece, view).await
                    }
                });
                let results = futures_util::future::join_all(runs).await;
                io.buf = Some(buf);
                results.into_iter().collect::<Result<(), IoError>>()
            }
            IoKind::Unmap | IoKind::WriteZeroes => self.zero(io.offset_blocks, io.num_blocks).await,
            IoKind::Reset => Err(IoError::NotSupported),
        };
        IoCompletion::new(io.buf, result)
    }

    /// Unmap and write-zeroes alike: afterwards the range reads as
    /// zeroes, so a host may rely on either. Whole clusters of a thin lvol
    /// with nothing showing through from below go back to the store; the
    /// rest is zeroed where the lvol owns it and written with zeroes where
    /// a snapshot's data would show through (that allocates, as a write
    /// would).
    async fn zero(&self, offset: u64, blocks: u64) -> Result<(), IoError> {
        let cluster_blocks = self.lvs.cluster_blocks();
        let whole = offset.div_ceil(cluster_blocks)..(offset + blocks) / cluster_blocks;
        if !whole.is_empty() {
            // Nothing of this lvol is in flight while clusters leave it: a
            // read or write that resolved one before could otherwise reach
            // it after another lvol was given it.
            let _alone = self.gate.write().await;
            self.lvs
                .change(|store| store.unmap_clusters(self.uuid, whole))
                .await
                .map_err(io_error)?;
        }
        let _shared = self.gate.read().await;
        let block_size = u64::from(self.base.bdev().block_size());
        let chunk = (CHUNK_BYTES / block_size).max(1);
        for piece in pieces(offset, blocks, cluster_blocks) {
            // In chunks, so a large cluster never needs a buffer its size.
            let mut done = 0;
            while done < piece.blocks {
                let part = Piece {
                    logical: piece.logical,
                    within: piece.within + done,
                    blocks: chunk.min(piece.blocks - done),
                    at: 0,
                };
                done += part.blocks;
                let (resolved, generation) = self.resolve(part.logical)?;
                match resolved {
                    Resolved::Zeroes => {}
                    Resolved::Cluster { owner, cluster } if owner == self.uuid => {
                        let at = self.lvs.cluster_start(cluster) + part.within;
                        zero_blocks(&self.base, at, part.blocks).await?;
                        self.lvs.durable_at(generation).await?;
                    }
                    Resolved::Cluster { .. } => {
                        let mut zeroes = IoBuf::for_io((part.blocks * block_size) as usize);
                        zeroes.as_mut_slice().fill(0);
                        self.write_piece(&part, zeroes, false).await?;
                    }
                }
            }
        }
        Ok(())
    }

    fn resolve(&self, logical: u64) -> Result<(Resolved, u64), IoError> {
        self.lvs.read(|store| {
            store
                .resolve(self.uuid, logical)
                .map(|r| (r, store.generation()))
                .map_err(io_error)
        })
    }

    async fn read_piece(&self, piece: &Piece, mut view: IoBuf) -> Result<(), IoError> {
        match self.resolve(piece.logical)?.0 {
            Resolved::Zeroes => {
                view.as_mut_slice().fill(0);
                Ok(())
            }
            Resolved::Cluster { cluster, .. } => {
                let offset = self.lvs.cluster_start(cluster) + piece.within;
                let block_size = self.base.bdev().block_size();
                self.base
                    .submit(IoRequest::read(offset, view, block_size))
                    .await
                    .result
            }
        }
    }

    async fn write_to(
        &self,
        cluster: u32,
        within: u64,
        view: IoBuf,
        fua: bool,
    ) -> Result<(), IoError> {
        let offset = self.lvs.cluster_start(cluster) + within;
        let mut write = IoRequest::write(offset, view, self.base.bdev().block_size());
        write.fua = fua;
        self.base.submit(write).await.result
    }

    async fn write_piece(&self, piece: &Piece, view: IoBuf, fua: bool) -> Result<(), IoError> {
        let (resolved, generation) = self.resolve(piece.logical)?;
        if let Resolved::Cluster { owner, cluster } = resolved
            && owner == self.uuid
        {
            self.write_to(cluster, piece.within, view, fua).await?;
            return self.lvs.durable_at(generation).await;
        }
        let _turn = self.lvs.allocating.take((self.uuid, piece.logical)).await;
        // Another first write may have allocated it while this one waited.
        let (resolved, generation) = self.resolve(piece.logical)?;
        if let Resolved::Cluster { owner, cluster } = resolved
            && owner == self.uuid
        {
            self.write_to(cluster, piece.within, view, fua).await?;
            return self.lvs.durable_at(generation).await;
        }
        let reservation = {
            let mut store = self.lvs.store.locked();
            store
                .reserve_cluster(self.uuid, piece.logical)
                .map_err(io_error)?
        };
        let target = reservation.cluster();
        let filled = async {
            self.fill_around(piece, resolved, target).await?;
            self.write_to(target, piece.within, view, false).await
        }
        .await;
        if let Err(e) = filled {
            self.lvs.store.locked().release_cluster(reservation);
            return Err(e);
        }
        self.lvs
            .change(|store| store.commit_cluster(reservation))
            .await
            .map_err(io_error)
    }

    /// Fills the blocks of new cluster `target` that `piece` does not
    /// write, from `source` (what the lvol read there until now).
    async fn fill_around(
        &self,
        piece: &Piece,
        source: Resolved,
        target: u32,
    ) -> Result<(), IoError> {
        let cluster_blocks = self.lvs.cluster_blocks();
        let before = 0..piece.within;
        let after = piece.within + piece.blocks..cluster_blocks;
        for range in [before, after] {
            if range.is_empty() {
                continue;
            }
            self.lvs
                .copy_into(&self.base, source, target, range)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::pieces;

    #[test]
    fn a_request_splits_at_cluster_boundaries() {
        let split: Vec<_> = pieces(6, 12, 8)
            .iter()
            .map(|p| (p.logical, p.within, p.blocks, p.at))
            .collect();
        assert_eq!(split, [(0, 6, 2, 0), (1, 0, 8, 2), (2, 0, 2, 10)]);
        assert_eq!(pieces(8, 8, 8).len(), 1);
    }
}

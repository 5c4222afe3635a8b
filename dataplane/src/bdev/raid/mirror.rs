//! raid1 and raid10: mirrored raids that survive failed legs.
//!
//! The legs form *columns* of mirrors: raid1 is one column of every leg,
//! raid10 stripes over columns of two. A write goes to every leg of its
//! column that is in sync or being rebuilt, and succeeds when an in-sync
//! leg of each column took it; a leg that fails an I/O is marked failed
//! and no longer used. A read goes to one in-sync leg (round robin) and is
//! retried on the others.
//!
//! With a superblock (see [`super::superblock`]) the array survives its
//! own cluster: leg states and the write-intent bitmap are on the legs.
//! Two ordering rules make that safe:
//! - a write reaches the legs only after its regions are dirty in the
//!   on-disk bitmap, so a crash or a failed leg leaves a record of every
//!   region whose legs may differ;
//! - a write is acknowledged only after any leg failure it (or an earlier
//!   I/O) caused is in the superblock, so an array assembled later never
//!   reads a leg that missed an acknowledged write.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::join_all;
use serde_json::{Value, json};
use shoal_appliance::locks::Recover;
use uuid::Uuid;

use super::legs::{LegChannels, Legs, Slot};
use super::map::{Chunk, StripeMap};
use super::process::{self, CheckReport, ProcessStatus};
use super::regions::Regions;
use super::superblock::{
    self, BITMAP_OFFSET_BYTES, LegState, RESERVED_BYTES, SUPERBLOCK_BYTES, Superblock,
};
use super::{RaidConfig, RaidLevel};
use crate::bdev::{
    BackendChannel, Bdev, BdevBackend, BdevError, BdevRegistry, BdevSpec, IoBuf, IoChannel,
    IoCompletion, IoError, IoFuture, IoKind, IoRequest,
};

/// Smallest region of the write-intent bitmap: what a returning leg
/// resyncs per write that happened while it was away.
pub const MIN_REGION_BYTES: u64 = 1024 * 1024;

/// Largest block size a raid with a superblock takes (its metadata is
/// written in 4 KiB pieces).
pub const MAX_SUPERBLOCK_BLOCK_SIZE: u32 = SUPERBLOCK_BYTES as u32;

/// How the legs form mirrored columns.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub columns: usize,
    /// Legs per column.
    pub width: usize,
    /// Striping over the columns (raid10); 0 for raid1.
    pub strip_blocks: u64,
    /// Where data starts on every leg.
    pub data_offset: u64,
    /// Data blocks of every leg.
    pub data_blocks: u64,
}

impl Geometry {
    pub fn new(level: RaidLevel, legs: usize, strip_blocks: u64) -> Self {
        let (columns, width) = match level {
            RaidLevel::Raid10 => (legs / 2, 2),
            _ => (1, legs),
        };
        Self {
            columns,
            width,
            strip_blocks,
            data_offset: 0,
            data_blocks: 0,
        }
    }

    pub fn column_of(&self, leg: usize) -> usize {
        leg / self.width
    }

    pub fn column_legs(&self, column: usize) -> std::ops::Range<usize> {
        column * self.width..(column + 1) * self.width
    }

    fn stripe(&self) -> Option<StripeMap> {
        (self.columns > 1).then_some(StripeMap {
            legs: self.columns,
            strip_blocks: self.strip_blocks,
        })
    }

    pub fn volume_blocks(&self) -> u64 {
        match self.stripe() {
            Some(map) => map.volume_blocks(self.data_blocks),
            None => self.data_blocks,
        }
    }

    /// Splits a request into per-column pieces; `Chunk::leg` is the column
    /// and `leg_offset` is within the data area.
    pub fn split(&self, offset: u64, blocks: u64) -> Vec<Chunk> {
        match self.stripe() {
            Some(map) => map.split(offset, blocks),
            None => vec![Chunk {
                leg: 0,
                leg_offset: offset,
                request_offset: 0,
                num_blocks: blocks,
            }],
        }
    }
}

/// What the mirrored raid and its channels on every reactor share.
pub struct MirrorState {
    pub name: String,
    pub level: RaidLevel,
    pub uuid: Uuid,
    pub strip_size_kb: u32,
    pub superblock: bool,
    pub geometry: Geometry,
    pub block_size: u32,
    pub legs: Arc<Legs>,
    pub regions: Regions,
    /// Serialises bitmap page writes, so the last one written carries the
    /// newest bits.
    bitmap_lock: tokio::sync::Mutex<()>,
    /// Serialises superblock writes.
    superblock_lock: tokio::sync::Mutex<()>,
    /// The `Legs::version` the superblocks on the legs record.
    persisted_version: AtomicU64,
    sequence: AtomicU64,
    pub process: ProcessStatus,
    pub stopping: AtomicBool,
    pub last_check: Mutex<Option<CheckReport>>,
}

impl MirrorState {
    pub fn tolerated_failures(&self) -> usize {
        self.geometry.width - 1
    }

    pub fn is_degraded(&self) -> bool {
        !self.legs.all_online()
    }

    /// Whether every column still has an in-sync leg.
    pub fn is_online(&self) -> bool {
        (0..self.geometry.columns).all(|column| {
            self.geometry
                .column_legs(column)
                .any(|leg| self.legs.state(leg) == LegState::Online)
        })
    }

    pub fn fail_leg(&self, leg: usize, error: &IoError) {
        let before = self.legs.set_state(leg, LegState::Failed);
        if matches!(before, LegState::Online | LegState::Rebuilding) {
            tracing::error!(
                raid = self.name,
                leg = self.legs.slot(leg).name,
                "base bdev failed an I/O ({error}); it is out of the array until rebuilt"
            );
        }
    }

    fn leg_blocks(&self, bytes: u64) -> u64 {
        bytes / u64::from(self.block_size)
    }

    /// Waits until `spans` may be written (no process holds them) and
    /// counts the write into each.
    async fn enter<'a>(&'a self, spans: &[std::ops::Range<usize>]) -> Entered<'a> {
        loop {
            let mut entered = Entered {
                regions: &self.regions,
                held: Vec::new(),
            };
            let mut blocked = false;
            'spans: for span in spans {
                for region in span.clone() {
                    if !self.regions.try_enter(region) {
                        blocked = true;
                        break 'spans;
                    }
                    entered.held.push(region);
                }
            }
            if !blocked {
                return entered;
            }
            // Release what was taken so the process is never waited on by
            // a writer that holds what the process waits for.
            drop(entered);
            tokio::time::sleep(process::LOCK_POLL).await;
        }
    }

    /// Makes `spans` dirty in the on-disk bitmap before a write reaches
    /// the legs.
    async fn ensure_dirty(
        &self,
        spans: &[std::ops::Range<usize>],
        channels: &LegChannels,
    ) -> Result<(), IoError> {
        if spans.iter().all(|s| self.regions.all_dirty(s.clone())) {
            return Ok(());
        }
        let _bitmap = self.bitmap_lock.lock().await;
        let needed: Vec<_> = spans
            .iter()
            .filter(|s| !self.regions.all_dirty((*s).clone()))
            .cloned()
            .collect();
        if needed.is_empty() {
            return Ok(());
        }
        if self.superblock {
            let mut pages: Vec<usize> = needed
                .iter()
                .flat_map(|s| Regions::pages_of(s.clone()))
                .collect();
            pages.dedup();
            for page in pages {
                let mut bytes = self.regions.page_bytes(page);
                for span in &needed {
                    set_bits(&mut bytes, page, span.clone());
                }
                self.write_meta(channels, page_offset(page), &bytes).await?;
            }
        }
        for span in needed {
            self.regions.mark_dirty(span);
        }
        Ok(())
    }

    /// Writes the bitmap pages `pages` as the regions are now. The caller
    /// holds no bitmap lock.
    pub async fn write_bitmap_pages(
        &self,
        pages: &[usize],
        channels: &LegChannels,
    ) -> Result<(), IoError> {
        if !self.superblock || pages.is_empty() {
            return Ok(());
        }
        let _bitmap = self.bitmap_lock.lock().await;
        for &page in pages {
            let bytes = self.regions.page_bytes(page);
            self.write_meta(channels, page_offset(page), &bytes).await?;
        }
        Ok(())
    }

    /// Writes metadata bytes at `offset` of the reserved area to every leg
    /// that is written; a leg that fails is failed. Errs only when no leg
    /// took it.
    async fn write_meta(
        &self,
        channels: &LegChannels,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), IoError> {
        let channels = channels.get();
        let targets: Vec<usize> = (0..self.legs.count())
            .filter(|&leg| self.legs.written(leg) && channels[leg].is_some())
            .collect();
        let writes = targets.iter().map(|&leg| {
            let channel = channels[leg].as_ref().expect("filtered on presence");
            meta_write(channel, self.leg_blocks(offset), bytes)
        });
        let mut any = false;
        for (&leg, result) in targets.iter().zip(join_all(writes).await) {
            match result {
                Ok(()) => any = true,
                Err(error) => self.fail_leg(leg, &error),
            }
        }
        if any { Ok(()) } else { Err(IoError::Io) }
    }

    /// Rewrites the superblock on every written leg until it records the
    /// legs' current states.
    pub async fn persist_superblock(&self, channels: &LegChannels) {
        if !self.superblock {
            self.persisted_version
                .fetch_max(self.legs.version(), Ordering::AcqRel);
            return;
        }
        let _superblock = self.superblock_lock.lock().await;
        loop {
            let version = self.legs.version();
            if self.persisted_version.load(Ordering::Acquire) >= version {
                return;
            }
            let sequence = self.sequence.fetch_add(1, Ordering::AcqRel) + 1;
            let records = self.legs.records();
            let live = channels.get();
            let targets: Vec<usize> = (0..self.legs.count())
                .filter(|&leg| self.legs.written(leg) && live[leg].is_some())
                .collect();
            let writes = targets.iter().map(|&leg| {
                let block = Superblock {
                    raid_uuid: self.uuid,
                    level: self.level.code(),
                    strip_blocks: self.geometry.strip_blocks as u32,
                    block_size: self.block_size,
                    data_blocks: self.geometry.data_blocks,
                    region_blocks: self.regions.region_blocks(),
                    sequence,
                    clean: false,
                    this_leg: leg as u8,
                    legs: records.clone(),
                }
                .encode();
                let channel = Rc::clone(live[leg].as_ref().expect("filtered on presence"));
                async move { meta_write(&channel, 0, &block).await }
            });
            for (&leg, result) in targets.iter().zip(join_all(writes).await) {
                if let Err(error) = result {
                    self.fail_leg(leg, &error);
                }
            }
            self.persisted_version.fetch_max(version, Ordering::AcqRel);
        }
    }

    fn needs_persist(&self) -> bool {
        self.persisted_version.load(Ordering::Acquire) < self.legs.version()
    }

    /// `bdev_raid_get_bdevs`' description.
    pub fn info(&self) -> Value {
        let slots = self.legs.slots();
        let operational = (0..slots.len())
            .filter(|&leg| self.legs.state(leg) == LegState::Online)
            .count();
        let state = if self.is_online() {
            "online"
        } else {
            "offline"
        };
        json!({
            "name": self.name,
            "uuid": self.uuid.to_string(),
            "raid_level": self.level.name(),
            "strip_size_kb": self.strip_size_kb,
            "state": state,
            "superblock": self.superblock,
            "num_base_bdevs": slots.len(),
            "num_base_bdevs_discovered": slots.iter().filter(|s| s.bdev.is_some()).count(),
            "num_base_bdevs_operational": operational,
            "base_bdevs_list": slots.iter().enumerate().map(|(leg, slot)| json!({
                "name": slot.bdev.as_ref().map(|_| slot.name.clone()),
                "uuid": slot.bdev.as_ref().map(|b| b.uuid().to_string()),
                "is_configured": self.legs.state(leg) == LegState::Online,
                "data_offset": self.geometry.data_offset,
                "data_size": self.geometry.data_blocks,
            })).collect::<Vec<_>>(),
            "process": self.process.describe(),
            "shoal": {
                "degraded": self.is_degraded(),
                "tolerated_failures": self.tolerated_failures(),
                "dirty_regions": self.regions.dirty_count(),
                "region_blocks": self.regions.region_blocks(),
                "legs": slots.iter().enumerate().map(|(leg, slot)| json!({
                    "name": slot.name,
                    "state": self.legs.state(leg).name(),
                    "member": slot.member.to_string(),
                })).collect::<Vec<_>>(),
                "last_process": self.process.describe_last(),
                "last_check": self.last_check.locked().as_ref().map(CheckReport::describe),
            },
        })
    }
}

/// A write's hold on its regions, given back when the write completes.
struct Entered<'a> {
    regions: &'a Regions,
    held: Vec<usize>,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        for &region in &self.held {
            self.regions.exit(region);
        }
    }
}

fn page_offset(page: usize) -> u64 {
    BITMAP_OFFSET_BYTES + (page * super::regions::REGIONS_PER_PAGE / 8) as u64
}

fn set_bits(bytes: &mut [u8], page: usize, span: std::ops::Range<usize>) {
    let first = page * super::regions::REGIONS_PER_PAGE;
    for region in span {
        if let Some(bit) = region.checked_sub(first)
            && bit < super::regions::REGIONS_PER_PAGE
        {
            bytes[bit / 8] |= 1 << (bit % 8);
        }
    }
}

/// One metadata write, durable when it completes.
async fn meta_write(channel: &IoChannel, offset_blocks: u64, bytes: &[u8]) -> Result<(), IoError> {
    let mut buf = IoBuf::for_io(bytes.len());
    buf.as_mut_slice().copy_from_slice(bytes);
    let block_size = channel.bdev().block_size();
    let mut io = IoRequest::write(offset_blocks, buf, block_size);
    io.fua = true;
    channel.submit(io).await.result
}

/// Reads `len` bytes at byte `offset` of a leg (metadata, and the
/// processes' copies).
pub async fn meta_read(channel: &IoChannel, offset: u64, len: usize) -> Result<IoBuf, IoError> {
    let block_size = channel.bdev().block_size();
    let io = IoRequest::read(
        offset / u64::from(block_size),
        IoBuf::for_io(len),
        block_size,
    );
    let done = channel.submit(io).await;
    done.result?;
    Ok(done.buf.expect("a read returns its buffer"))
}

/// The raid bdev's module object.
pub struct MirrorRaid {
    pub state: Arc<MirrorState>,
    supports_unmap: bool,
    supports_write_zeroes: bool,
}

impl BdevBackend for MirrorRaid {
    fn module(&self) -> &'static str {
        "raid"
    }

    fn product_name(&self) -> &'static str {
        "Raid Volume"
    }

    fn supports(&self, kind: IoKind) -> bool {
        match kind {
            IoKind::Unmap => self.supports_unmap,
            IoKind::WriteZeroes => self.supports_write_zeroes,
            _ => true,
        }
    }

    fn create_channel(&self) -> Box<dyn BackendChannel> {
        Box::new(MirrorChannel {
            state: Arc::clone(&self.state),
            legs: Rc::new(LegChannels::new(Arc::clone(&self.state.legs))),
            next_read: Cell::new(0),
        })
    }

    fn driver_specific(&self) -> Option<(&'static str, Value)> {
        Some(("raid", self.state.info()))
    }

    fn base_bdevs(&self) -> Vec<Arc<Bdev>> {
        self.state.legs.present()
    }

    fn unregistered(&self) {
        self.state.stopping.store(true, Ordering::Release);
    }

    fn prepare_growth(&self, _blocks: u64) -> Result<(), BdevError> {
        Err(BdevError::Invalid(format!(
            "{} {} cannot grow yet: its superblock and bitmap are sized at creation",
            self.state.level.name(),
            self.state.name
        )))
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

struct MirrorChannel {
    state: Arc<MirrorState>,
    legs: Rc<LegChannels>,
    next_read: Cell<usize>,
}

impl BackendChannel for MirrorChannel {
    fn submit(&self, io: IoRequest) -> IoFuture {
        let state = Arc::clone(&self.state);
        let legs = Rc::clone(&self.legs);
        match io.kind {
            IoKind::Read => {
                let first = self.next_read.get();
                self.next_read.set(first.wrapping_add(1));
                Box::pin(read(state, legs, io, first))
            }
            IoKind::Flush | IoKind::Reset => Box::pin(to_every_leg(state, legs, io)),
            _ => Box::pin(write(state, legs, io)),
        }
    }
}

async fn read(
    state: Arc<MirrorState>,
    legs: Rc<LegChannels>,
    io: IoRequest,
    first: usize,
) -> IoCompletion {
    let chunks = state.geometry.split(io.offset_blocks, io.num_blocks);
    if let [chunk] = chunks.as_slice() {
        let (buf, result) = read_chunk(&state, &legs, chunk, io.buf, first).await;
        return IoCompletion::new(buf, result);
    }
    let block_size = state.block_size as usize;
    let parent = io.buf.expect("a read has a buffer");
    let pieces = chunks.iter().map(|chunk| {
        // SAFETY: chunks are disjoint ranges of the request and the parent
        // buffer is not touched until every piece completed.
        let view = unsafe {
            parent.view(
                chunk.request_offset as usize * block_size,
                chunk.num_blocks as usize * block_size,
            )
        };
        read_chunk(&state, &legs, chunk, Some(view), first)
    });
    let result = join_all(pieces)
        .await
        .into_iter()
        .find_map(|(_, result)| result.err())
        .map_or(Ok(()), Err);
    IoCompletion::new(Some(parent), result)
}

/// Reads one column's piece from one of its in-sync legs. A region that
/// may differ between legs (stale, awaiting resync) is read from the
/// column's first in-sync leg only, so two reads never disagree.
async fn read_chunk(
    state: &MirrorState,
    legs: &LegChannels,
    chunk: &Chunk,
    mut buf: Option<IoBuf>,
    first: usize,
) -> (Option<IoBuf>, Result<(), IoError>) {
    let geometry = &state.geometry;
    let column = geometry.column_legs(chunk.leg);
    let stale = state
        .regions
        .span(chunk.leg_offset, chunk.num_blocks)
        .any(|r| state.regions.is_stale(r));
    let rotate = if stale { 0 } else { first };
    let channels = legs.get();
    let mut last_error = IoError::Io;
    for attempt in 0..geometry.width {
        let leg = column.start + (rotate + attempt) % geometry.width;
        let Some(channel) = &channels[leg] else {
            continue;
        };
        if state.legs.state(leg) != LegState::Online {
            continue;
        }
        let done = channel
            .submit(IoRequest {
                kind: IoKind::Read,
                offset_blocks: geometry.data_offset + chunk.leg_offset,
                num_blocks: chunk.num_blocks,
                buf: buf.take(),
                fua: false,
            })
            .await;
        buf = done.buf;
        match done.result {
            Ok(()) => return (buf, Ok(())),
            Err(error) => {
                state.fail_leg(leg, &error);
                last_error = error;
            }
        }
    }
    (buf, Err(last_error))
}

/// Writes, unmaps and write-zeroes: every written leg of each column.
async fn write(state: Arc<MirrorState>, legs: Rc<LegChannels>, io: IoRequest) -> IoCompletion {
    let geometry = state.geometry;
    let chunks = geometry.split(io.offset_blocks, io.num_blocks);
    let spans: Vec<_> = chunks
        .iter()
        .map(|c| state.regions.span(c.leg_offset, c.num_blocks))
        .collect();
    let entered = state.enter(&spans).await;
    if let Err(error) = state.ensure_dirty(&spans, &legs).await {
        drop(entered);
        return IoCompletion::new(io.buf, Err(error));
    }
    let channels = legs.get();
    let block_size = state.block_size as usize;
    let mut sent = Vec::new();
    let mut submissions = Vec::new();
    for (index, chunk) in chunks.iter().enumerate() {
        for leg in geometry.column_legs(chunk.leg) {
            let Some(channel) = &channels[leg] else {
                continue;
            };
            let leg_state = state.legs.state(leg);
            if !matches!(leg_state, LegState::Online | LegState::Rebuilding) {
                continue;
            }
            let buf = io.buf.as_ref().map(|buf| {
                // SAFETY: every leg only reads the buffer (a write's data).
                unsafe {
                    buf.view(
                        chunk.request_offset as usize * block_size,
                        chunk.num_blocks as usize * block_size,
                    )
                }
            });
            sent.push((index, leg, leg_state == LegState::Online));
            submissions.push(channel.submit(IoRequest {
                kind: io.kind,
                offset_blocks: geometry.data_offset + chunk.leg_offset,
                num_blocks: chunk.num_blocks,
                buf,
                fua: io.fua,
            }));
        }
    }
    let results = join_all(submissions).await;
    let mut landed = vec![false; chunks.len()];
    let mut last_error = IoError::Io;
    for ((index, leg, online), done) in sent.into_iter().zip(results) {
        match done.result {
            Ok(()) => landed[index] |= online,
            Err(error) => {
                state.fail_leg(leg, &error);
                last_error = error;
            }
        }
    }
    drop(entered);
    if state.needs_persist() {
        state.persist_superblock(&legs).await;
    }
    let result = if landed.iter().all(|&l| l) {
        Ok(())
    } else {
        Err(last_error)
    };
    IoCompletion::new(io.buf, result)
}

/// Flush and reset: every written leg; each column needs one in-sync leg
/// to succeed.
async fn to_every_leg(
    state: Arc<MirrorState>,
    legs: Rc<LegChannels>,
    io: IoRequest,
) -> IoCompletion {
    let channels = legs.get();
    let targets: Vec<usize> = (0..state.legs.count())
        .filter(|&leg| channels[leg].is_some() && state.legs.written(leg))
        .collect();
    let submissions = targets.iter().map(|&leg| {
        channels[leg]
            .as_ref()
            .expect("filtered on presence")
            .submit(IoRequest::range(io.kind, 0, 0))
    });
    let mut ok = vec![false; state.geometry.columns];
    for (&leg, done) in targets.iter().zip(join_all(submissions).await) {
        match done.result {
            Ok(()) => {
                if state.legs.state(leg) == LegState::Online {
                    ok[state.geometry.column_of(leg)] = true;
                }
            }
            // A leg that cannot flush does not fail the array (uring legs
            // always can; the generic layer refuses unsupported kinds).
            Err(IoError::NotSupported) => ok[state.geometry.column_of(leg)] = true,
            Err(error) => state.fail_leg(leg, &error),
        }
    }
    if state.needs_persist() {
        state.persist_superblock(&legs).await;
    }
    let result = if ok.iter().all(|&o| o) {
        Ok(())
    } else {
        Err(IoError::Io)
    };
    IoCompletion::new(io.buf, result)
}

/// Validates, reads any superblocks on the legs, and registers the raid.
/// Runs on a reactor (it does I/O).
pub async fn assemble(registry: &BdevRegistry, config: RaidConfig) -> Result<Arc<Bdev>, BdevError> {
    let level = config.level;
    let count = config.base_bdevs.len();
    let (minimum, even) = match level {
        RaidLevel::Raid10 => (4, true),
        _ => (2, false),
    };
    if count < minimum || count > superblock::MAX_LEGS || (even && !count.is_multiple_of(2)) {
        return Err(BdevError::Invalid(format!(
            "{} needs {}{minimum} to {} base bdevs, got {count}",
            level.name(),
            if even { "an even number of " } else { "" },
            superblock::MAX_LEGS
        )));
    }
    let mut present = Vec::with_capacity(count);
    for name in &config.base_bdevs {
        match registry.get(name) {
            Ok(bdev) => present.push(Some(bdev)),
            Err(BdevError::NotFound(_)) if config.superblock => present.push(None),
            Err(error) => return Err(error),
        }
    }
    let Some(first) = present.iter().flatten().next() else {
        return Err(BdevError::NotFound(config.base_bdevs.join(", ")));
    };
    let block_size = first.block_size();
    if let Some(odd) = present
        .iter()
        .flatten()
        .find(|l| l.block_size() != block_size)
    {
        return Err(BdevError::Invalid(format!(
            "base bdev {} has {}-byte blocks, {} has {block_size}: all legs need the same block size",
            odd.name(),
            odd.block_size(),
            first.name()
        )));
    }
    let strip_blocks = match level {
        RaidLevel::Raid10 => {
            let bytes = u64::from(config.strip_size_kb) * 1024;
            if !config.strip_size_kb.is_power_of_two() || bytes < u64::from(block_size) {
                return Err(BdevError::Invalid(format!(
                    "strip_size_kb {} must be a power of two of at least one block ({block_size} bytes)",
                    config.strip_size_kb
                )));
            }
            bytes / u64::from(block_size)
        }
        _ if config.strip_size_kb != 0 => {
            return Err(BdevError::Invalid(
                "raid1 takes no strip_size_kb (use 0)".into(),
            ));
        }
        _ => 0,
    };
    if config.superblock && block_size > MAX_SUPERBLOCK_BLOCK_SIZE {
        return Err(BdevError::Invalid(format!(
            "a raid with a superblock needs blocks of at most {MAX_SUPERBLOCK_BLOCK_SIZE} bytes, not {block_size}"
        )));
    }
    let mut claimed: Vec<Arc<Bdev>> = Vec::new();
    for leg in present.iter().flatten() {
        if let Err(error) = leg.claim(&config.name) {
            claimed.iter().for_each(|l| l.release_claim());
            return Err(error);
        }
        claimed.push(Arc::clone(leg));
    }
    let result = assemble_claimed(registry, &config, present, block_size, strip_blocks).await;
    if result.is_err() {
        claimed.iter().for_each(|l| l.release_claim());
    }
    result
}

async fn assemble_claimed(
    registry: &BdevRegistry,
    config: &RaidConfig,
    present: Vec<Option<Arc<Bdev>>>,
    block_size: u32,
    strip_blocks: u64,
) -> Result<Arc<Bdev>, BdevError> {
    let level = config.level;
    let mut geometry = Geometry::new(level, present.len(), strip_blocks);
    let uuid = config.uuid.unwrap_or_else(Uuid::new_v4);
    let reserved = if config.superblock {
        RESERVED_BYTES / u64::from(block_size)
    } else {
        0
    };
    geometry.data_offset = reserved;

    // What the legs say about themselves.
    let mut found: Vec<Option<Superblock>> = vec![None; present.len()];
    if config.superblock {
        for (leg, bdev) in present.iter().enumerate() {
            let Some(bdev) = bdev else { continue };
            if bdev.num_blocks() <= reserved {
                return Err(BdevError::Invalid(format!(
                    "base bdev {} ({} bytes) is no larger than the {RESERVED_BYTES}-byte superblock area",
                    bdev.name(),
                    bdev.size_bytes()
                )));
            }
            let channel = bdev.channel();
            let block = meta_read(&channel, 0, SUPERBLOCK_BYTES)
                .await
                .map_err(|e| {
                    BdevError::Invalid(format!("reading {}'s superblock: {e}", bdev.name()))
                })?;
            match Superblock::decode(block.as_slice()) {
                Ok(sb) if sb.raid_uuid == uuid => found[leg] = Some(sb),
                Ok(_) => tracing::warn!(
                    raid = config.name,
                    leg = bdev.name(),
                    "base bdev holds another raid's superblock; it joins as a new member"
                ),
                Err(_) => {}
            }
        }
    }
    let newest = superblock::newest(found.iter().flatten()).cloned();
    let smallest = present
        .iter()
        .flatten()
        .map(|b| b.num_blocks())
        .min()
        .expect("at least one leg");
    let mut slots = Vec::with_capacity(present.len());
    let mut bitmap_source = None;
    match &newest {
        Some(sb) => {
            if sb.legs.len() != present.len()
                || sb.level != level.code()
                || sb.block_size != block_size
                || u64::from(sb.strip_blocks) != strip_blocks
            {
                return Err(BdevError::Invalid(format!(
                    "the legs' superblock describes a {}-leg level-{} raid with {}-byte blocks and {}-block strips; \
                     asked for {} legs of {} with {block_size}-byte blocks and {strip_blocks}-block strips",
                    sb.legs.len(),
                    sb.level,
                    sb.block_size,
                    sb.strip_blocks,
                    present.len(),
                    level.name()
                )));
            }
            if reserved + sb.data_blocks > smallest {
                return Err(BdevError::Invalid(format!(
                    "a leg has {smallest} blocks; the array needs {}",
                    reserved + sb.data_blocks
                )));
            }
            geometry.data_blocks = sb.data_blocks;
            for (leg, bdev) in present.iter().enumerate() {
                let recorded = sb.legs[leg];
                let name = config.base_bdevs[leg].clone();
                let same_member = found[leg].as_ref().is_some_and(|own| {
                    own.legs[usize::from(own.this_leg)].member == recorded.member
                        && usize::from(own.this_leg) == leg
                });
                let (slot, state) = match bdev {
                    None => (
                        Slot {
                            name,
                            bdev: None,
                            member: recorded.member,
                            full_rebuild: false,
                        },
                        LegState::Missing,
                    ),
                    Some(bdev) if same_member => {
                        let state = match recorded.state {
                            LegState::Online => LegState::Online,
                            // Stale: rebuilt from the others before it is read.
                            _ => LegState::Rebuilding,
                        };
                        let full = recorded.state == LegState::Rebuilding;
                        if state == LegState::Online && bitmap_source.is_none() {
                            bitmap_source = Some(leg);
                        }
                        (
                            Slot {
                                name,
                                bdev: Some(Arc::clone(bdev)),
                                member: recorded.member,
                                full_rebuild: full,
                            },
                            state,
                        )
                    }
                    Some(bdev) => (
                        Slot {
                            name,
                            bdev: Some(Arc::clone(bdev)),
                            member: Uuid::new_v4(),
                            full_rebuild: true,
                        },
                        LegState::Rebuilding,
                    ),
                };
                slots.push((slot, state));
            }
        }
        None => {
            geometry.data_blocks = smallest - reserved;
            let missing = present.iter().filter(|b| b.is_none()).count();
            for (leg, bdev) in present.iter().enumerate() {
                let state = if bdev.is_some() {
                    LegState::Online
                } else {
                    LegState::Missing
                };
                slots.push((
                    Slot {
                        name: config.base_bdevs[leg].clone(),
                        bdev: bdev.clone(),
                        member: Uuid::new_v4(),
                        // A slot missing from the start has no data at all.
                        full_rebuild: bdev.is_none(),
                    },
                    state,
                ));
            }
            if missing > 0 {
                tracing::warn!(
                    raid = config.name,
                    "created degraded: {missing} of {} legs missing",
                    present.len()
                );
            }
        }
    }
    let region_blocks = match &newest {
        Some(sb) => sb.region_blocks,
        None => superblock::region_blocks_for(
            geometry.data_blocks,
            (MIN_REGION_BYTES / u64::from(block_size)).max(1),
        ),
    };
    let legs = Arc::new(Legs::new(slots));
    let state = Arc::new(MirrorState {
        name: config.name.clone(),
        level,
        uuid,
        strip_size_kb: config.strip_size_kb,
        superblock: config.superblock,
        geometry,
        block_size,
        legs: Arc::clone(&legs),
        regions: Regions::new(geometry.data_blocks, region_blocks),
        bitmap_lock: tokio::sync::Mutex::new(()),
        superblock_lock: tokio::sync::Mutex::new(()),
        persisted_version: AtomicU64::new(0),
        sequence: AtomicU64::new(newest.as_ref().map_or(0, |sb| sb.sequence)),
        process: ProcessStatus::default(),
        stopping: AtomicBool::new(false),
        last_check: Mutex::new(None),
    });
    if !state.is_online() {
        return Err(BdevError::Invalid(format!(
            "{}: a mirror column has no in-sync leg; the data is not available from these legs",
            config.name
        )));
    }
    let channels = LegChannels::new(Arc::clone(&legs));
    if config.superblock {
        if let Some(leg) = bitmap_source {
            let channel = legs.slot(leg).bdev.expect("source is present").channel();
            let bytes = state.regions.pages() * (super::regions::REGIONS_PER_PAGE / 8);
            let bitmap = meta_read(&channel, BITMAP_OFFSET_BYTES, bytes)
                .await
                .map_err(|e| BdevError::Invalid(format!("reading the bitmap: {e}")))?;
            state.regions.load(bitmap.as_slice());
        }
        // A new array's legs may hold anything there: write the bitmap
        // as it is now (all clear, or as loaded) to every written leg.
        let pages: Vec<usize> = (0..state.regions.pages()).collect();
        state
            .write_bitmap_pages(&pages, &channels)
            .await
            .map_err(|e| BdevError::Invalid(format!("writing the bitmap: {e}")))?;
        state.persist_superblock(&channels).await;
    }
    let present_legs = legs.present();
    let backend = MirrorRaid {
        supports_unmap: present_legs.iter().all(|l| l.supports(IoKind::Unmap)),
        supports_write_zeroes: present_legs.iter().all(|l| l.supports(IoKind::WriteZeroes)),
        state: Arc::clone(&state),
    };
    let spec = BdevSpec {
        name: config.name.clone(),
        uuid: Some(uuid),
        block_size,
        num_blocks: geometry.volume_blocks(),
    };
    let bdev = registry.register(spec, Box::new(backend))?;
    process::start_background(&state);
    Ok(bdev)
}

/// `bdev_raid_add_base_bdev`: puts `base` into a slot of `raid` and starts
/// rebuilding it. A returning member takes its own slot and resyncs what
/// the bitmap names; any other bdev fills the first missing (else failed)
/// slot and is rebuilt whole. Runs on a reactor.
pub async fn add_base_bdev(
    raid: &MirrorRaid,
    registry: &BdevRegistry,
    base: &str,
) -> Result<(), BdevError> {
    let state = &raid.state;
    let bdev = registry.get(base)?;
    // A leg that failed (an I/O error, or a rebuild that failed) but is
    // still in its slot: rebuild it again.
    if let Some(leg) = state
        .legs
        .slots()
        .iter()
        .position(|s| s.bdev.as_ref().is_some_and(|b| b.id() == bdev.id()))
    {
        if !state
            .legs
            .transition(leg, LegState::Failed, LegState::Rebuilding)
        {
            return Err(BdevError::Busy {
                name: base.to_string(),
                user: format!(
                    "{} (already a leg, {})",
                    state.name,
                    state.legs.state(leg).name()
                ),
            });
        }
        let channels = LegChannels::new(Arc::clone(&state.legs));
        state.persist_superblock(&channels).await;
        process::start_background(state);
        return Ok(());
    }
    if bdev.block_size() != state.block_size
        || bdev.num_blocks() < state.geometry.data_offset + state.geometry.data_blocks
    {
        return Err(BdevError::Invalid(format!(
            "{base} needs {}-byte blocks and at least {} blocks",
            state.block_size,
            state.geometry.data_offset + state.geometry.data_blocks
        )));
    }
    for kind in [IoKind::Unmap, IoKind::WriteZeroes] {
        if raid.supports(kind) && !bdev.supports(kind) {
            return Err(BdevError::Invalid(format!(
                "{base} does not support {kind:?}, which {} offers",
                state.name
            )));
        }
    }
    bdev.claim(&state.name)?;
    let result = add_claimed(state, &bdev, base).await;
    if result.is_err() {
        bdev.release_claim();
    }
    result
}

async fn add_claimed(
    state: &Arc<MirrorState>,
    bdev: &Arc<Bdev>,
    base: &str,
) -> Result<(), BdevError> {
    let own = if state.superblock {
        let block = meta_read(&bdev.channel(), 0, SUPERBLOCK_BYTES)
            .await
            .map_err(|e| BdevError::Invalid(format!("reading {base}'s superblock: {e}")))?;
        Superblock::decode(block.as_slice())
            .ok()
            .filter(|sb| sb.raid_uuid == state.uuid)
    } else {
        None
    };
    let slots = state.legs.slots();
    let returning = own.and_then(|sb| {
        let leg = usize::from(sb.this_leg);
        let member = sb.legs.get(leg)?.member;
        (leg < slots.len()
            && slots[leg].member == member
            && matches!(state.legs.state(leg), LegState::Missing | LegState::Failed))
        .then_some(leg)
    });
    let (leg, full) = match returning {
        Some(leg) => (leg, slots[leg].full_rebuild),
        None => {
            let free = (0..slots.len())
                .find(|&leg| state.legs.state(leg) == LegState::Missing)
                .or_else(|| (0..slots.len()).find(|&leg| state.legs.state(leg) == LegState::Failed))
                .ok_or_else(|| {
                    BdevError::Invalid(format!(
                        "{} has no missing or failed slot for {base}",
                        state.name
                    ))
                })?;
            (free, true)
        }
    };
    let previous = slots[leg].bdev.clone();
    let member = if full {
        Uuid::new_v4()
    } else {
        slots[leg].member
    };
    state.legs.replace(
        leg,
        Slot {
            name: base.to_string(),
            bdev: Some(Arc::clone(bdev)),
            member,
            full_rebuild: full,
        },
        LegState::Rebuilding,
    );
    if let Some(previous) = previous
        && previous.id() != bdev.id()
    {
        previous.release_claim();
    }
    let channels = LegChannels::new(Arc::clone(&state.legs));
    // The new member needs the bitmap as the array has it before writes
    // count on it.
    let pages: Vec<usize> = (0..state.regions.pages()).collect();
    let _ = state.write_bitmap_pages(&pages, &channels).await;
    state.persist_superblock(&channels).await;
    tracing::info!(
        raid = state.name,
        leg = base,
        slot = leg,
        full,
        "base bdev added; rebuilding"
    );
    process::start_background(state);
    Ok(())
}

/// `bdev_raid_remove_base_bdev`: takes `base` out of its slot (missing).
pub async fn remove_base_bdev(raid: &MirrorRaid, base: &str) -> Result<(), BdevError> {
    let state = &raid.state;
    let slots = state.legs.slots();
    let leg = slots
        .iter()
        .position(|s| s.bdev.as_ref().is_some_and(|b| b.name() == base))
        .ok_or_else(|| BdevError::NotFound(format!("{base} in {}", state.name)))?;
    let others_online = (0..slots.len())
        .filter(|&l| l != leg && state.geometry.column_of(l) == state.geometry.column_of(leg))
        .any(|l| state.legs.state(l) == LegState::Online);
    if !others_online {
        return Err(BdevError::Busy {
            name: base.to_string(),
            user: format!("{} (its last in-sync mirror)", state.name),
        });
    }
    let mut slot = slots[leg].clone();
    let bdev = slot.bdev.take().expect("found by its bdev");
    state.legs.replace(leg, slot, LegState::Missing);
    let channels = LegChannels::new(Arc::clone(&state.legs));
    state.persist_superblock(&channels).await;
    bdev.release_claim();
    Ok(())
}

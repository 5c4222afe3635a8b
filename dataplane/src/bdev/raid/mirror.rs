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
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::future::join_all;
use serde_json::{Value, json};
use uuid::Uuid;

use super::array::{self, ArrayCore, RedundantArray, meta_read, read_members};
use super::legs::LegChannels;
use super::map::{Chunk, StripeMap};
use super::process::{self, CheckReport, ProcessKind};
use super::superblock::{self, LegState, RESERVED_BYTES, SUPERBLOCK_BYTES};
use super::{RaidConfig, RaidLevel};
use crate::bdev::{
    BackendChannel, Bdev, BdevBackend, BdevError, BdevRegistry, BdevSpec, IoBuf, IoCompletion,
    IoError, IoFuture, IoKind, IoRequest,
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
    pub core: ArrayCore,
    pub geometry: Geometry,
}

impl std::ops::Deref for MirrorState {
    type Target = ArrayCore;

    fn deref(&self) -> &ArrayCore {
        &self.core
    }
}

impl RedundantArray for MirrorState {
    fn core(&self) -> &ArrayCore {
        &self.core
    }

    /// Whether every column still has an in-sync leg.
    fn is_online(&self) -> bool {
        (0..self.geometry.columns).all(|column| {
            self.geometry
                .column_legs(column)
                .any(|leg| self.legs.state(leg) == LegState::Online)
        })
    }

    fn tolerated_failures(&self) -> usize {
        self.geometry.width - 1
    }

    fn survives_without(&self, leg: usize) -> bool {
        self.geometry
            .column_legs(self.geometry.column_of(leg))
            .any(|other| other != leg && self.legs.state(other) == LegState::Online)
    }

    async fn process_region(
        &self,
        channels: &LegChannels,
        kind: ProcessKind,
        start: u64,
        blocks: u64,
        report: &mut CheckReport,
    ) -> Result<u64, String> {
        let window = process::window_blocks(self.block_size);
        let mut written = 0;
        for column in 0..self.geometry.columns {
            let mut at = start;
            while at < start + blocks {
                let count = window.min(start + blocks - at);
                written += process_piece(self, channels, kind, column, at, count, report).await?;
                at += count;
            }
        }
        Ok(written)
    }
}

impl MirrorState {
    /// `bdev_raid_get_bdevs`' description.
    pub fn info(&self) -> Value {
        array::describe(self, json!({}))
    }
}

/// The raid bdev's module object.
pub struct MirrorRaid {
    pub state: Arc<MirrorState>,
    supports_unmap: bool,
    supports_write_zeroes: bool,
}

impl MirrorRaid {
    /// The I/O kinds beyond read and write this raid offers.
    fn offered(&self) -> Vec<IoKind> {
        [IoKind::Unmap, IoKind::WriteZeroes]
            .into_iter()
            .filter(|&kind| self.supports(kind))
            .collect()
    }
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
        self.state.refuse_growth()
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
    let mut config = config;
    config.uuid.get_or_insert_with(Uuid::new_v4);
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
    let mut geometry = Geometry::new(config.level, present.len(), strip_blocks);
    let reserved = if config.superblock {
        RESERVED_BYTES / u64::from(block_size)
    } else {
        0
    };
    geometry.data_offset = reserved;
    let members = read_members(config, &present, block_size, strip_blocks, reserved).await?;
    geometry.data_blocks = members.data_blocks;
    let region_blocks = match &members.newest {
        Some(sb) => sb.region_blocks,
        None => superblock::region_blocks_for(
            geometry.data_blocks,
            (MIN_REGION_BYTES / u64::from(block_size)).max(1),
            superblock::BITMAP_MAX_BYTES,
        ),
    };
    let core = ArrayCore::new(
        config,
        block_size,
        strip_blocks,
        reserved,
        region_blocks,
        &members,
    );
    let legs = Arc::clone(&core.legs);
    let state = Arc::new(MirrorState { core, geometry });
    if !state.is_online() {
        return Err(BdevError::Invalid(format!(
            "{}: a mirror column has no in-sync leg; the data is not available from these legs",
            config.name
        )));
    }
    state.load_metadata(members.bitmap_source).await?;
    let present_legs = legs.present();
    let backend = MirrorRaid {
        supports_unmap: present_legs.iter().all(|l| l.supports(IoKind::Unmap)),
        supports_write_zeroes: present_legs.iter().all(|l| l.supports(IoKind::WriteZeroes)),
        state: Arc::clone(&state),
    };
    let spec = BdevSpec {
        name: config.name.clone(),
        uuid: Some(state.uuid),
        block_size,
        num_blocks: geometry.volume_blocks(),
    };
    let bdev = registry.register(spec, Box::new(backend))?;
    process::start_background(&state);
    Ok(bdev)
}

/// One window of one column: a rebuild copies it from an in-sync leg to
/// the legs being rebuilt; a resync or check compares (and copies) it to
/// the column's other in-sync legs.
async fn process_piece(
    state: &MirrorState,
    channels: &LegChannels,
    kind: ProcessKind,
    column: usize,
    at: u64,
    count: u64,
    report: &mut CheckReport,
) -> Result<u64, String> {
    let geometry = state.geometry;
    let legs = &state.legs;
    let bytes = (count * u64::from(state.block_size)) as usize;
    let offset = geometry.data_offset + at;
    loop {
        let live = channels.get();
        let Some(source) = geometry
            .column_legs(column)
            .find(|&leg| legs.state(leg) == LegState::Online && live[leg].is_some())
        else {
            return Err(format!("mirror column {column} has no in-sync leg"));
        };
        let targets: Vec<usize> = geometry
            .column_legs(column)
            .filter(|&leg| leg != source && live[leg].is_some())
            .filter(|&leg| match kind {
                ProcessKind::Rebuild => legs.state(leg) == LegState::Rebuilding,
                _ => legs.state(leg) == LegState::Online,
            })
            .collect();
        if targets.is_empty() {
            return Ok(0);
        }
        let at_byte = offset * u64::from(state.block_size);
        let data = match meta_read(live[source].as_ref().expect("present"), at_byte, bytes).await {
            Ok(data) => data,
            Err(error) => {
                state.fail_leg(source, &error);
                continue;
            }
        };
        let mut to_write = targets.clone();
        if let ProcessKind::Check { repair } = kind {
            to_write.clear();
            for &leg in &targets {
                match meta_read(live[leg].as_ref().expect("present"), at_byte, bytes).await {
                    Ok(theirs) => {
                        let mismatched = process::mismatched_blocks(
                            data.as_slice(),
                            theirs.as_slice(),
                            state.block_size as usize,
                        );
                        report.mismatched_blocks += mismatched;
                        if mismatched > 0 && repair {
                            to_write.push(leg);
                        }
                    }
                    Err(error) => state.fail_leg(leg, &error),
                }
            }
            report.checked_blocks += count;
        }
        let mut written = 0;
        for leg in to_write {
            // SAFETY: the copies only read the buffer.
            let view = unsafe { data.view(0, bytes) };
            let done = live[leg]
                .as_ref()
                .expect("present")
                .submit(IoRequest::write(offset, view, state.block_size))
                .await;
            match done.result {
                Ok(()) => written += bytes as u64,
                Err(error) => state.fail_leg(leg, &error),
            }
        }
        return Ok(written);
    }
}

/// `bdev_raid_add_base_bdev` on a mirror.
pub async fn add_base_bdev(
    raid: &MirrorRaid,
    registry: &BdevRegistry,
    base: &str,
) -> Result<(), BdevError> {
    array::add_base_bdev(&raid.state, &raid.offered(), registry, base).await
}

/// `bdev_raid_remove_base_bdev` on a mirror.
pub async fn remove_base_bdev(raid: &MirrorRaid, base: &str) -> Result<(), BdevError> {
    array::remove_base_bdev(&*raid.state, base).await
}

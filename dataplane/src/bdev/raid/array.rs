//! What every redundant raid (raid1, raid10, raid5f, raid6) shares: the
//! leg slots and their states, the write-intent bitmap and the superblock
//! on the legs, how they are assembled from what the legs record, and how a
//! leg joins or leaves. The levels add their geometry and I/O path
//! ([`super::mirror`], [`super::stripe`]) and implement [`RedundantArray`]
//! for the background processes ([`super::process`]).

use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::join_all;
use serde_json::{Value, json};
use shoal_appliance::locks::Recover;
use uuid::Uuid;

use super::legs::{LegChannels, Legs, Slot};
use super::process::{self, CheckReport, ProcessKind, ProcessStatus};
use super::regions::Regions;
use super::superblock::{
    self, BITMAP_OFFSET_BYTES, LegState, RESERVED_BYTES, SUPERBLOCK_BYTES, Superblock,
};
use super::{RaidConfig, RaidLevel};
use crate::bdev::{Bdev, BdevError, BdevRegistry, IoBuf, IoChannel, IoError, IoKind, IoRequest};

/// A redundant raid as its background processes and the RPCs see it.
pub trait RedundantArray: Send + Sync + 'static {
    fn core(&self) -> &ArrayCore;

    /// Whether every block can still be read (enough legs in sync).
    fn is_online(&self) -> bool;

    /// Legs the array can lose and still serve every block.
    fn tolerated_failures(&self) -> usize;

    /// Whether the array stays online without `leg`.
    fn survives_without(&self, leg: usize) -> bool;

    /// One locked region's share of a rebuild, resync or check: leg blocks
    /// `start..start + blocks` of the data area. Returns the bytes written.
    fn process_region(
        &self,
        channels: &LegChannels,
        kind: ProcessKind,
        start: u64,
        blocks: u64,
        report: &mut CheckReport,
    ) -> impl Future<Output = Result<u64, String>>;
}

/// The state every redundant level keeps, shared by the raid and its
/// channels on every reactor.
pub struct ArrayCore {
    pub name: String,
    pub level: RaidLevel,
    pub uuid: Uuid,
    pub strip_size_kb: u32,
    pub superblock: bool,
    pub block_size: u32,
    /// Strip size in blocks as the superblock records it (0 for raid1).
    pub strip_blocks: u64,
    /// Where data starts on every leg.
    pub data_offset: u64,
    /// Data blocks of every leg.
    pub data_blocks: u64,
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

/// What [`read_members`] found on the legs.
pub struct Members {
    pub slots: Vec<(Slot, LegState)>,
    pub data_blocks: u64,
    /// The newest superblock on the legs, if any.
    pub newest: Option<Superblock>,
    /// An in-sync leg whose bitmap is the array's.
    pub bitmap_source: Option<usize>,
}

/// Reads the legs' superblocks and decides each slot's member and state:
/// the newest copy wins, a leg it does not call online (or that is not the
/// member it names) is rebuilt before it is read, an absent bdev is a
/// missing slot. `reserved` is the metadata area in blocks.
pub async fn read_members(
    config: &RaidConfig,
    present: &[Option<Arc<Bdev>>],
    block_size: u32,
    strip_blocks: u64,
    reserved: u64,
) -> Result<Members, BdevError> {
    let level = config.level;
    let uuid = config.uuid.expect("the caller gave the array its uuid");
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
    let data_blocks;
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
            data_blocks = sb.data_blocks;
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
            data_blocks = smallest - reserved;
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
    Ok(Members {
        slots,
        data_blocks,
        newest,
        bitmap_source,
    })
}

impl ArrayCore {
    /// The core of an array of `members`, with data from `data_offset`.
    pub fn new(
        config: &RaidConfig,
        block_size: u32,
        strip_blocks: u64,
        data_offset: u64,
        region_blocks: u64,
        members: &Members,
    ) -> Self {
        let legs = Arc::new(Legs::new(members.slots.clone()));
        Self {
            name: config.name.clone(),
            level: config.level,
            uuid: config.uuid.expect("the caller gave the array its uuid"),
            strip_size_kb: config.strip_size_kb,
            superblock: config.superblock,
            block_size,
            strip_blocks,
            data_offset,
            data_blocks: members.data_blocks,
            legs,
            regions: Regions::new(members.data_blocks, region_blocks),
            bitmap_lock: tokio::sync::Mutex::new(()),
            superblock_lock: tokio::sync::Mutex::new(()),
            persisted_version: AtomicU64::new(0),
            sequence: AtomicU64::new(members.newest.as_ref().map_or(0, |sb| sb.sequence)),
            process: ProcessStatus::default(),
            stopping: AtomicBool::new(false),
            last_check: Mutex::new(None),
        }
    }

    pub fn is_degraded(&self) -> bool {
        !self.legs.all_online()
    }

    /// Loads the bitmap from `source` (an in-sync leg), then writes it and
    /// the superblock to every written leg: a new array's legs may hold
    /// anything there.
    pub async fn load_metadata(&self, source: Option<usize>) -> Result<(), BdevError> {
        if !self.superblock {
            return Ok(());
        }
        let channels = LegChannels::new(Arc::clone(&self.legs));
        if let Some(leg) = source {
            let channel = self
                .legs
                .slot(leg)
                .bdev
                .expect("source is present")
                .channel();
            let bytes = self.regions.pages() * (super::regions::REGIONS_PER_PAGE / 8);
            let bitmap = meta_read(&channel, BITMAP_OFFSET_BYTES, bytes)
                .await
                .map_err(|e| BdevError::Invalid(format!("reading the bitmap: {e}")))?;
            self.regions.load(bitmap.as_slice());
        }
        let pages: Vec<usize> = (0..self.regions.pages()).collect();
        self.write_bitmap_pages(&pages, &channels)
            .await
            .map_err(|e| BdevError::Invalid(format!("writing the bitmap: {e}")))?;
        self.persist_superblock(&channels).await;
        Ok(())
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

    pub fn leg_blocks(&self, bytes: u64) -> u64 {
        bytes / u64::from(self.block_size)
    }

    /// Waits until `spans` may be written (no process holds them) and
    /// counts the write into each.
    pub async fn enter<'a>(&'a self, spans: &[std::ops::Range<usize>]) -> Entered<'a> {
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
    pub async fn ensure_dirty(
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
                    strip_blocks: self.strip_blocks as u32,
                    block_size: self.block_size,
                    data_blocks: self.data_blocks,
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

    pub fn needs_persist(&self) -> bool {
        self.persisted_version.load(Ordering::Acquire) < self.legs.version()
    }
}

/// `bdev_raid_get_bdevs`' description of a redundant array: SPDK's fields,
/// and Shoal's under `shoal`, to which `level_specific` (an object) adds.
pub fn describe(array: &impl RedundantArray, level_specific: Value) -> Value {
    let core = array.core();
    let slots = core.legs.slots();
    let in_sync = |leg: usize| core.legs.state(leg) == LegState::Online;
    let mut shoal = json!({
        "degraded": core.is_degraded(),
        "tolerated_failures": array.tolerated_failures(),
        "dirty_regions": core.regions.dirty_count(),
        "region_blocks": core.regions.region_blocks(),
        "legs": slots.iter().enumerate().map(|(leg, slot)| json!({
            "name": slot.name,
            "state": core.legs.state(leg).name(),
            "member": slot.member.to_string(),
        })).collect::<Vec<_>>(),
        "last_process": core.process.describe_last(),
        "last_check": core.last_check.locked().as_ref().map(CheckReport::describe),
    });
    if let (Some(shoal), Value::Object(extra)) = (shoal.as_object_mut(), level_specific) {
        shoal.extend(extra);
    }
    json!({
        "name": core.name,
        "uuid": core.uuid.to_string(),
        "raid_level": core.level.name(),
        "strip_size_kb": core.strip_size_kb,
        "state": if array.is_online() { "online" } else { "offline" },
        "superblock": core.superblock,
        "num_base_bdevs": slots.len(),
        "num_base_bdevs_discovered": slots.iter().filter(|s| s.bdev.is_some()).count(),
        "num_base_bdevs_operational": (0..slots.len()).filter(|&leg| in_sync(leg)).count(),
        "base_bdevs_list": slots.iter().enumerate().map(|(leg, slot)| json!({
            "name": slot.bdev.as_ref().map(|_| slot.name.clone()),
            "uuid": slot.bdev.as_ref().map(|b| b.uuid().to_string()),
            "is_configured": in_sync(leg),
            "data_offset": core.data_offset,
            "data_size": core.data_blocks,
        })).collect::<Vec<_>>(),
        "process": core.process.describe(),
        "shoal": shoal,
    })
}

impl ArrayCore {
    /// Why a redundant array does not grow: its superblock and bitmap are
    /// sized at creation.
    pub fn refuse_growth(&self) -> Result<(), BdevError> {
        Err(BdevError::Invalid(format!(
            "{} {} cannot grow: its superblock and bitmap are sized at creation",
            self.level.name(),
            self.name
        )))
    }
}

/// A write's hold on its regions, given back when the write completes.
pub struct Entered<'a> {
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
pub async fn meta_write(
    channel: &IoChannel,
    offset_blocks: u64,
    bytes: &[u8],
) -> Result<(), IoError> {
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

/// `bdev_raid_add_base_bdev`: puts `base` into a slot of `raid` and starts
/// rebuilding it. A returning member takes its own slot and resyncs what
/// the bitmap names; any other bdev fills the first missing (else failed)
/// slot and is rebuilt whole. Runs on a reactor.
/// `offered` are the I/O kinds beyond read and write the raid offers: a
/// new leg must support them too.
pub async fn add_base_bdev<A: RedundantArray>(
    array: &Arc<A>,
    offered: &[IoKind],
    registry: &BdevRegistry,
    base: &str,
) -> Result<(), BdevError> {
    let state = array.core();
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
        process::start_background(array);
        return Ok(());
    }
    if bdev.block_size() != state.block_size
        || bdev.num_blocks() < state.data_offset + state.data_blocks
    {
        return Err(BdevError::Invalid(format!(
            "{base} needs {}-byte blocks and at least {} blocks",
            state.block_size,
            state.data_offset + state.data_blocks
        )));
    }
    for &kind in offered {
        if !bdev.supports(kind) {
            return Err(BdevError::Invalid(format!(
                "{base} does not support {kind:?}, which {} offers",
                state.name
            )));
        }
    }
    bdev.claim(&state.name)?;
    let result = add_claimed(array, &bdev, base).await;
    if result.is_err() {
        bdev.release_claim();
    }
    result
}

async fn add_claimed<A: RedundantArray>(
    array: &Arc<A>,
    bdev: &Arc<Bdev>,
    base: &str,
) -> Result<(), BdevError> {
    let state = array.core();
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
    process::start_background(array);
    Ok(())
}

/// `bdev_raid_remove_base_bdev`: takes `base` out of its slot (missing).
pub async fn remove_base_bdev<A: RedundantArray>(array: &A, base: &str) -> Result<(), BdevError> {
    let state = array.core();
    let slots = state.legs.slots();
    let leg = slots
        .iter()
        .position(|s| s.bdev.as_ref().is_some_and(|b| b.name() == base))
        .ok_or_else(|| BdevError::NotFound(format!("{base} in {}", state.name)))?;
    if state.legs.state(leg) == LegState::Online && !array.survives_without(leg) {
        return Err(BdevError::Busy {
            name: base.to_string(),
            user: format!(
                "{} (without it some data would have no in-sync copy)",
                state.name
            ),
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

//! raid5f and raid6: striped raids with one (XOR) or two (Reed-Solomon
//! P+Q) parity strips per stripe, which survive that many failed legs.
//!
//! Layout and code come from [`super::parity_map`] and [`super::parity`];
//! legs, bitmap, superblock and assembly from [`super::array`].
//!
//! - **Reads** go straight to the data strips. A strip whose leg is not in
//!   sync (or fails the read) is rebuilt from the stripe's survivors under
//!   the stripe's lock, so it never mixes two writes.
//! - **Writes** are *reconstruct-writes* per stripe, under its lock: the
//!   new parity of the touched in-strip range is computed from the new
//!   data and the old data of the strips not written (read, or rebuilt
//!   when their leg is away), then data and parity go to every leg that is
//!   written. A full-stripe write reads nothing and copies no data: its
//!   strips go to the legs as views of the host's buffer. A degraded write is the
//!   same: the parity carries the data of an absent leg.
//! - The regions a write touches are dirty in the on-disk bitmap before
//!   any leg is written, so after a crash with every leg present the
//!   resync recomputes the parity of exactly those regions.
//!
//! - A write that updates part of a stripe in place is first logged in the
//!   legs' write-hole journal ([`super::journal`]), so a crash in the
//!   middle never leaves a stripe whose parity would rebuild an absent
//!   leg wrong (Swordfish `WriteHoleProtectionPolicy` `Journaling`). A
//!   full-stripe write needs no record: all it can leave torn is its own,
//!   unacknowledged, range.

use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use futures_util::future::join_all;
use serde_json::{Value, json};
use shoal_appliance::locks::Recover;
use uuid::Uuid;

use super::array::{self, ArrayCore, RedundantArray, meta_read, read_members};
use super::journal::{self, Journal, Layout, RecordHeader};
use super::legs::{LegChannels, SlotChannels};
use super::parity::StripeCode;
use super::parity_map::{LegRole, ParityMap};
use super::process::{self, CheckReport, ProcessKind};
use super::superblock::{self, LegState, RESERVED_BYTES};
use super::{RaidConfig, RaidLevel};
use crate::bdev::{
    BackendChannel, Bdev, BdevBackend, BdevError, BdevRegistry, BdevSpec, IoBuf, IoCompletion,
    IoError, IoFuture, IoKind, IoRequest,
};

/// Largest strip: a reconstruct-write holds a strip per leg in memory.
pub const MAX_STRIP_KB: u32 = 1024;

/// Stripes one write request updates at once.
pub const STRIPES_IN_FLIGHT_PER_WRITE: usize = 4;

/// Smallest bitmap region (as for the mirrors); always whole stripes.
pub const MIN_REGION_BYTES: u64 = 1024 * 1024;

/// The bitmap's room: from after the superblock to the journal.
const BITMAP_LIMIT_BYTES: u64 = journal::JOURNAL_OFFSET_BYTES - superblock::BITMAP_OFFSET_BYTES;

/// Bytes of one bitmap page on the legs.
const PAGE_BYTES: u64 = (super::regions::REGIONS_PER_PAGE / 8) as u64;

/// Stripes being written or rebuilt for a read, one holder each.
#[derive(Default)]
struct StripeLocks {
    held: Mutex<HashMap<u64, Vec<Waker>>>,
}

impl StripeLocks {
    fn lock(&self, stripe: u64) -> impl Future<Output = StripeGuard<'_>> {
        std::future::poll_fn(move |cx| {
            let mut held = self.held.locked();
            match held.get_mut(&stripe) {
                Some(waiters) => {
                    waiters.push(cx.waker().clone());
                    Poll::Pending
                }
                None => {
                    held.insert(stripe, Vec::new());
                    Poll::Ready(StripeGuard {
                        locks: self,
                        stripe,
                    })
                }
            }
        })
    }
}

struct StripeGuard<'a> {
    locks: &'a StripeLocks,
    stripe: u64,
}

impl Drop for StripeGuard<'_> {
    fn drop(&mut self) {
        let waiters = self.locks.held.locked().remove(&self.stripe);
        for waker in waiters.into_iter().flatten() {
            waker.wake();
        }
    }
}

/// What the parity raid and its channels on every reactor share.
pub struct StripeState {
    pub core: ArrayCore,
    pub map: ParityMap,
    code: StripeCode,
    locks: StripeLocks,
    journal: Journal,
}

impl std::ops::Deref for StripeState {
    type Target = ArrayCore;

    fn deref(&self) -> &ArrayCore {
        &self.core
    }
}

impl RedundantArray for StripeState {
    fn core(&self) -> &ArrayCore {
        &self.core
    }

    fn is_online(&self) -> bool {
        self.out_of_sync() <= self.map.parity_legs_per_stripe()
    }

    fn tolerated_failures(&self) -> usize {
        self.map.parity_legs_per_stripe()
    }

    fn survives_without(&self, leg: usize) -> bool {
        let others = (0..self.legs.count())
            .filter(|&l| l != leg && self.legs.state(l) != LegState::Online)
            .count();
        others < self.map.parity_legs_per_stripe()
    }

    async fn process_region(
        &self,
        channels: &LegChannels,
        kind: ProcessKind,
        start: u64,
        blocks: u64,
        report: &mut CheckReport,
    ) -> Result<u64, String> {
        let strip = self.map.strip_blocks();
        let window = process::window_blocks(self.block_size).min(strip);
        let mut written = 0;
        let mut at = start;
        while at < start + blocks {
            let stripe = at / strip;
            let lo = at % strip;
            let len = window.min(strip - lo).min(start + blocks - at);
            written += self
                .process_range(channels, kind, stripe, lo, len, report)
                .await?;
            at += len;
        }
        Ok(written)
    }
}

/// Shards of one in-strip range of a stripe, in code order (data, then
/// parity), each `len` blocks.
type Shards = Vec<Vec<u8>>;

impl StripeState {
    fn out_of_sync(&self) -> usize {
        (0..self.legs.count())
            .filter(|&leg| self.legs.state(leg) != LegState::Online)
            .count()
    }

    fn bytes(&self, blocks: u64) -> usize {
        (blocks * u64::from(self.block_size)) as usize
    }

    /// The leg holding shard `shard` (data first, then parity) of `stripe`.
    fn shard_leg(&self, stripe: u64, shard: usize) -> usize {
        let data = self.map.data_legs();
        if shard < data {
            self.map.data_leg(stripe, shard)
        } else {
            self.map.parity_leg(stripe, shard - data)
        }
    }

    fn leg_offset(&self, stripe: u64, in_strip: u64) -> u64 {
        self.data_offset + stripe * self.map.strip_blocks() + in_strip
    }

    /// Reads `shards` of `[lo, lo + len)` of `stripe` from in-sync legs;
    /// `None` for a shard whose leg is not in sync or failed the read.
    async fn read_shards(
        &self,
        channels: &SlotChannels,
        stripe: u64,
        lo: u64,
        len: u64,
        shards: &[usize],
    ) -> Vec<Option<Vec<u8>>> {
        let offset = self.leg_offset(stripe, lo);
        let reads = shards.iter().map(|&shard| {
            let leg = self.shard_leg(stripe, shard);
            let channel = channels[leg]
                .as_ref()
                .filter(|_| self.legs.state(leg) == LegState::Online)
                .map(Rc::clone);
            let bytes = self.bytes(len);
            async move {
                let channel = channel?;
                let at = offset * u64::from(self.block_size);
                match meta_read(&channel, at, bytes).await {
                    Ok(buf) => Some(buf.as_slice().to_vec()),
                    Err(error) => {
                        self.fail_leg(leg, &error);
                        None
                    }
                }
            }
        });
        join_all(reads).await
    }

    /// Every shard of `[lo, lo + len)` of `stripe`: read from the in-sync
    /// legs, the others rebuilt from them.
    async fn stripe_range(
        &self,
        channels: &SlotChannels,
        stripe: u64,
        lo: u64,
        len: u64,
    ) -> Result<Shards, IoError> {
        let all: Vec<usize> = (0..self.code.total_shards()).collect();
        let read = self.read_shards(channels, stripe, lo, len, &all).await;
        let present: Vec<bool> = read.iter().map(Option::is_some).collect();
        let bytes = self.bytes(len);
        let mut shards: Shards = read
            .into_iter()
            .map(|s| s.unwrap_or_else(|| vec![0; bytes]))
            .collect();
        let mut refs: Vec<&mut [u8]> = shards.iter_mut().map(Vec::as_mut_slice).collect();
        self.code
            .reconstruct(&mut refs, &present)
            .map_err(|error| {
                tracing::error!(
                    raid = self.name,
                    stripe,
                    "stripe cannot be rebuilt: {error}"
                );
                IoError::Io
            })?;
        Ok(shards)
    }

    /// Computes the parity shards from the data shards.
    fn encode(&self, shards: &mut Shards) {
        let data = self.map.data_legs();
        let (data_shards, parity) = shards.split_at_mut(data);
        let data_refs: Vec<&[u8]> = data_shards.iter().map(Vec::as_slice).collect();
        let mut parity_refs: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
        self.code
            .encode(&data_refs, &mut parity_refs)
            .expect("shards are sized by the geometry");
    }

    /// Writes shards to their legs at `[lo, lo + len)` of `stripe`, each to
    /// its leg when that leg is written; a leg that fails is failed.
    async fn write_shards(
        &self,
        channels: &SlotChannels,
        stripe: u64,
        lo: u64,
        writes: Vec<(usize, IoBuf)>,
        fua: bool,
    ) {
        let offset = self.leg_offset(stripe, lo);
        let mut legs = Vec::new();
        let mut submissions = Vec::new();
        for (shard, buf) in writes {
            let leg = self.shard_leg(stripe, shard);
            let Some(channel) = channels[leg].as_ref() else {
                continue;
            };
            if !self.legs.written(leg) {
                continue;
            }
            let mut io = IoRequest::write(offset, buf, self.block_size);
            io.fua = fua;
            legs.push(leg);
            submissions.push(channel.submit(io));
        }
        for (leg, done) in legs.into_iter().zip(join_all(submissions).await) {
            if let Err(error) = done.result {
                self.fail_leg(leg, &error);
            }
        }
    }

    /// Logs `writes` (shard, in-strip offset, bytes) of `stripe` in the
    /// journal of every leg they go to, durably, before they are made in
    /// place. A leg that fails its record is failed, and that is on disk
    /// before the caller goes on.
    async fn log(
        &self,
        legs: &LegChannels,
        stripe: u64,
        writes: &[(usize, u64, &[u8])],
    ) -> Result<journal::Ticket<'_>, IoError> {
        let ticket = self.journal.begin(stripe).await;
        let channels = legs.get();
        let targets: Vec<(usize, u64, &[u8])> = writes
            .iter()
            .map(|&(shard, at, bytes)| (self.shard_leg(stripe, shard), at, bytes))
            .filter(|&(leg, _, _)| self.legs.written(leg) && channels[leg].is_some())
            .collect();
        let participants = targets.iter().fold(0u64, |mask, t| mask | 1 << t.0);
        let block = self.block_size as usize;
        let slot_at = self.journal.layout.slot_offset(ticket.slot()) / u64::from(self.block_size);
        let records = targets.iter().map(|&(leg, at, bytes)| {
            let header = RecordHeader {
                array: self.uuid,
                seq: ticket.seq,
                applied_through: ticket.applied_through,
                stripe,
                leg: leg as u32,
                in_strip_blocks: at,
                num_blocks: (bytes.len() / block) as u64,
                participants,
                data_crc: crc32c::crc32c(bytes),
            };
            let mut buf = IoBuf::for_io(journal::HEADER_BYTES + bytes.len());
            let (head, data) = buf.as_mut_slice().split_at_mut(journal::HEADER_BYTES);
            head.copy_from_slice(&header.encode());
            data.copy_from_slice(bytes);
            let mut io = IoRequest::write(slot_at, buf, self.block_size);
            io.fua = true;
            channels[leg]
                .as_ref()
                .expect("filtered on presence")
                .submit(io)
        });
        let mut any = false;
        for (&(leg, _, _), done) in targets.iter().zip(join_all(records).await) {
            match done.result {
                Ok(()) => any = true,
                Err(error) => self.fail_leg(leg, &error),
            }
        }
        if self.needs_persist() {
            self.persist_superblock(legs).await;
        }
        if !any || !self.is_online() {
            return Err(IoError::Io);
        }
        ticket.recorded();
        Ok(ticket)
    }

    /// One window of a rebuild, resync or check.
    async fn process_range(
        &self,
        channels: &LegChannels,
        kind: ProcessKind,
        stripe: u64,
        lo: u64,
        len: u64,
        report: &mut CheckReport,
    ) -> Result<u64, String> {
        let live = channels.get();
        let total = self.code.total_shards();
        let data = self.map.data_legs();
        let unreadable = || format!("stripe {stripe} has too few in-sync legs to rebuild");
        match kind {
            ProcessKind::Rebuild => {
                let targets: Vec<usize> = (0..total)
                    .filter(|&s| {
                        let leg = self.shard_leg(stripe, s);
                        self.legs.state(leg) == LegState::Rebuilding && live[leg].is_some()
                    })
                    .collect();
                if targets.is_empty() {
                    return Ok(0);
                }
                let shards = self
                    .stripe_range(&live, stripe, lo, len)
                    .await
                    .map_err(|_| unreadable())?;
                let writes: Vec<(usize, IoBuf)> =
                    targets.iter().map(|&s| (s, pooled(&shards[s]))).collect();
                let bytes = (writes.len() * self.bytes(len)) as u64;
                self.write_shards(&live, stripe, lo, writes, false).await;
                Ok(bytes)
            }
            ProcessKind::Resync => {
                // Without every data leg the parity cannot be recomputed;
                // the stripe is then as consistent as the write hole
                // allows, and a rebuild follows when the leg returns.
                let data_shards: Vec<usize> = (0..data).collect();
                let read = self.read_shards(&live, stripe, lo, len, &data_shards).await;
                if read.iter().any(Option::is_none) {
                    return Ok(0);
                }
                let mut shards: Shards = read.into_iter().flatten().collect();
                shards.extend((0..total - data).map(|_| vec![0; self.bytes(len)]));
                self.encode(&mut shards);
                let writes: Vec<(usize, IoBuf)> =
                    (data..total).map(|s| (s, pooled(&shards[s]))).collect();
                let bytes = (writes.len() * self.bytes(len)) as u64;
                self.write_shards(&live, stripe, lo, writes, false).await;
                Ok(bytes)
            }
            ProcessKind::Check { repair } => {
                let all: Vec<usize> = (0..total).collect();
                let read = self.read_shards(&live, stripe, lo, len, &all).await;
                if read.iter().any(Option::is_none) {
                    return Err(format!(
                        "stripe {stripe}: a check needs every leg in sync ({} are not)",
                        self.out_of_sync()
                    ));
                }
                let stored: Shards = read.into_iter().flatten().collect();
                let mut expected = stored.clone();
                self.encode(&mut expected);
                let block = self.block_size as usize;
                let mismatched = (data..total)
                    .map(|s| process::mismatched_blocks(&stored[s], &expected[s], block))
                    .max()
                    .unwrap_or(0);
                report.mismatched_blocks += mismatched;
                report.checked_blocks += len * data as u64;
                if mismatched > 0 && repair {
                    let writes: Vec<(usize, IoBuf)> =
                        (data..total).map(|s| (s, pooled(&expected[s]))).collect();
                    let bytes = (writes.len() * self.bytes(len)) as u64;
                    self.write_shards(&live, stripe, lo, writes, false).await;
                    return Ok(bytes);
                }
                Ok(0)
            }
        }
    }

    /// `bdev_raid_get_bdevs`' description.
    pub fn info(&self) -> Value {
        array::describe(
            self,
            json!({
                "write_hole_protection": "journal",
                "journal": {
                    "slots": self.journal.layout.slots,
                    "live_stripes": self.journal.live_stripes(),
                    "replayed_at_assembly": self.journal.recovery.replayed,
                    "discarded_at_assembly": self.journal.recovery.discarded,
                },
            }),
        )
    }
}

/// A copy of `bytes` for a leg write, in this cluster's pool when it has
/// room, so a leg on another cluster takes it without a further copy.
fn pooled(bytes: &[u8]) -> IoBuf {
    let mut buf = IoBuf::for_io(bytes.len());
    buf.as_mut_slice().copy_from_slice(bytes);
    buf
}

/// The raid bdev's module object.
pub struct StripeRaid {
    pub state: Arc<StripeState>,
}

impl BdevBackend for StripeRaid {
    fn module(&self) -> &'static str {
        "raid"
    }

    fn product_name(&self) -> &'static str {
        "Raid Volume"
    }

    fn supports(&self, kind: IoKind) -> bool {
        // Unmap and write-zeroes would have to keep the parity of what
        // they leave; the generic layer refuses them cleanly.
        matches!(
            kind,
            IoKind::Read | IoKind::Write | IoKind::Flush | IoKind::Reset
        )
    }

    fn create_channel(&self) -> Box<dyn BackendChannel> {
        Box::new(StripeChannel {
            state: Arc::clone(&self.state),
            legs: Rc::new(LegChannels::new(Arc::clone(&self.state.legs))),
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

struct StripeChannel {
    state: Arc<StripeState>,
    legs: Rc<LegChannels>,
}

impl BackendChannel for StripeChannel {
    fn submit(&self, io: IoRequest) -> IoFuture {
        let state = Arc::clone(&self.state);
        let legs = Rc::clone(&self.legs);
        match io.kind {
            IoKind::Read => Box::pin(read(state, legs, io)),
            IoKind::Write => Box::pin(write(state, legs, io)),
            _ => Box::pin(to_every_leg(state, legs, io)),
        }
    }
}

async fn read(state: Arc<StripeState>, legs: Rc<LegChannels>, io: IoRequest) -> IoCompletion {
    let channels = legs.get();
    let mut parent = io.buf.expect("a read has a buffer");
    let block = state.block_size as usize;
    let pieces = state.map.split(io.offset_blocks, io.num_blocks);
    let chunks: Vec<_> = pieces
        .iter()
        .flat_map(|piece| {
            state
                .map
                .data_chunks(piece)
                .into_iter()
                .map(move |c| (piece.stripe, c))
        })
        .collect();
    // One healthy chunk (most small reads): the request itself goes to
    // the leg, as raid0 does, with no views and no join.
    if let [(_, chunk)] = chunks.as_slice()
        && let Some(channel) = channels[chunk.leg]
            .as_ref()
            .filter(|_| state.legs.state(chunk.leg) == LegState::Online)
    {
        let done = channel
            .submit(IoRequest {
                kind: IoKind::Read,
                offset_blocks: state.data_offset + chunk.leg_offset,
                num_blocks: chunk.num_blocks,
                buf: Some(parent),
                fua: false,
            })
            .await;
        match done.result {
            Ok(()) => return done,
            Err(error) => state.fail_leg(chunk.leg, &error),
        }
        parent = done.buf.expect("a read returns its buffer");
        return read_rebuilt(&state, &legs, &chunks, vec![None], parent).await;
    }
    // Healthy chunks straight into the request's buffer.
    let direct = chunks.iter().map(|(_, chunk)| {
        let channel = channels[chunk.leg]
            .as_ref()
            .filter(|_| state.legs.state(chunk.leg) == LegState::Online)
            .map(Rc::clone);
        // SAFETY: chunks are disjoint ranges of the request and the parent
        // buffer is not touched until every read completed.
        let view = unsafe {
            parent.view(
                chunk.request_offset as usize * block,
                chunk.num_blocks as usize * block,
            )
        };
        let state = &state;
        async move {
            let channel = channel?;
            let offset = state.data_offset + chunk.leg_offset;
            let done = channel
                .submit(IoRequest::read(offset, view, state.block_size))
                .await;
            match done.result {
                Ok(()) => Some(()),
                Err(error) => {
                    state.fail_leg(chunk.leg, &error);
                    None
                }
            }
        }
    });
    let outcome = join_all(direct).await;
    read_rebuilt(&state, &legs, &chunks, outcome, parent).await
}

/// Fills the chunks whose direct read did not happen (`None`) with data
/// rebuilt from the survivors, one stripe at a time.
async fn read_rebuilt(
    state: &StripeState,
    legs: &LegChannels,
    chunks: &[(u64, super::map::Chunk)],
    outcome: Vec<Option<()>>,
    mut parent: IoBuf,
) -> IoCompletion {
    let block = state.block_size as usize;
    let strip = state.map.strip_blocks();
    for ((stripe, chunk), done) in chunks.iter().zip(outcome) {
        if done.is_some() {
            continue;
        }
        let lo = chunk.leg_offset % strip;
        let LegRole::Data(index) = state.map.leg_role(*stripe, chunk.leg) else {
            unreachable!("data chunks are on data legs");
        };
        let _stripe = state.locks.lock(*stripe).await;
        match state
            .stripe_range(&legs.get(), *stripe, lo, chunk.num_blocks)
            .await
        {
            Ok(shards) => {
                let at = chunk.request_offset as usize * block;
                parent.as_mut_slice()[at..at + shards[index].len()].copy_from_slice(&shards[index]);
            }
            Err(error) => return IoCompletion::new(Some(parent), Err(error)),
        }
    }
    IoCompletion::new(Some(parent), Ok(()))
}

async fn write(state: Arc<StripeState>, legs: Rc<LegChannels>, io: IoRequest) -> IoCompletion {
    let strip = state.map.strip_blocks();
    let pieces = state.map.split(io.offset_blocks, io.num_blocks);
    let spans: Vec<_> = pieces
        .iter()
        .map(|p| state.regions.span(p.stripe * strip, strip))
        .collect();
    let entered = state.enter(&spans).await;
    if let Err(error) = state.ensure_dirty(&spans, &legs).await {
        drop(entered);
        return IoCompletion::new(io.buf, Err(error));
    }
    let buf = io.buf.as_ref().expect("a write has a buffer");
    // A few stripes at a time: each holds a strip-sized buffer per leg, and
    // a large write (a volume's scrub) would otherwise hold them all.
    let mut results = Vec::with_capacity(pieces.len());
    for batch in pieces.chunks(STRIPES_IN_FLIGHT_PER_WRITE) {
        results.extend(
            join_all(
                batch
                    .iter()
                    .map(|piece| write_piece(&state, &legs, piece, buf, io.fua)),
            )
            .await,
        );
    }
    drop(entered);
    if state.needs_persist() {
        state.persist_superblock(&legs).await;
    }
    let result = results
        .into_iter()
        .find_map(Result::err)
        .map_or(Ok(()), Err)
        .and_then(|()| {
            if state.is_online() {
                Ok(())
            } else {
                Err(IoError::Io)
            }
        });
    IoCompletion::new(io.buf, result)
}

/// One stripe's share of a write, under the stripe's lock.
async fn write_piece(
    state: &StripeState,
    legs: &LegChannels,
    piece: &super::parity_map::StripePiece,
    buf: &IoBuf,
    fua: bool,
) -> Result<(), IoError> {
    let data = buf.as_slice();
    let map = &state.map;
    let strip = map.strip_blocks();
    let block = state.block_size as usize;
    let data_legs = map.data_legs();
    let total = state.code.total_shards();
    let _stripe = state.locks.lock(piece.stripe).await;
    let channels = legs.get();
    // Which in-strip range of which data shard the piece writes.
    let chunks = map.data_chunks(piece);
    let written: Vec<(usize, u64, u64, usize)> = chunks
        .iter()
        .map(|c| {
            let LegRole::Data(index) = map.leg_role(piece.stripe, c.leg) else {
                unreachable!("data chunks are on data legs");
            };
            // Chunks count from the start of the request, not the piece.
            let request_at = c.request_offset as usize * block;
            (index, c.leg_offset % strip, c.num_blocks, request_at)
        })
        .collect();
    let lo = written.iter().map(|w| w.1).min().expect("a piece has data");
    let hi = written
        .iter()
        .map(|w| w.1 + w.2)
        .max()
        .expect("a piece has data");
    let len = hi - lo;
    let covers = |index: usize| {
        written
            .iter()
            .any(|w| w.0 == index && w.1 == lo && w.2 == len)
    };
    let uncovered: Vec<usize> = (0..data_legs).filter(|&i| !covers(i)).collect();
    let bytes = state.bytes(len);
    if uncovered.is_empty() && !state.journal.is_live(piece.stripe) {
        return write_full_range(state, &channels, piece.stripe, lo, &written, buf, fua).await;
    }
    let mut shards: Shards = if uncovered.is_empty() {
        vec![vec![0; bytes]; total]
    } else {
        let read = state
            .read_shards(&channels, piece.stripe, lo, len, &uncovered)
            .await;
        if read.iter().all(Option::is_some) {
            let mut shards = vec![vec![0; bytes]; total];
            for (&index, shard) in uncovered.iter().zip(read) {
                shards[index] = shard.expect("checked");
            }
            shards
        } else {
            state.stripe_range(&channels, piece.stripe, lo, len).await?
        }
    };
    for &(index, in_strip, blocks, request_at) in &written {
        let at = state.bytes(in_strip - lo);
        let n = state.bytes(blocks);
        shards[index][at..at + n].copy_from_slice(&data[request_at..request_at + n]);
    }
    state.encode(&mut shards);
    // What each written shard puts where: (shard, in-strip offset, bytes).
    // Data shards go at their own offsets; parity covers the range.
    let mut leg_writes: Vec<(usize, u64, &[u8])> = written
        .iter()
        .map(|&(index, in_strip, blocks, _)| {
            let at = state.bytes(in_strip - lo);
            (
                index,
                in_strip,
                &shards[index][at..at + state.bytes(blocks)],
            )
        })
        .collect();
    leg_writes.extend((data_legs..total).map(|s| (s, lo, shards[s].as_slice())));
    let journaled = !uncovered.is_empty() || state.journal.is_live(piece.stripe);
    let record = match journaled {
        true => Some(state.log(legs, piece.stripe, &leg_writes).await?),
        false => None,
    };
    let mut by_offset: HashMap<u64, Vec<(usize, IoBuf)>> = HashMap::new();
    for (shard, at, bytes) in leg_writes {
        by_offset
            .entry(at)
            .or_default()
            .push((shard, pooled(bytes)));
    }
    // A journaled write is durable before its slot can be reused.
    let fua = fua || journaled;
    join_all(
        by_offset
            .into_iter()
            .map(|(at, writes)| state.write_shards(&channels, piece.stripe, at, writes, fua)),
    )
    .await;
    drop(record);
    Ok(())
}

/// A write of all of `stripe`'s data strips that needs no journal
/// record: nothing is read, the data goes to its legs as views of
/// the host's buffer, as raid0 sends it, and only the parity is new
/// memory, encoded straight into pool buffers a remote leg accepts.
async fn write_full_range(
    state: &StripeState,
    channels: &SlotChannels,
    stripe: u64,
    lo: u64,
    written: &[(usize, u64, u64, usize)],
    buf: &IoBuf,
    fua: bool,
) -> Result<(), IoError> {
    let data_legs = state.map.data_legs();
    let total = state.code.total_shards();
    let bytes = state.bytes(written[0].2);
    let mut data: Vec<&[u8]> = vec![&[]; data_legs];
    for &(index, _, _, request_at) in written {
        data[index] = &buf.as_slice()[request_at..request_at + bytes];
    }
    let mut parity: Vec<IoBuf> = (data_legs..total).map(|_| IoBuf::for_io(bytes)).collect();
    let mut parity_refs: Vec<&mut [u8]> = parity.iter_mut().map(IoBuf::as_mut_slice).collect();
    state
        .code
        .encode(&data, &mut parity_refs)
        .expect("shards are sized by the geometry");
    let mut writes: Vec<(usize, IoBuf)> = written
        .iter()
        .map(|&(index, _, _, request_at)| {
            // SAFETY: the views are read-only for the legs' writes, and the
            // host's buffer is not touched until the write completes.
            (index, unsafe { buf.view(request_at, bytes) })
        })
        .collect();
    writes.extend((data_legs..).zip(parity));
    state.write_shards(channels, stripe, lo, writes, fua).await;
    Ok(())
}

/// Flush and reset: every written leg; the array needs all but its
/// tolerated failures to succeed.
async fn to_every_leg(
    state: Arc<StripeState>,
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
    for (&leg, done) in targets.iter().zip(join_all(submissions).await) {
        match done.result {
            Ok(()) | Err(IoError::NotSupported) => {}
            Err(error) => state.fail_leg(leg, &error),
        }
    }
    if state.needs_persist() {
        state.persist_superblock(&legs).await;
    }
    let result = if state.is_online() {
        Ok(())
    } else {
        Err(IoError::Io)
    };
    IoCompletion::new(io.buf, result)
}

/// Validates, reads any superblocks on the legs, and registers the raid.
/// Runs on a reactor (it does I/O).
pub async fn assemble(registry: &BdevRegistry, config: RaidConfig) -> Result<Arc<Bdev>, BdevError> {
    let parity = match config.level {
        RaidLevel::Raid5f => 1,
        _ => 2,
    };
    let count = config.base_bdevs.len();
    let minimum = parity + super::parity::MIN_DATA_SHARDS;
    let maximum = (parity + super::parity::MAX_DATA_SHARDS).min(superblock::MAX_LEGS);
    if !(minimum..=maximum).contains(&count) {
        return Err(BdevError::Invalid(format!(
            "{} needs {minimum} to {maximum} base bdevs, got {count}",
            config.level.name()
        )));
    }
    if !config.superblock {
        return Err(BdevError::Invalid(format!(
            "{} keeps its leg states on the legs: create it with superblock true",
            config.level.name()
        )));
    }
    let mut present = Vec::with_capacity(count);
    for name in &config.base_bdevs {
        match registry.get(name) {
            Ok(bdev) => present.push(Some(bdev)),
            Err(BdevError::NotFound(_)) => present.push(None),
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
    if block_size > super::mirror::MAX_SUPERBLOCK_BLOCK_SIZE {
        return Err(BdevError::Invalid(format!(
            "a raid with a superblock needs blocks of at most {} bytes, not {block_size}",
            super::mirror::MAX_SUPERBLOCK_BLOCK_SIZE
        )));
    }
    let strip_bytes = u64::from(config.strip_size_kb) * 1024;
    if !config.strip_size_kb.is_power_of_two()
        || config.strip_size_kb > MAX_STRIP_KB
        || strip_bytes < u64::from(block_size)
    {
        return Err(BdevError::Invalid(format!(
            "strip_size_kb {} must be a power of two from one block ({block_size} bytes) to {MAX_STRIP_KB}",
            config.strip_size_kb
        )));
    }
    let layout = Layout::for_strip(strip_bytes).map_err(BdevError::Invalid)?;
    let strip_blocks = strip_bytes / u64::from(block_size);
    let map = ParityMap::new(count, parity, strip_blocks)
        .map_err(|e| BdevError::Invalid(e.to_string()))?;
    let code =
        StripeCode::new(map.data_legs(), parity).map_err(|e| BdevError::Invalid(e.to_string()))?;
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
    let result = assemble_claimed(registry, &config, &present, block_size, map, code, layout).await;
    if result.is_err() {
        claimed.iter().for_each(|l| l.release_claim());
    }
    result
}

async fn assemble_claimed(
    registry: &BdevRegistry,
    config: &RaidConfig,
    present: &[Option<Arc<Bdev>>],
    block_size: u32,
    map: ParityMap,
    code: StripeCode,
    layout: Layout,
) -> Result<Arc<Bdev>, BdevError> {
    let strip = map.strip_blocks();
    let reserved = RESERVED_BYTES / u64::from(block_size);
    let mut members = read_members(config, present, block_size, strip, reserved).await?;
    // Whole stripes only.
    members.data_blocks = map.stripes(members.data_blocks) * strip;
    if members.data_blocks == 0 {
        return Err(BdevError::Invalid(format!(
            "the legs hold less than one {}-KiB strip after the superblock area",
            config.strip_size_kb
        )));
    }
    let region_blocks = match &members.newest {
        Some(sb) => sb.region_blocks,
        // A region is whole stripes: a process that locks it holds them.
        None => superblock::region_blocks_for(
            members.data_blocks,
            (MIN_REGION_BYTES / u64::from(block_size)).max(strip),
            BITMAP_LIMIT_BYTES,
        ),
    };
    let core = ArrayCore::new(config, block_size, strip, reserved, region_blocks, &members);
    if core.regions.pages() as u64 * PAGE_BYTES > BITMAP_LIMIT_BYTES {
        return Err(BdevError::Invalid(format!(
            "{}: its bitmap of {} pages would overlap the write-hole journal",
            config.name,
            core.regions.pages()
        )));
    }
    let tolerated = map.parity_legs_per_stripe();
    let out_of_sync = (0..core.legs.count())
        .filter(|&leg| core.legs.state(leg) != LegState::Online)
        .count();
    if out_of_sync > tolerated {
        return Err(BdevError::Invalid(format!(
            "{}: {out_of_sync} of {} legs are not in sync and {} tolerates {tolerated}; the data is not available",
            config.name,
            present.len(),
            config.level.name(),
        )));
    }
    core.load_metadata(members.bitmap_source).await?;
    let recovery = journal::recover(&core, layout).await;
    if core.needs_persist() {
        core.persist_superblock(&LegChannels::new(Arc::clone(&core.legs)))
            .await;
    }
    let state = Arc::new(StripeState {
        core,
        map,
        code,
        locks: StripeLocks::default(),
        journal: Journal::new(layout, recovery),
    });
    if !state.is_online() {
        return Err(BdevError::Invalid(format!(
            "{}: legs failed while its journal was replayed; the data is not available",
            config.name
        )));
    }
    let spec = BdevSpec {
        name: config.name.clone(),
        uuid: Some(state.uuid),
        block_size,
        num_blocks: map.volume_blocks(members.data_blocks),
    };
    let backend = StripeRaid {
        state: Arc::clone(&state),
    };
    let bdev = registry.register(spec, Box::new(backend))?;
    process::start_background(&state);
    Ok(bdev)
}

/// `bdev_raid_add_base_bdev` on a parity raid.
pub async fn add_base_bdev(
    raid: &StripeRaid,
    registry: &BdevRegistry,
    base: &str,
) -> Result<(), BdevError> {
    array::add_base_bdev(&raid.state, &[], registry, base).await
}

/// `bdev_raid_remove_base_bdev` on a parity raid.
pub async fn remove_base_bdev(raid: &StripeRaid, base: &str) -> Result<(), BdevError> {
    array::remove_base_bdev(&*raid.state, base).await
}

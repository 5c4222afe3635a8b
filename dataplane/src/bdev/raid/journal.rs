//! The write-hole journal of raid5f and raid6.
//!
//! A write that updates part of a stripe in place (some data strips and
//! the parity) is not atomic across legs: a crash in the middle leaves data
//! and parity that disagree, and a leg that is away (or lost later) would
//! then be rebuilt from them wrong, corrupting data that was acknowledged
//! long before. So before such a write touches a stripe in place, every leg
//! it writes logs its own new blocks in the journal; a crash in the middle
//! is repaired at the next assembly by writing the logged blocks again.
//!
//! Layout: the last 3 MiB of each leg's reserved area (the superblock and
//! the bitmap keep the first 1 MiB) is a ring of [`Layout::slots`] slots,
//! each a 4 KiB header and room for one strip. Record `seq` lives in slot
//! `seq % slots` of every leg it writes ("participants"), so the legs of
//! one record are found by index alone.
//!
//! Rules, and why they make replay safe:
//! - A record is durable on every participant (FUA) before any in-place
//!   write of it starts; the in-place writes are FUA too, and slot `s` is
//!   reused by record `s + slots` only after every record up to `s` has
//!   completed in place. A replay therefore never lacks a record whose
//!   in-place writes had started.
//! - Each header carries `applied_through`: every record up to it had
//!   completed in place when this one began. Records at or below the
//!   largest `applied_through` found are never replayed.
//! - Replaying a record that had in fact completed rewrites what is there,
//!   unless a later write changed those blocks without a record. So while a
//!   stripe has a record above the durable `applied_through` ("live"),
//!   every write to it is journaled, even a full-stripe one.
//! - At assembly a record is replayed only when every participant that is
//!   in sync holds it intact: if one does not, its journal write never
//!   finished, so neither did any in-place write. Participants that are away
//!   are rebuilt later from the replayed stripe, which then gives them the
//!   record's blocks. After a replay every slot is rewritten as an empty
//!   checkpoint whose `applied_through` covers all that was seen.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Mutex;

use shoal_appliance::locks::Recover;
use uuid::Uuid;

use super::array::{ArrayCore, meta_read, meta_write};
use super::superblock::{LegState, RESERVED_BYTES, get_u32, get_u64, put_u32, put_u64};
use crate::bdev::IoChannel;

/// Where the journal starts on each leg; the bitmap must end before it.
pub const JOURNAL_OFFSET_BYTES: u64 = 1024 * 1024;

/// The journal's room on each leg.
pub const JOURNAL_BYTES: u64 = RESERVED_BYTES - JOURNAL_OFFSET_BYTES;

/// A record's header: one 4 KiB block, whatever the leg's block size.
pub const HEADER_BYTES: usize = 4096;

/// Most legs a record names (its participants are a 64-bit mask).
pub const MAX_PARTICIPANTS: usize = 64;

/// Journal I/O at assembly goes in pieces of at most this many bytes
/// (whole slots), the size of the largest strip write.
const RECOVERY_IO_BYTES: u64 = 1024 * 1024 + HEADER_BYTES as u64;

const MAGIC: &[u8; 8] = b"SHOALJR1";
const ENCODED_BYTES: usize = 96;

/// Slots of the ring for a given strip size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub slot_bytes: u64,
    pub slots: u64,
}

impl Layout {
    /// The ring for strips of `strip_bytes`: as many slots of a header and
    /// one strip as fit [`JOURNAL_BYTES`].
    pub fn for_strip(strip_bytes: u64) -> Result<Self, String> {
        let slot_bytes = HEADER_BYTES as u64 + strip_bytes;
        let slots = JOURNAL_BYTES / slot_bytes;
        if slots < 2 {
            return Err(format!(
                "a {}-KiB strip leaves room for {slots} journal slot(s); at least 2 are needed",
                strip_bytes / 1024
            ));
        }
        Ok(Self { slot_bytes, slots })
    }

    /// Byte offset of `slot` on a leg.
    pub fn slot_offset(&self, slot: u64) -> u64 {
        JOURNAL_OFFSET_BYTES + slot * self.slot_bytes
    }

    /// The slot record `seq` lives in.
    pub fn slot_of(&self, seq: u64) -> u64 {
        seq % self.slots
    }
}

/// A record's header as one leg holds it. `num_blocks` 0 is a checkpoint:
/// no data, only `applied_through`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    pub array: Uuid,
    pub seq: u64,
    pub applied_through: u64,
    pub stripe: u64,
    /// The leg that wrote it.
    pub leg: u32,
    /// Where in the strip this leg's blocks go, and how many.
    pub in_strip_blocks: u64,
    pub num_blocks: u64,
    /// Legs that log this record, one bit each.
    pub participants: u64,
    pub data_crc: u32,
}

impl RecordHeader {
    pub fn checkpoint(array: Uuid, leg: u32, applied_through: u64) -> Self {
        Self {
            array,
            seq: 0,
            applied_through,
            stripe: 0,
            leg,
            in_strip_blocks: 0,
            num_blocks: 0,
            participants: 0,
            data_crc: crc32c::crc32c(&[]),
        }
    }

    /// The 4 KiB block, with a CRC32C over it (CRC field zeroed).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; HEADER_BYTES];
        out[0..8].copy_from_slice(MAGIC);
        out[16..32].copy_from_slice(self.array.as_bytes());
        put_u64(&mut out, 32, self.seq);
        put_u64(&mut out, 40, self.applied_through);
        put_u64(&mut out, 48, self.stripe);
        put_u32(&mut out, 56, self.leg);
        put_u32(&mut out, 60, self.data_crc);
        put_u64(&mut out, 64, self.in_strip_blocks);
        put_u64(&mut out, 72, self.num_blocks);
        put_u64(&mut out, 80, self.participants);
        let crc = crc32c::crc32c(&out[..ENCODED_BYTES]);
        put_u32(&mut out, 8, crc);
        out
    }

    /// The header in `block` if it is intact and belongs to `array`.
    pub fn decode(block: &[u8], array: Uuid) -> Option<Self> {
        if block.len() < ENCODED_BYTES || &block[0..8] != MAGIC {
            return None;
        }
        let mut zeroed = block[..ENCODED_BYTES].to_vec();
        zeroed[8..12].fill(0);
        if crc32c::crc32c(&zeroed) != get_u32(block, 8) {
            return None;
        }
        let owner = Uuid::from_slice(&block[16..32]).ok()?;
        (owner == array).then(|| Self {
            array,
            seq: get_u64(block, 32),
            applied_through: get_u64(block, 40),
            stripe: get_u64(block, 48),
            leg: get_u32(block, 56),
            data_crc: get_u32(block, 60),
            in_strip_blocks: get_u64(block, 64),
            num_blocks: get_u64(block, 72),
            participants: get_u64(block, 80),
        })
    }
}

/// A header found in a slot at assembly, and whether its data is intact.
#[derive(Debug, Clone)]
pub struct Found {
    pub leg: usize,
    pub slot: u64,
    pub header: RecordHeader,
    pub data_intact: bool,
}

/// What an assembly does with the journal.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReplayPlan {
    /// The largest sequence on any leg: new records start above it.
    pub max_seq: u64,
    /// Records to write again, oldest first: indexes into the found list.
    pub replay: Vec<Vec<usize>>,
    /// Records above `applied_through` that a participant lacks.
    pub discarded: usize,
}

impl ReplayPlan {
    /// Whether the slots must be rewritten as checkpoints: records above
    /// the durable `applied_through` exist, and must never be replayed
    /// again once later writes land without a record.
    pub fn rewrites_slots(&self) -> bool {
        !self.replay.is_empty() || self.discarded > 0
    }
}

/// Decides which records to replay. `in_sync(leg)`: the leg is in sync in
/// this assembly (its blocks are read); only those must hold a record.
pub fn plan_replay(found: &[Found], slots: u64, in_sync: impl Fn(usize) -> bool) -> ReplayPlan {
    let placed: Vec<(usize, &Found)> = found
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            let checkpoint = f.header.num_blocks == 0;
            (checkpoint || f.header.seq % slots == f.slot) && f.header.leg as usize == f.leg
        })
        .collect();
    let max_seq = placed
        .iter()
        .map(|(_, f)| f.header.seq.max(f.header.applied_through))
        .max()
        .unwrap_or(0);
    let applied = placed
        .iter()
        .map(|(_, f)| f.header.applied_through)
        .max()
        .unwrap_or(0);
    let mut by_seq: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for &(index, f) in &placed {
        if f.header.num_blocks > 0 && f.header.seq > applied {
            by_seq.entry(f.header.seq).or_default().push(index);
        }
    }
    let mut plan = ReplayPlan {
        max_seq,
        ..ReplayPlan::default()
    };
    for members in by_seq.into_values() {
        let first = &found[members[0]].header;
        let agree = members.iter().all(|&i| {
            let h = &found[i].header;
            h.participants == first.participants && h.stripe == first.stripe
        });
        let required = (0..MAX_PARTICIPANTS)
            .filter(|&leg| first.participants & (1 << leg) != 0 && in_sync(leg));
        let mut complete = agree;
        for leg in required {
            complete &= members
                .iter()
                .any(|&i| found[i].leg == leg && found[i].data_intact);
        }
        if complete {
            let writes: Vec<usize> = members
                .into_iter()
                .filter(|&i| found[i].data_intact && in_sync(found[i].leg))
                .collect();
            plan.replay.push(writes);
        } else {
            plan.discarded += 1;
        }
    }
    plan
}

/// What an assembly found in the journal.
#[derive(Debug, Default, Clone, Copy)]
pub struct Recovery {
    /// New records start above it.
    pub last_seq: u64,
    pub replayed: usize,
    pub discarded: usize,
}

/// Reads every leg's journal, replays what the crash of the array's last
/// owner left half done, and retires the slots. A leg that fails journal I/O is failed (the
/// caller persists the superblock). Runs on a reactor, before the array
/// serves I/O.
pub async fn recover(core: &ArrayCore, layout: Layout) -> Recovery {
    let block = u64::from(core.block_size);
    let per_io = (RECOVERY_IO_BYTES / layout.slot_bytes).max(1);
    let legs: Vec<(usize, Rc<IoChannel>)> = (0..core.legs.count())
        .filter(|&leg| core.legs.written(leg))
        .filter_map(|leg| core.legs.slot(leg).bdev.map(|b| (leg, b.channel())))
        .collect();
    let mut found = Vec::new();
    let mut payloads = Vec::new();
    for (leg, channel) in &legs {
        let mut slot = 0;
        while slot < layout.slots {
            let count = per_io.min(layout.slots - slot);
            let read = meta_read(
                channel,
                layout.slot_offset(slot),
                (count * layout.slot_bytes) as usize,
            )
            .await;
            let bytes = match read {
                Ok(bytes) => bytes,
                // Out of the array: its records are no longer needed.
                Err(error) => {
                    core.fail_leg(*leg, &error);
                    break;
                }
            };
            for (i, piece) in bytes
                .as_slice()
                .chunks(layout.slot_bytes as usize)
                .enumerate()
            {
                let Some(header) = RecordHeader::decode(&piece[..HEADER_BYTES], core.uuid) else {
                    continue;
                };
                let len = (header.num_blocks * block) as usize;
                let data = piece.get(HEADER_BYTES..HEADER_BYTES + len);
                let data_intact = data.is_some_and(|d| crc32c::crc32c(d) == header.data_crc)
                    && header.in_strip_blocks + header.num_blocks <= core.strip_blocks;
                found.push(Found {
                    leg: *leg,
                    slot: slot + i as u64,
                    header,
                    data_intact,
                });
                payloads.push(data.map(<[u8]>::to_vec).unwrap_or_default());
            }
            slot += count;
        }
    }
    let plan = plan_replay(&found, layout.slots, |leg| {
        leg < core.legs.count() && core.legs.state(leg) == LegState::Online
    });
    for record in &plan.replay {
        for &index in record {
            let f = &found[index];
            let (_, channel) = legs
                .iter()
                .find(|(leg, _)| *leg == f.leg)
                .expect("read from it");
            let at =
                core.data_offset + f.header.stripe * core.strip_blocks + f.header.in_strip_blocks;
            if let Err(error) = meta_write(channel, at, &payloads[index]).await {
                core.fail_leg(f.leg, &error);
            }
        }
    }
    if plan.rewrites_slots() {
        for (leg, channel) in &legs {
            let checkpoint =
                RecordHeader::checkpoint(core.uuid, *leg as u32, plan.max_seq).encode();
            let mut slot = 0;
            while slot < layout.slots {
                let count = per_io.min(layout.slots - slot);
                let mut bytes = vec![0u8; (count * layout.slot_bytes) as usize];
                for piece in bytes.chunks_mut(layout.slot_bytes as usize) {
                    piece[..HEADER_BYTES].copy_from_slice(&checkpoint);
                }
                if let Err(error) =
                    meta_write(channel, layout.slot_offset(slot) / block, &bytes).await
                {
                    core.fail_leg(*leg, &error);
                    break;
                }
                slot += count;
            }
        }
        tracing::warn!(
            raid = core.name,
            replayed = plan.replay.len(),
            discarded = plan.discarded,
            "write-hole journal: stripes left half written by a crash are repaired"
        );
    }
    Recovery {
        last_seq: plan.max_seq,
        replayed: plan.replay.len(),
        discarded: plan.discarded,
    }
}

/// The journal of a running array: sequence numbers, records in flight
/// and the stripes that must keep being journaled.
pub struct Journal {
    pub layout: Layout,
    pub recovery: Recovery,
    state: Mutex<JournalState>,
    freed: tokio::sync::Notify,
}

struct JournalState {
    next_seq: u64,
    /// Records begun and not yet completed in place.
    in_flight: BTreeSet<u64>,
    /// The largest `applied_through` in a record that is on disk.
    durable_applied: u64,
    /// Stripe → its newest record above `durable_applied`.
    live: HashMap<u64, u64>,
}

impl Journal {
    /// A journal whose records start above `recovery.last_seq` (everything
    /// up to it is on disk as applied).
    pub fn new(layout: Layout, recovery: Recovery) -> Self {
        let last_seq = recovery.last_seq;
        Self {
            layout,
            recovery,
            state: Mutex::new(JournalState {
                next_seq: last_seq + 1,
                in_flight: BTreeSet::new(),
                durable_applied: last_seq,
                live: HashMap::new(),
            }),
            freed: tokio::sync::Notify::new(),
        }
    }

    /// Whether a write to `stripe` must be journaled although it covers
    /// the whole stripe: a replay could otherwise write an older record
    /// over it.
    pub fn is_live(&self, stripe: u64) -> bool {
        self.state.locked().live.contains_key(&stripe)
    }

    /// Stripes with a record that a replay could still write.
    pub fn live_stripes(&self) -> usize {
        self.state.locked().live.len()
    }

    /// Takes the next sequence for a record of `stripe`, waiting until its
    /// slot's previous record has completed in place. The caller holds the
    /// stripe's lock.
    pub async fn begin(&self, stripe: u64) -> Ticket<'_> {
        loop {
            let notified = self.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.state.locked();
                let seq = state.next_seq;
                let free = state
                    .in_flight
                    .first()
                    .is_none_or(|&oldest| oldest + self.layout.slots > seq);
                if free {
                    let applied_through = state.in_flight.first().map_or(seq - 1, |&o| o - 1);
                    state.next_seq += 1;
                    state.in_flight.insert(seq);
                    state.live.insert(stripe, seq);
                    return Ticket {
                        journal: self,
                        seq,
                        applied_through,
                    };
                }
            }
            notified.await;
        }
    }

    /// A record carrying `applied_through` is on disk: the stripes whose
    /// records it covers are no longer live.
    fn recorded(&self, applied_through: u64) {
        let mut state = self.state.locked();
        if applied_through > state.durable_applied {
            state.durable_applied = applied_through;
            state.live.retain(|_, &mut seq| seq > applied_through);
        }
    }

    fn finish(&self, seq: u64) {
        self.state.locked().in_flight.remove(&seq);
        self.freed.notify_waiters();
    }
}

/// One record from `begin` until its in-place writes are done (dropped).
pub struct Ticket<'a> {
    journal: &'a Journal,
    pub seq: u64,
    pub applied_through: u64,
}

impl Ticket<'_> {
    pub fn slot(&self) -> u64 {
        self.journal.layout.slot_of(self.seq)
    }

    /// The record is durable on the legs that took it.
    pub fn recorded(&self) {
        self.journal.recorded(self.applied_through);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.journal.finish(self.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(array: Uuid, seq: u64, applied: u64, leg: u32, participants: u64) -> RecordHeader {
        RecordHeader {
            array,
            seq,
            applied_through: applied,
            stripe: 9,
            leg,
            in_strip_blocks: 0,
            num_blocks: 8,
            participants,
            data_crc: 0,
        }
    }

    fn found(h: RecordHeader, slots: u64, intact: bool) -> Found {
        Found {
            leg: h.leg as usize,
            slot: h.seq % slots,
            header: h,
            data_intact: intact,
        }
    }

    #[test]
    fn the_layout_fits_the_reserved_area() {
        let layout = Layout::for_strip(64 * 1024).unwrap();
        assert_eq!(layout.slots, 45);
        assert!(layout.slot_offset(layout.slots) <= RESERVED_BYTES);
        assert_eq!(Layout::for_strip(1024 * 1024).unwrap().slots, 2);
        assert!(Layout::for_strip(2 * 1024 * 1024).is_err());
    }

    #[test]
    fn headers_round_trip_and_foreign_or_torn_ones_are_refused() {
        let array = Uuid::new_v4();
        let h = header(array, 7, 5, 2, 0b1101);
        let block = h.encode();
        assert_eq!(RecordHeader::decode(&block, array), Some(h));
        assert_eq!(RecordHeader::decode(&block, Uuid::new_v4()), None);
        let mut torn = block.clone();
        torn[40] ^= 1;
        assert_eq!(RecordHeader::decode(&torn, array), None);
        assert_eq!(RecordHeader::decode(&[0u8; HEADER_BYTES], array), None);
    }

    #[test]
    fn a_record_held_by_every_in_sync_participant_is_replayed() {
        let a = Uuid::new_v4();
        // Record 12 on legs 0, 2 and 3; leg 3 is away.
        let f = vec![
            found(header(a, 12, 10, 0, 0b1101), 45, true),
            found(header(a, 12, 10, 2, 0b1101), 45, true),
        ];
        let plan = plan_replay(&f, 45, |leg| leg != 3);
        assert_eq!(plan.replay, vec![vec![0, 1]]);
        assert_eq!(plan.discarded, 0);
        assert_eq!(plan.max_seq, 12);
    }

    #[test]
    fn a_record_an_in_sync_participant_lacks_is_discarded() {
        let a = Uuid::new_v4();
        let f = vec![
            found(header(a, 12, 10, 0, 0b0111), 45, true),
            found(header(a, 12, 10, 1, 0b0111), 45, false),
        ];
        let plan = plan_replay(&f, 45, |_| true);
        assert!(plan.replay.is_empty());
        assert_eq!(plan.discarded, 1);
        assert!(plan.rewrites_slots());
    }

    #[test]
    fn applied_records_are_never_replayed_and_the_rest_go_oldest_first() {
        let a = Uuid::new_v4();
        let f = vec![
            found(header(a, 14, 12, 0, 0b011), 45, true),
            found(header(a, 11, 9, 0, 0b011), 45, true),
            found(header(a, 11, 9, 1, 0b011), 45, true),
            found(header(a, 13, 9, 1, 0b011), 45, true),
            found(header(a, 13, 9, 0, 0b011), 45, true),
            found(header(a, 14, 12, 1, 0b011), 45, true),
        ];
        let plan = plan_replay(&f, 45, |_| true);
        // 11 and 12 are covered by applied_through 12.
        assert_eq!(plan.replay, vec![vec![3, 4], vec![0, 5]]);
        assert_eq!(plan.max_seq, 14);
    }

    #[test]
    fn checkpoints_and_misplaced_headers_replay_nothing() {
        let a = Uuid::new_v4();
        let mut misplaced = found(header(a, 20, 1, 0, 0b1), 45, true);
        misplaced.slot = 3;
        let f = vec![
            found(RecordHeader::checkpoint(a, 0, 30), 45, true),
            misplaced,
        ];
        let plan = plan_replay(&f, 45, |_| true);
        assert!(plan.replay.is_empty() && !plan.rewrites_slots());
        assert_eq!(plan.max_seq, 30);
    }

    #[tokio::test]
    async fn a_slot_is_reused_only_after_its_record_completed() {
        let journal = Journal::new(
            Layout {
                slot_bytes: 0,
                slots: 2,
            },
            Recovery::default(),
        );
        let first = journal.begin(1).await;
        assert_eq!((first.seq, first.applied_through), (1, 0));
        let second = journal.begin(2).await;
        assert_eq!((second.seq, second.applied_through), (2, 0));
        // Seq 3 needs slot 1, still held by record 1.
        let third = journal.begin(3);
        tokio::pin!(third);
        assert!(futures_util::poll!(third.as_mut()).is_pending());
        drop(first);
        let third = third.await;
        assert_eq!((third.seq, third.applied_through), (3, 1));
        assert!(journal.is_live(2));
        third.recorded();
        // applied_through 1 covers stripe 1's record only.
        assert!(!journal.is_live(1) && journal.is_live(2) && journal.is_live(3));
        drop(second);
    }
}

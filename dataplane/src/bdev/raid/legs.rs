//! The leg slots of a redundant raid: which bdev fills each slot, and the
//! slot's state, shared by every reactor.
//!
//! States are atomics read on the I/O path without a lock; which bdev is
//! in a slot changes rarely (a leg added or removed) and bumps `epoch`, so
//! each reactor's [`LegChannels`] re-reads the slots only then. Every state
//! change bumps `version`: the superblock is rewritten until the version
//! it recorded is the current one.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use shoal_appliance::locks::RecoverRw;
use uuid::Uuid;

use super::superblock::{LegRecord, LegState};
use crate::bdev::{Bdev, IoChannel};

/// One slot: the bdev in it (none when missing) and the member identity.
#[derive(Clone)]
pub struct Slot {
    /// The base bdev's name, kept when it goes missing so it can return.
    pub name: String,
    pub bdev: Option<Arc<Bdev>>,
    pub member: Uuid,
    /// A rebuild must copy every region (a new member), not only those the
    /// bitmap names (a member returning).
    pub full_rebuild: bool,
}

pub struct Legs {
    slots: RwLock<Vec<Slot>>,
    states: Vec<AtomicU8>,
    epoch: AtomicU64,
    version: AtomicU64,
}

fn code(state: LegState) -> u8 {
    match state {
        LegState::Online => 0,
        LegState::Rebuilding => 1,
        LegState::Failed => 2,
        LegState::Missing => 3,
    }
}

fn state_of(code: u8) -> LegState {
    match code {
        0 => LegState::Online,
        1 => LegState::Rebuilding,
        2 => LegState::Failed,
        _ => LegState::Missing,
    }
}

impl Legs {
    pub fn new(slots: Vec<(Slot, LegState)>) -> Self {
        let (slots, states): (Vec<_>, Vec<_>) = slots
            .into_iter()
            .map(|(slot, state)| (slot, AtomicU8::new(code(state))))
            .unzip();
        Self {
            slots: RwLock::new(slots),
            states,
            epoch: AtomicU64::new(1),
            version: AtomicU64::new(1),
        }
    }

    pub fn count(&self) -> usize {
        self.states.len()
    }

    pub fn state(&self, leg: usize) -> LegState {
        state_of(self.states[leg].load(Ordering::Acquire))
    }

    /// Sets a leg's state; returns the state it had.
    pub fn set_state(&self, leg: usize, state: LegState) -> LegState {
        let before = state_of(self.states[leg].swap(code(state), Ordering::AcqRel));
        if before != state {
            self.version.fetch_add(1, Ordering::AcqRel);
        }
        before
    }

    /// Moves a leg from `from` to `to` only if it is still in `from`.
    pub fn transition(&self, leg: usize, from: LegState, to: LegState) -> bool {
        let moved = self.states[leg]
            .compare_exchange(code(from), code(to), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if moved && from != to {
            self.version.fetch_add(1, Ordering::AcqRel);
        }
        moved
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn slots(&self) -> Vec<Slot> {
        self.slots.read_locked().clone()
    }

    pub fn slot(&self, leg: usize) -> Slot {
        self.slots.read_locked()[leg].clone()
    }

    /// Puts `slot` in place of leg `leg` (a bdev added or removed) with
    /// `state`, and tells every reactor to re-read the slots.
    pub fn replace(&self, leg: usize, slot: Slot, state: LegState) {
        self.slots.write_locked()[leg] = slot;
        self.set_state(leg, state);
        self.version.fetch_add(1, Ordering::AcqRel);
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Records that leg `leg` holds the array's data as of now (its
    /// rebuild finished): a later return resyncs from the bitmap.
    pub fn mark_complete(&self, leg: usize) {
        self.slots.write_locked()[leg].full_rebuild = false;
    }

    pub fn present(&self) -> Vec<Arc<Bdev>> {
        self.slots
            .read_locked()
            .iter()
            .filter_map(|s| s.bdev.clone())
            .collect()
    }

    /// What a superblock records for every slot.
    pub fn records(&self) -> Vec<LegRecord> {
        self.slots
            .read_locked()
            .iter()
            .enumerate()
            .map(|(leg, slot)| LegRecord {
                member: slot.member,
                state: self.state(leg),
            })
            .collect()
    }

    /// Legs that take writes: in sync, or being rebuilt.
    pub fn written(&self, leg: usize) -> bool {
        matches!(self.state(leg), LegState::Online | LegState::Rebuilding)
    }

    pub fn all_online(&self) -> bool {
        (0..self.count()).all(|leg| self.state(leg) == LegState::Online)
    }
}

/// Each slot's channel on one reactor (`None`: the slot is missing).
pub type SlotChannels = Rc<Vec<Option<Rc<IoChannel>>>>;

/// One reactor's channels to the legs, re-read when the slots change.
pub struct LegChannels {
    legs: Arc<Legs>,
    /// The slots' epoch the channels were made for.
    cached: RefCell<(u64, SlotChannels)>,
}

impl LegChannels {
    pub fn new(legs: Arc<Legs>) -> Self {
        Self {
            legs,
            cached: RefCell::new((0, Rc::new(Vec::new()))),
        }
    }

    /// The channels of the slots as they are now (`None`: missing).
    pub fn get(&self) -> SlotChannels {
        let epoch = self.legs.epoch();
        let mut cached = self.cached.borrow_mut();
        if cached.0 != epoch {
            let channels = self
                .legs
                .slots()
                .iter()
                .map(|slot| slot.bdev.as_ref().map(|bdev| bdev.channel()))
                .collect();
            *cached = (epoch, Rc::new(channels));
        }
        Rc::clone(&cached.1)
    }
}

//! Single-producer/single-consumer descriptor rings in the shared region.
//!
//! One process pushes, one process pops; nothing else touches a ring. The
//! producer owns `tail`, the consumer owns `head`, each on its own cache
//! line. The producer writes a slot, then publishes it by storing `tail`
//! with release ordering; the consumer reads `tail` with acquire ordering,
//! so it sees the slot's contents, reads the slot, then frees it by storing
//! `head` with release ordering; the producer reads `head` with acquire
//! ordering before it reuses a slot. Indices count up forever (u64) and are
//! reduced modulo the power-of-two capacity, so full and empty are never
//! confused.

use std::sync::atomic::{AtomicU64, Ordering};

/// A fixed-size message between clusters: an I/O request or its completion.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// The requester's identifier for this I/O, echoed in the completion.
    pub tag: u64,
    /// The requester's slot generation when it sent the request.
    pub generation: u64,
    /// The target bdev on the serving cluster (hash of its name).
    pub target: u64,
    pub offset_blocks: u64,
    pub num_blocks: u64,
    /// Region offset of the payload buffer (reads and writes), else 0.
    pub buf_offset: u64,
    pub buf_len: u32,
    pub op: u16,
    pub flags: u16,
    /// In completions: 0, or a negative errno.
    pub status: i32,
    /// In requests: the serving cluster's slot generation (low 32 bits)
    /// the requester addressed, so a restarted server can drop requests
    /// meant for its previous life.
    pub target_generation: u32,
}

const _: () = assert!(std::mem::size_of::<Descriptor>() == 64);

/// The ring's shared state as laid out in the region.
#[repr(C)]
pub struct RingHeader {
    head: AtomicU64,
    _head_pad: [u8; 56],
    tail: AtomicU64,
    _tail_pad: [u8; 56],
}

const _: () = assert!(std::mem::size_of::<RingHeader>() == 128);

/// Bytes a ring of `capacity` descriptors occupies.
pub const fn ring_bytes(capacity: u32) -> usize {
    std::mem::size_of::<RingHeader>() + capacity as usize * std::mem::size_of::<Descriptor>()
}

/// A view of one ring in mapped memory.
#[derive(Clone, Copy)]
pub struct Ring {
    header: *const RingHeader,
    slots: *mut Descriptor,
    mask: u64,
}

// SAFETY: the ring's memory is shared by design; the SPSC discipline (one
// pusher, one popper) is what makes access sound, see the module comment.
unsafe impl Send for Ring {}
unsafe impl Sync for Ring {}

impl Ring {
    /// Views the ring at `base`.
    ///
    /// # Safety
    /// `base` must point to `ring_bytes(capacity)` bytes of mapped memory,
    /// 64-byte aligned, that stay mapped while the view is used; `capacity`
    /// must be a power of two; only one thread pushes and one pops.
    pub unsafe fn at(base: *mut u8, capacity: u32) -> Self {
        assert!(
            capacity.is_power_of_two(),
            "ring capacity must be a power of two"
        );
        Self {
            header: base.cast(),
            // SAFETY: the slots follow the header inside the same block.
            slots: unsafe { base.add(std::mem::size_of::<RingHeader>()) }.cast(),
            mask: u64::from(capacity) - 1,
        }
    }

    fn header(&self) -> &RingHeader {
        // SAFETY: see at().
        unsafe { &*self.header }
    }

    pub fn capacity(&self) -> u64 {
        self.mask + 1
    }

    /// Producer: appends `descriptor`; false when the ring is full.
    pub fn push(&self, descriptor: &Descriptor) -> bool {
        let header = self.header();
        let tail = header.tail.load(Ordering::Relaxed);
        let head = header.head.load(Ordering::Acquire);
        if tail - head > self.mask {
            return false;
        }
        // SAFETY: slot tail & mask is free (tail - head < capacity) and only
        // the producer writes slots.
        unsafe {
            self.slots
                .add((tail & self.mask) as usize)
                .write_volatile(*descriptor)
        };
        header.tail.store(tail + 1, Ordering::Release);
        true
    }

    /// Consumer: takes the oldest descriptor, if any.
    pub fn pop(&self) -> Option<Descriptor> {
        let header = self.header();
        let head = header.head.load(Ordering::Relaxed);
        let tail = header.tail.load(Ordering::Acquire);
        if head == tail {
            return None;
        }
        // SAFETY: slot head & mask was published by the producer's release
        // store of tail, which our acquire load saw.
        let descriptor = unsafe { self.slots.add((head & self.mask) as usize).read_volatile() };
        header.head.store(head + 1, Ordering::Release);
        Some(descriptor)
    }

    /// Consumer: drops everything queued (a restarted consumer discards
    /// requests addressed to its previous life).
    pub fn discard_all(&self) -> u64 {
        let header = self.header();
        let tail = header.tail.load(Ordering::Acquire);
        let head = header.head.swap(tail, Ordering::AcqRel);
        tail - head
    }

    /// Descriptors queued now (a snapshot; either side may move it).
    pub fn depth(&self) -> u64 {
        let header = self.header();
        let tail = header.tail.load(Ordering::Acquire);
        let head = header.head.load(Ordering::Acquire);
        tail.saturating_sub(head)
    }

    /// Descriptors ever pushed.
    pub fn pushed(&self) -> u64 {
        self.header().tail.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Block(Vec<u64>);

    fn ring(capacity: u32) -> (Block, Ring) {
        let mut block = Block(vec![0u64; ring_bytes(capacity) / 8 + 8]);
        let base = block.0.as_mut_ptr() as usize;
        let aligned = (base + 63) & !63;
        // SAFETY: the vector outlives the ring in each test and is large
        // enough for the aligned block.
        let ring = unsafe { Ring::at(aligned as *mut u8, capacity) };
        (block, ring)
    }

    fn descriptor(tag: u64) -> Descriptor {
        Descriptor {
            tag,
            ..Default::default()
        }
    }

    #[test]
    fn fills_drains_and_wraps_in_order() {
        let (_block, ring) = ring(4);
        for round in 0..5u64 {
            for i in 0..4 {
                assert!(ring.push(&descriptor(round * 10 + i)));
            }
            assert!(!ring.push(&descriptor(99)), "full at capacity");
            assert_eq!(ring.depth(), 4);
            for i in 0..4 {
                assert_eq!(ring.pop().unwrap().tag, round * 10 + i);
            }
            assert_eq!(ring.pop(), None);
        }
        assert_eq!(ring.pushed(), 20);
    }

    #[test]
    fn discard_all_empties_the_ring() {
        let (_block, ring) = ring(8);
        for i in 0..5 {
            ring.push(&descriptor(i));
        }
        assert_eq!(ring.discard_all(), 5);
        assert_eq!(ring.pop(), None);
        assert!(ring.push(&descriptor(7)));
        assert_eq!(ring.pop().unwrap().tag, 7);
    }

    /// Exhaustive interleavings of the index protocol: a producer pushing
    /// `n` descriptors and a consumer popping them, split into their
    /// individual shared-memory steps, in every order the scheduler could
    /// run them. Every schedule must deliver all descriptors once, in order.
    #[test]
    fn every_interleaving_delivers_each_descriptor_once_in_order() {
        #[derive(Clone, Copy, Debug)]
        enum P {
            LoadHead,
            WriteSlot,
            StoreTail,
        }
        #[derive(Clone, Copy, Debug)]
        enum C {
            LoadTail,
            ReadSlot,
            StoreHead,
        }
        #[derive(Clone)]
        struct State {
            head: u64,
            tail: u64,
            slots: Vec<Option<u64>>,
            // Producer locals.
            p_step: P,
            p_seen_head: u64,
            next: u64,
            // Consumer locals.
            c_step: C,
            c_seen_tail: u64,
            c_value: Option<u64>,
            received: Vec<u64>,
        }
        const CAPACITY: u64 = 2;
        const N: u64 = 4;

        fn explore(s: State, schedules: &mut u64) {
            let producer_done = s.next == N;
            let consumer_done = s.received.len() as u64 == N;
            if producer_done && consumer_done {
                assert_eq!(s.received, (0..N).collect::<Vec<_>>());
                *schedules += 1;
                return;
            }
            if !producer_done {
                let mut t = s.clone();
                match t.p_step {
                    P::LoadHead => {
                        t.p_seen_head = t.head;
                        // Full: retry from the start (a spin on head).
                        t.p_step = if t.tail - t.p_seen_head < CAPACITY {
                            P::WriteSlot
                        } else {
                            P::LoadHead
                        };
                    }
                    P::WriteSlot => {
                        let slot = (t.tail % CAPACITY) as usize;
                        assert!(t.slots[slot].is_none(), "producer overwrote an unread slot");
                        t.slots[slot] = Some(t.next);
                        t.p_step = P::StoreTail;
                    }
                    P::StoreTail => {
                        t.tail += 1;
                        t.next += 1;
                        t.p_step = P::LoadHead;
                    }
                }
                // A spin that changes nothing only repeats a state.
                if !(matches!(s.p_step, P::LoadHead) && matches!(t.p_step, P::LoadHead)) {
                    explore(t, schedules);
                }
            }
            if !consumer_done {
                let mut t = s.clone();
                match t.c_step {
                    C::LoadTail => {
                        t.c_seen_tail = t.tail;
                        t.c_step = if t.head < t.c_seen_tail {
                            C::ReadSlot
                        } else {
                            C::LoadTail
                        };
                    }
                    C::ReadSlot => {
                        let slot = (t.head % CAPACITY) as usize;
                        t.c_value = Some(
                            t.slots[slot]
                                .take()
                                .expect("consumer read an unwritten slot"),
                        );
                        t.c_step = C::StoreHead;
                    }
                    C::StoreHead => {
                        t.received.push(t.c_value.take().expect("value read"));
                        t.head += 1;
                        t.c_step = C::LoadTail;
                    }
                }
                if !(matches!(s.c_step, C::LoadTail) && matches!(t.c_step, C::LoadTail)) {
                    explore(t, schedules);
                }
            }
        }

        let start = State {
            head: 0,
            tail: 0,
            slots: vec![None; CAPACITY as usize],
            p_step: P::LoadHead,
            p_seen_head: 0,
            next: 0,
            c_step: C::LoadTail,
            c_seen_tail: 0,
            c_value: None,
            received: Vec::new(),
        };
        let mut schedules = 0;
        explore(start, &mut schedules);
        assert!(schedules > 1000, "explored {schedules} schedules");
    }
}

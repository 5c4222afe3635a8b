//! A host that keeps writing through NBD while a test breaks the appliance
//! under it: one connection, one write at a time, each of a pattern that
//! names its sequence number, to a slot chosen from that number. Every
//! write's NBD error is logged, so a test can tell that none failed and
//! then read back the latest acknowledged write of every slot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::nbd_client::{self, connect};

/// Which slot write `seq` goes to (of `slots` slots).
pub type SlotOf = fn(seq: u64, slots: u64) -> u64;

/// Slot after slot, over the whole export.
pub fn every_slot(seq: u64, slots: u64) -> u64 {
    seq % slots
}

/// The bytes of write `seq`: they differ from write to write and from
/// block to block, so a lost, stale or misplaced write never reads back
/// as the right one.
pub fn pattern(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as usize * 31 + i / 4096 + i) as u8)
        .collect()
}

/// Longest a host write may take: a forwarder holds I/O for up to 10 s
/// while its volume's owner moves, and a raid may wait on a dead leg.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// A writer thread running against one export.
pub struct PatternWriter {
    chunk: usize,
    slots: u64,
    slot_of: SlotOf,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    log: Arc<Mutex<Vec<(u64, u32)>>>,
    thread: Option<JoinHandle<()>>,
}

impl PatternWriter {
    /// Starts writing `chunk`-byte patterns to `export` on loopback NBD
    /// port `port`, whose first `export_bytes` it uses.
    pub fn start(
        port: u16,
        export: &str,
        export_bytes: u64,
        chunk: usize,
        slot_of: SlotOf,
    ) -> Self {
        let slots = export_bytes / chunk as u64;
        assert!(slots > 0, "the export holds no {chunk}-byte slot");
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let log: Arc<Mutex<Vec<(u64, u32)>>> = Arc::default();
        let thread = {
            let (stop, sent, log) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&log));
            let export = export.to_string();
            std::thread::spawn(move || {
                let mut s = connect(port, &export);
                s.set_read_timeout(Some(WRITE_TIMEOUT)).unwrap();
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    let offset = slot_of(seq, slots) * chunk as u64;
                    let error = nbd_client::write(&mut s, seq, offset, &pattern(seq, chunk));
                    log.lock().unwrap().push((seq, error));
                    sent.fetch_add(1, Ordering::Relaxed);
                    seq += 1;
                }
            })
        };
        Self {
            chunk,
            slots,
            slot_of,
            stop,
            sent,
            log,
            thread: Some(thread),
        }
    }

    /// Writes answered so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits until `n` more writes were answered; panics if the writer
    /// stalls for longer than a write may take, or died.
    pub fn wait_sent(&self, n: u64) {
        let target = self.sent() + n;
        let mut last = (self.sent(), Instant::now());
        while self.sent() < target {
            let finished = self.thread.as_ref().is_none_or(JoinHandle::is_finished);
            assert!(!finished, "the writer stopped after {} writes", self.sent());
            if self.sent() != last.0 {
                last = (self.sent(), Instant::now());
            }
            assert!(
                last.1.elapsed() < WRITE_TIMEOUT,
                "no write answered for {WRITE_TIMEOUT:?} (after {})",
                last.0
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Stops the writer and returns what it wrote.
    pub fn finish(mut self) -> WriteLog {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the writer thread panicked");
        }
        let entries = self.log.lock().unwrap().clone();
        WriteLog {
            chunk: self.chunk,
            slots: self.slots,
            slot_of: self.slot_of,
            entries,
        }
    }
}

impl Drop for PatternWriter {
    fn drop(&mut self) {
        // A failing test must not leave the thread writing.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Every write a [`PatternWriter`] sent, with its NBD error.
pub struct WriteLog {
    chunk: usize,
    slots: u64,
    slot_of: SlotOf,
    pub entries: Vec<(u64, u32)>,
}

impl WriteLog {
    /// Writes the host saw fail: (sequence number, NBD error).
    pub fn errors(&self) -> Vec<(u64, u32)> {
        self.entries.iter().copied().filter(|e| e.1 != 0).collect()
    }

    /// The latest write of every slot written: slot → sequence number.
    pub fn latest(&self) -> HashMap<u64, u64> {
        self.entries
            .iter()
            .map(|&(seq, _)| ((self.slot_of)(seq, self.slots), seq))
            .collect()
    }

    /// Reads every written slot back through `export` on `port` and
    /// panics naming the first whose latest write is not there.
    pub fn verify(&self, port: u16, export: &str) {
        let mut s = connect(port, export);
        for (&slot, &seq) in &self.latest() {
            let back = nbd_client::read(
                &mut s,
                1_000_000 + seq,
                slot * self.chunk as u64,
                self.chunk as u32,
            )
            .unwrap_or_else(|e| panic!("slot {slot}: read error {e} on port {port}"));
            assert!(
                back == pattern(seq, self.chunk),
                "slot {slot}: write {seq} lost, read through port {port}"
            );
        }
    }
}

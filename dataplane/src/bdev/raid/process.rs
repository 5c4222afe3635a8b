//! Background work of a mirrored raid, one region at a time, on the
//! reactor that started it:
//! - **rebuild**: copy to legs being rebuilt from an in-sync mirror (every
//!   region for a new member, only bitmap-dirty ones for a returning one);
//! - **resync**: after an unclean stop, make every region the bitmap named
//!   identical on all legs (copied from the column's first in-sync leg,
//!   the one reads of such regions go to meanwhile);
//! - **check**: compare the mirrors and count mismatched blocks, and
//!   optionally repair them the same way.
//!
//! A region is locked while it is processed: new writes to it wait and
//! writes in flight are waited for, so a copy never overwrites newer data.
//! The bandwidth limit is an average over the whole process. A cleaner
//! runs alongside: once every leg is in sync it clears bitmap regions that
//! went a sweep without writes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_appliance::locks::{Recover, RecoverRw};

use super::array::{ArrayCore, RedundantArray};
use super::legs::LegChannels;
use super::superblock::LegState;

/// How often a write waiting for a locked region looks again.
pub const LOCK_POLL: Duration = Duration::from_millis(1);

/// How often the cleaner sweeps the bitmap.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Largest piece a process reads or writes at once.
pub const PROCESS_IO_BYTES: u64 = 1024 * 1024;

/// `bdev_raid_set_options`, for every raid of the data cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaidOptions {
    /// Largest piece a process copies at once (SPDK's window), in KiB.
    pub process_window_size_kb: u32,
    /// Average copy bandwidth limit; 0 = unlimited.
    pub process_max_bandwidth_mb_sec: u32,
}

/// Bounds of [`RaidOptions::process_window_size_kb`].
pub const WINDOW_KB_RANGE: std::ops::RangeInclusive<u32> = 4..=16 * 1024;

static OPTIONS: RwLock<RaidOptions> = RwLock::new(RaidOptions {
    process_window_size_kb: 1024,
    process_max_bandwidth_mb_sec: 0,
});

pub fn options() -> RaidOptions {
    *OPTIONS.read_locked()
}

pub fn set_options(options: RaidOptions) -> Result<(), String> {
    if !WINDOW_KB_RANGE.contains(&options.process_window_size_kb) {
        return Err(format!(
            "process_window_size_kb {} is not within {}..={}",
            options.process_window_size_kb,
            WINDOW_KB_RANGE.start(),
            WINDOW_KB_RANGE.end()
        ));
    }
    *OPTIONS.write_locked() = options;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessKind {
    Rebuild,
    Resync,
    Check { repair: bool },
}

impl ProcessKind {
    fn name(self) -> &'static str {
        match self {
            Self::Rebuild => "rebuild",
            Self::Resync => "resync",
            Self::Check { .. } => "check",
        }
    }
}

/// The result of the last check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub checked_blocks: u64,
    pub mismatched_blocks: u64,
    pub repaired: bool,
    /// False when the check stopped early (a leg failed, the raid went).
    pub finished: bool,
    /// 1 for the first check that ended since the raid was assembled, then
    /// 2, 3...: a client that asked for a check knows its result is in
    /// when this grows (two checks may well report the same counts).
    pub sequence: u64,
}

impl CheckReport {
    pub fn describe(&self) -> Value {
        json!({
            "checked_blocks": self.checked_blocks,
            "mismatched_blocks": self.mismatched_blocks,
            "repaired": self.repaired,
            "finished": self.finished,
            "sequence": self.sequence,
        })
    }
}

/// What runs now, for `bdev_raid_get_bdevs`.
#[derive(Default)]
pub struct ProcessStatus {
    running: AtomicBool,
    current: Mutex<Option<(ProcessKind, String)>>,
    done_blocks: AtomicU64,
    total_blocks: AtomicU64,
    requested_check: Mutex<Option<bool>>,
    cleaner_started: AtomicBool,
    /// The last process that ended: its kind, the blocks it had to cover,
    /// and whether it finished.
    last: Mutex<Option<(ProcessKind, u64, bool)>>,
}

impl ProcessStatus {
    pub fn describe(&self) -> Value {
        match &*self.current.locked() {
            None => Value::Null,
            Some((kind, target)) => {
                let done = self.done_blocks.load(Ordering::Relaxed);
                let total = self.total_blocks.load(Ordering::Relaxed).max(1);
                json!({
                    "type": kind.name(),
                    "target": target,
                    "progress": {
                        "blocks": done,
                        "percent": (done as f64 * 100.0 / total as f64).min(100.0),
                    },
                })
            }
        }
    }

    /// The last process that ended, for `bdev_raid_get_bdevs`.
    pub fn describe_last(&self) -> Value {
        match *self.last.locked() {
            None => Value::Null,
            Some((kind, blocks, finished)) => json!({
                "type": kind.name(),
                "blocks": blocks,
                "finished": finished,
            }),
        }
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }
}

/// `bdev_raid_check_consistency`: queues a check (after any rebuild).
pub fn request_check<A: RedundantArray>(array: &Arc<A>, repair: bool) -> Result<(), String> {
    let state = array.core();
    let mut requested = state.process.requested_check.locked();
    if requested.is_some() {
        return Err(format!("a check of {} is already queued", state.name));
    }
    *requested = Some(repair);
    drop(requested);
    start_background(array);
    Ok(())
}

/// Starts the process runner and the cleaner if they are not running.
/// Call on a reactor.
pub fn start_background<A: RedundantArray>(array: &Arc<A>) {
    let state = array.core();
    if !state.process.cleaner_started.swap(true, Ordering::AcqRel) {
        let weak = Arc::downgrade(array);
        tokio::task::spawn_local(async move { clean(weak).await });
    }
    if !state.process.running.swap(true, Ordering::AcqRel) {
        let array = Arc::clone(array);
        tokio::task::spawn_local(async move {
            run(&*array).await;
            let state = array.core();
            state.process.running.store(false, Ordering::Release);
            // Work queued while the runner was finishing.
            if next_job(state).is_some() && !state.stopping.load(Ordering::Acquire) {
                start_background(&array);
            }
        });
    }
}

fn next_job(state: &ArrayCore) -> Option<ProcessKind> {
    let legs = &state.legs;
    if (0..legs.count()).any(|leg| legs.state(leg) == LegState::Rebuilding) {
        return Some(ProcessKind::Rebuild);
    }
    if state.regions.any_stale() {
        return Some(ProcessKind::Resync);
    }
    state
        .process
        .requested_check
        .locked()
        .map(|repair| ProcessKind::Check { repair })
}

async fn run<A: RedundantArray>(array: &A) {
    let state = array.core();
    let channels = LegChannels::new(Arc::clone(&state.legs));
    while !state.stopping.load(Ordering::Acquire) {
        let Some(kind) = next_job(state) else { return };
        if let ProcessKind::Check { .. } = kind {
            state.process.requested_check.locked().take();
        }
        if !run_one(array, &channels, kind).await {
            return;
        }
    }
}

/// Runs one process to its end; false when it could not make progress
/// (the runner stops until something changes).
async fn run_one<A: RedundantArray>(array: &A, channels: &LegChannels, kind: ProcessKind) -> bool {
    let state = array.core();
    let legs = &state.legs;
    let targets: Vec<usize> = (0..legs.count())
        .filter(|&leg| legs.state(leg) == LegState::Rebuilding)
        .collect();
    let full = targets.iter().any(|&leg| legs.slot(leg).full_rebuild);
    let target_names = match kind {
        ProcessKind::Rebuild => targets
            .iter()
            .map(|&leg| legs.slot(leg).name)
            .collect::<Vec<_>>()
            .join(","),
        _ => state.name.clone(),
    };
    let regions = &state.regions;
    let wanted: Vec<usize> = (0..regions.len())
        .filter(|&r| match kind {
            ProcessKind::Rebuild => full || regions.is_dirty(r),
            ProcessKind::Resync => regions.is_stale(r),
            ProcessKind::Check { .. } => true,
        })
        .collect();
    let region_blocks = regions.region_blocks();
    let data_blocks = state.data_blocks;
    state
        .process
        .total_blocks
        .store(wanted.len() as u64 * region_blocks, Ordering::Relaxed);
    state.process.done_blocks.store(0, Ordering::Relaxed);
    *state.process.current.locked() = Some((kind, target_names));
    tracing::info!(
        raid = state.name,
        process = kind.name(),
        regions = wanted.len(),
        full,
        "raid process started"
    );
    let started = Instant::now();
    let mut copied_bytes = 0u64;
    let mut report = CheckReport {
        checked_blocks: 0,
        mismatched_blocks: 0,
        repaired: matches!(kind, ProcessKind::Check { repair: true }),
        finished: false,
        sequence: 0,
    };
    let mut ok = true;
    for region in wanted {
        if state.stopping.load(Ordering::Acquire) {
            ok = false;
            break;
        }
        let start = region as u64 * region_blocks;
        let blocks = region_blocks.min(data_blocks - start);
        while !regions.lock(region) {
            tokio::time::sleep(LOCK_POLL).await;
        }
        while regions.inflight(region) > 0 {
            tokio::time::sleep(LOCK_POLL).await;
        }
        let outcome = array
            .process_region(channels, kind, start, blocks, &mut report)
            .await;
        regions.unlock(region);
        match outcome {
            Ok(bytes) => {
                if kind == ProcessKind::Resync {
                    regions.clear_stale(region);
                }
                copied_bytes += bytes;
            }
            Err(error) => {
                tracing::error!(
                    raid = state.name,
                    process = kind.name(),
                    "raid process stopped: {error}"
                );
                ok = false;
                break;
            }
        }
        state
            .process
            .done_blocks
            .fetch_add(region_blocks, Ordering::Relaxed);
        throttle(started, copied_bytes).await;
    }
    state.persist_superblock(channels).await;
    match kind {
        ProcessKind::Rebuild if ok => {
            for &leg in &targets {
                if legs.transition(leg, LegState::Rebuilding, LegState::Online) {
                    legs.mark_complete(leg);
                }
            }
            state.persist_superblock(channels).await;
        }
        ProcessKind::Check { .. } => {
            report.finished = ok;
            let mut last = state.last_check.locked();
            report.sequence = last.as_ref().map_or(0, |l| l.sequence) + 1;
            *last = Some(report);
        }
        _ => {}
    }
    tracing::info!(
        raid = state.name,
        process = kind.name(),
        ok,
        seconds = started.elapsed().as_secs_f64(),
        mib = copied_bytes >> 20,
        "raid process ended"
    );
    *state.process.current.locked() = None;
    *state.process.last.locked() =
        Some((kind, state.process.total_blocks.load(Ordering::Relaxed), ok));
    ok
}

/// Sleeps as long as it takes to keep the average under the limit.
async fn throttle(started: Instant, bytes: u64) {
    let limit = u64::from(options().process_max_bandwidth_mb_sec);
    if limit == 0 {
        return;
    }
    let due = Duration::from_secs_f64(bytes as f64 / (limit as f64 * 1024.0 * 1024.0));
    if let Some(wait) = due.checked_sub(started.elapsed()) {
        tokio::time::sleep(wait).await;
    }
}

/// The process window in blocks of `block_size`.
pub fn window_blocks(block_size: u32) -> u64 {
    (u64::from(options().process_window_size_kb) * 1024 / u64::from(block_size)).max(1)
}

pub fn mismatched_blocks(a: &[u8], b: &[u8], block_size: usize) -> u64 {
    a.chunks(block_size)
        .zip(b.chunks(block_size))
        .filter(|(x, y)| x != y)
        .count() as u64
}

/// Clears bitmap regions idle for a whole sweep while the array is in
/// sync; ends when the raid goes.
async fn clean<A: RedundantArray>(array: std::sync::Weak<A>) {
    let mut channels = None;
    loop {
        tokio::time::sleep(SWEEP_INTERVAL).await;
        let Some(array) = array.upgrade() else { return };
        let state = array.core();
        if state.stopping.load(Ordering::Acquire) {
            return;
        }
        if !state.legs.all_online() || state.process.is_running() {
            continue;
        }
        let channels = channels.get_or_insert_with(|| LegChannels::new(Arc::clone(&state.legs)));
        let pages = state.regions.sweep();
        if let Err(error) = state.write_bitmap_pages(&pages, channels).await {
            tracing::warn!(raid = state.name, "bitmap write failed: {error}");
        }
        if !state.legs.all_online() {
            state.persist_superblock(channels).await;
        }
    }
}

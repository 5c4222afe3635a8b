//! A controller: what one host's association with one subsystem shares
//! across its admin queue and I/O queues (which may live on different
//! reactors): the controller registers and their enable/shutdown state
//! machine, features, the keep-alive deadline, and asynchronous events.

use shoal_appliance::locks::Recover;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::command::{Completion, Status};
use super::subsystem::{Subsystem, TransportOptions};

/// Property offsets.
pub const PROP_CAP: u32 = 0x00;
pub const PROP_VS: u32 = 0x08;
pub const PROP_CC: u32 = 0x14;
pub const PROP_CSTS: u32 = 0x1c;

/// NVMe version this controller reports: 1.4.
pub const VERSION: u32 = 0x0001_0400;
/// Outstanding Asynchronous Event Requests accepted (AERL + 1).
pub const AER_LIMIT: usize = 4;
/// Keep-alive granularity (KAS) in 100 ms units.
pub const KAS_100MS: u16 = 1;
/// CAP.TO: worst-case time to become ready, in 500 ms units.
const READY_TIMEOUT_500MS: u64 = 30;

const CC_EN: u32 = 1;
const CC_SHN_SHIFT: u32 = 14;
const CSTS_RDY: u32 = 1;
const CSTS_CFS: u32 = 1 << 1;
const CSTS_SHST_COMPLETE: u32 = 2 << 2;

/// Asynchronous event: notice (type 2), namespace attribute changed
/// (information 00h), log page 04h.
const AEN_NS_CHANGED: u32 = 0x02 | (0x04 << 16);
/// Asynchronous event: notice, discovery log changed, log page 70h.
const AEN_DISCOVERY_CHANGED: u32 = 0x02 | (0xf0 << 8) | (0x70 << 16);
/// AEC bits enabling those notices.
const AEC_NS_ATTR: u32 = 1 << 8;
const AEC_DISCOVERY: u32 = 1 << 31;
/// Namespaces the Changed Namespace List holds before it says "more".
const CHANGED_NS_MAX: usize = 1024;

struct State {
    cc: u32,
    csts: u32,
    /// Number of Queues feature as granted (0's based SQ and CQ counts).
    io_queues_granted: Option<u16>,
    async_event_config: u32,
    aer_cids: VecDeque<u16>,
    pending_events: VecDeque<u32>,
    changed_namespaces: Vec<u32>,
    changed_overflow: bool,
    kato_ms: u32,
    /// I/O queue IDs connected.
    io_queues: std::collections::BTreeSet<u16>,
}

/// One controller. The admin queue's connection owns the strong
/// reference that keeps it alive; I/O queues hold clones.
pub struct Controller {
    pub cntlid: u16,
    pub subsystem: Arc<Subsystem>,
    pub hostnqn: String,
    pub hostid: [u8; 16],
    pub options: TransportOptions,
    state: Mutex<State>,
    /// Milliseconds since `created` of the last command (keep-alive).
    last_activity_ms: AtomicU64,
    created: Instant,
    /// Completions the admin queue sends on its own (AERs).
    admin_completions: mpsc::UnboundedSender<Completion>,
    /// Cancelled when the controller fails or is torn down: every queue
    /// of it closes its connection.
    pub gone: CancellationToken,
    /// Host read and write commands and their bytes (SMART log).
    pub counters: IoCounters,
}

/// Counters the SMART / Health log reports.
#[derive(Default)]
pub struct IoCounters {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
}

impl IoCounters {
    pub fn record(&self, write: bool, bytes: u64) {
        let (commands, total) = if write {
            (&self.writes, &self.bytes_written)
        } else {
            (&self.reads, &self.bytes_read)
        };
        commands.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Controller {
    pub fn new(
        cntlid: u16,
        subsystem: Arc<Subsystem>,
        hostnqn: String,
        hostid: [u8; 16],
        options: TransportOptions,
        kato_ms: u32,
        admin_completions: mpsc::UnboundedSender<Completion>,
    ) -> Self {
        Self {
            cntlid,
            subsystem,
            hostnqn,
            hostid,
            options,
            state: Mutex::new(State {
                cc: 0,
                csts: 0,
                io_queues_granted: None,
                async_event_config: 0,
                aer_cids: VecDeque::new(),
                pending_events: VecDeque::new(),
                changed_namespaces: Vec::new(),
                changed_overflow: false,
                kato_ms,
                io_queues: std::collections::BTreeSet::new(),
            }),
            last_activity_ms: AtomicU64::new(0),
            created: Instant::now(),
            admin_completions,
            gone: CancellationToken::new(),
            counters: IoCounters::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.locked()
    }

    /// CAP: MQES, CQR, TO, CSS (NVM command set), MPSMIN/MPSMAX 4 KiB.
    pub fn cap(&self) -> u64 {
        let depth = if self.subsystem.discovery {
            self.options.max_aq_depth
        } else {
            self.options.max_queue_depth.max(self.options.max_aq_depth)
        };
        let mqes = u64::from(depth - 1);
        mqes | (1 << 16) | (READY_TIMEOUT_500MS << 24) | (1 << 37)
    }

    pub fn property_get(&self, offset: u32, eight_bytes: bool) -> Result<u64, Status> {
        let state = self.state();
        match (offset, eight_bytes) {
            (PROP_CAP, true) => Ok(self.cap()),
            (PROP_VS, false) => Ok(u64::from(VERSION)),
            (PROP_CC, false) => Ok(u64::from(state.cc)),
            (PROP_CSTS, false) => Ok(u64::from(state.csts)),
            _ => Err(Status::INVALID_FIELD),
        }
    }

    /// Property Set: only CC is writable. Enabling makes the controller
    /// ready at once; a shutdown notification completes at once; clearing
    /// EN resets it.
    pub fn property_set(&self, offset: u32, eight_bytes: bool, value: u64) -> Result<(), Status> {
        if offset != PROP_CC || eight_bytes {
            return Err(Status::INVALID_FIELD);
        }
        let value = value as u32;
        let mut state = self.state();
        let was_enabled = state.cc & CC_EN != 0;
        let enable = value & CC_EN != 0;
        let shutdown = (value >> CC_SHN_SHIFT) & 0x3 != 0;
        if enable && !was_enabled {
            // Only 64-byte SQEs and 16-byte CQEs (IOSQES 6, IOCQES 4) and
            // 4 KiB pages (MPS 0) exist on this controller.
            let iosqes = (value >> 16) & 0xf;
            let iocqes = (value >> 20) & 0xf;
            let mps = (value >> 7) & 0xf;
            if !self.subsystem.discovery && (iosqes != 6 || iocqes != 4) || mps != 0 {
                state.csts |= CSTS_CFS;
                return Ok(());
            }
            state.csts = CSTS_RDY;
        } else if !enable && was_enabled {
            state.csts = 0;
        }
        if shutdown {
            state.csts = (state.csts & !(0x3 << 2)) | CSTS_SHST_COMPLETE;
        }
        state.cc = value;
        Ok(())
    }

    pub fn ready(&self) -> bool {
        self.state().csts & CSTS_RDY != 0
    }

    /// Number of Queues: grants what was asked, up to the transport's
    /// limit; fixed after the first grant.
    pub fn set_queue_count(&self, requested_sq: u16, requested_cq: u16) -> u32 {
        let max = self.options.max_io_qpairs_per_ctrlr - 1;
        let mut state = self.state();
        let granted = *state
            .io_queues_granted
            .get_or_insert(requested_sq.min(requested_cq).min(max));
        u32::from(granted) | (u32::from(granted) << 16)
    }

    pub fn queue_count(&self) -> u32 {
        let max = self.options.max_io_qpairs_per_ctrlr - 1;
        let granted = self.state().io_queues_granted.unwrap_or(max);
        u32::from(granted) | (u32::from(granted) << 16)
    }

    /// Highest I/O queue ID a host may connect.
    pub fn max_qid(&self) -> u16 {
        let state = self.state();
        match state.io_queues_granted {
            Some(granted) => granted + 1,
            None => self.options.max_io_qpairs_per_ctrlr,
        }
    }

    /// Records I/O queue `qid` as connected; false if it already is.
    pub fn claim_queue(&self, qid: u16) -> bool {
        self.state().io_queues.insert(qid)
    }

    pub fn release_queue(&self, qid: u16) {
        self.state().io_queues.remove(&qid);
    }

    pub fn set_async_event_config(&self, value: u32) {
        self.state().async_event_config = value;
    }

    pub fn async_event_config(&self) -> u32 {
        self.state().async_event_config
    }

    pub fn kato_ms(&self) -> u32 {
        self.state().kato_ms
    }

    pub fn set_kato_ms(&self, kato_ms: u32) {
        self.state().kato_ms = kato_ms;
        self.touch();
    }

    /// Time since the controller was created (SMART power-on hours).
    pub fn age(&self) -> Duration {
        self.created.elapsed()
    }

    /// Any command counts as a sign of life (traffic-based keep alive).
    pub fn touch(&self) {
        let now = self.created.elapsed().as_millis() as u64;
        self.last_activity_ms.store(now, Ordering::Relaxed);
    }

    /// Whether the keep-alive timeout has passed without a command.
    pub fn keep_alive_expired(&self) -> bool {
        let kato = u64::from(self.kato_ms());
        if kato == 0 {
            return false;
        }
        let idle = (self.created.elapsed().as_millis() as u64)
            .saturating_sub(self.last_activity_ms.load(Ordering::Relaxed));
        idle > kato
    }

    /// How often the keep-alive deadline is checked.
    pub fn keep_alive_check_interval(&self) -> Option<Duration> {
        match self.kato_ms() {
            0 => None,
            kato => Some(Duration::from_millis(u64::from(kato / 4).clamp(50, 5000))),
        }
    }

    /// Takes an Asynchronous Event Request; it completes when an event
    /// happens (or at once if one is waiting).
    pub fn queue_aer(&self, cid: u16) -> Result<(), Status> {
        let mut state = self.state();
        if state.aer_cids.len() >= AER_LIMIT {
            return Err(Status::AER_LIMIT_EXCEEDED);
        }
        state.aer_cids.push_back(cid);
        Self::deliver(&mut state, &self.admin_completions);
        Ok(())
    }

    fn deliver(state: &mut State, completions: &mpsc::UnboundedSender<Completion>) {
        while !state.aer_cids.is_empty() && !state.pending_events.is_empty() {
            let cid = state.aer_cids.pop_front().expect("checked");
            let event = state.pending_events.pop_front().expect("checked");
            let _ = completions.send(Completion::with_dw0(cid, event));
        }
    }

    fn raise(&self, event: u32) {
        let mut state = self.state();
        if !state.pending_events.contains(&event) {
            state.pending_events.push_back(event);
        }
        Self::deliver(&mut state, &self.admin_completions);
    }

    /// A namespace of the subsystem was added, removed or resized.
    pub fn namespace_changed(&self, nsid: u32) {
        let notify = {
            let mut state = self.state();
            if state.changed_namespaces.len() >= CHANGED_NS_MAX {
                state.changed_overflow = true;
            } else if !state.changed_namespaces.contains(&nsid) {
                state.changed_namespaces.push(nsid);
            }
            state.async_event_config & AEC_NS_ATTR != 0
        };
        if notify {
            self.raise(AEN_NS_CHANGED);
        }
    }

    pub fn discovery_changed(&self) {
        if self.async_event_config() & AEC_DISCOVERY != 0 {
            self.raise(AEN_DISCOVERY_CHANGED);
        }
    }

    /// The Changed Namespace List log page's contents; reading it clears
    /// the list (the host then re-scans).
    pub fn take_changed_namespaces(&self) -> (Vec<u32>, bool) {
        let mut state = self.state();
        let overflow = std::mem::take(&mut state.changed_overflow);
        (std::mem::take(&mut state.changed_namespaces), overflow)
    }

    /// Outstanding AERs end with "aborted" when the admin queue goes away.
    pub fn drain_aers(&self) -> Vec<u16> {
        self.state().aer_cids.drain(..).collect()
    }

    /// Fails the controller: every queue of it disconnects.
    pub fn fail(&self, why: &str) {
        if !self.gone.is_cancelled() {
            tracing::info!(
                cntlid = self.cntlid,
                subnqn = self.subsystem.nqn,
                hostnqn = self.hostnqn,
                "controller ends: {why}"
            );
            self.state().csts |= CSTS_CFS;
            self.gone.cancel();
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.subsystem.remove_controller(self.cntlid);
        self.gone.cancel();
    }
}

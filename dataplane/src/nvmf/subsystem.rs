//! The NVMe-oF target's configuration: the TCP transport's options, the
//! subsystems (NQN, namespaces over bdevs, allowed hosts, listeners) and
//! the discovery referrals. Changed by JSON-RPC on the control thread;
//! connections read it at Connect and re-read a subsystem's namespaces
//! when its generation moves.

use shoal_appliance::locks::{Recover, RecoverRw};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use serde_json::{Value, json};
use uuid::Uuid;

use super::auth::dhchap::Policy;
use super::auth::keyring::Keyring;
use super::controller::Controller;
use crate::bdev::Bdev;

/// The well-known NQN of the discovery subsystem.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";
/// Most subsystems one data cluster serves.
pub const MAX_SUBSYSTEMS: usize = 1024;
/// Default and largest namespace count of a subsystem.
pub const DEFAULT_MAX_NAMESPACES: u32 = 32;
pub const MAX_NAMESPACES: u32 = 1024;
/// Controller IDs of the dynamic controller model: 1..=0xFFEF.
pub const MAX_CNTLID: u16 = 0xffef;
/// Controller IDs each data cluster hands out by default: cluster i uses
/// `i * CNTLID_BLOCK + 1 ..= (i + 1) * CNTLID_BLOCK - 1`.
pub const CNTLID_BLOCK: u32 = 1024;

/// The default controller ID range of data cluster `cluster`.
pub fn default_cntlid_range(cluster: u32) -> (u16, u16) {
    let min = (cluster.min(63) * CNTLID_BLOCK + 1).min(u32::from(MAX_CNTLID));
    let max = ((cluster.min(63) + 1) * CNTLID_BLOCK - 1).min(u32::from(MAX_CNTLID));
    (min as u16, max as u16)
}

/// Options of the TCP transport (`nvmf_create_transport`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportOptions {
    /// Entries per I/O queue (CAP.MQES + 1).
    pub max_queue_depth: u16,
    /// Entries of the admin queue.
    pub max_aq_depth: u16,
    /// I/O queues one controller may have.
    pub max_io_qpairs_per_ctrlr: u16,
    /// Write data a command capsule may carry (IOCCSZ).
    pub in_capsule_data_size: u32,
    /// Largest transfer of one command (MDTS).
    pub max_io_size: u32,
    /// Send reads' completions as the SUCCESS flag of the last C2HData
    /// when the host disabled SQ flow control.
    pub c2h_success: bool,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            max_queue_depth: 128,
            max_aq_depth: 128,
            max_io_qpairs_per_ctrlr: 127,
            in_capsule_data_size: 4096,
            max_io_size: 131_072,
            c2h_success: true,
        }
    }
}

impl TransportOptions {
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=1024).contains(&self.max_queue_depth) {
            return Err(format!(
                "max_queue_depth {} is not within 2..=1024",
                self.max_queue_depth
            ));
        }
        if !(2..=4096).contains(&self.max_aq_depth) {
            return Err(format!(
                "max_aq_depth {} is not within 2..=4096",
                self.max_aq_depth
            ));
        }
        if !(1..=1024).contains(&self.max_io_qpairs_per_ctrlr) {
            return Err(format!(
                "max_io_qpairs_per_ctrlr {} is not within 1..=1024",
                self.max_io_qpairs_per_ctrlr
            ));
        }
        if self.in_capsule_data_size > 131_072 || !self.in_capsule_data_size.is_multiple_of(16) {
            return Err(format!(
                "in_capsule_data_size {} must be a multiple of 16 up to 131072",
                self.in_capsule_data_size
            ));
        }
        if !self.max_io_size.is_power_of_two() || !(4096..=1 << 20).contains(&self.max_io_size) {
            return Err(format!(
                "max_io_size {} must be a power of two from 4096 to 1048576",
                self.max_io_size
            ));
        }
        Ok(())
    }

    /// MDTS: the transfer limit as a power of two of 4 KiB pages.
    pub fn mdts(&self) -> u8 {
        (self.max_io_size / 4096).trailing_zeros() as u8
    }
}

/// A transport address (`listen_address` in SPDK's RPCs).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListenAddress {
    pub traddr: String,
    pub trsvcid: String,
}

impl ListenAddress {
    pub fn ipv6(&self) -> bool {
        self.traddr.contains(':')
    }

    pub fn port(&self) -> Option<u16> {
        self.trsvcid.parse().ok()
    }

    /// 0.0.0.0 or ::: every local address.
    pub fn is_wildcard(&self) -> bool {
        self.traddr == "0.0.0.0" || self.traddr == "::"
    }

    /// Whether a connection that arrived on `local` reached this address
    /// (a wildcard address matches any local address on its port).
    pub fn accepts(&self, local: std::net::SocketAddr) -> bool {
        self.port() == Some(local.port())
            && (self.is_wildcard()
                || self.traddr.parse::<std::net::IpAddr>().ok() == Some(local.ip()))
    }

    /// The address a host that reached us on `local` should use: a
    /// wildcard is replaced by `local`.
    pub fn as_seen_from(&self, local: std::net::IpAddr) -> ListenAddress {
        if self.is_wildcard() {
            ListenAddress {
                traddr: local.to_string(),
                trsvcid: self.trsvcid.clone(),
            }
        } else {
            self.clone()
        }
    }

    pub fn describe(&self) -> Value {
        json!({
            "trtype": "TCP",
            "adrfam": if self.ipv6() { "IPv6" } else { "IPv4" },
            "traddr": self.traddr,
            "trsvcid": self.trsvcid,
        })
    }
}

/// A namespace: a bdev with the identifiers hosts see.
#[derive(Clone, Debug)]
pub struct Namespace {
    pub nsid: u32,
    pub bdev: Arc<Bdev>,
    pub nguid: [u8; 16],
    pub uuid: Uuid,
    pub eui64: Option<[u8; 8]>,
    /// `None`: every host allowed on the subsystem sees it (SPDK's auto
    /// visibility); `Some`: only these host NQNs (`no_auto_visible`, then
    /// `nvmf_ns_add_host`). Others find the NSID inactive.
    pub visible_to: Option<BTreeSet<String>>,
}

impl Namespace {
    pub fn visible_to(&self, hostnqn: &str) -> bool {
        self.visible_to
            .as_ref()
            .is_none_or(|hosts| hosts.contains(hostnqn))
    }

    pub fn describe(&self) -> Value {
        let mut out = json!({
            "nsid": self.nsid,
            "bdev_name": self.bdev.name(),
            "name": self.bdev.name(),
            "nguid": hex(&self.nguid).to_uppercase(),
            "uuid": self.uuid.to_string(),
            "eui64": self.eui64.map(|e| hex(&e).to_uppercase()),
            "no_auto_visible": self.visible_to.is_some(),
        });
        if let Some(hosts) = &self.visible_to {
            out["hosts"] = json!(hosts);
        }
        out
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The DH-HMAC-CHAP keys of a host entry, by keyring name (SPDK's
/// `dhchap_key` / `dhchap_ctrlr_key` of `nvmf_subsystem_add_host`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostKeys {
    /// The key the host proves it holds.
    pub dhchap_key: String,
    /// The key the controller proves it holds, to hosts that ask.
    pub dhchap_ctrlr_key: Option<String>,
}

/// What can change in a subsystem.
#[derive(Debug, Default)]
pub struct SubsystemState {
    pub allow_any_host: bool,
    pub hosts: BTreeSet<String>,
    /// Hosts that must authenticate: every queue of theirs needs
    /// DH-HMAC-CHAP before it runs anything else.
    pub host_keys: BTreeMap<String, HostKeys>,
    pub namespaces: BTreeMap<u32, Namespace>,
    pub listeners: Vec<ListenAddress>,
}

/// An NVM subsystem (or the discovery subsystem).
pub struct Subsystem {
    pub nqn: String,
    pub serial_number: String,
    pub model_number: String,
    pub max_namespaces: u32,
    pub discovery: bool,
    state: RwLock<SubsystemState>,
    /// Bumped on every namespace change; queues re-read namespaces then.
    generation: AtomicU64,
    next_cntlid: AtomicU16,
    /// Controller IDs this subsystem hands out. Hosts reject two
    /// controllers of one subsystem with the same ID, so the clusters
    /// serving the same subsystem use disjoint ranges.
    cntlid_range: (u16, u16),
    controllers: Mutex<BTreeMap<u16, Weak<Controller>>>,
}

impl std::fmt::Debug for Subsystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subsystem").field("nqn", &self.nqn).finish()
    }
}

impl Subsystem {
    pub fn new(
        nqn: &str,
        serial: &str,
        model: &str,
        max_namespaces: u32,
        discovery: bool,
        cntlid_range: (u16, u16),
    ) -> Self {
        Self {
            nqn: nqn.to_string(),
            serial_number: serial.to_string(),
            model_number: model.to_string(),
            max_namespaces,
            discovery,
            state: RwLock::new(SubsystemState::default()),
            generation: AtomicU64::new(1),
            next_cntlid: AtomicU16::new(cntlid_range.0),
            cntlid_range,
            controllers: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, SubsystemState> {
        self.state.read_locked()
    }

    pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, SubsystemState> {
        self.state.write_locked()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn host_allowed(&self, hostnqn: &str) -> bool {
        let state = self.read();
        state.allow_any_host || state.hosts.contains(hostnqn)
    }

    /// The keys host `hostnqn` authenticates with, if it must.
    pub fn host_keys(&self, hostnqn: &str) -> Option<HostKeys> {
        self.read().host_keys.get(hostnqn).cloned()
    }

    pub fn namespace(&self, nsid: u32) -> Option<Namespace> {
        self.read().namespaces.get(&nsid).cloned()
    }

    /// Namespace `nsid` if host `hostnqn` may see it.
    pub fn namespace_for(&self, nsid: u32, hostnqn: &str) -> Option<Namespace> {
        self.read()
            .namespaces
            .get(&nsid)
            .filter(|n| n.visible_to(hostnqn))
            .cloned()
    }

    /// The NSIDs host `hostnqn` sees, in order.
    pub fn visible_nsids(&self, hostnqn: &str) -> Vec<u32> {
        self.read()
            .namespaces
            .values()
            .filter(|n| n.visible_to(hostnqn))
            .map(|n| n.nsid)
            .collect()
    }

    /// Registers a new controller under a fresh ID from this subsystem's
    /// range, or `None` when every ID of the range is in use.
    pub fn add_controller(
        &self,
        make: impl FnOnce(u16) -> Arc<Controller>,
    ) -> Option<Arc<Controller>> {
        let mut controllers = self.controllers.locked();
        controllers.retain(|_, c| c.strong_count() > 0);
        let (min, max) = self.cntlid_range;
        let span = u32::from(max - min) + 1;
        for _ in 0..span {
            let candidate = self.next_cntlid.fetch_add(1, Ordering::Relaxed);
            let id = if (min..=max).contains(&candidate) {
                candidate
            } else {
                self.next_cntlid.store(min + 1, Ordering::Relaxed);
                min
            };
            if let std::collections::btree_map::Entry::Vacant(slot) = controllers.entry(id) {
                let controller = make(id);
                slot.insert(Arc::downgrade(&controller));
                return Some(controller);
            }
        }
        None
    }

    pub fn controller(&self, cntlid: u16) -> Option<Arc<Controller>> {
        self.controllers
            .locked()
            .get(&cntlid)
            .and_then(Weak::upgrade)
    }

    pub fn remove_controller(&self, cntlid: u16) {
        self.controllers.locked().remove(&cntlid);
    }

    pub fn controllers(&self) -> Vec<Arc<Controller>> {
        self.controllers
            .locked()
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Records a namespace change: queues re-read, and each controller
    /// queues a "namespace attribute changed" event for `nsid`.
    pub fn namespaces_changed(&self, nsid: u32) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for controller in self.controllers() {
            controller.namespace_changed(nsid);
        }
    }

    /// Ends every controller (the subsystem is being deleted).
    pub fn shut_down(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        for controller in self.controllers() {
            controller.fail("subsystem deleted");
        }
    }

    pub fn describe(&self) -> Value {
        let state = self.read();
        let mut out = json!({
            "nqn": self.nqn,
            "subtype": if self.discovery { "Discovery" } else { "NVMe" },
            "listen_addresses": state.listeners.iter().map(ListenAddress::describe).collect::<Vec<_>>(),
            "allow_any_host": state.allow_any_host,
            "hosts": state.hosts.iter().map(|h| describe_host(h, state.host_keys.get(h))).collect::<Vec<_>>(),
        });
        if !self.discovery {
            out["serial_number"] = json!(self.serial_number);
            out["model_number"] = json!(self.model_number);
            out["max_namespaces"] = json!(self.max_namespaces);
            out["namespaces"] =
                Value::Array(state.namespaces.values().map(Namespace::describe).collect());
            out["controllers"] = json!(self.controllers().len());
        }
        out
    }
}

/// A host entry as `nvmf_get_subsystems` shows it: key names, never keys.
fn describe_host(nqn: &str, keys: Option<&HostKeys>) -> Value {
    let mut out = json!({"nqn": nqn});
    if let Some(keys) = keys {
        out["dhchap_key"] = json!(keys.dhchap_key);
        if let Some(ctrlr_key) = &keys.dhchap_ctrlr_key {
            out["dhchap_ctrlr_key"] = json!(ctrlr_key);
        }
    }
    out
}

/// A discovery log entry this cluster advertises for a portal it does not
/// serve itself: another cluster's portal for `subnqn` (or another
/// discovery controller when `subnqn` is the discovery NQN).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Referral {
    pub address: ListenAddress,
    pub subnqn: String,
}

impl Referral {
    pub fn describe(&self) -> Value {
        json!({"address": self.address.describe(), "subnqn": self.subnqn})
    }
}

/// The target: transport, subsystems, referrals.
pub struct Target {
    transport: Mutex<Option<TransportOptions>>,
    subsystems: RwLock<BTreeMap<String, Arc<Subsystem>>>,
    referrals: Mutex<BTreeSet<Referral>>,
    /// Bumped whenever the discovery log would change.
    discovery_generation: AtomicU64,
    discovery: Arc<Subsystem>,
    /// Named DH-HMAC-CHAP keys (`keyring_file_add_key`).
    pub keyring: Keyring,
    /// The hashes and DH groups hosts may authenticate with
    /// (`nvmf_set_config` `dhchap_digests` / `dhchap_dhgroups`).
    auth_policy: RwLock<Policy>,
}

impl Default for Target {
    fn default() -> Self {
        Self::new()
    }
}

impl Target {
    pub fn new() -> Self {
        let discovery = Arc::new(Subsystem::new(
            DISCOVERY_NQN,
            "",
            "",
            0,
            true,
            (1, MAX_CNTLID),
        ));
        discovery.write().allow_any_host = true;
        Self {
            transport: Mutex::new(None),
            subsystems: RwLock::new(BTreeMap::new()),
            referrals: Mutex::new(BTreeSet::new()),
            discovery_generation: AtomicU64::new(1),
            discovery,
            keyring: Keyring::default(),
            auth_policy: RwLock::new(Policy::default()),
        }
    }

    pub fn auth_policy(&self) -> Policy {
        self.auth_policy.read_locked().clone()
    }

    pub fn set_auth_policy(&self, policy: Policy) {
        *self.auth_policy.write_locked() = policy;
    }

    pub fn transport(&self) -> Option<TransportOptions> {
        *self.transport.locked()
    }

    pub fn set_transport(&self, options: TransportOptions) -> Result<(), String> {
        options.validate()?;
        let mut transport = self.transport.locked();
        if transport.is_some() {
            return Err("the TCP transport already exists".into());
        }
        *transport = Some(options);
        Ok(())
    }

    /// The subsystem named `nqn`, the discovery subsystem included.
    pub fn subsystem(&self, nqn: &str) -> Option<Arc<Subsystem>> {
        if nqn == DISCOVERY_NQN {
            return Some(Arc::clone(&self.discovery));
        }
        self.subsystems.read_locked().get(nqn).cloned()
    }

    pub fn discovery(&self) -> &Arc<Subsystem> {
        &self.discovery
    }

    pub fn subsystems(&self) -> Vec<Arc<Subsystem>> {
        self.subsystems.read_locked().values().cloned().collect()
    }

    pub fn add_subsystem(&self, subsystem: Subsystem) -> Result<Arc<Subsystem>, String> {
        let mut subsystems = self.subsystems.write_locked();
        if subsystem.nqn == DISCOVERY_NQN || subsystems.contains_key(&subsystem.nqn) {
            return Err(format!("subsystem {} already exists", subsystem.nqn));
        }
        if subsystems.len() >= MAX_SUBSYSTEMS {
            return Err(format!(
                "this cluster already has {MAX_SUBSYSTEMS} subsystems"
            ));
        }
        let subsystem = Arc::new(subsystem);
        subsystems.insert(subsystem.nqn.clone(), Arc::clone(&subsystem));
        self.discovery_changed();
        Ok(subsystem)
    }

    pub fn remove_subsystem(&self, nqn: &str) -> Option<Arc<Subsystem>> {
        let removed = self.subsystems.write_locked().remove(nqn);
        if let Some(subsystem) = &removed {
            subsystem.shut_down();
            self.discovery_changed();
        }
        removed
    }

    pub fn referrals(&self) -> Vec<Referral> {
        self.referrals.locked().iter().cloned().collect()
    }

    pub fn add_referral(&self, referral: Referral) -> bool {
        let added = self.referrals.locked().insert(referral);
        if added {
            self.discovery_changed();
        }
        added
    }

    pub fn remove_referral(&self, referral: &Referral) -> bool {
        let removed = self.referrals.locked().remove(referral);
        if removed {
            self.discovery_changed();
        }
        removed
    }

    pub fn discovery_generation(&self) -> u64 {
        self.discovery_generation.load(Ordering::Acquire)
    }

    /// Bdev `bdev_id` grew: every namespace on it raises a "namespace
    /// attribute changed" event, so hosts read its new size.
    pub fn bdev_resized(&self, bdev_id: u64) {
        for subsystem in self.subsystems() {
            let nsids: Vec<u32> = subsystem
                .read()
                .namespaces
                .values()
                .filter(|n| n.bdev.id() == bdev_id)
                .map(|n| n.nsid)
                .collect();
            for nsid in nsids {
                subsystem.namespaces_changed(nsid);
            }
        }
    }

    /// The discovery log changed (subsystems, listeners, hosts, referrals).
    pub fn discovery_changed(&self) {
        self.discovery_generation.fetch_add(1, Ordering::AcqRel);
        for controller in self.discovery.controllers() {
            controller.discovery_changed();
        }
    }
}

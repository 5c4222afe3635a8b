//! What each data cluster must hold for the desired state: a pure function
//! from volumes, endpoints and connections to per-cluster dataplane
//! objects, with the JSON-RPC calls that create them and the test that an
//! existing object is the one wanted.
//!
//! Every cluster serves every volume, so a host's multipath sees one
//! namespace with a path per cluster. On cluster `c`, volume 7 striped over
//! clusters 0 and 1 is:
//!
//! ```text
//! volume7            raid0 over volume7-leg0, volume7-leg1   (namespace, NBD export)
//! volume7-leg0       part of drive0 (on cluster 0) | remote to cluster 0's volume7-leg0
//! volume7-leg1       part of drive1 (on cluster 1) | remote to cluster 1's volume7-leg1
//! ```
//!
//! A leg on fragmented free space is a concat of parts
//! `volume7-leg0-e0`, `volume7-leg0-e1`, ... The same names on every
//! cluster keep the mapping identical wherever an I/O arrives.
//!
//! A redundant volume (RAID1, RAID10, RAID5, RAID6) has one *owner*
//! cluster ([`super::owner`]) that holds its raid, so that writes arriving
//! at different clusters never interleave on the legs (nor tear a parity
//! stripe); the others forward to it, holding I/O while the owner changes:
//!
//! ```text
//! owner:   volume7        raid1|raid10|raid5f|raid6 (superblock) over volume7-leg0, volume7-leg1, ...
//!          volume7-leg<K> part of its drive | remote (fail fast) to the leg's cluster
//! others:  volume7        remote to the owner's volume7, holding I/O 10 s
//!          volume7-leg<K> part of its drive, where a leg lives there
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde_json::{Value, json};
use uuid::Uuid;

use super::model::{Desired, Provisioning, RaidType, Volume, VolumeState};
use super::secrets::{ConnectionKeys, DhchapSecret, NbdPsk};

/// Facts about the appliance's front-ends, from its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fabric {
    pub clusters: u32,
    pub listen_address: IpAddr,
    pub nvmf_base_port: u16,
    pub nbd_base_port: u16,
    /// Whether volumes are also served over NBD (which has no host
    /// access control).
    pub nbd_volumes: bool,
    /// The storage's NVM subsystem, the same on every cluster.
    pub nqn: String,
    pub serial_number: String,
}

impl Fabric {
    pub fn nvmf_port(&self, cluster: u32) -> u16 {
        self.nvmf_base_port.saturating_add(cluster as u16)
    }

    pub fn nbd_port(&self, cluster: u32) -> u16 {
        self.nbd_base_port.saturating_add(cluster as u16)
    }
}

/// The model number every cluster's controller reports.
pub const MODEL_NUMBER: &str = "Shoal volume";
/// Strip size of the concat that joins a fragmented leg (it only matters
/// to the raid module's validation: a concat does not stripe).
const CONCAT_STRIP_KB: u32 = 64;
/// How long a forwarding bdev holds I/O while its volume's owner is down
/// or moving: the reconciler moves ownership within a few passes.
pub const FORWARD_HOLD_MS: u64 = 10_000;

pub fn volume_bdev(volume: u64) -> String {
    format!("volume{volume}")
}

pub fn leg_bdev(volume: u64, leg: usize) -> String {
    format!("volume{volume}-leg{leg}")
}

fn extent_bdev(volume: u64, leg: usize, extent: usize) -> String {
    format!("volume{volume}-leg{leg}-e{extent}")
}

/// The part that stands for the blocks a growing leg takes, while they are
/// zeroed (`volume<N>-leg<K>-grow`).
pub fn growth_bdev(volume: u64, leg: usize) -> String {
    format!("volume{volume}-leg{leg}-grow")
}

/// Whether bdev `name` is one the management service made (and may
/// therefore delete): `volume<N>` and its `-leg<K>[-e<J>|-grow]` parts.
pub fn is_owned_bdev(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("volume") else {
        return false;
    };
    let mut parts = rest.split('-');
    let number = |text: Option<&str>, prefix: &str| {
        text.and_then(|t| t.strip_prefix(prefix))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    if !number(parts.next(), "") {
        return false;
    }
    match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) => true,
        (leg @ Some(_), None, _) => number(leg, "leg"),
        (leg @ Some(_), Some("grow"), None) => number(leg, "leg"),
        (leg @ Some(_), extent @ Some(_), None) => number(leg, "leg") && number(extent, "e"),
        _ => false,
    }
}

/// One bdev a cluster must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BdevPlan {
    Part {
        name: String,
        base: String,
        offset_blocks: u64,
        num_blocks: u64,
    },
    Concat {
        name: String,
        legs: Vec<String>,
    },
    Remote {
        name: String,
        cluster: u32,
        remote_bdev: String,
        /// The leg's size, as the owning cluster has it.
        num_blocks: u64,
        /// 0 for a leg (fail fast, the raid above takes it out); more for
        /// a forwarder to a volume's owner, which is retargeted in place
        /// when the owner changes.
        hold_ms: u64,
    },
    /// A redundant volume's raid (with a superblock), on its owner.
    Redundant {
        name: String,
        /// `raid1`, `raid10`, `raid5f` or `raid6`.
        level: &'static str,
        legs: Vec<String>,
        strip_kb: u32,
        uuid: Uuid,
        num_blocks: u64,
    },
    Raid0 {
        name: String,
        legs: Vec<String>,
        strip_kb: u32,
        uuid: Uuid,
        num_blocks: u64,
    },
}

impl BdevPlan {
    pub fn name(&self) -> &str {
        match self {
            Self::Part { name, .. }
            | Self::Concat { name, .. }
            | Self::Remote { name, .. }
            | Self::Raid0 { name, .. }
            | Self::Redundant { name, .. } => name,
        }
    }

    /// A remote bdev that forwards a volume to its owner.
    pub fn is_forwarder(&self) -> bool {
        matches!(self, Self::Remote { hold_ms, .. } if *hold_ms > 0)
    }

    /// Creation order: a bdev's bases come in an earlier stage.
    pub fn stage(&self) -> u8 {
        match self {
            Self::Part { .. } => 0,
            Self::Concat { .. } => 1,
            Self::Remote { .. } if self.is_forwarder() => 4,
            Self::Remote { .. } => 2,
            Self::Raid0 { .. } | Self::Redundant { .. } => 3,
        }
    }

    /// The bdevs this one is built on, on the same cluster.
    pub fn bases(&self) -> Vec<&str> {
        match self {
            Self::Part { base, .. } => vec![base],
            Self::Concat { legs, .. } | Self::Raid0 { legs, .. } => {
                legs.iter().map(String::as_str).collect()
            }
            // A redundant raid is assembled with the legs there are: a leg
            // whose cluster is down is a missing slot, added back when it
            // returns.
            Self::Remote { .. } | Self::Redundant { .. } => Vec::new(),
        }
    }

    /// The JSON-RPC call that creates it.
    pub fn create_call(&self) -> (&'static str, Value) {
        match self {
            Self::Part {
                name,
                base,
                offset_blocks,
                num_blocks,
            } => (
                "bdev_part_create",
                json!({"name": name, "base_bdev": base, "offset_blocks": offset_blocks, "num_blocks": num_blocks}),
            ),
            Self::Concat { name, legs } => (
                "bdev_raid_create",
                json!({"name": name, "raid_level": "concat", "base_bdevs": legs, "strip_size_kb": CONCAT_STRIP_KB}),
            ),
            Self::Remote {
                name,
                cluster,
                remote_bdev,
                hold_ms,
                ..
            } => (
                "bdev_remote_create",
                json!({"name": name, "cluster": cluster, "remote_bdev": remote_bdev, "hold_timeout_ms": hold_ms}),
            ),
            Self::Redundant {
                name,
                level,
                legs,
                strip_kb,
                uuid,
                ..
            } => (
                "bdev_raid_create",
                json!({"name": name, "raid_level": level, "base_bdevs": legs, "strip_size_kb": strip_kb,
                       "uuid": uuid.to_string(), "superblock": true}),
            ),
            Self::Raid0 {
                name,
                legs,
                strip_kb,
                uuid,
                ..
            } => (
                "bdev_raid_create",
                json!({"name": name, "raid_level": "raid0", "base_bdevs": legs, "strip_size_kb": strip_kb, "uuid": uuid.to_string()}),
            ),
        }
    }

    /// The size it should have, where the plan says (not for a concat).
    pub fn planned_blocks(&self) -> Option<u64> {
        self.num_blocks()
    }

    fn num_blocks(&self) -> Option<u64> {
        match self {
            Self::Part { num_blocks, .. }
            | Self::Remote { num_blocks, .. }
            | Self::Raid0 { num_blocks, .. }
            | Self::Redundant { num_blocks, .. } => Some(*num_blocks),
            Self::Concat { .. } => None,
        }
    }

    /// Whether `actual` (a `bdev_get_bdevs` entry of the same name) is this
    /// bdev, or can become it by growing in place: built the same way, no
    /// larger. Anything else is deleted and made anew.
    pub fn matches(&self, actual: &Value) -> bool {
        self.same_build(actual)
            && match (self.num_blocks(), actual["num_blocks"].as_u64()) {
                (Some(planned), Some(blocks)) => blocks <= planned,
                _ => true,
            }
    }

    /// The call that grows `actual` (which [`matches`](Self::matches)) to
    /// the planned size, if it is smaller.
    pub fn growth_call(&self, actual: &Value) -> Option<(&'static str, Value)> {
        let planned = self.num_blocks()?;
        if actual["num_blocks"].as_u64()? >= planned {
            return None;
        }
        let name = self.name();
        match self {
            Self::Part { .. } => Some((
                "bdev_part_resize",
                json!({"name": name, "num_blocks": planned}),
            )),
            Self::Remote { .. } => Some(("bdev_remote_resize", json!({"name": name}))),
            Self::Raid0 { .. } => Some(("bdev_raid_resize", json!({"name": name}))),
            Self::Concat { .. } | Self::Redundant { .. } => None,
        }
    }

    /// The call that points a forwarder at the volume's new owner, when
    /// `actual` still forwards elsewhere.
    pub fn retarget_call(&self, actual: &Value) -> Option<(&'static str, Value)> {
        let Self::Remote {
            name,
            cluster,
            remote_bdev,
            ..
        } = self
        else {
            return None;
        };
        if !self.is_forwarder() || actual["driver_specific"]["remote"]["cluster"] == *cluster {
            return None;
        }
        Some((
            "bdev_remote_set_target",
            json!({"name": name, "cluster": cluster, "remote_bdev": remote_bdev}),
        ))
    }

    /// For a redundant raid: `bdev_raid_add_base_bdev` for each slot that is
    /// missing or failed while its planned leg is there to take it back
    /// (`leg_ready`: the leg bdev exists here and its cluster runs).
    pub fn heal_calls(
        &self,
        actual: &Value,
        leg_ready: impl Fn(&str) -> bool,
    ) -> Vec<(&'static str, Value)> {
        let Self::Redundant { name, legs, .. } = self else {
            return Vec::new();
        };
        let raid = &actual["driver_specific"]["raid"];
        if !raid["process"].is_null() {
            return Vec::new();
        }
        let Some(slots) = raid["shoal"]["legs"].as_array() else {
            return Vec::new();
        };
        slots
            .iter()
            .zip(legs)
            .filter(|(slot, _)| slot["state"] == "missing" || slot["state"] == "failed")
            .filter(|(_, leg)| leg_ready(leg))
            .map(|(_, leg)| {
                (
                    "bdev_raid_add_base_bdev",
                    json!({"raid_bdev": name, "base_bdev": leg}),
                )
            })
            .collect()
    }

    /// Built the same way as `actual` (size aside).
    fn same_build(&self, actual: &Value) -> bool {
        let specific = &actual["driver_specific"];
        let raid = &specific["raid"];
        let leg_names = |raid: &Value| -> Vec<String> {
            raid["base_bdevs_list"]
                .as_array()
                .map(|legs| {
                    legs.iter()
                        .filter_map(|l| l["name"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        match self {
            Self::Part {
                base,
                offset_blocks,
                ..
            } => {
                let part = &specific["part"];
                part["base_bdev"] == base.as_str() && part["offset_blocks"] == *offset_blocks
            }
            Self::Concat { legs, .. } => raid["raid_level"] == "concat" && leg_names(raid) == *legs,
            Self::Remote {
                cluster,
                remote_bdev,
                hold_ms,
                ..
            } => {
                let remote = &specific["remote"];
                // A forwarder follows its owner by retargeting in place.
                (self.is_forwarder() || remote["cluster"] == *cluster)
                    && remote["remote_bdev"] == remote_bdev.as_str()
                    && remote["hold_timeout_ms"].as_u64().unwrap_or(0) == *hold_ms
            }
            Self::Redundant {
                level,
                legs,
                strip_kb,
                uuid,
                ..
            } => {
                let slots: Vec<&str> = raid["shoal"]["legs"]
                    .as_array()
                    .map(|l| l.iter().filter_map(|s| s["name"].as_str()).collect())
                    .unwrap_or_default();
                raid["raid_level"] == *level
                    && raid["strip_size_kb"] == *strip_kb
                    && actual["uuid"] == uuid.to_string().as_str()
                    && slots == legs.iter().map(String::as_str).collect::<Vec<_>>()
            }
            Self::Raid0 {
                legs,
                strip_kb,
                uuid,
                ..
            } => {
                raid["raid_level"] == "raid0"
                    && raid["strip_size_kb"] == *strip_kb
                    && leg_names(raid) == *legs
                    && actual["uuid"] == uuid.to_string().as_str()
            }
        }
    }
}

/// The deleting call for an existing bdev, from the module that made it.
pub fn delete_call(actual: &Value) -> Option<(String, Value)> {
    let name = actual["name"].as_str()?;
    let specific = actual["driver_specific"].as_object()?;
    let module = ["part", "remote", "raid"]
        .into_iter()
        .find(|m| specific.contains_key(*m))?;
    Some((format!("bdev_{module}_delete"), json!({"name": name})))
}

/// A thin pool's lvol store, on the cluster that owns the pool's volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePlan {
    pub pool: u64,
    /// `lvs_name`: `pool<N>`.
    pub name: String,
    /// The pool volume's bdev the store is on.
    pub base: String,
    /// The pool is being created: a base holding no store yet gets a new
    /// one. Otherwise a missing store is a failure, never made anew (that
    /// would lose every volume in it).
    pub create: bool,
    pub lvols: Vec<LvolPlan>,
}

/// One of a store's lvols: a volume of its pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvolPlan {
    pub volume: u64,
    /// `lvol_name`: `volume<N>`.
    pub name: String,
    pub size_mib: u64,
    pub thin: bool,
    /// The volume is being created (and is no replica, which its own
    /// method makes): a missing lvol is made (else it is a failure, for
    /// the same reason as a store's).
    pub create: bool,
}

impl StorePlan {
    pub fn create_call(&self) -> (&'static str, Value) {
        (
            "bdev_lvol_create_lvstore",
            json!({"bdev_name": self.base, "lvs_name": self.name,
                   "cluster_sz": super::model::POOL_CLUSTER_BYTES}),
        )
    }

    pub fn create_lvol_call(&self, lvol: &LvolPlan) -> (&'static str, Value) {
        (
            "bdev_lvol_create",
            json!({"lvs_name": self.name, "lvol_name": lvol.name,
                   "size_in_mib": lvol.size_mib, "thin_provision": lvol.thin}),
        )
    }

    /// The alias of lvol `name` of this store.
    pub fn alias(&self, lvol: &str) -> String {
        super::model::lvol_alias(&self.name, lvol)
    }
}

/// Whether an lvol store named `name` is one the service made.
pub fn is_owned_store(name: &str) -> bool {
    name.strip_prefix("pool")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// One namespace of the storage's subsystem on a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePlan {
    pub nsid: u32,
    pub bdev: String,
    pub nguid: String,
    pub uuid: Uuid,
    /// The hosts that see it (every other host finds the NSID inactive).
    pub hosts: BTreeSet<String>,
}

/// The keyring names a host entry of the subsystem refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeyNames {
    pub dhchap_key: String,
    pub dhchap_ctrlr_key: Option<String>,
}

/// The prefix of every keyring entry the service makes (and may remove).
pub const KEY_NAME_PREFIX: &str = "shoal-";

/// The keyring name of a host secret: the same secret, the same name, on
/// every cluster and across restarts; a new secret, a new name (so a key
/// in use is never overwritten, only replaced and then removed).
pub fn host_key_name(secret: &DhchapSecret) -> String {
    format!("{KEY_NAME_PREFIX}host-{}", secret.fingerprint())
}

/// The keyring name of a controller secret (bidirectional authentication).
pub fn ctrlr_key_name(secret: &DhchapSecret) -> String {
    format!("{KEY_NAME_PREFIX}ctrlr-{}", secret.fingerprint())
}

/// One NBD export: a volume's bdev, and the PSK identities it is served
/// to over TLS (none: plaintext, to loopback clients only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdExportPlan {
    /// The export's name: the volume's bdev name, `volume<N>`.
    pub name: String,
    /// The bdev it serves: `name`, or a pool volume's lvol alias on the
    /// pool's owner.
    pub bdev: String,
    pub hosts: BTreeSet<String>,
    /// A snapshot's: writes are refused at the export.
    pub read_only: bool,
}

/// The NBD PSK identity of initiator endpoint `id` (its Redfish Id: NQNs
/// hold ':', which the psktool key file format forbids).
pub fn psk_identity(endpoint: u64) -> String {
    format!("initiator{endpoint}")
}

/// Whether PSK identity `identity` is one the service made.
pub fn is_owned_identity(identity: &str) -> bool {
    identity
        .strip_prefix("initiator")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Everything one data cluster must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPlan {
    pub cluster: u32,
    /// Whether the storage's subsystem is served at all: only while a
    /// volume exists, so an appliance without volumes leaves the NVMe-oF
    /// target (transport, subsystems, referrals) to whoever drives it.
    pub serves: bool,
    /// In creation order.
    pub bdevs: Vec<BdevPlan>,
    /// The pools' stores this cluster opens (it owns their volumes).
    pub stores: Vec<StorePlan>,
    pub namespaces: Vec<NamespacePlan>,
    /// Hosts allowed on the subsystem: those with a connection.
    pub hosts: BTreeSet<String>,
    /// This cluster's portal: address and port.
    pub listener: (String, String),
    /// Cluster 0's discovery controller also lists the other portals.
    pub referrals: Vec<(String, String)>,
    /// NBD exports (each named as the volume's bdev).
    pub nbd_exports: Vec<NbdExportPlan>,
    /// The keys of the hosts that must authenticate (DH-HMAC-CHAP), by
    /// host NQN; hosts not listed are let in by their NQN alone.
    pub host_keys: BTreeMap<String, HostKeyNames>,
    /// The keyring entries those names refer to.
    pub keyring: BTreeMap<String, DhchapSecret>,
    /// The NBD PSKs of keyed initiators, by PSK identity.
    pub nbd_psks: BTreeMap<String, NbdPsk>,
}

/// The bdevs volume `volume` needs on cluster `cluster`, in creation order.
/// `owner` is the owner of a redundant volume (`None`: none can be now).
fn volume_bdevs(volume: &Volume, cluster: u32, owner: Option<u32>) -> Vec<BdevPlan> {
    if let Some(alias) = volume.lvol_alias() {
        // An lvol: in the store on the pool's owner (see `StorePlan`),
        // forwarded to there from everywhere else.
        return match owner {
            Some(owner) if owner != cluster => vec![BdevPlan::Remote {
                name: volume_bdev(volume.id),
                cluster: owner,
                remote_bdev: alias,
                num_blocks: volume.capacity_bytes / u64::from(volume.block_size),
                hold_ms: FORWARD_HOLD_MS,
            }],
            _ => Vec::new(),
        };
    }
    let owner_level = volume.raid_type.owner_level();
    let owns = owner_level.is_none() || owner == Some(cluster);
    let mut bdevs = Vec::new();
    let mut legs = Vec::new();
    for (index, leg) in volume.legs.iter().enumerate() {
        let name = leg_bdev(volume.id, index);
        if leg.cluster != cluster && !owns {
            legs.push(name);
            continue;
        }
        if leg.cluster != cluster {
            bdevs.push(BdevPlan::Remote {
                name: name.clone(),
                cluster: leg.cluster,
                remote_bdev: name.clone(),
                num_blocks: leg.blocks(),
                hold_ms: 0,
            });
        } else if let [extent] = leg.extents.as_slice() {
            bdevs.push(BdevPlan::Part {
                name: name.clone(),
                base: drive_bdev(cluster),
                offset_blocks: extent.offset_blocks,
                num_blocks: extent.num_blocks,
            });
        } else {
            let mut pieces = Vec::new();
            for (e, extent) in leg.extents.iter().enumerate() {
                let piece = extent_bdev(volume.id, index, e);
                bdevs.push(BdevPlan::Part {
                    name: piece.clone(),
                    base: drive_bdev(cluster),
                    offset_blocks: extent.offset_blocks,
                    num_blocks: extent.num_blocks,
                });
                pieces.push(piece);
            }
            bdevs.push(BdevPlan::Concat {
                name: name.clone(),
                legs: pieces,
            });
        }
        legs.push(name);
    }
    let num_blocks = volume.capacity_bytes / u64::from(volume.block_size);
    let strip_kb = (volume.strip_bytes / 1024) as u32;
    let Some(level) = owner_level else {
        bdevs.push(BdevPlan::Raid0 {
            name: volume_bdev(volume.id),
            legs,
            strip_kb,
            uuid: volume.uuid,
            num_blocks,
        });
        return bdevs;
    };
    if owns {
        bdevs.push(BdevPlan::Redundant {
            name: volume_bdev(volume.id),
            level,
            legs,
            // A mirror does not stripe: raid1 takes no strip.
            strip_kb: if volume.raid_type == RaidType::Raid1 {
                0
            } else {
                strip_kb
            },
            uuid: volume.uuid,
            num_blocks,
        });
    } else if let Some(owner) = owner {
        bdevs.push(BdevPlan::Remote {
            name: volume_bdev(volume.id),
            cluster: owner,
            remote_bdev: volume_bdev(volume.id),
            num_blocks,
            hold_ms: FORWARD_HOLD_MS,
        });
    }
    bdevs
}

/// The bdev each data cluster opens on its drive.
pub fn drive_bdev(cluster: u32) -> String {
    format!("drive{cluster}")
}

/// What every data cluster must hold for `desired`, with each redundant
/// volume's raid on its owner in `owners` (by volume id).
pub fn plan(fabric: &Fabric, desired: &Desired, owners: &BTreeMap<u64, u32>) -> Vec<ClusterPlan> {
    let address = fabric.listen_address.to_string();
    let hosts: BTreeSet<String> = desired
        .connections
        .iter()
        .flat_map(|c| c.initiators.iter())
        .filter_map(|id| desired.endpoint(*id))
        .map(|e| e.host_nqn.clone())
        .collect();
    let mut host_keys = BTreeMap::new();
    let mut keyring = BTreeMap::new();
    for host in &hosts {
        let Some(ConnectionKeys { local, peer }) = desired.keys_of_host(host) else {
            continue;
        };
        let names = HostKeyNames {
            dhchap_key: host_key_name(local),
            dhchap_ctrlr_key: peer.as_ref().map(ctrlr_key_name),
        };
        keyring.insert(names.dhchap_key.clone(), local.clone());
        if let (Some(name), Some(peer)) = (&names.dhchap_ctrlr_key, peer) {
            keyring.insert(name.clone(), peer.clone());
        }
        host_keys.insert(host.clone(), names);
    }
    // NBD: each keyed connection's initiators, by PSK identity, with the
    // PSK derived from the connection's host secret.
    let mut nbd_psks = BTreeMap::new();
    let mut export_hosts: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for connection in &desired.connections {
        let Some(keys) = desired.keys.get(&connection.id) else {
            continue;
        };
        for endpoint in connection
            .initiators
            .iter()
            .filter(|id| desired.endpoint(**id).is_some())
        {
            let identity = psk_identity(*endpoint);
            nbd_psks
                .entry(identity.clone())
                .or_insert_with(|| NbdPsk(keys.local.nbd_psk(&identity)));
            for volume in &connection.volumes {
                export_hosts
                    .entry(volume.volume)
                    .or_default()
                    .insert(identity.clone());
            }
        }
    }
    // A pool's volumes are served by the owner of the pool's volume.
    let owner_of = |v: &Volume| match v.pool.and_then(|p| desired.pool(p)) {
        Some(pool) => owners.get(&pool.volume).copied(),
        None if v.pool.is_some() => None,
        None => owners.get(&v.id).copied(),
    };
    // The bdev that serves volume `v` on `cluster`.
    let served_bdev = |v: &Volume, cluster: u32| match v.lvol_alias() {
        Some(alias) if owner_of(v) == Some(cluster) => alias,
        _ => volume_bdev(v.id),
    };
    (0..fabric.clusters)
        .map(|cluster| {
            let mut bdevs: Vec<BdevPlan> = desired
                .volumes
                .iter()
                .flat_map(|v| volume_bdevs(v, cluster, owner_of(v)))
                .collect();
            bdevs.sort_by_key(BdevPlan::stage);
            let stores = desired
                .pools
                .iter()
                .filter(|pool| owners.get(&pool.volume) == Some(&cluster))
                .map(|pool| StorePlan {
                    pool: pool.id,
                    name: super::model::pool_store(pool.id),
                    base: volume_bdev(pool.volume),
                    create: pool.state == VolumeState::Creating,
                    lvols: desired
                        .volumes_in(pool.id)
                        .map(|v| LvolPlan {
                            volume: v.id,
                            name: v.lvol_name(),
                            size_mib: v.capacity_bytes.div_ceil(1 << 20),
                            thin: v.provisioning == Provisioning::Thin,
                            create: v.state == VolumeState::Creating && v.replica.is_none(),
                        })
                        .collect(),
                })
                .collect();
            let namespaces = desired
                .exported_volumes()
                .map(|v| NamespacePlan {
                    nsid: v.nsid,
                    bdev: served_bdev(v, cluster),
                    nguid: v.nguid(),
                    uuid: v.uuid,
                    hosts: desired.hosts_of(v.id),
                })
                .collect();
            let nbd_exports = desired
                .exported_volumes()
                .filter(|v| fabric.nbd_volumes || export_hosts.contains_key(&v.id))
                .map(|v| NbdExportPlan {
                    name: volume_bdev(v.id),
                    bdev: served_bdev(v, cluster),
                    hosts: export_hosts.get(&v.id).cloned().unwrap_or_default(),
                    read_only: v.is_read_only(),
                })
                .collect();
            let serves = !desired.volumes.is_empty();
            let referrals = if cluster == 0 && serves {
                (1..fabric.clusters)
                    .map(|other| (address.clone(), fabric.nvmf_port(other).to_string()))
                    .collect()
            } else {
                Vec::new()
            };
            ClusterPlan {
                cluster,
                serves,
                bdevs,
                stores,
                namespaces,
                hosts: hosts.clone(),
                listener: (address.clone(), fabric.nvmf_port(cluster).to_string()),
                referrals,
                nbd_exports,
                host_keys: host_keys.clone(),
                keyring: keyring.clone(),
                nbd_psks: nbd_psks.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::model::*;
    use super::*;
    use crate::storage::secrets::{ConnectionKeys, NbdPsk};

    fn fabric() -> Fabric {
        Fabric {
            clusters: 3,
            listen_address: "127.0.0.1".parse().unwrap(),
            nvmf_base_port: 4420,
            nbd_base_port: 10809,
            nbd_volumes: true,
            nqn: "nqn.2026-11.io.shoal:test".into(),
            serial_number: "SHOAL".into(),
        }
    }

    fn volume(id: u64, legs: Vec<Leg>) -> Volume {
        super::super::model::test_volume(id, legs)
    }

    fn extent(offset: u64, blocks: u64) -> Extent {
        Extent {
            offset_blocks: offset,
            num_blocks: blocks,
        }
    }

    #[test]
    fn every_cluster_builds_the_same_stripe_from_local_and_remote_legs() {
        let v = volume(
            7,
            vec![
                Leg {
                    cluster: 0,
                    extents: vec![extent(2048, 100)],
                },
                Leg {
                    cluster: 1,
                    extents: vec![extent(2048, 60), extent(4096, 40)],
                },
            ],
        );
        let endpoint = InitiatorEndpoint {
            id: 1,
            name: "h".into(),
            host_nqn: "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
        };
        let connection = Connection {
            id: 1,
            name: "c".into(),
            volumes: vec![VolumeAccess {
                volume: 7,
                access: Access::ReadWrite,
            }],
            initiators: vec![1],
            keys: None,
        };
        let desired = Desired {
            volumes: vec![v],
            endpoints: vec![endpoint.clone()],
            connections: vec![connection],
            ..Default::default()
        };
        let plans = plan(&fabric(), &desired, &BTreeMap::new());
        assert_eq!(plans.len(), 3);
        let names = |p: &ClusterPlan| -> Vec<String> {
            p.bdevs.iter().map(|b| b.name().to_string()).collect()
        };
        assert_eq!(
            names(&plans[0]),
            ["volume7-leg0", "volume7-leg1", "volume7"]
        );
        assert!(matches!(
            plans[0].bdevs[1],
            BdevPlan::Remote { cluster: 1, .. }
        ));
        assert_eq!(
            names(&plans[1]),
            [
                "volume7-leg1-e0",
                "volume7-leg1-e1",
                "volume7-leg1",
                "volume7-leg0",
                "volume7"
            ]
        );
        // Cluster 2 holds no leg: both are remote.
        assert_eq!(
            plans[2]
                .bdevs
                .iter()
                .filter(|b| matches!(b, BdevPlan::Remote { .. }))
                .count(),
            2
        );
        for p in &plans {
            assert_eq!(
                p.bdevs.last().unwrap(),
                &BdevPlan::Raid0 {
                    name: "volume7".into(),
                    legs: vec!["volume7-leg0".into(), "volume7-leg1".into()],
                    strip_kb: 64,
                    uuid: Uuid::from_u128(7),
                    num_blocks: 200,
                }
            );
            assert_eq!(p.namespaces[0].hosts.len(), 1);
            assert!(p.namespaces[0].hosts.contains(&endpoint.host_nqn));
            assert_eq!(
                p.nbd_exports,
                [NbdExportPlan {
                    name: "volume7".into(),
                    bdev: "volume7".into(),
                    hosts: BTreeSet::new(),
                    read_only: false,
                }]
            );
            assert!(p.host_keys.is_empty() && p.keyring.is_empty() && p.nbd_psks.is_empty());
        }
        assert_eq!(plans[0].referrals.len(), 2);
        assert!(plans[1].referrals.is_empty());
        assert_eq!(plans[2].listener, ("127.0.0.1".into(), "4422".into()));
        assert!(plans.iter().all(|p| p.serves));
        let empty = plan(&fabric(), &Desired::default(), &BTreeMap::new());
        assert!(empty.iter().all(|p| !p.serves && p.referrals.is_empty()));
    }

    #[test]
    fn keyed_hosts_get_keyring_entries_psks_and_tls_only_exports() {
        use super::super::secrets::tests::secret;
        let one_leg = |id| {
            volume(
                id,
                vec![Leg {
                    cluster: 0,
                    extents: vec![extent(2048 * id, 100)],
                }],
            )
        };
        let endpoint = |id: u64| InitiatorEndpoint {
            id,
            name: format!("h{id}"),
            host_nqn: format!(
                "nqn.2014-08.org.nvmexpress:uuid:0000000{id}-0000-0000-0000-000000000000"
            ),
        };
        let connection = |id: u64, volume: u64, initiators: Vec<u64>| Connection {
            id,
            name: format!("c{id}"),
            volumes: vec![VolumeAccess {
                volume,
                access: Access::ReadWrite,
            }],
            initiators,
            keys: None,
        };
        // Volume 1: host 1 keyed (bidirectional) by connection 1, and host
        // 2 unkeyed by connection 2. Volume 2: host 1 again, unkeyed.
        let keys = ConnectionKeys {
            local: secret(1),
            peer: Some(secret(2)),
        };
        let desired = Desired {
            volumes: vec![one_leg(1), one_leg(2)],
            endpoints: vec![endpoint(1), endpoint(2)],
            connections: vec![
                connection(1, 1, vec![1]),
                connection(2, 1, vec![2]),
                connection(3, 2, vec![1]),
            ],
            keys: [(1, keys.clone())].into(),
            pools: Vec::new(),
        };
        let mut unexported = fabric();
        unexported.nbd_volumes = false;
        let plans = plan(&unexported, &desired, &BTreeMap::new());
        let host_key = host_key_name(&keys.local);
        let ctrlr_key = ctrlr_key_name(keys.peer.as_ref().unwrap());
        assert!(host_key.starts_with("shoal-host-") && ctrlr_key.starts_with("shoal-ctrlr-"));
        assert_ne!(host_key, ctrlr_key);
        for p in &plans {
            assert_eq!(
                p.host_keys,
                [(
                    endpoint(1).host_nqn,
                    HostKeyNames {
                        dhchap_key: host_key.clone(),
                        dhchap_ctrlr_key: Some(ctrlr_key.clone()),
                    }
                )]
                .into()
            );
            assert_eq!(
                p.keyring,
                [
                    (ctrlr_key.clone(), keys.peer.clone().unwrap()),
                    (host_key.clone(), keys.local.clone())
                ]
                .into()
            );
            assert_eq!(
                p.nbd_psks,
                [(
                    "initiator1".to_string(),
                    NbdPsk(keys.local.nbd_psk("initiator1"))
                )]
                .into()
            );
            // Exports only for the keyed volume (NBD volume exports off),
            // TLS-only to the keyed initiator.
            assert_eq!(
                p.nbd_exports,
                [NbdExportPlan {
                    name: "volume1".into(),
                    bdev: "volume1".into(),
                    hosts: ["initiator1".to_string()].into(),
                    read_only: false,
                }]
            );
        }
        // With NBD volume exports on, the unkeyed volume is exported as
        // before, without a host list.
        let plans = plan(&fabric(), &desired, &BTreeMap::new());
        assert_eq!(plans[0].nbd_exports.len(), 2);
        assert!(plans[0].nbd_exports[1].hosts.is_empty());
        // Same secret, same names, on every pass; another secret, others.
        assert_eq!(host_key_name(&secret(1)), host_key);
        assert_ne!(host_key_name(&secret(3)), host_key);
        assert!(is_owned_identity("initiator12") && !is_owned_identity("client"));
    }

    #[test]
    fn only_the_services_own_bdevs_are_recognised() {
        for owned in [
            "volume1",
            "volume12-leg0",
            "volume3-leg2-e10",
            "volume3-leg1-grow",
        ] {
            assert!(is_owned_bdev(owned), "{owned}");
        }
        for other in [
            "drive0",
            "vol0",
            "volume",
            "volumeX",
            "volume1-",
            "volume1-leg",
            "volume1-legs",
            "volume1-leg0-e",
            "volume1-leg0-e1-x",
            "m0",
        ] {
            assert!(!is_owned_bdev(other), "{other}");
        }
    }

    #[test]
    fn existing_bdevs_are_matched_against_the_plan() {
        let part = BdevPlan::Part {
            name: "volume1-leg0".into(),
            base: "drive0".into(),
            offset_blocks: 2048,
            num_blocks: 100,
        };
        let actual = json!({"name": "volume1-leg0", "driver_specific": {"part": {"base_bdev": "drive0", "offset_blocks": 2048, "num_blocks": 100}}});
        assert!(part.matches(&actual));
        let moved = json!({"name": "volume1-leg0", "driver_specific": {"part": {"base_bdev": "drive0", "offset_blocks": 4096, "num_blocks": 100}}});
        assert!(!part.matches(&moved));
        assert_eq!(
            delete_call(&moved),
            Some(("bdev_part_delete".into(), json!({"name": "volume1-leg0"})))
        );
        let remote = BdevPlan::Remote {
            name: "volume1-leg1".into(),
            cluster: 1,
            remote_bdev: "volume1-leg1".into(),
            num_blocks: 100,
            hold_ms: 0,
        };
        assert!(!remote.matches(&actual));
        let raid = BdevPlan::Raid0 {
            name: "volume1".into(),
            legs: vec!["volume1-leg0".into()],
            strip_kb: 64,
            uuid: Uuid::from_u128(1),
            num_blocks: 128,
        };
        let actual_raid = json!({"name": "volume1", "num_blocks": 128, "uuid": Uuid::from_u128(1).to_string(), "driver_specific": {"raid": {"raid_level": "raid0", "strip_size_kb": 64, "base_bdevs_list": [{"name": "volume1-leg0"}]}}});
        assert!(raid.matches(&actual_raid));
        assert_eq!(raid.growth_call(&actual_raid), None);
        assert_eq!(delete_call(&actual_raid).unwrap().0, "bdev_raid_delete");

        // Smaller than planned, built the same way: it grows in place;
        // larger: it is rebuilt.
        let smaller = json!({"name": "volume1-leg0", "num_blocks": 50, "driver_specific": {"part": {"base_bdev": "drive0", "offset_blocks": 2048, "num_blocks": 50}}});
        assert!(part.matches(&smaller));
        assert_eq!(
            part.growth_call(&smaller),
            Some((
                "bdev_part_resize",
                json!({"name": "volume1-leg0", "num_blocks": 100})
            ))
        );
        let larger = json!({"name": "volume1-leg0", "num_blocks": 150, "driver_specific": {"part": {"base_bdev": "drive0", "offset_blocks": 2048, "num_blocks": 150}}});
        assert!(!part.matches(&larger));
        let smaller_raid = json!({"name": "volume1", "num_blocks": 64, "uuid": Uuid::from_u128(1).to_string(), "driver_specific": {"raid": {"raid_level": "raid0", "strip_size_kb": 64, "base_bdevs_list": [{"name": "volume1-leg0"}]}}});
        assert_eq!(
            raid.growth_call(&smaller_raid).unwrap().0,
            "bdev_raid_resize"
        );
    }

    #[test]
    fn a_mirrored_volume_is_a_raid_on_its_owner_and_a_forwarder_elsewhere() {
        let mut v = volume(
            3,
            vec![
                Leg {
                    cluster: 0,
                    extents: vec![extent(2048, 100)],
                },
                Leg {
                    cluster: 1,
                    extents: vec![extent(2048, 100)],
                },
            ],
        );
        v.raid_type = RaidType::Raid1;
        let desired = Desired {
            volumes: vec![v],
            ..Desired::default()
        };
        let owners = BTreeMap::from([(3, 1)]);
        let plans = plan(&fabric(), &desired, &owners);
        let names = |c: usize| -> Vec<(String, u8)> {
            plans[c]
                .bdevs
                .iter()
                .map(|b| (b.name().to_string(), b.stage()))
                .collect()
        };
        // Cluster 0 holds leg 0 and forwards the volume to cluster 1.
        assert_eq!(
            names(0),
            [("volume3-leg0".into(), 0), ("volume3".into(), 4)]
        );
        assert!(matches!(
            &plans[0].bdevs[1],
            BdevPlan::Remote {
                cluster: 1,
                hold_ms: FORWARD_HOLD_MS,
                ..
            }
        ));
        // The owner: its leg, a fail-fast remote to the other, the raid.
        assert_eq!(
            names(1),
            [
                ("volume3-leg1".into(), 0),
                ("volume3-leg0".into(), 2),
                ("volume3".into(), 3)
            ]
        );
        let BdevPlan::Redundant { level, legs, .. } = &plans[1].bdevs[2] else {
            panic!("{:?}", plans[1].bdevs[2]);
        };
        assert_eq!(*level, "raid1");
        assert_eq!(legs, &["volume3-leg0", "volume3-leg1"]);
        assert!(matches!(
            &plans[1].bdevs[1],
            BdevPlan::Remote { hold_ms: 0, .. }
        ));
        let (method, params) = plans[1].bdevs[2].create_call();
        assert_eq!(method, "bdev_raid_create");
        assert_eq!(params["superblock"], true);
        // Cluster 2 holds no leg: only the forwarder.
        assert_eq!(names(2), [("volume3".into(), 4)]);
        // No owner (no leg cluster runs): nothing but the legs.
        let plans = plan(&fabric(), &desired, &BTreeMap::new());
        assert_eq!(plans[2].bdevs, []);
    }

    #[test]
    fn a_pools_store_opens_on_its_volumes_owner_and_its_volumes_are_forwarded_there() {
        let mut backing = volume(
            3,
            vec![
                Leg {
                    cluster: 0,
                    extents: vec![extent(2048, 100)],
                },
                Leg {
                    cluster: 1,
                    extents: vec![extent(2048, 100)],
                },
            ],
        );
        backing.raid_type = RaidType::Raid1;
        let mut thin = volume(4, Vec::new());
        thin.raid_type = RaidType::Raid1;
        thin.capacity_bytes = 10 << 30;
        thin.pool = Some(2);
        thin.provisioning = Provisioning::Thin;
        thin.state = VolumeState::Creating;
        let desired = Desired {
            volumes: vec![backing, thin],
            pools: vec![Pool {
                id: 2,
                name: "thin".into(),
                volume: 3,
                state: VolumeState::Ready,
                created: 0,
                low_space_warning_percents: Vec::new(),
            }],
            ..Desired::default()
        };
        let mut fabric = fabric();
        fabric.nbd_volumes = true;
        let plans = plan(&fabric, &desired, &BTreeMap::from([(3, 1)]));
        // The owner of volume 3 opens the store and makes the new lvol.
        assert!(plans[0].stores.is_empty() && plans[2].stores.is_empty());
        assert_eq!(
            plans[1].stores,
            [StorePlan {
                pool: 2,
                name: "pool2".into(),
                base: "volume3".into(),
                create: false,
                lvols: vec![LvolPlan {
                    volume: 4,
                    name: "volume4".into(),
                    size_mib: 10 << 10,
                    thin: true,
                    create: true,
                }],
            }]
        );
        let (method, params) = plans[1].stores[0].create_lvol_call(&plans[1].stores[0].lvols[0]);
        assert_eq!(method, "bdev_lvol_create");
        assert_eq!(
            params,
            json!({"lvs_name": "pool2", "lvol_name": "volume4", "size_in_mib": 10240, "thin_provision": true})
        );
        // The pool's volume is no host's; the thin volume is everyone's,
        // through its lvol's alias on the owner and forwarders elsewhere.
        for (cluster, served) in [(0, "volume4"), (1, "pool2/volume4"), (2, "volume4")] {
            let p = &plans[cluster];
            assert_eq!(p.namespaces.len(), 1, "cluster {cluster}");
            assert_eq!(p.namespaces[0].nsid, 4);
            assert_eq!(p.namespaces[0].bdev, served);
            assert_eq!(p.nbd_exports.len(), 1);
            assert_eq!(p.nbd_exports[0].name, "volume4");
            assert_eq!(p.nbd_exports[0].bdev, served);
            let forwarder = p.bdevs.iter().find(|b| b.name() == "volume4");
            if cluster == 1 {
                assert_eq!(forwarder, None);
            } else {
                assert_eq!(
                    forwarder,
                    Some(&BdevPlan::Remote {
                        name: "volume4".into(),
                        cluster: 1,
                        remote_bdev: "pool2/volume4".into(),
                        num_blocks: (10 << 30) / 512,
                        hold_ms: FORWARD_HOLD_MS,
                    })
                );
            }
        }
        // With no owner for the pool's volume, nothing serves its volumes.
        let plans = plan(&fabric, &desired, &BTreeMap::new());
        assert!(plans.iter().all(|p| p.stores.is_empty()
            && p.namespaces[0].bdev == "volume4"
            && p.bdevs.iter().all(|b| b.name() != "volume4")));
        assert!(is_owned_store("pool2") && !is_owned_store("pool") && !is_owned_store("lvs0"));
    }

    #[test]
    fn a_forwarder_follows_its_owner_in_place_and_a_mirror_takes_legs_back() {
        let forwarder = BdevPlan::Remote {
            name: "volume3".into(),
            cluster: 0,
            remote_bdev: "volume3".into(),
            num_blocks: 64,
            hold_ms: FORWARD_HOLD_MS,
        };
        let to_old_owner = json!({"name": "volume3", "num_blocks": 64, "driver_specific": {"remote": {"cluster": 1, "remote_bdev": "volume3", "hold_timeout_ms": FORWARD_HOLD_MS}}});
        assert!(forwarder.matches(&to_old_owner));
        assert_eq!(
            forwarder.retarget_call(&to_old_owner),
            Some((
                "bdev_remote_set_target",
                json!({"name": "volume3", "cluster": 0, "remote_bdev": "volume3"})
            ))
        );
        let fail_fast = json!({"name": "volume3", "num_blocks": 64, "driver_specific": {"remote": {"cluster": 0, "remote_bdev": "volume3", "hold_timeout_ms": 0}}});
        assert!(!forwarder.matches(&fail_fast));
        assert_eq!(forwarder.retarget_call(&fail_fast), None);

        let mirror = BdevPlan::Redundant {
            name: "volume3".into(),
            level: "raid1",
            legs: vec!["volume3-leg0".into(), "volume3-leg1".into()],
            strip_kb: 0,
            uuid: Uuid::from_u128(3),
            num_blocks: 64,
        };
        let actual = |states: [&str; 2], process: Value| {
            json!({"name": "volume3", "num_blocks": 64, "uuid": Uuid::from_u128(3).to_string(),
                   "driver_specific": {"raid": {"raid_level": "raid1", "strip_size_kb": 0, "process": process,
                   "shoal": {"legs": [{"name": "volume3-leg0", "state": states[0]}, {"name": "volume3-leg1", "state": states[1]}]}}}})
        };
        assert!(mirror.matches(&actual(["online", "missing"], Value::Null)));
        assert_eq!(
            mirror.heal_calls(&actual(["online", "missing"], Value::Null), |_| true),
            [(
                "bdev_raid_add_base_bdev",
                json!({"raid_bdev": "volume3", "base_bdev": "volume3-leg1"})
            )]
        );
        // Not while the leg is not there, nor while a process runs.
        assert!(
            mirror
                .heal_calls(&actual(["online", "failed"], Value::Null), |_| false)
                .is_empty()
        );
        assert!(
            mirror
                .heal_calls(
                    &actual(["online", "failed"], json!({"type": "rebuild"})),
                    |_| true
                )
                .is_empty()
        );
        assert!(
            mirror
                .heal_calls(&actual(["online", "online"], Value::Null), |_| true)
                .is_empty()
        );
    }

    #[test]
    fn a_parity_volume_is_a_raid5f_or_raid6_on_its_owner_with_one_leg_per_cluster() {
        let legs: Vec<Leg> = (0..4)
            .map(|cluster| Leg {
                cluster,
                extents: vec![extent(2048, 40960)],
            })
            .collect();
        let mut v = volume(5, legs);
        v.raid_type = RaidType::Raid6;
        // Two data legs of 16 MiB (the rest of each 20 MiB leg is the
        // superblock area).
        v.capacity_bytes = 32 << 20;
        let desired = Desired {
            volumes: vec![v.clone()],
            ..Desired::default()
        };
        let mut four = fabric();
        four.clusters = 4;
        let owners = BTreeMap::from([(5, 2)]);
        let plans = plan(&four, &desired, &owners);
        let owner = &plans[2].bdevs;
        let names: Vec<&str> = owner.iter().map(BdevPlan::name).collect();
        assert_eq!(
            names,
            [
                "volume5-leg2",
                "volume5-leg0",
                "volume5-leg1",
                "volume5-leg3",
                "volume5"
            ]
        );
        assert_eq!(
            owner[4],
            BdevPlan::Redundant {
                name: "volume5".into(),
                level: "raid6",
                legs: (0..4).map(|i| format!("volume5-leg{i}")).collect(),
                strip_kb: 64,
                uuid: Uuid::from_u128(5),
                num_blocks: 65536,
            }
        );
        assert_eq!(
            owner[4].create_call(),
            (
                "bdev_raid_create",
                json!({"name": "volume5", "raid_level": "raid6",
                       "base_bdevs": ["volume5-leg0", "volume5-leg1", "volume5-leg2", "volume5-leg3"],
                       "strip_size_kb": 64, "uuid": Uuid::from_u128(5).to_string(), "superblock": true})
            )
        );
        // The other legs are reached fail-fast (the raid takes them out).
        assert!(owner[1..4].iter().all(|b| matches!(
            b,
            BdevPlan::Remote {
                hold_ms: 0,
                num_blocks: 40960,
                ..
            }
        )));
        // Every other cluster: its own leg and a forwarder to the owner.
        for cluster in [0, 1, 3] {
            let bdevs = &plans[cluster].bdevs;
            assert_eq!(bdevs.len(), 2, "{bdevs:?}");
            assert_eq!(bdevs[0].name(), format!("volume5-leg{cluster}"));
            assert!(matches!(
                &bdevs[1],
                BdevPlan::Remote {
                    cluster: 2,
                    hold_ms: FORWARD_HOLD_MS,
                    num_blocks: 65536,
                    ..
                }
            ));
        }
        v.raid_type = RaidType::Raid5;
        let desired = Desired {
            volumes: vec![v],
            ..Desired::default()
        };
        let plans = plan(&four, &desired, &owners);
        let BdevPlan::Redundant {
            level, strip_kb, ..
        } = &plans[2].bdevs[4]
        else {
            panic!("{:?}", plans[2].bdevs[4]);
        };
        assert_eq!((*level, *strip_kb), ("raid5f", 64));
    }

    #[test]
    fn a_raid6_missing_two_legs_matches_and_takes_both_back() {
        let raid6 = BdevPlan::Redundant {
            name: "volume5".into(),
            level: "raid6",
            legs: (0..4).map(|i| format!("volume5-leg{i}")).collect(),
            strip_kb: 64,
            uuid: Uuid::from_u128(5),
            num_blocks: 65536,
        };
        // As the dataplane's stripe raid describes itself.
        let actual = |states: [&str; 4], level: &str| {
            let legs: Vec<Value> = states
                .iter()
                .enumerate()
                .map(|(i, state)| json!({"name": format!("volume5-leg{i}"), "state": state}))
                .collect();
            json!({"name": "volume5", "num_blocks": 65536, "uuid": Uuid::from_u128(5).to_string(),
                   "driver_specific": {"raid": {"raid_level": level, "strip_size_kb": 64, "state": "online",
                   "process": null, "shoal": {"degraded": true, "tolerated_failures": 2, "legs": legs}}}})
        };
        let degraded = actual(["online", "failed", "online", "missing"], "raid6");
        assert!(raid6.matches(&degraded));
        assert!(!raid6.matches(&actual(["online"; 4], "raid5f")));
        assert_eq!(raid6.growth_call(&degraded), None);
        let calls = raid6.heal_calls(&degraded, |_| true);
        assert_eq!(
            calls,
            [
                (
                    "bdev_raid_add_base_bdev",
                    json!({"raid_bdev": "volume5", "base_bdev": "volume5-leg1"})
                ),
                (
                    "bdev_raid_add_base_bdev",
                    json!({"raid_bdev": "volume5", "base_bdev": "volume5-leg3"})
                )
            ]
        );
    }
}

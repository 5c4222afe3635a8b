//! The storage model's desired state, as it is kept in sled: volumes with
//! the exact blocks they occupy on each data cluster's drive, the hosts
//! administrators named (initiator endpoints), and the connections that let
//! those hosts reach volumes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::secrets::{ConnectionKeys, Sealed};

/// Most volumes the appliance holds (each is one NVMe namespace of the
/// storage's subsystem on every data cluster).
pub const MAX_VOLUMES: usize = 256;
/// Most initiator endpoints and connections.
pub const MAX_ENDPOINTS: usize = 256;
pub const MAX_CONNECTIONS: usize = 256;
/// Most thin pools (each an lvol store on one volume).
pub const MAX_POOLS: usize = 16;
/// Cluster size of a pool's lvol store: the unit a thin volume's space is
/// allocated in (SPDK's default is 4 MiB;
/// 1 MiB keeps the first write's zeroing small and matches the drives'
/// allocation unit).
pub const POOL_CLUSTER_BYTES: u64 = 1 << 20;
/// Volume names: 1 to 64 printable characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Space on a drive is handed out in whole MiB, and each leg of a volume
/// is a whole number of them.
pub const ALLOCATION_UNIT_BYTES: u64 = 1 << 20;
/// The first MiB of every drive is never allocated: room for a label, and
/// no volume starts where a partition table would be looked for.
pub const DRIVE_RESERVED_BYTES: u64 = 1 << 20;
/// Default and allowed strip sizes of striped volumes.
pub const DEFAULT_STRIP_BYTES: u64 = 64 << 10;
pub const MIN_STRIP_BYTES: u64 = 4 << 10;
pub const MAX_STRIP_BYTES: u64 = ALLOCATION_UNIT_BYTES;
/// Room at the start of every leg of a redundant volume for the raid's
/// superblock and write-intent bitmap (and, for the parity levels, the
/// write-hole journal): the dataplane's `raid::superblock::RESERVED_BYTES`.
pub const RAID_SUPERBLOCK_BYTES: u64 = 4 << 20;
/// Default strip of RAID5 and RAID6 volumes. A write that covers whole
/// stripes (data legs x strip) needs no reads for its parity; 64 KiB keeps
/// a stripe small enough that sequential host writes often do (192 KiB on
/// four RAID5 legs), and is what the dataplane's parity benchmarks use.
pub const PARITY_STRIP_BYTES: u64 = 64 << 10;
/// Most data legs a parity raid has: the dataplane's
/// `raid::parity::MAX_DATA_SHARDS` (RAID5 up to 33 legs, RAID6 up to 34).
pub const MAX_PARITY_DATA_LEGS: u32 = 32;

/// How a volume spreads over the data clusters. Each leg is on a different
/// cluster's drive: the cluster is the failure domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaidType {
    /// Striped across the chosen clusters' drives (Redfish `RAID0`).
    Raid0,
    /// Redfish `None`: no redundancy; laid out like RAID0.
    None,
    /// Every leg holds all the data (dataplane `raid1`).
    Raid1,
    /// Striped over mirrored pairs (dataplane `raid10`).
    Raid10,
    /// Striped with one rotating parity strip (dataplane `raid5f`).
    Raid5,
    /// Striped with two rotating parity strips, P and Q (dataplane `raid6`).
    Raid6,
}

impl RaidType {
    /// The Redfish `RAIDType` values accepted at creation: only those the
    /// dataplane and the placement carry out end to end.
    pub const SUPPORTED: [&'static str; 6] = ["RAID0", "None", "RAID1", "RAID10", "RAID5", "RAID6"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "RAID0" => Some(Self::Raid0),
            "None" => Some(Self::None),
            "RAID1" => Some(Self::Raid1),
            "RAID10" => Some(Self::Raid10),
            "RAID5" => Some(Self::Raid5),
            "RAID6" => Some(Self::Raid6),
            _ => None,
        }
    }

    pub fn redfish(self) -> &'static str {
        match self {
            Self::Raid0 => "RAID0",
            Self::None => "None",
            Self::Raid1 => "RAID1",
            Self::Raid10 => "RAID10",
            Self::Raid5 => "RAID5",
            Self::Raid6 => "RAID6",
        }
    }

    /// Whether the volume survives the loss of a leg.
    pub fn is_redundant(self) -> bool {
        !matches!(self, Self::Raid0 | Self::None)
    }

    /// The dataplane raid level of a volume built as one raid with a
    /// superblock on an owner cluster ([`super::owner`]), forwarded to by
    /// every other cluster; `None` for the striped types, which every
    /// cluster builds alike.
    pub fn owner_level(self) -> Option<&'static str> {
        match self {
            Self::Raid1 => Some("raid1"),
            Self::Raid10 => Some("raid10"),
            Self::Raid5 => Some("raid5f"),
            Self::Raid6 => Some("raid6"),
            Self::Raid0 | Self::None => None,
        }
    }

    /// Built on an owner cluster (see [`Self::owner_level`]).
    pub fn has_owner(self) -> bool {
        self.owner_level().is_some()
    }

    /// Bytes at the start of each leg that hold no volume data: the raid's
    /// superblock area on owner-built volumes.
    pub fn leg_metadata_bytes(self) -> u64 {
        if self.has_owner() {
            RAID_SUPERBLOCK_BYTES
        } else {
            0
        }
    }

    /// The strip of a new volume whose POST names none.
    pub fn default_strip_bytes(self) -> u64 {
        match self {
            Self::Raid5 | Self::Raid6 => PARITY_STRIP_BYTES,
            _ => DEFAULT_STRIP_BYTES,
        }
    }

    /// The most legs this type takes (the dataplane's limit).
    pub fn max_legs(self) -> Option<u32> {
        match self {
            Self::Raid1 => Some(2),
            Self::Raid5 => Some(MAX_PARITY_DATA_LEGS + 1),
            Self::Raid6 => Some(MAX_PARITY_DATA_LEGS + 2),
            Self::Raid0 | Self::None | Self::Raid10 => None,
        }
    }

    /// Legs whose space holds distinct data: all of them striped, one for
    /// RAID1, half for RAID10.
    pub fn data_legs(self, legs: u32) -> u32 {
        match self {
            Self::Raid1 => 1,
            Self::Raid10 => legs / 2,
            Self::Raid5 => legs.saturating_sub(1),
            Self::Raid6 => legs.saturating_sub(2),
            Self::Raid0 | Self::None => legs,
        }
    }

    /// Why `legs` legs cannot make this type, if they cannot.
    pub fn leg_count_error(self, legs: u32) -> Option<String> {
        let within = self.max_legs().is_none_or(|max| legs <= max);
        let ok = within
            && match self {
                Self::Raid1 => legs == 2,
                Self::Raid10 => legs >= 4 && legs.is_multiple_of(2),
                Self::Raid5 => legs >= 3,
                Self::Raid6 => legs >= 4,
                Self::Raid0 | Self::None => legs >= 1,
            };
        (!ok).then(|| {
            let rule = match self {
                Self::Raid1 => "exactly 2",
                Self::Raid10 => "an even number, at least 4,",
                Self::Raid5 => "3 to 33",
                Self::Raid6 => "4 to 34",
                Self::Raid0 | Self::None => "at least 1",
            };
            format!(
                "{} needs {rule} drives on distinct data clusters; {legs} were chosen",
                self.redfish()
            )
        })
    }

    /// Legs that may be lost at once without losing data.
    pub fn tolerated_failures(self) -> usize {
        match self {
            Self::Raid0 | Self::None => 0,
            Self::Raid1 | Self::Raid10 | Self::Raid5 => 1,
            Self::Raid6 => 2,
        }
    }
}

/// A contiguous range of a drive, in the drive's blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub offset_blocks: u64,
    pub num_blocks: u64,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.offset_blocks + self.num_blocks
    }
}

/// One leg of a striped volume: its share of blocks on one cluster's drive,
/// one extent or (when the free space was fragmented) several, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    pub cluster: u32,
    pub extents: Vec<Extent>,
}

impl Leg {
    pub fn blocks(&self) -> u64 {
        self.extents.iter().map(|e| e.num_blocks).sum()
    }
}

/// Where a volume is in its life. A volume is `Creating` only while the
/// POST that makes it runs; one found in that state at start was never
/// acknowledged, and is rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeState {
    Creating,
    Ready,
}

/// How a volume's space is promised: all of it at creation (`Fixed`:
/// extents of the drives, or a thick lvol), or as it is written (`Thin`:
/// an lvol whose clusters come from its pool on first write).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Provisioning {
    #[default]
    Fixed,
    Thin,
}

impl Provisioning {
    pub fn redfish(self) -> &'static str {
        match self {
            Self::Fixed => "Fixed",
            Self::Thin => "Thin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "Fixed" => Some(Self::Fixed),
            "Thin" => Some(Self::Thin),
            _ => None,
        }
    }
}

/// What a replica volume is of its source (Swordfish `ReplicaType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaKind {
    /// A read-only point-in-time copy (`bdev_lvol_snapshot`): it takes
    /// the source's clusters, the source goes on writing new ones.
    Snapshot,
    /// A writable child of a snapshot (`bdev_lvol_clone`), reading what
    /// it has not written through the snapshot.
    Clone,
}

impl ReplicaKind {
    pub fn redfish(self) -> &'static str {
        match self {
            Self::Snapshot => "Snapshot",
            Self::Clone => "Clone",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "Snapshot" => Some(Self::Snapshot),
            "Clone" => Some(Self::Clone),
            _ => None,
        }
    }
}

/// A volume made as a replica of another (in the same pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub source: u64,
    pub kind: ReplicaKind,
}

/// A thin pool: an lvol store on one (redundant) volume, whose volumes are
/// lvols in it and so inherit its protection. The store is open on that
/// volume's owner only, which makes every metadata change; the other
/// clusters forward the pool's volumes there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub id: u64,
    pub name: String,
    /// The volume the store is on (it is exported to no host).
    pub volume: u64,
    pub state: VolumeState,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// Remaining-capacity percentages whose crossing is an event, highest
    /// first (`storage::low_space`).
    #[serde(default)]
    pub low_space_warning_percents: Vec<u8>,
}

/// The lvol store's name on the dataplane (`bdev_lvol_*` `lvs_name`).
pub fn pool_store(pool: u64) -> String {
    format!("pool{pool}")
}

/// An lvol's alias (`lvs/lvol`), the same on whichever cluster opens its
/// store.
pub fn lvol_alias(store: &str, lvol: &str) -> String {
    format!("{store}/{lvol}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub id: u64,
    pub name: String,
    pub display_name: Option<String>,
    pub raid_type: RaidType,
    pub capacity_bytes: u64,
    pub block_size: u32,
    pub strip_bytes: u64,
    /// Namespace UUID; its bytes are the NGUID.
    pub uuid: Uuid,
    /// NVMe namespace ID in the storage's subsystem.
    pub nsid: u32,
    /// Stripe order: leg i holds strips i, i + n, i + 2n, ...
    pub legs: Vec<Leg>,
    pub state: VolumeState,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// The thin pool holding it as an lvol (then `legs` is empty and
    /// `raid_type` is the pool volume's); `None`: extents of the drives,
    /// as every volume made before pools existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<u64>,
    #[serde(default)]
    pub provisioning: Provisioning,
    /// Made by `Volume.CreateReplicaTarget` of another volume of its pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<Replica>,
}

impl Volume {
    /// A snapshot: read-only on every protocol.
    pub fn is_read_only(&self) -> bool {
        self.replica
            .is_some_and(|r| r.kind == ReplicaKind::Snapshot)
    }

    /// The lvol's name in its pool's store.
    pub fn lvol_name(&self) -> String {
        format!("volume{}", self.id)
    }

    /// The lvol bdev's alias ([`lvol_alias`]), if it is an lvol.
    pub fn lvol_alias(&self) -> Option<String> {
        self.pool
            .map(|pool| lvol_alias(&pool_store(pool), &self.lvol_name()))
    }

    /// The NGUID hosts see, as Redfish and SPDK write it (32 hex digits).
    pub fn nguid(&self) -> String {
        self.uuid.simple().to_string().to_uppercase()
    }

    pub fn clusters(&self) -> impl Iterator<Item = u32> + '_ {
        self.legs.iter().map(|l| l.cluster)
    }
}

/// A host an administrator named, by its host NQN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitiatorEndpoint {
    pub id: u64,
    pub name: String,
    pub host_nqn: String,
}

/// What a connection lets its hosts do with one volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    ReadWrite,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeAccess {
    pub volume: u64,
    pub access: Access,
}

/// Hosts (initiator endpoints) allowed to reach volumes, through every
/// data cluster's portal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub id: u64,
    pub name: String,
    pub volumes: Vec<VolumeAccess>,
    pub initiators: Vec<u64>,
    /// The hosts' DH-HMAC-CHAP credentials, sealed (see [`super::secrets`]);
    /// without them the hosts are let in by their NQN alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Sealed>,
}

/// Everything the reconciler makes real, read from the store at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub volumes: Vec<Volume>,
    pub pools: Vec<Pool>,
    pub endpoints: Vec<InitiatorEndpoint>,
    pub connections: Vec<Connection>,
    /// The opened credentials of the keyed connections, by connection id.
    pub keys: BTreeMap<u64, ConnectionKeys>,
}

impl Desired {
    pub fn volume(&self, id: u64) -> Option<&Volume> {
        self.volumes.iter().find(|v| v.id == id)
    }

    pub fn pool(&self, id: u64) -> Option<&Pool> {
        self.pools.iter().find(|p| p.id == id)
    }

    /// The pool whose store is on volume `id`, if one is.
    pub fn pool_on(&self, volume: u64) -> Option<&Pool> {
        self.pools.iter().find(|p| p.volume == volume)
    }

    /// The volumes hosts may reach: all but those holding a pool's store
    /// (a host writing there would overwrite the store's metadata).
    pub fn exported_volumes(&self) -> impl Iterator<Item = &Volume> {
        self.volumes.iter().filter(|v| self.pool_on(v.id).is_none())
    }

    /// The volumes in pool `id`.
    pub fn volumes_in(&self, pool: u64) -> impl Iterator<Item = &Volume> {
        self.volumes.iter().filter(move |v| v.pool == Some(pool))
    }

    pub fn endpoint(&self, id: u64) -> Option<&InitiatorEndpoint> {
        self.endpoints.iter().find(|e| e.id == id)
    }

    /// Host NQNs allowed on volume `id`.
    pub fn hosts_of(&self, volume: u64) -> std::collections::BTreeSet<String> {
        self.connections
            .iter()
            .filter(|c| c.volumes.iter().any(|v| v.volume == volume))
            .flat_map(|c| c.initiators.iter())
            .filter_map(|id| self.endpoint(*id))
            .map(|e| e.host_nqn.clone())
            .collect()
    }

    /// The credentials host `host_nqn` must prove, from the keyed
    /// connections that name it (all alike: that is checked when they are
    /// made; the lowest connection id wins otherwise).
    pub fn keys_of_host(&self, host_nqn: &str) -> Option<&ConnectionKeys> {
        self.connections
            .iter()
            .filter(|c| {
                c.initiators
                    .iter()
                    .any(|id| self.endpoint(*id).is_some_and(|e| e.host_nqn == host_nqn))
            })
            .find_map(|c| self.keys.get(&c.id))
    }

    /// Connections that name volume `id`.
    pub fn connections_of(&self, volume: u64) -> impl Iterator<Item = &Connection> {
        self.connections
            .iter()
            .filter(move |c| c.volumes.iter().any(|v| v.volume == volume))
    }
}

/// A ready volume of `legs` (512-byte blocks, 64 KiB strips) for tests.
#[cfg(test)]
pub fn test_volume(id: u64, legs: Vec<Leg>) -> Volume {
    Volume {
        id,
        name: format!("v{id}"),
        display_name: None,
        raid_type: RaidType::Raid0,
        capacity_bytes: legs.iter().map(|l| l.blocks() * 512).sum(),
        block_size: 512,
        strip_bytes: 65536,
        uuid: Uuid::from_u128(u128::from(id)),
        nsid: id as u32,
        legs,
        state: VolumeState::Ready,
        created: 0,
        pool: None,
        provisioning: Provisioning::Fixed,
        replica: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A volume as the service kept it before pools existed (the record
    /// every volume made until then has in sled): it reads as a Fixed
    /// volume of the drives' extents, served as before, no conversion.
    #[test]
    fn a_volume_recorded_before_pools_reads_as_fixed_extents() {
        let before = r#"{"id":3,"name":"vol","display_name":null,"raid_type":"Raid1",
            "capacity_bytes":33554432,"block_size":512,"strip_bytes":65536,
            "uuid":"6f3c1c1e-8d3b-4a57-9a44-0d2b8f1f6a01","nsid":3,
            "legs":[{"cluster":0,"extents":[{"offset_blocks":2048,"num_blocks":73728}]},
                    {"cluster":1,"extents":[{"offset_blocks":2048,"num_blocks":73728}]}],
            "state":"Ready","created":1764800000}"#;
        let volume: Volume = serde_json::from_str(before).unwrap();
        assert_eq!(volume.pool, None);
        assert_eq!(volume.provisioning, Provisioning::Fixed);
        assert_eq!(volume.replica, None);
        assert_eq!(volume.legs.len(), 2);
        assert_eq!(volume.lvol_alias(), None);
        // Written back, it gains only `provisioning`, which the earlier
        // service ignores: a downgrade still reads it.
        let after: serde_json::Value = serde_json::to_value(&volume).unwrap();
        assert_eq!(after["provisioning"], "Fixed");
        assert!(after.get("pool").is_none() && after.get("replica").is_none());
    }

    #[test]
    fn parity_levels_are_built_on_an_owner_with_their_leg_rules() {
        assert_eq!(RaidType::Raid5.owner_level(), Some("raid5f"));
        assert_eq!(RaidType::Raid6.owner_level(), Some("raid6"));
        assert_eq!(RaidType::Raid0.owner_level(), None);
        assert_eq!(RaidType::Raid6.leg_metadata_bytes(), 4 << 20);
        assert_eq!(RaidType::None.leg_metadata_bytes(), 0);
        assert_eq!(RaidType::Raid6.default_strip_bytes(), 64 << 10);
        assert_eq!(RaidType::Raid5.tolerated_failures(), 1);
        assert_eq!(RaidType::Raid6.tolerated_failures(), 2);
        assert_eq!(RaidType::Raid5.data_legs(4), 3);
        assert_eq!(RaidType::Raid6.data_legs(4), 2);
        for (raid_type, legs, ok) in [
            (RaidType::Raid5, 2, false),
            (RaidType::Raid5, 3, true),
            (RaidType::Raid5, 33, true),
            (RaidType::Raid5, 34, false),
            (RaidType::Raid6, 3, false),
            (RaidType::Raid6, 4, true),
            (RaidType::Raid6, 34, true),
            (RaidType::Raid6, 35, false),
        ] {
            assert_eq!(
                raid_type.leg_count_error(legs).is_none(),
                ok,
                "{raid_type:?} {legs}"
            );
        }
        assert_eq!(
            RaidType::Raid6.leg_count_error(3).unwrap(),
            "RAID6 needs 4 to 34 drives on distinct data clusters; 3 were chosen"
        );
        for text in RaidType::SUPPORTED {
            assert_eq!(RaidType::parse(text).unwrap().redfish(), text);
        }
    }
}

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
/// superblock and write-intent bitmap (the dataplane's
/// `raid::superblock::RESERVED_BYTES`).
pub const RAID_SUPERBLOCK_BYTES: u64 = 4 << 20;

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
    pub const SUPPORTED: [&'static str; 4] = ["RAID0", "None", "RAID1", "RAID10"];

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

    /// Mirrored: built as the dataplane's raid1/raid10 on an owner cluster.
    pub fn is_mirrored(self) -> bool {
        matches!(self, Self::Raid1 | Self::Raid10)
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
        let ok = match self {
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
                Self::Raid5 => "at least 3",
                Self::Raid6 => "at least 4",
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
}

impl Volume {
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
    pub endpoints: Vec<InitiatorEndpoint>,
    pub connections: Vec<Connection>,
    /// The opened credentials of the keyed connections, by connection id.
    pub keys: BTreeMap<u64, ConnectionKeys>,
}

impl Desired {
    pub fn volume(&self, id: u64) -> Option<&Volume> {
        self.volumes.iter().find(|v| v.id == id)
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
    }
}

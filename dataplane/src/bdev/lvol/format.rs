//! The on-disk form of an lvol store: geometry, the super block, metadata
//! pages, lvol records and cluster owner entries. Pure encoding; what the
//! store does with them (which copy wins, when pages are written) lives in
//! `store.rs`.
//!
//! Everything is little-endian and written in [`METADATA_BLOCK_BYTES`]
//! blocks, whatever the base bdev's block size, so every structure is one
//! whole block and a write of it is atomic or detectably torn: each block
//! carries a CRC32C over itself (computed with the CRC field zero).

use uuid::Uuid;

/// Unit of every metadata read and write.
pub const METADATA_BLOCK_BYTES: usize = 4096;

/// Cluster size when the caller does not pick one: SPDK's default.
pub const DEFAULT_CLUSTER_BYTES: u64 = 4 * 1024 * 1024;

/// Smallest cluster: below this the owner table outgrows the data it
/// describes too fast (8 bytes per 64 KiB is 1/8192 per copy) and every
/// first write of a thin volume pays a metadata commit for little data.
pub const MIN_CLUSTER_BYTES: u64 = 64 * 1024;

/// Largest cluster: a copy-on-write of one costs a read and a write of it.
pub const MAX_CLUSTER_BYTES: u64 = 1024 * 1024 * 1024;

/// Lvol slots in a store (snapshots and clones included), fixed at format
/// so the lvol table has a fixed place. SPDK has no such bound; 1024 keeps
/// the table at 34 pages per copy.
pub const MAX_LVOLS: usize = 1024;

/// Longest lvol or store name, in UTF-8 bytes: SPDK's `SPDK_LVOL_NAME_MAX`
/// (64) less its terminating NUL.
pub const MAX_NAME_BYTES: usize = 63;

/// Most clusters in one store: the owner table of 2^24 clusters is 33,093
/// pages (129 MiB) per copy, 64 TiB of data at the default cluster size.
pub const MAX_STORE_CLUSTERS: u64 = 1 << 24;

/// Most logical clusters of one lvol: its cluster index is a `u32` in the
/// owner table. A thin lvol may be larger than its store.
pub const MAX_LVOL_CLUSTERS: u64 = u32::MAX as u64;

const SUPER_MAGIC: &[u8; 8] = b"SHOALLVS";
const PAGE_MAGIC: &[u8; 4] = b"SLVP";
/// The layout version this build writes and reads.
pub const VERSION: u32 = 1;

/// Bytes before a page's payload (magic, CRC, generation, store, place).
pub const PAGE_HEADER_BYTES: usize = 40;
/// Bytes of a page's payload.
pub const PAGE_PAYLOAD_BYTES: usize = METADATA_BLOCK_BYTES - PAGE_HEADER_BYTES;

/// Bytes of one lvol record in the lvol table.
pub const LVOL_RECORD_BYTES: usize = 128;
/// Lvol records per table page.
pub const RECORDS_PER_PAGE: usize = PAGE_PAYLOAD_BYTES / LVOL_RECORD_BYTES;

/// Bytes of one cluster owner entry.
pub const OWNER_ENTRY_BYTES: usize = 8;
/// Owner entries per owner page.
pub const OWNERS_PER_PAGE: usize = PAGE_PAYLOAD_BYTES / OWNER_ENTRY_BYTES;

/// Lvol table pages per copy.
pub const TABLE_PAGES: usize = MAX_LVOLS.div_ceil(RECORDS_PER_PAGE);

// The names fit their fields, slots never collide with "free", and every
// cluster index fits the owner table's `u32`.
const _: () = assert!(49 + 1 + MAX_NAME_BYTES <= LVOL_RECORD_BYTES);
const _: () = assert!(85 + 1 + MAX_NAME_BYTES <= METADATA_BLOCK_BYTES);
const _: () = assert!(MAX_LVOLS < FREE_SLOT as usize);
const _: () = assert!(MAX_STORE_CLUSTERS < u32::MAX as u64);

/// Where everything is on a base bdev, derived from its size and the
/// cluster size alone, so it is recomputed and cross-checked at open.
///
/// The base starts with the two copies' super blocks (A at block 0, B at
/// block 1: fixed, so either is found when the other is torn), then copy
/// A's pages (lvol table, owner table), then copy B's; data clusters start
/// at the first cluster boundary after them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub cluster_bytes: u64,
    /// Size of the base, in metadata blocks.
    pub device_blocks: u64,
    pub total_clusters: u64,
    /// Metadata blocks per copy: its super block and its pages.
    pub copy_blocks: u64,
    /// First data cluster's place, in metadata blocks.
    pub data_offset_blocks: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    #[error("cluster size {0} is not a power of two between 64 KiB and 1 GiB")]
    ClusterSize(u64),
    #[error("base of {device_bytes} bytes has no room for one data cluster after the metadata")]
    TooSmall { device_bytes: u64 },
    #[error("base holds {0} clusters; a store holds at most {MAX_STORE_CLUSTERS}")]
    TooManyClusters(u64),
}

impl Geometry {
    /// The layout of a store of `cluster_bytes` clusters on a base of
    /// `device_blocks` metadata blocks.
    pub fn new(device_blocks: u64, cluster_bytes: u64) -> Result<Self, GeometryError> {
        if !cluster_bytes.is_power_of_two()
            || !(MIN_CLUSTER_BYTES..=MAX_CLUSTER_BYTES).contains(&cluster_bytes)
        {
            return Err(GeometryError::ClusterSize(cluster_bytes));
        }
        let device_bytes = device_blocks * METADATA_BLOCK_BYTES as u64;
        if device_bytes / cluster_bytes > MAX_STORE_CLUSTERS {
            return Err(GeometryError::TooManyClusters(device_bytes / cluster_bytes));
        }
        let cluster_blocks = cluster_bytes / METADATA_BLOCK_BYTES as u64;
        // The owner table's size depends on the cluster count, which
        // depends on the room the table leaves: start from the whole base
        // and shrink until the clusters fit (two rounds at most, since
        // each cluster's entry is far smaller than the cluster).
        let mut clusters = device_bytes / cluster_bytes;
        loop {
            let copy_blocks = Self::copy_blocks_for(clusters);
            let data_offset_blocks = (2 * copy_blocks).next_multiple_of(cluster_blocks);
            let room = device_blocks.saturating_sub(data_offset_blocks) / cluster_blocks;
            if room >= clusters {
                if clusters == 0 {
                    return Err(GeometryError::TooSmall { device_bytes });
                }
                return Ok(Self {
                    cluster_bytes,
                    device_blocks,
                    total_clusters: clusters,
                    copy_blocks,
                    data_offset_blocks,
                });
            }
            clusters = room;
        }
    }

    fn copy_blocks_for(clusters: u64) -> u64 {
        1 + TABLE_PAGES as u64 + clusters.div_ceil(OWNERS_PER_PAGE as u64)
    }

    /// Owner pages per copy.
    pub fn owner_pages(&self) -> u64 {
        self.total_clusters.div_ceil(OWNERS_PER_PAGE as u64)
    }

    /// Where copy `copy`'s (0 or 1) super block is.
    pub fn super_block_at(copy: u8) -> u64 {
        u64::from(copy)
    }

    /// Pages per copy (lvol table and owner table), indexed from 1.
    pub fn pages_per_copy(&self) -> u32 {
        (self.copy_blocks - 1) as u32
    }

    /// Where page `index` (1-based, see [`table_page_index`]) of copy
    /// `copy` is.
    pub fn page_at(&self, copy: u8, index: u32) -> u64 {
        debug_assert!((1..=self.pages_per_copy()).contains(&index));
        2 + u64::from(copy) * u64::from(self.pages_per_copy()) + u64::from(index - 1)
    }

    /// Metadata blocks per cluster.
    pub fn cluster_blocks(&self) -> u64 {
        self.cluster_bytes / METADATA_BLOCK_BYTES as u64
    }

    /// Where data cluster `cluster` starts, in metadata blocks.
    pub fn cluster_offset_blocks(&self, cluster: u32) -> u64 {
        self.data_offset_blocks + u64::from(cluster) * self.cluster_blocks()
    }
}

/// Where a page sits in a copy, counted from the copy's super block (1 is
/// the first table page).
pub fn table_page_index(slot: usize) -> u32 {
    1 + (slot / RECORDS_PER_PAGE) as u32
}

/// The owner page holding cluster `cluster`'s entry.
pub fn owner_page_index(cluster: u32) -> u32 {
    1 + TABLE_PAGES as u32 + cluster / OWNERS_PER_PAGE as u32
}

/// Why a block was not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("no lvol store metadata here (magic mismatch)")]
    NoMagic,
    #[error("lvol metadata version {0} is not supported (this build reads {VERSION})")]
    Version(u32),
    #[error("lvol metadata checksum mismatch (torn or corrupt block)")]
    Checksum,
    #[error("lvol metadata page belongs to store {found}, not {expected}")]
    ForeignStore { expected: Uuid, found: Uuid },
    #[error(
        "lvol metadata page found at copy {copy} page {index}, written for copy {found_copy} page {found_index}"
    )]
    Misplaced {
        copy: u8,
        index: u32,
        found_copy: u8,
        found_index: u32,
    },
    #[error(
        "lvol metadata page of generation {page} is newer than its super block ({super_block}): a commit was cut short"
    )]
    NewerThanSuperBlock { page: u64, super_block: u64 },
    #[error("lvol metadata is malformed: {0}")]
    Malformed(&'static str),
}

/// A checked name: 1 to [`MAX_NAME_BYTES`] bytes of UTF-8, no NUL.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("name is empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return Err("name is longer than 63 bytes");
    }
    if name.contains('\0') {
        return Err("name contains NUL");
    }
    Ok(())
}

/// The head of one metadata copy. Of the two copies, the valid one with
/// the higher generation is the store's truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperBlock {
    pub store_uuid: Uuid,
    pub name: String,
    pub generation: u64,
    /// Which copy this is (0 = A, 1 = B); always `generation % 2`.
    pub copy: u8,
    pub geometry: Geometry,
}

impl SuperBlock {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; METADATA_BLOCK_BYTES];
        out[0..8].copy_from_slice(SUPER_MAGIC);
        put_u32(&mut out, 8, VERSION);
        // 12..16: CRC32C.
        out[16..32].copy_from_slice(self.store_uuid.as_bytes());
        put_u64(&mut out, 32, self.generation);
        let g = &self.geometry;
        put_u64(&mut out, 40, g.cluster_bytes);
        put_u64(&mut out, 48, g.total_clusters);
        put_u64(&mut out, 56, g.device_blocks);
        put_u64(&mut out, 64, g.copy_blocks);
        put_u64(&mut out, 72, g.data_offset_blocks);
        put_u32(&mut out, 80, MAX_LVOLS as u32);
        out[84] = self.copy;
        put_name(&mut out, 85, &self.name);
        seal(&mut out, 12);
        out
    }

    pub fn decode(block: &[u8]) -> Result<Self, DecodeError> {
        if block.len() != METADATA_BLOCK_BYTES || &block[0..8] != SUPER_MAGIC {
            return Err(DecodeError::NoMagic);
        }
        let version = get_u32(block, 8);
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        check_seal(block, 12)?;
        if get_u32(block, 80) as usize != MAX_LVOLS {
            return Err(DecodeError::Malformed("lvol slot count"));
        }
        let cluster_bytes = get_u64(block, 40);
        let device_blocks = get_u64(block, 56);
        // The geometry is a function of two numbers; the recorded rest
        // must agree with it, or the block is not one this build wrote.
        let geometry = Geometry::new(device_blocks, cluster_bytes)
            .map_err(|_| DecodeError::Malformed("geometry"))?;
        if geometry.total_clusters != get_u64(block, 48)
            || geometry.copy_blocks != get_u64(block, 64)
            || geometry.data_offset_blocks != get_u64(block, 72)
        {
            return Err(DecodeError::Malformed("geometry"));
        }
        let generation = get_u64(block, 32);
        let copy = block[84];
        if u64::from(copy) != generation % 2 {
            return Err(DecodeError::Malformed("copy does not match generation"));
        }
        Ok(Self {
            store_uuid: get_uuid(block, 16),
            name: get_name(block, 85)?,
            generation,
            copy,
            geometry,
        })
    }
}

/// The identity every page carries, so a page written for another store,
/// another copy or another place is never taken for this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagePlace {
    pub store_uuid: Uuid,
    pub copy: u8,
    pub index: u32,
}

/// One metadata page: `payload` (at most [`PAGE_PAYLOAD_BYTES`]) sealed
/// with the generation of the commit that wrote it.
pub fn encode_page(place: PagePlace, generation: u64, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= PAGE_PAYLOAD_BYTES, "payload fits a page");
    let mut out = vec![0u8; METADATA_BLOCK_BYTES];
    out[0..4].copy_from_slice(PAGE_MAGIC);
    // 4..8: CRC32C.
    put_u64(&mut out, 8, generation);
    out[16..32].copy_from_slice(place.store_uuid.as_bytes());
    put_u32(&mut out, 32, place.index);
    out[36] = place.copy;
    out[PAGE_HEADER_BYTES..PAGE_HEADER_BYTES + payload.len()].copy_from_slice(payload);
    seal(&mut out, 4);
    out
}

/// The payload of a page read from `place`, checked against the super
/// block of generation `super_generation` that leads its copy.
pub fn decode_page(
    block: &[u8],
    place: PagePlace,
    super_generation: u64,
) -> Result<&[u8], DecodeError> {
    if block.len() != METADATA_BLOCK_BYTES || &block[0..4] != PAGE_MAGIC {
        return Err(DecodeError::NoMagic);
    }
    check_seal(block, 4)?;
    let found = get_uuid(block, 16);
    if found != place.store_uuid {
        return Err(DecodeError::ForeignStore {
            expected: place.store_uuid,
            found,
        });
    }
    let (found_copy, found_index) = (block[36], get_u32(block, 32));
    if found_copy != place.copy || found_index != place.index {
        return Err(DecodeError::Misplaced {
            copy: place.copy,
            index: place.index,
            found_copy,
            found_index,
        });
    }
    // Pages are written before their super block: a page newer than the
    // super block is what a commit cut short leaves behind.
    let page = get_u64(block, 8);
    if page > super_generation {
        return Err(DecodeError::NewerThanSuperBlock {
            page,
            super_block: super_generation,
        });
    }
    Ok(&block[PAGE_HEADER_BYTES..])
}

/// An lvol's record in its table slot. Its clusters are not here but in
/// the owner table (each cluster names its lvol), so the allocation map
/// and the extent tables are one structure on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvolRecord {
    pub uuid: Uuid,
    pub name: String,
    pub size_clusters: u64,
    /// Clusters are allocated on first write, not at creation.
    pub thin: bool,
    /// A snapshot: never written, never resized.
    pub read_only: bool,
    /// The snapshot this lvol reads through where it owns no cluster.
    pub parent: Option<Uuid>,
    /// Logical clusters below this read through `parent`; those at or
    /// past it read zeroes. Equal to the size at snapshot or clone time,
    /// lowered by a shrink so a later grow does not bring the parent's
    /// old data back.
    pub backed_clusters: u64,
}

const FLAG_THIN: u8 = 1;
const FLAG_READ_ONLY: u8 = 2;
const FLAGS_KNOWN: u8 = FLAG_THIN | FLAG_READ_ONLY;

impl LvolRecord {
    /// Record bytes (the slot of a free record is all zero).
    pub fn encode(&self) -> [u8; LVOL_RECORD_BYTES] {
        let mut out = [0u8; LVOL_RECORD_BYTES];
        out[0..16].copy_from_slice(self.uuid.as_bytes());
        out[16..32].copy_from_slice(self.parent.unwrap_or(Uuid::nil()).as_bytes());
        put_u64(&mut out, 32, self.size_clusters);
        put_u64(&mut out, 40, self.backed_clusters);
        out[48] = (if self.thin { FLAG_THIN } else { 0 })
            | (if self.read_only { FLAG_READ_ONLY } else { 0 });
        put_name(&mut out, 49, &self.name);
        out
    }

    /// The record in a slot, or `None` for a free slot.
    pub fn decode(bytes: &[u8]) -> Result<Option<Self>, DecodeError> {
        let uuid = get_uuid(bytes, 0);
        if uuid.is_nil() {
            return if bytes[..LVOL_RECORD_BYTES].iter().all(|&b| b == 0) {
                Ok(None)
            } else {
                Err(DecodeError::Malformed("free lvol slot is not blank"))
            };
        }
        let parent = Some(get_uuid(bytes, 16)).filter(|p| !p.is_nil());
        let flags = bytes[48];
        if flags & !FLAGS_KNOWN != 0 {
            return Err(DecodeError::Malformed("unknown lvol flags"));
        }
        let record = Self {
            uuid,
            parent,
            size_clusters: get_u64(bytes, 32),
            backed_clusters: get_u64(bytes, 40),
            thin: flags & FLAG_THIN != 0,
            read_only: flags & FLAG_READ_ONLY != 0,
            name: get_name(bytes, 49)?,
        };
        if record.size_clusters > MAX_LVOL_CLUSTERS {
            return Err(DecodeError::Malformed("lvol size"));
        }
        if record.parent.is_none() && record.backed_clusters != 0 {
            return Err(DecodeError::Malformed("backed clusters without a parent"));
        }
        Ok(Some(record))
    }
}

/// Who holds a data cluster: free, or logical cluster `logical` of the
/// lvol in table slot `slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Free,
    Lvol { slot: u32, logical: u32 },
}

const FREE_SLOT: u32 = u32::MAX;

impl Owner {
    pub fn encode(self) -> [u8; OWNER_ENTRY_BYTES] {
        let (slot, logical) = match self {
            Self::Free => (FREE_SLOT, 0),
            Self::Lvol { slot, logical } => (slot, logical),
        };
        let mut out = [0u8; OWNER_ENTRY_BYTES];
        put_u32(&mut out, 0, slot);
        put_u32(&mut out, 4, logical);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match (get_u32(bytes, 0), get_u32(bytes, 4)) {
            (FREE_SLOT, 0) => Ok(Self::Free),
            (FREE_SLOT, _) => Err(DecodeError::Malformed(
                "free cluster names a logical cluster",
            )),
            (slot, _) if slot as usize >= MAX_LVOLS => {
                Err(DecodeError::Malformed("cluster owner slot out of range"))
            }
            (slot, logical) => Ok(Self::Lvol { slot, logical }),
        }
    }
}

/// Writes the CRC32C of `block` (with the CRC field zero) at `at`.
fn seal(block: &mut [u8], at: usize) {
    block[at..at + 4].fill(0);
    let crc = crc32c::crc32c(block);
    put_u32(block, at, crc);
}

fn check_seal(block: &[u8], at: usize) -> Result<(), DecodeError> {
    let stored = get_u32(block, at);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&block[..at]), &[0; 4]);
    let crc = crc32c::crc32c_append(crc, &block[at + 4..]);
    if crc == stored {
        Ok(())
    } else {
        Err(DecodeError::Checksum)
    }
}

/// A name as a length byte and [`MAX_NAME_BYTES`] bytes.
fn put_name(out: &mut [u8], at: usize, name: &str) {
    assert!(
        check_name(name).is_ok(),
        "names are checked before encoding"
    );
    out[at] = name.len() as u8;
    out[at + 1..at + 1 + name.len()].copy_from_slice(name.as_bytes());
}

fn get_name(block: &[u8], at: usize) -> Result<String, DecodeError> {
    let len = usize::from(block[at]);
    if len == 0 || len > MAX_NAME_BYTES {
        return Err(DecodeError::Malformed("name length"));
    }
    let name = std::str::from_utf8(&block[at + 1..at + 1 + len])
        .map_err(|_| DecodeError::Malformed("name is not UTF-8"))?;
    check_name(name).map_err(DecodeError::Malformed)?;
    Ok(name.to_owned())
}

fn put_u32(out: &mut [u8], at: usize, value: u32) {
    out[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(out: &mut [u8], at: usize, value: u64) {
    out[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

fn get_u32(block: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(block[at..at + 4].try_into().expect("4 bytes"))
}

fn get_u64(block: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(block[at..at + 8].try_into().expect("8 bytes"))
}

fn get_uuid(block: &[u8], at: usize) -> Uuid {
    Uuid::from_slice(&block[at..at + 16]).expect("16 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;
    const BLOCKS_PER_MIB: u64 = MIB / METADATA_BLOCK_BYTES as u64;

    fn sample_super() -> SuperBlock {
        SuperBlock {
            store_uuid: Uuid::new_v4(),
            name: "lvs0".into(),
            generation: 9,
            copy: 1,
            geometry: Geometry::new(1024 * BLOCKS_PER_MIB, DEFAULT_CLUSTER_BYTES).unwrap(),
        }
    }

    fn sample_record() -> LvolRecord {
        LvolRecord {
            uuid: Uuid::new_v4(),
            name: "x".repeat(MAX_NAME_BYTES),
            size_clusters: 2560,
            thin: true,
            read_only: false,
            parent: Some(Uuid::new_v4()),
            backed_clusters: 100,
        }
    }

    #[test]
    fn the_bounds_fit_their_pages() {
        assert_eq!(PAGE_PAYLOAD_BYTES, 4056);
        assert_eq!(RECORDS_PER_PAGE, 31);
        assert_eq!(OWNERS_PER_PAGE, 507);
        assert_eq!(TABLE_PAGES, 34);
    }

    #[test]
    fn geometry_of_a_one_gib_base() {
        let g = Geometry::new(1024 * BLOCKS_PER_MIB, DEFAULT_CLUSTER_BYTES).unwrap();
        // 256 clusters fit at first; one owner page, so a copy is 36
        // blocks and both copies fit the first cluster, which they take.
        assert_eq!(g.copy_blocks, 1 + 34 + 1);
        assert_eq!(g.data_offset_blocks, 4 * BLOCKS_PER_MIB);
        assert_eq!(g.total_clusters, 255);
        assert_eq!(Geometry::super_block_at(1), 1);
        assert_eq!(g.page_at(0, 1), 2);
        assert_eq!(g.page_at(0, 35), 36);
        assert_eq!(g.page_at(1, 1), 37);
        assert_eq!(g.page_at(1, 35), 71);
        assert_eq!(g.cluster_offset_blocks(2), 12 * BLOCKS_PER_MIB);
        let end = g.cluster_offset_blocks(g.total_clusters as u32);
        assert!(end <= g.device_blocks);
    }

    #[test]
    fn geometry_bounds_are_refused_clearly() {
        let blocks = 1024 * BLOCKS_PER_MIB;
        for bad in [0, 32 * 1024, 3 * MIB, 2 * 1024 * MIB] {
            assert_eq!(
                Geometry::new(blocks, bad),
                Err(GeometryError::ClusterSize(bad))
            );
        }
        // 4 MiB holds the metadata's first cluster and nothing else.
        assert_eq!(
            Geometry::new(4 * BLOCKS_PER_MIB, DEFAULT_CLUSTER_BYTES),
            Err(GeometryError::TooSmall {
                device_bytes: 4 * MIB
            })
        );
        let huge = (MAX_STORE_CLUSTERS + 1) * 16;
        assert_eq!(
            Geometry::new(huge, MIN_CLUSTER_BYTES),
            Err(GeometryError::TooManyClusters(MAX_STORE_CLUSTERS + 1))
        );
        assert!(Geometry::new(huge, 2 * MIN_CLUSTER_BYTES).is_ok());
    }

    #[test]
    fn geometry_shrinks_the_clusters_to_leave_room_for_their_table() {
        // 64 KiB clusters on 4 GiB: 65536 would fit by size, but both
        // copies of their owner table (130 pages) and of the lvol table
        // take clusters from the front of the base.
        let g = Geometry::new(4096 * BLOCKS_PER_MIB, MIN_CLUSTER_BYTES).unwrap();
        let cluster_blocks = 16;
        assert_eq!(g.copy_blocks, 1 + 34 + g.total_clusters.div_ceil(507));
        assert_eq!(g.data_offset_blocks % cluster_blocks, 0);
        assert!(g.data_offset_blocks >= 2 * g.copy_blocks);
        assert!(g.data_offset_blocks + g.total_clusters * cluster_blocks <= g.device_blocks);
        // Not one whole cluster is left unused past the last.
        assert!(g.device_blocks - (g.data_offset_blocks + g.total_clusters * 16) < 16);
    }

    #[test]
    fn super_block_encodes_and_decodes_every_field() {
        let sb = sample_super();
        let block = sb.encode();
        assert_eq!(block.len(), METADATA_BLOCK_BYTES);
        assert_eq!(SuperBlock::decode(&block), Ok(sb));
    }

    #[test]
    fn a_torn_or_foreign_super_block_is_never_trusted() {
        let block = sample_super().encode();
        assert_eq!(
            SuperBlock::decode(&[0u8; METADATA_BLOCK_BYTES]),
            Err(DecodeError::NoMagic)
        );
        assert_eq!(SuperBlock::decode(&block[..512]), Err(DecodeError::NoMagic));
        for at in [12, 20, 40, 84, 90, METADATA_BLOCK_BYTES - 1] {
            let mut torn = block.clone();
            torn[at] ^= 0x10;
            assert_eq!(
                SuperBlock::decode(&torn),
                Err(DecodeError::Checksum),
                "byte {at}"
            );
        }
        // A torn write of the same copy two generations apart: the head
        // new, the rest old. (Every field is in the first 512 bytes, so a
        // tear at a sector boundary leaves a whole old or new block.)
        let mut older = SuperBlock::decode(&block).unwrap();
        older.generation = 7;
        let mut torn = older.encode();
        torn[..32].copy_from_slice(&block[..32]);
        assert_eq!(SuperBlock::decode(&torn), Err(DecodeError::Checksum));
        let mut future = block.clone();
        future[8] = 2;
        assert_eq!(SuperBlock::decode(&future), Err(DecodeError::Version(2)));
    }

    #[test]
    fn a_super_block_disagreeing_with_its_geometry_is_malformed() {
        let mut sb = sample_super();
        sb.geometry.total_clusters += 1;
        assert_eq!(
            SuperBlock::decode(&sb.encode()),
            Err(DecodeError::Malformed("geometry"))
        );
        let mut sb = sample_super();
        sb.copy = 0;
        assert_eq!(
            SuperBlock::decode(&sb.encode()),
            Err(DecodeError::Malformed("copy does not match generation"))
        );
    }

    #[test]
    fn pages_round_trip_and_refuse_the_wrong_place_store_or_generation() {
        let place = PagePlace {
            store_uuid: Uuid::new_v4(),
            copy: 1,
            index: 5,
        };
        let payload = vec![0xabu8; PAGE_PAYLOAD_BYTES];
        let block = encode_page(place, 7, &payload);
        assert_eq!(decode_page(&block, place, 7), Ok(&payload[..]));
        assert_eq!(decode_page(&block, place, 9), Ok(&payload[..]));
        assert_eq!(
            decode_page(&block, place, 6),
            Err(DecodeError::NewerThanSuperBlock {
                page: 7,
                super_block: 6
            })
        );
        let other = PagePlace {
            store_uuid: Uuid::new_v4(),
            ..place
        };
        assert_eq!(
            decode_page(&block, other, 7),
            Err(DecodeError::ForeignStore {
                expected: other.store_uuid,
                found: place.store_uuid
            })
        );
        let moved = PagePlace { index: 6, ..place };
        assert_eq!(
            decode_page(&block, moved, 7),
            Err(DecodeError::Misplaced {
                copy: 1,
                index: 6,
                found_copy: 1,
                found_index: 5
            })
        );
        let mut torn = block.clone();
        torn[3000] ^= 1;
        assert_eq!(decode_page(&torn, place, 7), Err(DecodeError::Checksum));
        assert_eq!(
            decode_page(&[0; METADATA_BLOCK_BYTES], place, 7),
            Err(DecodeError::NoMagic)
        );
        // A short payload is zero-padded.
        let short = encode_page(place, 1, &[1, 2, 3]);
        let read = decode_page(&short, place, 1).unwrap();
        assert_eq!(&read[..4], &[1, 2, 3, 0]);
    }

    #[test]
    fn lvol_records_round_trip() {
        let record = sample_record();
        assert_eq!(LvolRecord::decode(&record.encode()), Ok(Some(record)));
        let plain = LvolRecord {
            parent: None,
            backed_clusters: 0,
            thin: false,
            read_only: true,
            name: "snap".into(),
            ..sample_record()
        };
        assert_eq!(LvolRecord::decode(&plain.encode()), Ok(Some(plain)));
        assert_eq!(LvolRecord::decode(&[0; LVOL_RECORD_BYTES]), Ok(None));
    }

    #[test]
    fn malformed_lvol_records_are_refused() {
        let good = sample_record().encode();
        let mut blank_but_dirty = [0u8; LVOL_RECORD_BYTES];
        blank_but_dirty[40] = 1;
        let mut flags = good;
        flags[48] |= 0x80;
        let mut no_name = good;
        no_name[49] = 0;
        let mut long_name = good;
        long_name[49] = 64;
        let mut bad_utf8 = good;
        bad_utf8[50] = 0xff;
        let mut orphan_backing = good;
        orphan_backing[16..32].fill(0);
        for (bytes, why) in [
            (blank_but_dirty, "free lvol slot is not blank"),
            (flags, "unknown lvol flags"),
            (no_name, "name length"),
            (long_name, "name length"),
            (bad_utf8, "name is not UTF-8"),
            (orphan_backing, "backed clusters without a parent"),
        ] {
            assert_eq!(
                LvolRecord::decode(&bytes),
                Err(DecodeError::Malformed(why)),
                "{why}"
            );
        }
    }

    #[test]
    fn owner_entries_round_trip_and_check_their_slot() {
        for owner in [
            Owner::Free,
            Owner::Lvol {
                slot: 0,
                logical: 0,
            },
            Owner::Lvol {
                slot: MAX_LVOLS as u32 - 1,
                logical: u32::MAX,
            },
        ] {
            assert_eq!(Owner::decode(&owner.encode()), Ok(owner));
        }
        let mut bad = Owner::Free.encode();
        bad[4] = 1;
        assert!(Owner::decode(&bad).is_err());
        let mut bad = [0u8; 8];
        bad[0..4].copy_from_slice(&(MAX_LVOLS as u32).to_le_bytes());
        assert_eq!(
            Owner::decode(&bad),
            Err(DecodeError::Malformed("cluster owner slot out of range"))
        );
        // A zeroed entry is slot 0's logical cluster 0, so owner pages
        // are always written whole: a blank page is not "all free".
        assert_ne!(Owner::decode(&[0; 8]), Ok(Owner::Free));
    }

    #[test]
    fn names_are_bounded() {
        assert!(check_name("a").is_ok());
        assert!(check_name(&"é".repeat(31)).is_ok());
        assert!(check_name(&"é".repeat(32)).is_err());
        assert!(check_name("").is_err());
        assert!(check_name("a\0b").is_err());
    }

    #[test]
    fn page_indices() {
        assert_eq!(table_page_index(0), 1);
        assert_eq!(table_page_index(30), 1);
        assert_eq!(table_page_index(31), 2);
        assert_eq!(table_page_index(MAX_LVOLS - 1), 34);
        assert_eq!(owner_page_index(0), 35);
        assert_eq!(owner_page_index(506), 35);
        assert_eq!(owner_page_index(507), 36);
    }
}

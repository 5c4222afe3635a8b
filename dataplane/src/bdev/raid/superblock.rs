//! The raid superblock: what each leg of a redundant raid records about
//! the whole array, so that the array can be assembled again on any data
//! cluster (after a restart, or when another cluster takes the volume
//! over) without reading a stale leg.
//!
//! Each leg starts with [`RESERVED_BYTES`] of metadata: the superblock in
//! its first 4 KiB, the write-intent bitmap after it; the data follows.
//! Every superblock write raises `sequence`; the copy with the highest
//! sequence is the array's truth, and a leg it calls failed is never read
//! until rebuilt. The encoding is little-endian with a CRC32C over the
//! whole block, so a torn or foreign block is recognised, never trusted.

use uuid::Uuid;

/// Metadata reserved at the start of every leg of a raid with a superblock.
pub const RESERVED_BYTES: u64 = 4 * 1024 * 1024;

/// Bytes of the superblock proper (one 4 KiB block, whatever the bdev's
/// block size, so it is written in one piece).
pub const SUPERBLOCK_BYTES: usize = 4096;

/// Where the write-intent bitmap starts on each leg.
pub const BITMAP_OFFSET_BYTES: u64 = SUPERBLOCK_BYTES as u64;

/// Room for the bitmap: the rest of the reserved area.
pub const BITMAP_MAX_BYTES: u64 = RESERVED_BYTES - BITMAP_OFFSET_BYTES;

/// Most legs a superblock describes (each entry is 32 bytes).
pub const MAX_LEGS: usize = 64;

const MAGIC: &[u8; 8] = b"SHOALRD1";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 112;
const LEG_ENTRY_BYTES: usize = 32;

/// A leg slot's state as the array records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegState {
    /// In sync: read and written.
    Online,
    /// Written (so it keeps up) but not read: a rebuild is copying to it.
    Rebuilding,
    /// Taken out after an error, or found stale: neither read nor written.
    Failed,
    /// No bdev in the slot.
    Missing,
}

impl LegState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Rebuilding => "rebuilding",
            Self::Failed => "failed",
            Self::Missing => "missing",
        }
    }

    fn code(self) -> u8 {
        match self {
            Self::Online => 0,
            Self::Rebuilding => 1,
            Self::Failed => 2,
            Self::Missing => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Online,
            1 => Self::Rebuilding,
            2 => Self::Failed,
            3 => Self::Missing,
            _ => return None,
        })
    }
}

/// One slot of the array as a superblock records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegRecord {
    /// Identity of the member in the slot: given when the member joins, so
    /// a returning leg is told from a replacement.
    pub member: Uuid,
    pub state: LegState,
}

/// The array's description, identical on every leg except `this_leg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub raid_uuid: Uuid,
    /// SPDK-style level code: 1 (raid1), 10 (raid10), 5 (raid5f), 6.
    pub level: u8,
    pub strip_blocks: u32,
    pub block_size: u32,
    /// Blocks of each leg given to data (after the reserved area).
    pub data_blocks: u64,
    /// Leg blocks each bit of the write-intent bitmap covers.
    pub region_blocks: u64,
    pub sequence: u64,
    /// Whether the array was stopped with the bitmap clean (no write in
    /// flight, every region in sync); false while it runs.
    pub clean: bool,
    /// Which slot the leg holding this copy is.
    pub this_leg: u8,
    pub legs: Vec<LegRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("no raid superblock (magic mismatch)")]
    NoMagic,
    #[error("superblock version {0} is not supported (this build reads {VERSION})")]
    Version(u32),
    #[error("superblock checksum mismatch")]
    Checksum,
    #[error("superblock is malformed: {0}")]
    Malformed(&'static str),
}

impl Superblock {
    /// The 4 KiB on-disk form.
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.legs.len() <= MAX_LEGS, "legs bounded at creation");
        let mut out = vec![0u8; SUPERBLOCK_BYTES];
        out[0..8].copy_from_slice(MAGIC);
        put_u32(&mut out, 8, VERSION);
        // 12..16: CRC32C, computed with these bytes zero.
        out[16..32].copy_from_slice(self.raid_uuid.as_bytes());
        out[32] = self.level;
        out[33] = self.legs.len() as u8;
        out[34] = self.this_leg;
        out[35] = u8::from(self.clean);
        put_u32(&mut out, 36, self.strip_blocks);
        put_u32(&mut out, 40, self.block_size);
        put_u64(&mut out, 48, self.data_blocks);
        put_u64(&mut out, 56, self.region_blocks);
        put_u64(&mut out, 64, self.sequence);
        for (i, leg) in self.legs.iter().enumerate() {
            let at = HEADER_BYTES + i * LEG_ENTRY_BYTES;
            out[at..at + 16].copy_from_slice(leg.member.as_bytes());
            out[at + 16] = leg.state.code();
        }
        let crc = crc32c::crc32c(&out);
        put_u32(&mut out, 12, crc);
        out
    }

    pub fn decode(block: &[u8]) -> Result<Self, DecodeError> {
        if block.len() < SUPERBLOCK_BYTES || &block[0..8] != MAGIC {
            return Err(DecodeError::NoMagic);
        }
        let block = &block[..SUPERBLOCK_BYTES];
        let version = get_u32(block, 8);
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let mut zeroed = block.to_vec();
        zeroed[12..16].fill(0);
        if crc32c::crc32c(&zeroed) != get_u32(block, 12) {
            return Err(DecodeError::Checksum);
        }
        let count = usize::from(block[33]);
        if count == 0 || count > MAX_LEGS {
            return Err(DecodeError::Malformed("leg count"));
        }
        if usize::from(block[34]) >= count {
            return Err(DecodeError::Malformed("this leg is not a slot"));
        }
        let legs = (0..count)
            .map(|i| {
                let at = HEADER_BYTES + i * LEG_ENTRY_BYTES;
                let member = Uuid::from_slice(&block[at..at + 16]).expect("16 bytes");
                let state = LegState::from_code(block[at + 16])
                    .ok_or(DecodeError::Malformed("leg state"))?;
                Ok(LegRecord { member, state })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let sb = Self {
            raid_uuid: Uuid::from_slice(&block[16..32]).expect("16 bytes"),
            level: block[32],
            this_leg: block[34],
            clean: block[35] != 0,
            strip_blocks: get_u32(block, 36),
            block_size: get_u32(block, 40),
            data_blocks: get_u64(block, 48),
            region_blocks: get_u64(block, 56),
            sequence: get_u64(block, 64),
            legs,
        };
        if sb.block_size == 0 || sb.region_blocks == 0 {
            return Err(DecodeError::Malformed("zero block or region size"));
        }
        Ok(sb)
    }
}

/// The copy to trust among those read from the legs: the highest sequence.
/// Ties (every leg took the same write) are equal but for `this_leg`.
pub fn newest<'a>(copies: impl IntoIterator<Item = &'a Superblock>) -> Option<&'a Superblock> {
    copies.into_iter().max_by_key(|sb| sb.sequence)
}

/// Leg blocks per bitmap bit for legs of `data_blocks`: at least
/// `min_region_blocks`, and doubled until the bitmap fits `bitmap_bytes`
/// (at most [`BITMAP_MAX_BYTES`]; less where the reserved area holds more
/// than the bitmap).
pub fn region_blocks_for(data_blocks: u64, min_region_blocks: u64, bitmap_bytes: u64) -> u64 {
    let max_bits = bitmap_bytes.min(BITMAP_MAX_BYTES) * 8;
    let mut region = min_region_blocks.max(1);
    while data_blocks.div_ceil(region) > max_bits {
        region *= 2;
    }
    region
}

pub(super) fn put_u32(out: &mut [u8], at: usize, value: u32) {
    out[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

pub(super) fn put_u64(out: &mut [u8], at: usize, value: u64) {
    out[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

pub(super) fn get_u32(block: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(block[at..at + 4].try_into().expect("4 bytes"))
}

pub(super) fn get_u64(block: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(block[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Superblock {
        Superblock {
            raid_uuid: Uuid::new_v4(),
            level: 1,
            strip_blocks: 0,
            block_size: 512,
            data_blocks: 1 << 20,
            region_blocks: 2048,
            sequence: 7,
            clean: false,
            this_leg: 1,
            legs: vec![
                LegRecord {
                    member: Uuid::new_v4(),
                    state: LegState::Online,
                },
                LegRecord {
                    member: Uuid::new_v4(),
                    state: LegState::Failed,
                },
            ],
        }
    }

    #[test]
    fn encodes_and_decodes_every_field() {
        let sb = sample();
        let block = sb.encode();
        assert_eq!(block.len(), SUPERBLOCK_BYTES);
        assert_eq!(Superblock::decode(&block), Ok(sb));
    }

    #[test]
    fn a_torn_or_foreign_block_is_never_trusted() {
        let block = sample().encode();
        assert_eq!(
            Superblock::decode(&[0u8; SUPERBLOCK_BYTES]),
            Err(DecodeError::NoMagic)
        );
        for at in [20, 33, 64, 200, SUPERBLOCK_BYTES - 1] {
            let mut torn = block.clone();
            torn[at] ^= 0x40;
            assert_eq!(
                Superblock::decode(&torn),
                Err(DecodeError::Checksum),
                "byte {at}"
            );
        }
        let mut future = block.clone();
        future[8] = 9;
        assert_eq!(Superblock::decode(&future), Err(DecodeError::Version(9)));
        assert_eq!(Superblock::decode(&block[..100]), Err(DecodeError::NoMagic));
    }

    #[test]
    fn the_highest_sequence_wins() {
        let mut old = sample();
        old.sequence = 3;
        let new = sample();
        assert_eq!(newest([&old, &new]).unwrap().sequence, 7);
        assert!(newest([]).is_none());
    }

    #[test]
    fn regions_grow_until_the_bitmap_fits() {
        assert_eq!(region_blocks_for(1 << 20, 2048, BITMAP_MAX_BYTES), 2048);
        // 2^40 blocks of 512 bytes (512 TiB) in 1 MiB regions would need
        // 2^29 bits; the area holds just under 2^25.
        let region = region_blocks_for(1 << 40, 2048, BITMAP_MAX_BYTES);
        assert!((1u64 << 40).div_ceil(region) <= BITMAP_MAX_BYTES * 8);
        assert_eq!(region, 1 << 16);
    }
}

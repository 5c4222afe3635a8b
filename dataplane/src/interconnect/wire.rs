//! What the fields of a ring [`Descriptor`] mean between two clusters.
//!
//! A request carries the requester's tag and slot generation, the target
//! bdev (a hash of its name), the block range and, for reads and writes,
//! the region offset and length of a buffer in the requester's pool arena.
//! `target_generation` carries the generation of the server the requester
//! addressed, so a restarted server never serves a request meant for its
//! previous life. A completion echoes tag and generation with a status.

use shoal_appliance::region::ring::Descriptor;

use crate::bdev::{IoError, IoKind};

/// Operations on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    Read = 1,
    Write = 2,
    Flush = 3,
    Unmap = 4,
    WriteZeroes = 5,
    Reset = 6,
    /// Asks for a bdev's geometry: the completion carries the block count
    /// in `offset_blocks` and the block size in `buf_len`.
    Identify = 16,
    /// From a restarted requester: answered once the server has finished
    /// every request of the requester's earlier life, after which the
    /// requester may reuse its arena.
    Fence = 17,
}

impl Op {
    pub fn from_raw(raw: u16) -> Option<Self> {
        Some(match raw {
            1 => Op::Read,
            2 => Op::Write,
            3 => Op::Flush,
            4 => Op::Unmap,
            5 => Op::WriteZeroes,
            6 => Op::Reset,
            16 => Op::Identify,
            17 => Op::Fence,
            _ => return None,
        })
    }

    pub fn from_kind(kind: IoKind) -> Self {
        match kind {
            IoKind::Read => Op::Read,
            IoKind::Write => Op::Write,
            IoKind::Flush => Op::Flush,
            IoKind::Unmap => Op::Unmap,
            IoKind::WriteZeroes => Op::WriteZeroes,
            IoKind::Reset => Op::Reset,
        }
    }

    /// The bdev I/O this operation runs on the server, if it is one.
    pub fn kind(self) -> Option<IoKind> {
        Some(match self {
            Op::Read => IoKind::Read,
            Op::Write => IoKind::Write,
            Op::Flush => IoKind::Flush,
            Op::Unmap => IoKind::Unmap,
            Op::WriteZeroes => IoKind::WriteZeroes,
            Op::Reset => IoKind::Reset,
            Op::Identify | Op::Fence => return None,
        })
    }
}

/// `flags` bit: force unit access.
pub const FLAG_FUA: u16 = 1;

/// Bits of a tag holding the per-life sequence number; the requester's
/// generation fills the bits above, so a completion addressed to an
/// earlier life of the requester never matches a request of this one.
const SEQUENCE_BITS: u32 = 40;

pub fn tag(generation: u64, sequence: u64) -> u64 {
    (generation << SEQUENCE_BITS) | (sequence & ((1 << SEQUENCE_BITS) - 1))
}

pub fn tag_generation(tag: u64) -> u64 {
    tag >> SEQUENCE_BITS
}

/// The wire identity of bdev `name`: FNV-1a, 64 bits. Names are what an
/// administrator gives both sides; the hash fits a descriptor.
pub fn target_id(name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Server generations travel truncated to 32 bits.
pub fn short_generation(generation: u64) -> u32 {
    generation as u32
}

/// Status of a completion for `result`: 0 or a negative errno.
pub fn status_of(result: &Result<(), IoError>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(error) => -(error.errno() as i32),
    }
}

/// The I/O error a requester reports for completion status `status`.
pub fn error_of(status: i32) -> Result<(), IoError> {
    match -status {
        0 => Ok(()),
        libc::EINVAL => Err(IoError::Invalid("the serving cluster refused the request")),
        libc::EOPNOTSUPP => Err(IoError::NotSupported),
        libc::ESHUTDOWN | libc::ENODEV => Err(IoError::Removed),
        libc::ENOSPC => Err(IoError::NoSpace),
        _ => Err(IoError::Io),
    }
}

/// A completion answering `request`.
pub fn completion(request: &Descriptor, status: i32) -> Descriptor {
    Descriptor {
        tag: request.tag,
        generation: request.generation,
        target: request.target,
        op: request.op,
        status,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_keep_generation_and_sequence_apart() {
        let t = tag(7, (1 << 40) + 5);
        assert_eq!(tag_generation(t), 7);
        assert_eq!(t & ((1 << 40) - 1), 5, "sequence wraps inside its bits");
        assert_ne!(tag(7, 5), tag(8, 5));
    }

    #[test]
    fn target_ids_are_fnv1a() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(target_id(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(target_id("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(target_id("Malloc0"), target_id("Malloc1"));
    }

    #[test]
    fn ops_round_trip() {
        for kind in IoKind::ALL {
            let op = Op::from_kind(kind);
            assert_eq!(Op::from_raw(op as u16), Some(op));
            assert_eq!(op.kind(), Some(kind));
        }
        assert_eq!(Op::from_raw(99), None);
    }

    #[test]
    fn statuses_map_to_errors() {
        assert_eq!(status_of(&Ok(())), 0);
        assert_eq!(status_of(&Err(IoError::Io)), -libc::EIO);
        assert_eq!(error_of(-libc::EIO), Err(IoError::Io));
        assert_eq!(error_of(-libc::ENODEV), Err(IoError::Removed));
        assert_eq!(error_of(0), Ok(()));
    }

    #[test]
    fn no_space_crosses_the_ring_as_itself() {
        let status = status_of(&Err(IoError::NoSpace));
        assert_eq!(status, -libc::ENOSPC);
        assert_eq!(error_of(status), Err(IoError::NoSpace));
    }
}

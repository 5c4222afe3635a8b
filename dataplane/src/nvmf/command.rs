//! NVMe submission and completion queue entries as they travel in
//! capsules: the 64-byte command (with its SGL descriptor) and the 16-byte
//! completion, plus the status codes this target answers with.

/// Opcodes of the admin command set this controller implements.
pub mod admin {
    pub const GET_LOG_PAGE: u8 = 0x02;
    pub const IDENTIFY: u8 = 0x06;
    pub const ABORT: u8 = 0x08;
    pub const SET_FEATURES: u8 = 0x09;
    pub const GET_FEATURES: u8 = 0x0a;
    pub const ASYNC_EVENT_REQUEST: u8 = 0x0c;
    pub const KEEP_ALIVE: u8 = 0x18;
    pub const FABRICS: u8 = 0x7f;
}

/// Opcodes of the NVM command set.
pub mod io {
    pub const FLUSH: u8 = 0x00;
    pub const WRITE: u8 = 0x01;
    pub const READ: u8 = 0x02;
    pub const WRITE_ZEROES: u8 = 0x08;
    pub const DATASET_MANAGEMENT: u8 = 0x09;
}

/// Fabrics command types (FCTYPE, byte 4 of a fabrics command).
pub mod fabrics {
    pub const PROPERTY_SET: u8 = 0x00;
    pub const CONNECT: u8 = 0x01;
    pub const PROPERTY_GET: u8 = 0x04;
    pub const AUTHENTICATION_SEND: u8 = 0x05;
    pub const AUTHENTICATION_RECEIVE: u8 = 0x06;
    pub const DISCONNECT: u8 = 0x08;
}

/// SGL descriptor identifiers (type << 4 | subtype) NVMe/TCP uses.
pub mod sgl {
    /// Data Block, Offset: data in this capsule at `address`.
    pub const IN_CAPSULE: u8 = 0x01;
    /// Transport SGL Data Block: data moved by R2T/H2CData or C2HData.
    pub const TRANSPORT: u8 = 0x5a;
}

/// A completion status: status code type and status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub sct: u8,
    pub sc: u8,
    /// Do Not Retry.
    pub dnr: bool,
}

impl Status {
    pub const SUCCESS: Status = Status::generic(0x00);
    pub const INVALID_OPCODE: Status = Status::generic(0x01).no_retry();
    pub const INVALID_FIELD: Status = Status::generic(0x02).no_retry();
    pub const COMMAND_ID_CONFLICT: Status = Status::generic(0x03).no_retry();
    pub const DATA_TRANSFER_ERROR: Status = Status::generic(0x04);
    pub const INTERNAL_ERROR: Status = Status::generic(0x06);
    pub const ABORTED_BY_REQUEST: Status = Status::generic(0x07);
    pub const ABORTED_SQ_DELETION: Status = Status::generic(0x08);
    pub const INVALID_NAMESPACE: Status = Status::generic(0x0b).no_retry();
    pub const COMMAND_SEQUENCE_ERROR: Status = Status::generic(0x0c).no_retry();
    pub const INVALID_SGL_DESCRIPTOR: Status = Status::generic(0x0d).no_retry();
    pub const DATA_SGL_LENGTH_INVALID: Status = Status::generic(0x0f).no_retry();
    pub const SGL_TYPE_INVALID: Status = Status::generic(0x11).no_retry();
    pub const LBA_OUT_OF_RANGE: Status = Status::generic(0x80).no_retry();
    /// The write needs space the storage under the namespace does not
    /// have (Linux hosts report ENOSPC). Do Not Retry: an immediate retry
    /// would only fail again; the host retries once space is freed.
    pub const CAPACITY_EXCEEDED: Status = Status::generic(0x81).no_retry();
    pub const NAMESPACE_NOT_READY: Status = Status::generic(0x82);
    /// Command specific: Invalid Log Page.
    pub const INVALID_LOG_PAGE: Status = Status::specific(0x09).no_retry();
    /// Command specific: Asynchronous Event Request Limit Exceeded.
    pub const AER_LIMIT_EXCEEDED: Status = Status::specific(0x05).no_retry();
    /// Command specific: Feature Identifier Not Saveable.
    pub const FEATURE_NOT_SAVEABLE: Status = Status::specific(0x0d).no_retry();
    /// Fabrics command specific: Connect Incompatible Format.
    pub const CONNECT_INCOMPATIBLE_FORMAT: Status = Status::specific(0x80).no_retry();
    /// Fabrics: Connect Controller Busy.
    pub const CONNECT_CONTROLLER_BUSY: Status = Status::specific(0x81);
    /// Fabrics: Connect Invalid Parameters.
    pub const CONNECT_INVALID_PARAMETERS: Status = Status::specific(0x82).no_retry();
    /// Fabrics: Connect Invalid Host.
    pub const CONNECT_INVALID_HOST: Status = Status::specific(0x84).no_retry();
    /// Fabrics: Authentication Required (the queue has not completed
    /// in-band authentication).
    pub const AUTHENTICATION_REQUIRED: Status = Status::specific(0x91).no_retry();
    /// Fabrics: Invalid Queue Type.
    pub const INVALID_QUEUE_TYPE: Status = Status::specific(0x85).no_retry();
    /// Media error: unrecovered read error.
    pub const UNRECOVERED_READ_ERROR: Status = Status {
        sct: 2,
        sc: 0x81,
        dnr: false,
    };
    /// Media error: write fault.
    pub const WRITE_FAULT: Status = Status {
        sct: 2,
        sc: 0x80,
        dnr: false,
    };

    const fn generic(sc: u8) -> Self {
        Self {
            sct: 0,
            sc,
            dnr: false,
        }
    }

    const fn specific(sc: u8) -> Self {
        Self {
            sct: 1,
            sc,
            dnr: false,
        }
    }

    const fn no_retry(self) -> Self {
        Self { dnr: true, ..self }
    }

    pub fn is_success(self) -> bool {
        self.sct == 0 && self.sc == 0
    }

    /// The 15-bit status field (bits 1..15 of CQE DW3's upper half).
    fn field(self) -> u16 {
        (u16::from(self.sc) << 1) | (u16::from(self.sct & 0x7) << 9) | (u16::from(self.dnr) << 15)
    }
}

/// The SGL descriptor of a command (DPTR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sgl {
    pub address: u64,
    pub length: u32,
    pub identifier: u8,
}

/// A 64-byte submission queue entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    bytes: [u8; 64],
}

impl Command {
    pub fn from_bytes(bytes: [u8; 64]) -> Self {
        Self { bytes }
    }

    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.bytes
    }

    pub fn opcode(&self) -> u8 {
        self.bytes[0]
    }

    /// PSDT (bits 6-7 of byte 1): 0 is PRPs, which fabrics do not use.
    pub fn psdt(&self) -> u8 {
        self.bytes[1] >> 6
    }

    /// FUSE (bits 0-1 of byte 1).
    pub fn fuse(&self) -> u8 {
        self.bytes[1] & 0x3
    }

    pub fn cid(&self) -> u16 {
        u16::from_le_bytes([self.bytes[2], self.bytes[3]])
    }

    pub fn nsid(&self) -> u32 {
        self.dword_at(4)
    }

    /// Fabrics command type (fabrics commands only).
    pub fn fctype(&self) -> u8 {
        self.bytes[4]
    }

    pub fn sgl(&self) -> Sgl {
        Sgl {
            address: u64::from_le_bytes(self.bytes[24..32].try_into().expect("8 bytes")),
            length: self.dword_at(32),
            identifier: self.bytes[39],
        }
    }

    /// Command dword `n` (10..=15).
    pub fn cdw(&self, n: usize) -> u32 {
        self.dword_at(n * 4)
    }

    pub fn byte(&self, offset: usize) -> u8 {
        self.bytes[offset]
    }

    pub fn u16_at(&self, offset: usize) -> u16 {
        u16::from_le_bytes([self.bytes[offset], self.bytes[offset + 1]])
    }

    pub fn dword_at(&self, offset: usize) -> u32 {
        u32::from_le_bytes(self.bytes[offset..offset + 4].try_into().expect("4 bytes"))
    }

    pub fn u64_at(&self, offset: usize) -> u64 {
        u64::from_le_bytes(self.bytes[offset..offset + 8].try_into().expect("8 bytes"))
    }

    /// Starting LBA of a read/write-style command (CDW10-11).
    pub fn slba(&self) -> u64 {
        self.u64_at(40)
    }

    /// Number of logical blocks (CDW12 bits 0-15, 0's based) plus one.
    pub fn nlb(&self) -> u32 {
        (self.cdw(12) & 0xffff) + 1
    }

    /// Force Unit Access (CDW12 bit 30).
    pub fn fua(&self) -> bool {
        self.cdw(12) & (1 << 30) != 0
    }
}

/// A completion to send: DW0/DW1 command-specific values and the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub cid: u16,
    pub dw0: u32,
    pub dw1: u32,
    pub status: Status,
}

impl Completion {
    pub fn new(cid: u16, status: Status) -> Self {
        Self {
            cid,
            dw0: 0,
            dw1: 0,
            status,
        }
    }

    pub fn with_dw0(cid: u16, dw0: u32) -> Self {
        Self {
            dw0,
            ..Self::new(cid, Status::SUCCESS)
        }
    }

    /// The 16-byte completion queue entry. `sqhd` is the submission queue
    /// head the host may free up to; `sqid` the queue this answers on.
    pub fn encode(&self, sqhd: u16, sqid: u16) -> [u8; 16] {
        let mut cqe = [0u8; 16];
        cqe[0..4].copy_from_slice(&self.dw0.to_le_bytes());
        cqe[4..8].copy_from_slice(&self.dw1.to_le_bytes());
        cqe[8..10].copy_from_slice(&sqhd.to_le_bytes());
        cqe[10..12].copy_from_slice(&sqid.to_le_bytes());
        cqe[12..14].copy_from_slice(&self.cid.to_le_bytes());
        cqe[14..16].copy_from_slice(&self.status.field().to_le_bytes());
        cqe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_encode_like_the_spec_figure() {
        let cqe = Completion::new(7, Status::INVALID_FIELD).encode(3, 1);
        let status = u16::from_le_bytes([cqe[14], cqe[15]]);
        assert_eq!((status >> 1) & 0xff, 0x02);
        assert_eq!((status >> 9) & 0x7, 0);
        assert_eq!(status >> 15, 1);
        assert_eq!(u16::from_le_bytes([cqe[12], cqe[13]]), 7);
        assert_eq!(u16::from_le_bytes([cqe[8], cqe[9]]), 3);
        let host = Completion::new(1, Status::CONNECT_INVALID_HOST).encode(0, 0);
        let status = u16::from_le_bytes([host[14], host[15]]);
        assert_eq!(((status >> 9) & 0x7, (status >> 1) & 0xff), (1, 0x84));
    }

    #[test]
    fn command_fields_are_read_little_endian() {
        let mut bytes = [0u8; 64];
        bytes[0] = io::READ;
        bytes[2..4].copy_from_slice(&0x1234u16.to_le_bytes());
        bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
        bytes[39] = sgl::TRANSPORT;
        bytes[32..36].copy_from_slice(&4096u32.to_le_bytes());
        bytes[40..48].copy_from_slice(&100u64.to_le_bytes());
        bytes[48..52].copy_from_slice(&(7u32 | 1 << 30).to_le_bytes());
        let command = Command::from_bytes(bytes);
        assert_eq!(command.cid(), 0x1234);
        assert_eq!(command.nsid(), 1);
        assert_eq!(command.slba(), 100);
        assert_eq!(command.nlb(), 8);
        assert!(command.fua());
        assert_eq!(command.sgl().length, 4096);
        assert_eq!(command.sgl().identifier, sgl::TRANSPORT);
    }
}

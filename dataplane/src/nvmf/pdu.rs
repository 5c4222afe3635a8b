//! NVMe/TCP PDUs (NVMe/TCP Transport Specification 1.0): the 8-byte common
//! header, the PDU-specific headers this target receives and sends, and
//! the CRC32C digests.
//!
//! Parsing is pure: bytes in, a typed header or a [`PduError`] naming the
//! field and the termination code out. Nothing here panics on any input
//! (the fuzz tests in `tests/nvmf_pdu_fuzz.rs` hold it to that).

/// PDU types.
pub const IC_REQ: u8 = 0x00;
pub const IC_RESP: u8 = 0x01;
pub const H2C_TERM_REQ: u8 = 0x02;
pub const C2H_TERM_REQ: u8 = 0x03;
pub const CAPSULE_CMD: u8 = 0x04;
pub const CAPSULE_RESP: u8 = 0x05;
pub const H2C_DATA: u8 = 0x06;
pub const C2H_DATA: u8 = 0x07;
pub const R2T: u8 = 0x09;

/// Common header flags.
pub const FLAG_HDGST: u8 = 0x01;
pub const FLAG_DDGST: u8 = 0x02;
/// H2CData / C2HData: the last data PDU of the command.
pub const FLAG_LAST_PDU: u8 = 0x04;
/// C2HData: the command completed successfully; no response capsule follows.
pub const FLAG_SUCCESS: u8 = 0x08;

pub const COMMON_HEADER_LEN: usize = 8;
pub const IC_LEN: usize = 128;
pub const CAPSULE_CMD_HLEN: usize = COMMON_HEADER_LEN + 64;
pub const CAPSULE_RESP_HLEN: usize = COMMON_HEADER_LEN + 16;
pub const DATA_HLEN: usize = 24;
pub const R2T_HLEN: usize = 24;
pub const TERM_HLEN: usize = 24;
pub const DIGEST_LEN: usize = 4;
/// A termination request carries at most this much of the offending PDU.
pub const TERM_MAX_DATA: usize = 128;

/// The longest PDU header this target accepts (ICReq, 128 bytes).
pub const MAX_HLEN: usize = IC_LEN;

/// Fatal error status codes of a termination request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Fes {
    InvalidHeaderField = 0x01,
    PduSequenceError = 0x02,
    HeaderDigestError = 0x03,
    DataTransferOutOfRange = 0x04,
    DataTransferLimitExceeded = 0x05,
    UnsupportedParameter = 0x06,
}

/// Why a PDU cannot be accepted: the termination code, the byte offset of
/// the offending field in the header (FEI for header field errors), and a
/// message for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PduError {
    pub fes: Fes,
    pub field_offset: u32,
    pub message: String,
}

impl PduError {
    pub fn field(offset: u32, message: impl Into<String>) -> Self {
        Self {
            fes: Fes::InvalidHeaderField,
            field_offset: offset,
            message: message.into(),
        }
    }

    pub fn new(fes: Fes, message: impl Into<String>) -> Self {
        Self {
            fes,
            field_offset: 0,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for PduError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:?})", self.message, self.fes)
    }
}

/// The common header of every PDU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommonHeader {
    pub pdu_type: u8,
    pub flags: u8,
    pub hlen: u8,
    pub pdo: u8,
    pub plen: u32,
}

impl CommonHeader {
    pub fn parse(bytes: &[u8; COMMON_HEADER_LEN]) -> Self {
        Self {
            pdu_type: bytes[0],
            flags: bytes[1],
            hlen: bytes[2],
            pdo: bytes[3],
            plen: u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        }
    }

    pub fn encode(&self) -> [u8; COMMON_HEADER_LEN] {
        let plen = self.plen.to_le_bytes();
        [
            self.pdu_type,
            self.flags,
            self.hlen,
            self.pdo,
            plen[0],
            plen[1],
            plen[2],
            plen[3],
        ]
    }
}

/// The digests a connection negotiated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digests {
    pub header: bool,
    pub data: bool,
}

/// Where the parts of a received PDU lie, from its common header: the
/// header (with digest) to read next, then the data, checked against the
/// limits of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub header: CommonHeader,
    /// Bytes of PDU-specific header after the common header.
    pub specific_len: usize,
    /// Whether a header digest follows the header.
    pub header_digest: bool,
    /// Padding bytes between the header (and digest) and the data.
    pub padding: usize,
    /// Data bytes.
    pub data_len: usize,
    /// Whether a data digest follows the data.
    pub data_digest: bool,
}

/// The fixed header length each PDU type the host may send must have.
fn expected_hlen(pdu_type: u8) -> Option<usize> {
    match pdu_type {
        IC_REQ => Some(IC_LEN),
        H2C_TERM_REQ => Some(TERM_HLEN),
        CAPSULE_CMD => Some(CAPSULE_CMD_HLEN),
        H2C_DATA => Some(DATA_HLEN),
        _ => None,
    }
}

/// Checks a received common header against the PDU type's fixed layout,
/// the negotiated digests and `max_data` (the most data this PDU type may
/// carry on this connection), and says how to read the rest.
pub fn layout(header: CommonHeader, digests: Digests, max_data: usize) -> Result<Layout, PduError> {
    let hlen = expected_hlen(header.pdu_type).ok_or_else(|| {
        PduError::field(
            0,
            format!("PDU type {:#04x} is not one a host sends", header.pdu_type),
        )
    })?;
    if usize::from(header.hlen) != hlen {
        return Err(PduError::field(
            2,
            format!(
                "HLEN {} for PDU type {:#04x}, expected {hlen}",
                header.hlen, header.pdu_type
            ),
        ));
    }
    // ICReq and termination requests never carry digests.
    let digest_capable = matches!(header.pdu_type, CAPSULE_CMD | H2C_DATA);
    let header_digest = digest_capable && digests.header;
    let data_digest_allowed = digest_capable && digests.data;
    if digest_capable && (header.flags & FLAG_HDGST != 0) != digests.header {
        return Err(PduError::field(
            1,
            "HDGSTF does not match the negotiated header digest",
        ));
    }
    let header_end = hlen + if header_digest { DIGEST_LEN } else { 0 };
    let plen = header.plen as usize;
    if plen < header_end {
        return Err(PduError::field(
            4,
            format!("PLEN {plen} is shorter than the header ({header_end} bytes)"),
        ));
    }
    if plen == header_end {
        if header.pdo != 0 {
            return Err(PduError::field(3, "PDO set on a PDU without data"));
        }
        if header.flags & FLAG_DDGST != 0 && digest_capable {
            return Err(PduError::field(1, "DDGSTF set on a PDU without data"));
        }
        return Ok(Layout {
            header,
            specific_len: hlen - COMMON_HEADER_LEN,
            header_digest,
            padding: 0,
            data_len: 0,
            data_digest: false,
        });
    }
    if header.pdu_type == IC_REQ {
        return Err(PduError::field(4, "ICReq with data"));
    }
    let data_digest = data_digest_allowed && header.flags & FLAG_DDGST != 0;
    if digest_capable && data_digest_allowed != data_digest {
        return Err(PduError::field(
            1,
            "DDGSTF does not match the negotiated data digest",
        ));
    }
    let pdo = if header.pdu_type == H2C_TERM_REQ {
        // Termination data follows the header directly.
        header_end
    } else {
        usize::from(header.pdo)
    };
    if pdo < header_end {
        return Err(PduError::field(
            3,
            format!("PDO {pdo} points inside the header ({header_end} bytes)"),
        ));
    }
    let digest = if data_digest { DIGEST_LEN } else { 0 };
    let data_len = plen
        .checked_sub(pdo + digest)
        .filter(|len| *len > 0)
        .ok_or_else(|| {
            PduError::field(
                4,
                format!("PLEN {plen} leaves no room for data at PDO {pdo}"),
            )
        })?;
    if data_len > max_data {
        return Err(PduError::new(
            Fes::DataTransferLimitExceeded,
            format!("{data_len} bytes of data in one PDU exceed the {max_data}-byte limit"),
        ));
    }
    Ok(Layout {
        header,
        specific_len: hlen - COMMON_HEADER_LEN,
        header_digest,
        padding: pdo - header_end,
        data_len,
        data_digest,
    })
}

/// ICReq, from its 128 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcReq {
    pub pfv: u16,
    pub hpda: u8,
    pub digests: Digests,
    /// Maximum outstanding R2Ts per command, 0's based.
    pub maxr2t: u32,
}

impl IcReq {
    pub fn parse(pdu: &[u8]) -> Result<Self, PduError> {
        if pdu.len() < IC_LEN {
            return Err(PduError::field(4, "ICReq shorter than 128 bytes"));
        }
        let pfv = u16::from_le_bytes([pdu[8], pdu[9]]);
        if pfv != 0 {
            return Err(PduError::field(
                8,
                format!("PDU format version {pfv} is not 0"),
            ));
        }
        let hpda = pdu[10];
        if hpda > 31 {
            return Err(PduError::field(10, format!("HPDA {hpda} exceeds 31")));
        }
        let dgst = pdu[11];
        Ok(Self {
            pfv,
            hpda,
            digests: Digests {
                header: dgst & 0x01 != 0,
                data: dgst & 0x02 != 0,
            },
            maxr2t: u32::from_le_bytes([pdu[12], pdu[13], pdu[14], pdu[15]]),
        })
    }
}

/// ICResp: the controller's answer to ICReq.
pub fn ic_resp(cpda: u8, digests: Digests, maxh2cdata: u32) -> [u8; IC_LEN] {
    let mut pdu = [0u8; IC_LEN];
    pdu[..COMMON_HEADER_LEN].copy_from_slice(
        &CommonHeader {
            pdu_type: IC_RESP,
            flags: 0,
            hlen: IC_LEN as u8,
            pdo: 0,
            plen: IC_LEN as u32,
        }
        .encode(),
    );
    // PFV 0 at bytes 8-9.
    pdu[10] = cpda;
    pdu[11] = u8::from(digests.header) | (u8::from(digests.data) << 1);
    pdu[12..16].copy_from_slice(&maxh2cdata.to_le_bytes());
    pdu
}

/// The PDU-specific part of H2CData (and C2HData).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHeader {
    pub cccid: u16,
    pub ttag: u16,
    pub datao: u32,
    pub datal: u32,
}

impl DataHeader {
    /// From the 16 bytes after the common header.
    pub fn parse(specific: &[u8]) -> Result<Self, PduError> {
        if specific.len() < DATA_HLEN - COMMON_HEADER_LEN {
            return Err(PduError::field(2, "data PDU header too short"));
        }
        let u32_at = |i: usize| {
            u32::from_le_bytes([
                specific[i],
                specific[i + 1],
                specific[i + 2],
                specific[i + 3],
            ])
        };
        Ok(Self {
            cccid: u16::from_le_bytes([specific[0], specific[1]]),
            ttag: u16::from_le_bytes([specific[2], specific[3]]),
            datao: u32_at(4),
            datal: u32_at(8),
        })
    }
}

/// Appends a header (common header + `specific`), its digest if
/// negotiated, and returns where the data will start. `data_len` bytes of
/// data and their digest follow, written by the caller.
fn push_header(
    out: &mut Vec<u8>,
    pdu_type: u8,
    mut flags: u8,
    specific: &[u8],
    data_len: usize,
    digests: Digests,
) {
    let hlen = COMMON_HEADER_LEN + specific.len();
    let header_end = hlen + if digests.header { DIGEST_LEN } else { 0 };
    let has_data = data_len > 0;
    let data_digest = has_data && digests.data;
    if digests.header {
        flags |= FLAG_HDGST;
    }
    if data_digest {
        flags |= FLAG_DDGST;
    }
    let plen = header_end + data_len + if data_digest { DIGEST_LEN } else { 0 };
    let start = out.len();
    out.extend_from_slice(
        &CommonHeader {
            pdu_type,
            flags,
            hlen: hlen as u8,
            pdo: if has_data { header_end as u8 } else { 0 },
            plen: plen as u32,
        }
        .encode(),
    );
    out.extend_from_slice(specific);
    if digests.header {
        let digest = crc32c::crc32c(&out[start..]);
        out.extend_from_slice(&digest.to_le_bytes());
    }
}

/// CapsuleResp carrying a 16-byte completion queue entry.
pub fn capsule_resp(out: &mut Vec<u8>, cqe: &[u8; 16], digests: Digests) {
    push_header(out, CAPSULE_RESP, 0, cqe, 0, digests);
}

/// The header of a C2HData PDU for `data_len` bytes at `datao` of command
/// `cccid`; the caller appends the data and then [`data_digest`] if
/// negotiated.
pub fn c2h_data_header(
    out: &mut Vec<u8>,
    cccid: u16,
    datao: u32,
    data_len: u32,
    last: bool,
    success: bool,
    digests: Digests,
) {
    let mut specific = [0u8; DATA_HLEN - COMMON_HEADER_LEN];
    specific[0..2].copy_from_slice(&cccid.to_le_bytes());
    specific[4..8].copy_from_slice(&datao.to_le_bytes());
    specific[8..12].copy_from_slice(&data_len.to_le_bytes());
    let mut flags = 0;
    if last {
        flags |= FLAG_LAST_PDU;
    }
    if success {
        flags |= FLAG_SUCCESS;
    }
    push_header(out, C2H_DATA, flags, &specific, data_len as usize, digests);
}

/// R2T: asks the host for `r2tl` bytes at `r2to` of command `cccid`,
/// to be sent in H2CData PDUs tagged `ttag`.
pub fn r2t(out: &mut Vec<u8>, cccid: u16, ttag: u16, r2to: u32, r2tl: u32, digests: Digests) {
    let mut specific = [0u8; R2T_HLEN - COMMON_HEADER_LEN];
    specific[0..2].copy_from_slice(&cccid.to_le_bytes());
    specific[2..4].copy_from_slice(&ttag.to_le_bytes());
    specific[4..8].copy_from_slice(&r2to.to_le_bytes());
    specific[8..12].copy_from_slice(&r2tl.to_le_bytes());
    push_header(out, R2T, 0, &specific, 0, digests);
}

/// C2HTermReq: tells the host why the connection ends, quoting up to 128
/// bytes of the offending PDU header.
pub fn c2h_term_req(error: &PduError, offending_header: &[u8]) -> Vec<u8> {
    let quoted = &offending_header[..offending_header.len().min(TERM_MAX_DATA)];
    let mut out = Vec::with_capacity(TERM_HLEN + quoted.len());
    let plen = (TERM_HLEN + quoted.len()) as u32;
    out.extend_from_slice(
        &CommonHeader {
            pdu_type: C2H_TERM_REQ,
            flags: 0,
            hlen: TERM_HLEN as u8,
            pdo: 0,
            plen,
        }
        .encode(),
    );
    out.extend_from_slice(&(error.fes as u16).to_le_bytes());
    let fei = match error.fes {
        Fes::InvalidHeaderField | Fes::UnsupportedParameter => error.field_offset,
        _ => 0,
    };
    out.extend_from_slice(&fei.to_le_bytes());
    out.resize(TERM_HLEN, 0);
    out.extend_from_slice(quoted);
    out
}

/// The CRC32C of data, as the data digest field carries it.
pub fn data_digest(data: &[u8]) -> [u8; DIGEST_LEN] {
    crc32c::crc32c(data).to_le_bytes()
}

/// The running CRC32C over data that arrives in pieces.
pub fn data_digest_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// Checks a header digest: the CRC32C of the header bytes.
pub fn header_digest_ok(header: &[u8], digest: &[u8]) -> bool {
    digest.len() == DIGEST_LEN && crc32c::crc32c(header).to_le_bytes() == digest[..DIGEST_LEN]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pdu_type: u8, flags: u8, hlen: u8, pdo: u8, plen: u32) -> CommonHeader {
        CommonHeader {
            pdu_type,
            flags,
            hlen,
            pdo,
            plen,
        }
    }

    #[test]
    fn a_capsule_with_in_capsule_data_is_laid_out() {
        let digests = Digests::default();
        let laid_out = layout(header(CAPSULE_CMD, 0, 72, 72, 72 + 512), digests, 4096).unwrap();
        assert_eq!(laid_out.data_len, 512);
        assert_eq!(laid_out.padding, 0);
        let with_digests = Digests {
            header: true,
            data: true,
        };
        let laid_out = layout(
            header(CAPSULE_CMD, FLAG_HDGST | FLAG_DDGST, 72, 76, 76 + 512 + 4),
            with_digests,
            4096,
        )
        .unwrap();
        assert_eq!(
            (
                laid_out.data_len,
                laid_out.header_digest,
                laid_out.data_digest
            ),
            (512, true, true)
        );
    }

    #[test]
    fn bad_headers_name_the_field() {
        let digests = Digests::default();
        assert_eq!(
            layout(header(0x7f, 0, 72, 0, 72), digests, 0)
                .unwrap_err()
                .field_offset,
            0
        );
        assert_eq!(
            layout(header(CAPSULE_CMD, 0, 70, 0, 72), digests, 0)
                .unwrap_err()
                .field_offset,
            2
        );
        assert_eq!(
            layout(header(CAPSULE_CMD, 0, 72, 0, 60), digests, 0)
                .unwrap_err()
                .field_offset,
            4
        );
        assert_eq!(
            layout(header(CAPSULE_CMD, 0, 72, 10, 100), digests, 4096)
                .unwrap_err()
                .field_offset,
            3
        );
        let too_much = layout(header(H2C_DATA, 0, 24, 24, 24 + 8192), digests, 4096).unwrap_err();
        assert_eq!(too_much.fes, Fes::DataTransferLimitExceeded);
        // A digest the connection did not negotiate.
        assert_eq!(
            layout(header(CAPSULE_CMD, FLAG_HDGST, 72, 0, 76), digests, 0)
                .unwrap_err()
                .field_offset,
            1
        );
    }

    #[test]
    fn ic_resp_and_term_req_encode() {
        let resp = ic_resp(
            0,
            Digests {
                header: true,
                data: false,
            },
            131_072,
        );
        assert_eq!(CommonHeader::parse(resp[..8].try_into().unwrap()).plen, 128);
        assert_eq!(resp[11], 1);
        let term = c2h_term_req(&PduError::field(2, "x"), &[9u8; 200]);
        assert_eq!(term.len(), TERM_HLEN + TERM_MAX_DATA);
        assert_eq!(u16::from_le_bytes([term[8], term[9]]), 1);
        assert_eq!(
            u32::from_le_bytes([term[10], term[11], term[12], term[13]]),
            2
        );
    }

    #[test]
    fn header_digests_round_trip() {
        let mut out = Vec::new();
        capsule_resp(
            &mut out,
            &[1u8; 16],
            Digests {
                header: true,
                data: true,
            },
        );
        assert_eq!(out.len(), CAPSULE_RESP_HLEN + DIGEST_LEN);
        assert!(header_digest_ok(
            &out[..CAPSULE_RESP_HLEN],
            &out[CAPSULE_RESP_HLEN..]
        ));
        assert_eq!(out[1], FLAG_HDGST);
    }
}

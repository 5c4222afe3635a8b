//! The NBD wire protocol (fixed newstyle negotiation, simple and structured
//! replies), as the NBD protocol document specifies it. Pure encoding and
//! decoding, no I/O, so it can be tested and fuzzed on its own.

/// Server's first eight bytes.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT": newstyle negotiation, and the prefix of every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flags (server).
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flags.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;

/// Option replies.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
const REP_ERR: u32 = 1 << 31;
pub const REP_ERR_UNSUP: u32 = REP_ERR | 1;
pub const REP_ERR_POLICY: u32 = REP_ERR | 2;
pub const REP_ERR_INVALID: u32 = REP_ERR | 3;
pub const REP_ERR_TLS_REQD: u32 = REP_ERR | 5;
pub const REP_ERR_UNKNOWN: u32 = REP_ERR | 6;
pub const REP_ERR_TOO_BIG: u32 = REP_ERR | 9;

/// Information items of NBD_OPT_INFO / NBD_OPT_GO.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flags.
pub const TFLAG_HAS_FLAGS: u16 = 1 << 0;
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
pub const TFLAG_SEND_FUA: u16 = 1 << 3;
pub const TFLAG_SEND_TRIM: u16 = 1 << 5;
pub const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const TFLAG_SEND_DF: u16 = 1 << 7;
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// Commands.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;

/// Command flags.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const CMD_FLAG_DF: u16 = 1 << 2;

/// Structured reply chunks.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) | 1;

/// Error values on the wire (Linux numbering, as the protocol fixes them).
pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EOVERFLOW: u32 = 75;
pub const ENOTSUP: u32 = 95;
pub const ESHUTDOWN: u32 = 108;

/// Longest option payload accepted during negotiation.
pub const MAX_OPTION_BYTES: u32 = 64 * 1024;
/// Longest export name (the protocol's own limit).
pub const MAX_NAME_BYTES: usize = 4096;
/// Largest read or write payload; advertised as the maximum block size.
pub const MAX_PAYLOAD_BYTES: u32 = 32 << 20;
/// Size of a request header.
pub const REQUEST_BYTES: usize = 28;

/// A transmission-phase request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub command: u16,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("bad request magic {0:#010x}")]
    BadRequestMagic(u32),
    #[error("bad option magic {0:#018x}")]
    BadOptionMagic(u64),
}

/// Decodes a request header.
pub fn parse_request(header: &[u8; REQUEST_BYTES]) -> Result<Request, ProtocolError> {
    let magic = u32::from_be_bytes(header[0..4].try_into().expect("4 bytes"));
    if magic != REQUEST_MAGIC {
        return Err(ProtocolError::BadRequestMagic(magic));
    }
    Ok(Request {
        flags: u16::from_be_bytes(header[4..6].try_into().expect("2 bytes")),
        command: u16::from_be_bytes(header[6..8].try_into().expect("2 bytes")),
        cookie: u64::from_be_bytes(header[8..16].try_into().expect("8 bytes")),
        offset: u64::from_be_bytes(header[16..24].try_into().expect("8 bytes")),
        length: u32::from_be_bytes(header[24..28].try_into().expect("4 bytes")),
    })
}

/// Encodes a request header (the client side, for tests and tools).
pub fn encode_request(request: &Request) -> [u8; REQUEST_BYTES] {
    let mut out = [0u8; REQUEST_BYTES];
    out[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    out[4..6].copy_from_slice(&request.flags.to_be_bytes());
    out[6..8].copy_from_slice(&request.command.to_be_bytes());
    out[8..16].copy_from_slice(&request.cookie.to_be_bytes());
    out[16..24].copy_from_slice(&request.offset.to_be_bytes());
    out[24..28].copy_from_slice(&request.length.to_be_bytes());
    out
}

/// An option header: IHAVEOPT, option, payload length.
pub fn parse_option_header(header: &[u8; 16]) -> Result<(u32, u32), ProtocolError> {
    let magic = u64::from_be_bytes(header[0..8].try_into().expect("8 bytes"));
    if magic != IHAVEOPT {
        return Err(ProtocolError::BadOptionMagic(magic));
    }
    Ok((
        u32::from_be_bytes(header[8..12].try_into().expect("4 bytes")),
        u32::from_be_bytes(header[12..16].try_into().expect("4 bytes")),
    ))
}

/// An option reply.
pub fn option_reply(option: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// The payload of NBD_OPT_INFO and NBD_OPT_GO: an export name and the
/// information items the client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    pub name: String,
    pub items: Vec<u16>,
}

/// Decodes an INFO/GO payload; `None` if it is malformed (lengths that do
/// not add up, a name that is not UTF-8 or too long).
pub fn parse_info_request(data: &[u8]) -> Option<InfoRequest> {
    let name_len = u32::from_be_bytes(data.get(0..4)?.try_into().ok()?) as usize;
    if name_len > MAX_NAME_BYTES {
        return None;
    }
    let name = std::str::from_utf8(data.get(4..4 + name_len)?)
        .ok()?
        .to_string();
    let rest = data.get(4 + name_len..)?;
    let count = u16::from_be_bytes(rest.get(0..2)?.try_into().ok()?) as usize;
    let items = rest.get(2..)?;
    if items.len() != count * 2 {
        return None;
    }
    let items = items
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    Some(InfoRequest { name, items })
}

/// Checks a LIST_META_CONTEXT / SET_META_CONTEXT payload is well formed.
pub fn meta_context_request_is_valid(data: &[u8]) -> bool {
    let Some(name_len) = data
        .get(0..4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4")))
    else {
        return false;
    };
    let Some(rest) = data.get(4 + name_len as usize..) else {
        return false;
    };
    let Some(count) = rest
        .get(0..4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4")))
    else {
        return false;
    };
    let mut queries = &rest[4..];
    for _ in 0..count {
        let Some(len) = queries
            .get(0..4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4")) as usize)
        else {
            return false;
        };
        match queries.get(4 + len..) {
            Some(next) => queries = next,
            None => return false,
        }
    }
    queries.is_empty()
}

/// NBD_INFO_EXPORT: size and transmission flags.
pub fn info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out
}

/// NBD_INFO_BLOCK_SIZE: minimum, preferred and maximum block size.
pub fn info_block_size(minimum: u32, preferred: u32, maximum: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(14);
    out.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    out.extend_from_slice(&minimum.to_be_bytes());
    out.extend_from_slice(&preferred.to_be_bytes());
    out.extend_from_slice(&maximum.to_be_bytes());
    out
}

/// NBD_INFO_NAME or NBD_INFO_DESCRIPTION: a string item.
pub fn info_text(item: u16, text: &str) -> Vec<u8> {
    let mut out = item.to_be_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out
}

/// A simple reply header (data, if any, follows).
pub fn simple_reply(error: u32, cookie: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out[4..8].copy_from_slice(&error.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
    out
}

/// A structured reply chunk header for a payload of `length` bytes.
pub fn structured_header(flags: u16, kind: u16, cookie: u64, length: u32) -> [u8; 20] {
    let mut out = [0u8; 20];
    out[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    out[4..6].copy_from_slice(&flags.to_be_bytes());
    out[6..8].copy_from_slice(&kind.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
    out[16..20].copy_from_slice(&length.to_be_bytes());
    out
}

/// A final NBD_REPLY_TYPE_ERROR chunk with a human-readable message.
pub fn structured_error(cookie: u64, error: u32, message: &str) -> Vec<u8> {
    let message = &message.as_bytes()[..message.len().min(4096)];
    let mut out = structured_header(
        REPLY_FLAG_DONE,
        REPLY_TYPE_ERROR,
        cookie,
        6 + message.len() as u32,
    )
    .to_vec();
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&(message.len() as u16).to_be_bytes());
    out.extend_from_slice(message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_round_trip_and_bad_magic() {
        let request = Request {
            flags: CMD_FLAG_FUA,
            command: CMD_WRITE,
            cookie: 0xdead_beef,
            offset: 4096,
            length: 512,
        };
        assert_eq!(parse_request(&encode_request(&request)), Ok(request));
        let mut bad = encode_request(&request);
        bad[0] ^= 1;
        assert!(matches!(
            parse_request(&bad),
            Err(ProtocolError::BadRequestMagic(_))
        ));
    }

    #[test]
    fn info_requests() {
        let mut data = 3u32.to_be_bytes().to_vec();
        data.extend_from_slice(b"vol");
        data.extend_from_slice(&2u16.to_be_bytes());
        data.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        data.extend_from_slice(&INFO_NAME.to_be_bytes());
        assert_eq!(
            parse_info_request(&data),
            Some(InfoRequest {
                name: "vol".into(),
                items: vec![INFO_BLOCK_SIZE, INFO_NAME]
            })
        );
        assert_eq!(parse_info_request(&data[..data.len() - 1]), None);
        let mut long = data.clone();
        long.push(0);
        assert_eq!(parse_info_request(&long), None);
        assert_eq!(parse_info_request(&u32::MAX.to_be_bytes()), None);
    }

    #[test]
    fn meta_context_payloads() {
        let mut data = 3u32.to_be_bytes().to_vec();
        data.extend_from_slice(b"vol");
        data.extend_from_slice(&1u32.to_be_bytes());
        data.extend_from_slice(&15u32.to_be_bytes());
        data.extend_from_slice(b"base:allocation");
        assert!(meta_context_request_is_valid(&data));
        assert!(!meta_context_request_is_valid(&data[..data.len() - 2]));
        assert!(!meta_context_request_is_valid(&[0, 0]));
    }

    proptest! {
        /// Whatever a client sends, decoding never panics.
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_info_request(&bytes);
            let _ = meta_context_request_is_valid(&bytes);
            if bytes.len() >= REQUEST_BYTES {
                let _ = parse_request(bytes[..REQUEST_BYTES].try_into().unwrap());
            }
            if bytes.len() >= 16 {
                let _ = parse_option_header(bytes[..16].try_into().unwrap());
            }
        }
    }
}

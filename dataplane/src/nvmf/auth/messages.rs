//! The authentication messages of NVMe Base 2.0 §8.13.5 as they travel in
//! the data of Authentication Send and Receive: AUTH_Negotiate, the
//! DH-HMAC-CHAP Challenge, Reply, Success1 and Success2 messages, and
//! AUTH_Failure1/2. Every field is little-endian; every decoder checks
//! the lengths it is given against the buffer before reading.

/// AUTH-TYPE of the messages common to every protocol (Negotiate, Failure).
pub const AUTH_TYPE_COMMON: u8 = 0x00;
/// AUTH-TYPE of the DH-HMAC-CHAP messages.
pub const AUTH_TYPE_DHCHAP: u8 = 0x01;

/// AUTH-ID values.
pub mod id {
    pub const NEGOTIATE: u8 = 0x00;
    pub const CHALLENGE: u8 = 0x01;
    pub const REPLY: u8 = 0x02;
    pub const SUCCESS1: u8 = 0x03;
    pub const SUCCESS2: u8 = 0x04;
    pub const FAILURE2: u8 = 0xf0;
    pub const FAILURE1: u8 = 0xf1;
}

/// AUTHID of the DH-HMAC-CHAP protocol descriptor in AUTH_Negotiate.
pub const DHCHAP_AUTH_ID: u8 = 0x01;
/// SC_C: no secure channel concatenation (the only value this target
/// accepts; TLS concatenation is not implemented).
pub const SC_C_NONE: u8 = 0x00;
/// REASON CODE of every AUTH_Failure: "authentication failure".
pub const FAILURE_REASON: u8 = 0x01;

/// REASON CODE EXPLANATION of AUTH_Failure1/2.
pub mod explanation {
    pub const FAILED: u8 = 0x01;
    pub const NOT_USABLE: u8 = 0x02;
    pub const CONCAT_MISMATCH: u8 = 0x03;
    pub const HASH_UNUSABLE: u8 = 0x04;
    pub const DHGROUP_UNUSABLE: u8 = 0x05;
    pub const INCORRECT_PAYLOAD: u8 = 0x06;
    pub const INCORRECT_MESSAGE: u8 = 0x07;
}

/// Largest message either side sends (and the most Authentication Send
/// data a queue accepts): a Reply with ffdhe8192 and SHA-512 is 1168
/// bytes; 4 KiB also holds a Negotiate with dozens of descriptors.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Length of one protocol descriptor in AUTH_Negotiate.
pub const DESCRIPTOR_LEN: usize = 64;
/// Entries of a descriptor's hash list (IDLIST bytes 0..30) and of its
/// DH group list (bytes 30..60).
pub const MAX_IDS: usize = 30;

const HEADER_LEN: usize = 16;
const NEGOTIATE_HEADER_LEN: usize = 8;
const FAILURE_LEN: usize = 8;

/// A DH-HMAC-CHAP protocol descriptor: the hashes and DH groups a host
/// offers, as raw identifiers (unknown ones are kept and ignored later).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub auth_id: u8,
    pub hash_ids: Vec<u8>,
    pub dh_group_ids: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Negotiate {
        t_id: u16,
        sc_c: u8,
        descriptors: Vec<Descriptor>,
    },
    Challenge {
        t_id: u16,
        hash_id: u8,
        dh_group_id: u8,
        seqnum: u32,
        challenge: Vec<u8>,
        dh_value: Vec<u8>,
    },
    Reply {
        t_id: u16,
        response: Vec<u8>,
        /// C2 when the host asks the controller to authenticate too.
        controller_challenge: Option<Vec<u8>>,
        seqnum: u32,
        dh_value: Vec<u8>,
    },
    Success1 {
        t_id: u16,
        hash_len: u8,
        /// R2 when the host sent a challenge.
        response: Option<Vec<u8>>,
    },
    Success2 {
        t_id: u16,
    },
    Failure1 {
        t_id: u16,
        explanation: u8,
    },
    Failure2 {
        t_id: u16,
        explanation: u8,
    },
}

/// Why bytes are not a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("{0} bytes is too short for this message")]
    Truncated(usize),
    #[error("the message is {got} bytes; its fields say {expected}")]
    Length { expected: usize, got: usize },
    #[error("the message is longer than {MAX_MESSAGE_LEN} bytes")]
    TooLong,
    #[error("unknown message type {0:#04x}/{1:#04x}")]
    UnknownType(u8, u8),
    #[error("a hash length of {0} is not 32, 48 or 64")]
    HashLength(u8),
    #[error("a descriptor lists more than {MAX_IDS} identifiers")]
    TooManyIds,
}

impl Message {
    pub fn t_id(&self) -> u16 {
        match self {
            Message::Negotiate { t_id, .. }
            | Message::Challenge { t_id, .. }
            | Message::Reply { t_id, .. }
            | Message::Success1 { t_id, .. }
            | Message::Success2 { t_id }
            | Message::Failure1 { t_id, .. }
            | Message::Failure2 { t_id, .. } => *t_id,
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(MessageError::TooLong);
        }
        if bytes.len() < FAILURE_LEN {
            return Err(MessageError::Truncated(bytes.len()));
        }
        let (auth_type, auth_id) = (bytes[0], bytes[1]);
        let t_id = u16::from_le_bytes([bytes[4], bytes[5]]);
        match (auth_type, auth_id) {
            (AUTH_TYPE_COMMON, id::NEGOTIATE) => {
                let napd = usize::from(bytes[7]);
                exact(bytes, NEGOTIATE_HEADER_LEN + napd * DESCRIPTOR_LEN)?;
                let descriptors = bytes[NEGOTIATE_HEADER_LEN..]
                    .chunks_exact(DESCRIPTOR_LEN)
                    .map(|d| {
                        let (halen, dhlen) = (usize::from(d[2]), usize::from(d[3]));
                        if halen > MAX_IDS || dhlen > MAX_IDS {
                            return Err(MessageError::TooManyIds);
                        }
                        Ok(Descriptor {
                            auth_id: d[0],
                            hash_ids: d[4..4 + halen].to_vec(),
                            dh_group_ids: d[4 + MAX_IDS..4 + MAX_IDS + dhlen].to_vec(),
                        })
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Message::Negotiate {
                    t_id,
                    sc_c: bytes[6],
                    descriptors,
                })
            }
            (AUTH_TYPE_COMMON, id::FAILURE1 | id::FAILURE2) => {
                exact(bytes, FAILURE_LEN)?;
                let explanation = bytes[7];
                Ok(if auth_id == id::FAILURE1 {
                    Message::Failure1 { t_id, explanation }
                } else {
                    Message::Failure2 { t_id, explanation }
                })
            }
            (AUTH_TYPE_DHCHAP, id::CHALLENGE) => {
                at_least(bytes, HEADER_LEN)?;
                let hl = hash_len(bytes[6])?;
                let dhvlen = usize::from(u16::from_le_bytes([bytes[10], bytes[11]]));
                exact(bytes, HEADER_LEN + hl + dhvlen)?;
                Ok(Message::Challenge {
                    t_id,
                    hash_id: bytes[8],
                    dh_group_id: bytes[9],
                    seqnum: u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")),
                    challenge: bytes[HEADER_LEN..HEADER_LEN + hl].to_vec(),
                    dh_value: bytes[HEADER_LEN + hl..].to_vec(),
                })
            }
            (AUTH_TYPE_DHCHAP, id::REPLY) => {
                at_least(bytes, HEADER_LEN)?;
                let hl = hash_len(bytes[6])?;
                let cvalid = bytes[8] & 0x01 != 0;
                let dhvlen = usize::from(u16::from_le_bytes([bytes[10], bytes[11]]));
                exact(bytes, HEADER_LEN + 2 * hl + dhvlen)?;
                let values = &bytes[HEADER_LEN..];
                Ok(Message::Reply {
                    t_id,
                    response: values[..hl].to_vec(),
                    controller_challenge: cvalid.then(|| values[hl..2 * hl].to_vec()),
                    seqnum: u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")),
                    dh_value: values[2 * hl..].to_vec(),
                })
            }
            (AUTH_TYPE_DHCHAP, id::SUCCESS1) => {
                at_least(bytes, HEADER_LEN)?;
                let hl = hash_len(bytes[6])?;
                let rvalid = bytes[8] & 0x01 != 0;
                exact(bytes, HEADER_LEN + if rvalid { hl } else { 0 })?;
                Ok(Message::Success1 {
                    t_id,
                    hash_len: bytes[6],
                    response: rvalid.then(|| bytes[HEADER_LEN..].to_vec()),
                })
            }
            (AUTH_TYPE_DHCHAP, id::SUCCESS2) => {
                exact(bytes, HEADER_LEN)?;
                Ok(Message::Success2 { t_id })
            }
            (t, i) => Err(MessageError::UnknownType(t, i)),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN);
        let header = |out: &mut Vec<u8>, auth_type: u8, auth_id: u8, t_id: u16| {
            out.extend_from_slice(&[auth_type, auth_id, 0, 0]);
            out.extend_from_slice(&t_id.to_le_bytes());
        };
        match self {
            Message::Negotiate {
                t_id,
                sc_c,
                descriptors,
            } => {
                header(&mut out, AUTH_TYPE_COMMON, id::NEGOTIATE, *t_id);
                out.extend_from_slice(&[*sc_c, descriptors.len() as u8]);
                for d in descriptors {
                    let mut raw = [0u8; DESCRIPTOR_LEN];
                    let hashes = &d.hash_ids[..d.hash_ids.len().min(MAX_IDS)];
                    let groups = &d.dh_group_ids[..d.dh_group_ids.len().min(MAX_IDS)];
                    raw[0] = d.auth_id;
                    raw[2] = hashes.len() as u8;
                    raw[3] = groups.len() as u8;
                    raw[4..4 + hashes.len()].copy_from_slice(hashes);
                    raw[4 + MAX_IDS..4 + MAX_IDS + groups.len()].copy_from_slice(groups);
                    out.extend_from_slice(&raw);
                }
            }
            Message::Challenge {
                t_id,
                hash_id,
                dh_group_id,
                seqnum,
                challenge,
                dh_value,
            } => {
                header(&mut out, AUTH_TYPE_DHCHAP, id::CHALLENGE, *t_id);
                out.extend_from_slice(&[challenge.len() as u8, 0, *hash_id, *dh_group_id]);
                out.extend_from_slice(&(dh_value.len() as u16).to_le_bytes());
                out.extend_from_slice(&seqnum.to_le_bytes());
                out.extend_from_slice(challenge);
                out.extend_from_slice(dh_value);
            }
            Message::Reply {
                t_id,
                response,
                controller_challenge,
                seqnum,
                dh_value,
            } => {
                header(&mut out, AUTH_TYPE_DHCHAP, id::REPLY, *t_id);
                let cvalid = u8::from(controller_challenge.is_some());
                out.extend_from_slice(&[response.len() as u8, 0, cvalid, 0]);
                out.extend_from_slice(&(dh_value.len() as u16).to_le_bytes());
                out.extend_from_slice(&seqnum.to_le_bytes());
                out.extend_from_slice(response);
                match controller_challenge {
                    Some(c2) => out.extend_from_slice(c2),
                    None => out.resize(out.len() + response.len(), 0),
                }
                out.extend_from_slice(dh_value);
            }
            Message::Success1 {
                t_id,
                hash_len,
                response,
            } => {
                header(&mut out, AUTH_TYPE_DHCHAP, id::SUCCESS1, *t_id);
                out.extend_from_slice(&[*hash_len, 0, u8::from(response.is_some())]);
                out.resize(HEADER_LEN, 0);
                if let Some(r2) = response {
                    out.extend_from_slice(r2);
                }
            }
            Message::Success2 { t_id } => {
                header(&mut out, AUTH_TYPE_DHCHAP, id::SUCCESS2, *t_id);
                out.resize(HEADER_LEN, 0);
            }
            Message::Failure1 { t_id, explanation } | Message::Failure2 { t_id, explanation } => {
                let auth_id = if matches!(self, Message::Failure1 { .. }) {
                    id::FAILURE1
                } else {
                    id::FAILURE2
                };
                header(&mut out, AUTH_TYPE_COMMON, auth_id, *t_id);
                out.extend_from_slice(&[FAILURE_REASON, *explanation]);
            }
        }
        out
    }
}

fn hash_len(hl: u8) -> Result<usize, MessageError> {
    match hl {
        32 | 48 | 64 => Ok(usize::from(hl)),
        other => Err(MessageError::HashLength(other)),
    }
}

fn at_least(bytes: &[u8], len: usize) -> Result<(), MessageError> {
    if bytes.len() < len {
        return Err(MessageError::Truncated(bytes.len()));
    }
    Ok(())
}

fn exact(bytes: &[u8], expected: usize) -> Result<(), MessageError> {
    if bytes.len() != expected {
        return Err(MessageError::Length {
            expected,
            got: bytes.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::Negotiate {
                t_id: 7,
                sc_c: 0,
                descriptors: vec![Descriptor {
                    auth_id: DHCHAP_AUTH_ID,
                    hash_ids: vec![1, 2, 3],
                    dh_group_ids: vec![0, 1, 2, 3, 4, 5],
                }],
            },
            Message::Challenge {
                t_id: 7,
                hash_id: 1,
                dh_group_id: 1,
                seqnum: 0xdead_beef,
                challenge: vec![0xaa; 32],
                dh_value: vec![0x55; 256],
            },
            Message::Reply {
                t_id: 7,
                response: vec![1; 48],
                controller_challenge: Some(vec![2; 48]),
                seqnum: 9,
                dh_value: vec![],
            },
            Message::Reply {
                t_id: 7,
                response: vec![1; 64],
                controller_challenge: None,
                seqnum: 0,
                dh_value: vec![3; 384],
            },
            Message::Success1 {
                t_id: 7,
                hash_len: 32,
                response: Some(vec![4; 32]),
            },
            Message::Success1 {
                t_id: 7,
                hash_len: 64,
                response: None,
            },
            Message::Success2 { t_id: 7 },
            Message::Failure1 {
                t_id: 7,
                explanation: explanation::FAILED,
            },
            Message::Failure2 {
                t_id: 7,
                explanation: explanation::INCORRECT_MESSAGE,
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for message in samples() {
            let bytes = message.encode();
            assert_eq!(Message::decode(&bytes), Ok(message.clone()), "{message:?}");
        }
    }

    /// Byte positions from the spec's figures (AUTH_Negotiate, Challenge).
    #[test]
    fn fields_sit_where_the_spec_puts_them() {
        let negotiate = samples()[0].encode();
        assert_eq!(negotiate.len(), 8 + 64);
        assert_eq!(&negotiate[..8], &[0x00, 0x00, 0, 0, 7, 0, 0, 1]);
        assert_eq!(&negotiate[8..12], &[0x01, 0, 3, 6]);
        assert_eq!(&negotiate[12..15], &[1, 2, 3]);
        assert_eq!(&negotiate[8 + 34..8 + 40], &[0, 1, 2, 3, 4, 5]);
        let challenge = samples()[1].encode();
        assert_eq!(
            &challenge[..12],
            &[0x01, 0x01, 0, 0, 7, 0, 32, 0, 1, 1, 0, 1]
        );
        assert_eq!(&challenge[12..16], &0xdead_beefu32.to_le_bytes());
        assert_eq!(challenge.len(), 16 + 32 + 256);
        let failure = samples()[7].encode();
        assert_eq!(failure, vec![0x00, 0xf1, 0, 0, 7, 0, 0x01, 0x01]);
    }

    #[test]
    fn malformed_messages_are_refused() {
        let reply = samples()[2].encode();
        // Truncated anywhere.
        for len in 0..reply.len() {
            assert!(Message::decode(&reply[..len]).is_err(), "{len}");
        }
        // Trailing bytes.
        let mut long = reply.clone();
        long.push(0);
        assert!(matches!(
            Message::decode(&long),
            Err(MessageError::Length { .. })
        ));
        // A DH value length beyond the buffer.
        let mut lying = reply.clone();
        lying[10..12].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(Message::decode(&lying).is_err());
        // A hash length that is not a SHA-2 length.
        let mut odd = reply.clone();
        odd[6] = 33;
        assert_eq!(Message::decode(&odd), Err(MessageError::HashLength(33)));
        // NAPD saying more descriptors than there are.
        let mut negotiate = samples()[0].encode();
        negotiate[7] = 2;
        assert!(Message::decode(&negotiate).is_err());
        // HALEN beyond the list.
        let mut negotiate = samples()[0].encode();
        negotiate[10] = 31;
        assert_eq!(Message::decode(&negotiate), Err(MessageError::TooManyIds));
        // Unknown types and oversized buffers.
        assert_eq!(
            Message::decode(&[0x02, 0, 0, 0, 0, 0, 0, 0]),
            Err(MessageError::UnknownType(2, 0))
        );
        assert_eq!(
            Message::decode(&vec![0u8; MAX_MESSAGE_LEN + 1]),
            Err(MessageError::TooLong)
        );
    }
}

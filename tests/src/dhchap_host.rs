//! The host side of NVMe in-band authentication (DH-HMAC-CHAP, NVMe Base
//! 2.0 §8.13.5) for the test initiator, written from the specification
//! independently of the target's implementation: it builds AUTH_Negotiate
//! and the Reply from the spec's message layouts and formulas, checks the
//! controller's response when it asked for one, and says how the
//! transaction ended.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use num_bigint::BigUint;
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::nvme_initiator::{Cqe, Data, Initiator, Sqe};

/// Hash identifiers (HashID).
pub const SHA256: u8 = 1;
pub const SHA384: u8 = 2;
pub const SHA512: u8 = 3;
/// DH group identifiers (DHgroupID) this host implements.
pub const NULL_GROUP: u8 = 0;
pub const FFDHE2048: u8 = 1;

/// RFC 7919 appendix A.1, ffdhe2048 (generator 2).
const FFDHE2048_PRIME: &[&str] = &[
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695",
    "A9E13641146433FBCC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617A",
    "D3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935",
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797A",
    "BC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4",
    "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61",
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005",
    "C58EF1837D1683B2C6F34A26C1B2EFFA886B423861285C97FFFFFFFFFFFFFFFF",
];

/// Security protocol 0xE9, SPSP0 = SPSP1 = 1, in CDW10 bytes 41..=43.
fn auth_command(fctype: u8, length: u32) -> Sqe {
    Sqe::fabrics(fctype)
        .byte(41, 0x01)
        .byte(42, 0x01)
        .byte(43, 0xe9)
        .u32_at(44, length)
}

/// A secret in the `DHHC-1:hh:base64(key || crc32):` text form.
pub fn secret_text(key: &[u8], transform: u8) -> String {
    let mut raw = key.to_vec();
    raw.extend_from_slice(&crc32fast::hash(key).to_le_bytes());
    format!(
        "DHHC-1:{transform:02}:{}:",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn parse_secret(text: &str) -> (Vec<u8>, u8) {
    let parts: Vec<&str> = text.trim().split(':').collect();
    assert_eq!(parts[0], "DHHC-1");
    let transform: u8 = parts[1].parse().expect("hash id");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(parts[2])
        .expect("base64");
    let (key, crc) = raw.split_at(raw.len() - 4);
    assert_eq!(crc32fast::hash(key).to_le_bytes(), crc, "secret CRC");
    (key.to_vec(), transform)
}

fn mac(hash_id: u8, key: &[u8], message: &[u8]) -> Vec<u8> {
    match hash_id {
        SHA256 => {
            let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
            m.update(message);
            m.finalize().into_bytes().to_vec()
        }
        SHA384 => {
            let mut m = <Hmac<Sha384> as KeyInit>::new_from_slice(key).unwrap();
            m.update(message);
            m.finalize().into_bytes().to_vec()
        }
        SHA512 => {
            let mut m = <Hmac<Sha512> as KeyInit>::new_from_slice(key).unwrap();
            m.update(message);
            m.finalize().into_bytes().to_vec()
        }
        other => panic!("hash {other}"),
    }
}

fn hash(hash_id: u8, data: &[u8]) -> Vec<u8> {
    match hash_id {
        SHA256 => Sha256::digest(data).to_vec(),
        SHA384 => Sha384::digest(data).to_vec(),
        SHA512 => Sha512::digest(data).to_vec(),
        other => panic!("hash {other}"),
    }
}

/// The key a secret turns into for `nqn` (hh = 00: itself).
fn transform(text: &str, nqn: &str) -> Vec<u8> {
    let (key, transform) = parse_secret(text);
    if transform == 0 {
        return key;
    }
    let mut message = nqn.as_bytes().to_vec();
    message.extend_from_slice(b"NVMe-over-Fabrics");
    mac(transform, &key, &message)
}

fn random(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).unwrap();
    bytes
}

/// What the host authenticates with.
#[derive(Clone, Debug)]
pub struct HostAuth {
    pub hostnqn: String,
    pub subnqn: String,
    pub secret: String,
    /// When set, the host challenges the controller and checks its
    /// response against this secret.
    pub controller_secret: Option<String>,
    pub hashes: Vec<u8>,
    pub dh_groups: Vec<u8>,
    pub t_id: u16,
}

/// How a transaction ended.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Success1 (and Success2 when bidirectional): the queue is usable.
    Authenticated { hash_id: u8, dh_group_id: u8 },
    /// The controller answered AUTH_Failure1 (reason code explanation).
    Failure1(u8),
    /// The controller's response did not match: the host sent Failure2.
    ControllerRejected,
    /// A command failed with this status.
    CommandFailed(Cqe),
}

impl Initiator {
    /// Authentication Send with `message` as in-capsule data.
    pub fn auth_send(&mut self, message: &[u8]) -> std::io::Result<Cqe> {
        let sqe = auth_command(0x05, message.len() as u32);
        Ok(self.command(sqe, Data::InCapsule(message))?.0)
    }

    /// Authentication Receive of up to `al` bytes.
    pub fn auth_receive(&mut self, al: u32) -> std::io::Result<(Cqe, Vec<u8>)> {
        self.command(auth_command(0x06, al), Data::Read(al as usize))
    }

    /// One DH-HMAC-CHAP transaction on this (connected) queue.
    pub fn authenticate(&mut self, auth: &HostAuth) -> std::io::Result<AuthOutcome> {
        let t = auth.t_id.to_le_bytes();
        // AUTH_Negotiate: common header, SC_C 0, NAPD 1, one descriptor.
        let mut negotiate = vec![0x00, 0x00, 0, 0, t[0], t[1], 0x00, 1];
        let mut descriptor = [0u8; 64];
        descriptor[0] = 0x01;
        descriptor[2] = auth.hashes.len() as u8;
        descriptor[3] = auth.dh_groups.len() as u8;
        descriptor[4..4 + auth.hashes.len()].copy_from_slice(&auth.hashes);
        descriptor[34..34 + auth.dh_groups.len()].copy_from_slice(&auth.dh_groups);
        negotiate.extend_from_slice(&descriptor);
        let cqe = self.auth_send(&negotiate)?;
        if !cqe.ok() {
            return Ok(AuthOutcome::CommandFailed(cqe));
        }

        let (cqe, challenge) = self.auth_receive(4096)?;
        if !cqe.ok() {
            return Ok(AuthOutcome::CommandFailed(cqe));
        }
        if challenge[0] == 0x00 && challenge[1] == 0xf1 {
            return Ok(AuthOutcome::Failure1(challenge[7]));
        }
        assert_eq!((challenge[0], challenge[1]), (0x01, 0x01), "a Challenge");
        assert_eq!(&challenge[4..6], &t, "T_ID echoed");
        let hl = usize::from(challenge[6]);
        let (hash_id, dh_group_id) = (challenge[8], challenge[9]);
        let dhvlen = usize::from(u16::from_le_bytes([challenge[10], challenge[11]]));
        let s1 = &challenge[12..16];
        assert_eq!(challenge.len(), 16 + hl + dhvlen);
        let c1 = &challenge[16..16 + hl];
        let controller_public = &challenge[16 + hl..];

        // DH exchange: the host's value g^x, the session key (g^y)^x.
        let (host_public, session_key) = match dh_group_id {
            NULL_GROUP => {
                assert_eq!(dhvlen, 0);
                (Vec::new(), None)
            }
            FFDHE2048 => {
                let p = BigUint::parse_bytes(FFDHE2048_PRIME.concat().as_bytes(), 16).unwrap();
                let x = BigUint::from_bytes_be(&random(32)) + 2u32;
                let width = 256;
                let be = |v: BigUint| {
                    let b = v.to_bytes_be();
                    let mut out = vec![0u8; width - b.len()];
                    out.extend_from_slice(&b);
                    out
                };
                let public = be(BigUint::from(2u32).modpow(&x, &p));
                let shared = be(BigUint::from_bytes_be(controller_public).modpow(&x, &p));
                (public, Some(shared))
            }
            other => panic!("the test host does not implement DH group {other}"),
        };
        let augment = |c: &[u8]| -> Vec<u8> {
            match &session_key {
                None => c.to_vec(),
                Some(ks) => mac(hash_id, &hash(hash_id, ks), c),
            }
        };

        // R1 = HMAC(Kh, Ca || S1 || T_ID || SC_C || "HostHost" || NQNh || 0 || NQNc)
        let mut m1 = augment(c1);
        m1.extend_from_slice(s1);
        m1.extend_from_slice(&t);
        m1.push(0);
        m1.extend_from_slice(b"HostHost");
        m1.extend_from_slice(auth.hostnqn.as_bytes());
        m1.push(0);
        m1.extend_from_slice(auth.subnqn.as_bytes());
        let r1 = mac(hash_id, &transform(&auth.secret, &auth.hostnqn), &m1);

        let bidirectional = auth.controller_secret.is_some();
        let c2 = random(hl);
        let s2: u32 = 0x0102_0304;
        let mut reply = vec![0x01, 0x02, 0, 0, t[0], t[1], hl as u8, 0];
        reply.push(u8::from(bidirectional));
        reply.push(0);
        reply.extend_from_slice(&(host_public.len() as u16).to_le_bytes());
        reply.extend_from_slice(&(if bidirectional { s2 } else { 0 }).to_le_bytes());
        reply.extend_from_slice(&r1);
        if bidirectional {
            reply.extend_from_slice(&c2);
        } else {
            reply.extend(std::iter::repeat_n(0u8, hl));
        }
        reply.extend_from_slice(&host_public);
        let cqe = self.auth_send(&reply)?;
        if !cqe.ok() {
            return Ok(AuthOutcome::CommandFailed(cqe));
        }

        let (cqe, success1) = self.auth_receive(4096)?;
        if !cqe.ok() {
            return Ok(AuthOutcome::CommandFailed(cqe));
        }
        if success1[0] == 0x00 && success1[1] == 0xf1 {
            return Ok(AuthOutcome::Failure1(success1[7]));
        }
        assert_eq!((success1[0], success1[1]), (0x01, 0x03), "a Success1");
        assert_eq!(usize::from(success1[6]), hl);
        let Some(controller_secret) = &auth.controller_secret else {
            assert_eq!(success1[8] & 1, 0, "no R2 without C2");
            return Ok(AuthOutcome::Authenticated {
                hash_id,
                dh_group_id,
            });
        };
        assert_eq!(success1[8] & 1, 1, "R2 present");
        let r2 = &success1[16..16 + hl];
        // R2 = HMAC(Kc, Ca2 || S2 || T_ID || 0 || "Controller" || NQNc || 0 || NQNh)
        let mut m2 = augment(&c2);
        m2.extend_from_slice(&s2.to_le_bytes());
        m2.extend_from_slice(&t);
        m2.push(0);
        m2.extend_from_slice(b"Controller");
        m2.extend_from_slice(auth.subnqn.as_bytes());
        m2.push(0);
        m2.extend_from_slice(auth.hostnqn.as_bytes());
        let expected = mac(hash_id, &transform(controller_secret, &auth.subnqn), &m2);
        if expected != r2 {
            // AUTH_Failure2: reason 1, explanation "failed".
            let failure2 = [0x00, 0xf0, 0, 0, t[0], t[1], 0x01, 0x01];
            self.auth_send(&failure2)?;
            return Ok(AuthOutcome::ControllerRejected);
        }
        let mut success2 = vec![0x01, 0x04, 0, 0, t[0], t[1]];
        success2.resize(16, 0);
        let cqe = self.auth_send(&success2)?;
        if !cqe.ok() {
            return Ok(AuthOutcome::CommandFailed(cqe));
        }
        Ok(AuthOutcome::Authenticated {
            hash_id,
            dh_group_id,
        })
    }
}

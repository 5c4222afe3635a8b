//! The hash functions DH-HMAC-CHAP negotiates (NVMe Base 2.0 §8.13.5,
//! "DH-HMAC-CHAP hash function identifiers") and the HMAC and digest
//! operations the protocol builds on them.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha384, Sha512};
use zeroize::Zeroizing;

/// A hash function of the protocol, by its identifier on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HashFunction {
    Sha256,
    Sha384,
    Sha512,
}

impl HashFunction {
    /// Every hash function, in the order the controller prefers them
    /// when a host offers several: the strongest first.
    pub const ALL: [HashFunction; 3] = [
        HashFunction::Sha512,
        HashFunction::Sha384,
        HashFunction::Sha256,
    ];

    /// The HashID of the Negotiate and Challenge messages.
    pub fn id(self) -> u8 {
        match self {
            HashFunction::Sha256 => 0x01,
            HashFunction::Sha384 => 0x02,
            HashFunction::Sha512 => 0x03,
        }
    }

    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            0x01 => Some(HashFunction::Sha256),
            0x02 => Some(HashFunction::Sha384),
            0x03 => Some(HashFunction::Sha512),
            _ => None,
        }
    }

    /// The name SPDK's `dhchap_digests` option uses.
    pub fn name(self) -> &'static str {
        match self {
            HashFunction::Sha256 => "sha256",
            HashFunction::Sha384 => "sha384",
            HashFunction::Sha512 => "sha512",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.name() == name)
    }

    /// The output length HL: also the length of challenges and responses.
    pub fn output_len(self) -> usize {
        match self {
            HashFunction::Sha256 => 32,
            HashFunction::Sha384 => 48,
            HashFunction::Sha512 => 64,
        }
    }

    /// HMAC(key, parts[0] || parts[1] || ...).
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
            let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
            for part in parts {
                mac.update(part);
            }
            Zeroizing::new(mac.finalize().into_bytes().to_vec())
        }
        match self {
            HashFunction::Sha256 => run::<Hmac<Sha256>>(key, parts),
            HashFunction::Sha384 => run::<Hmac<Sha384>>(key, parts),
            HashFunction::Sha512 => run::<Hmac<Sha512>>(key, parts),
        }
    }

    /// H(data).
    pub fn digest(self, data: &[u8]) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(match self {
            HashFunction::Sha256 => Sha256::digest(data).to_vec(),
            HashFunction::Sha384 => Sha384::digest(data).to_vec(),
            HashFunction::Sha512 => Sha512::digest(data).to_vec(),
        })
    }
}

/// Compares two MACs without leaking where they differ through timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// RFC 4231 test case 2 (key "Jefe").
    #[test]
    fn hmac_matches_rfc_4231() {
        let mac = HashFunction::Sha256.hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let mac = HashFunction::Sha512.hmac(b"Jefe", &[b"what do ya want for nothing?"]);
        assert!(hex(&mac).starts_with("164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd6"));
        assert_eq!(HashFunction::Sha384.hmac(b"k", &[b"m"]).len(), 48);
    }

    #[test]
    fn ids_and_names_round_trip() {
        for hash in HashFunction::ALL {
            assert_eq!(HashFunction::from_id(hash.id()), Some(hash));
            assert_eq!(HashFunction::from_name(hash.name()), Some(hash));
        }
        assert_eq!(HashFunction::from_id(0), None);
        assert_eq!(HashFunction::from_id(4), None);
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    pub(crate) fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

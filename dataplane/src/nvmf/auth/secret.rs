//! DH-HMAC-CHAP secrets in their standard text representation (NVMe Base
//! 2.0 §8.13.5.8, "Secret representation"):
//!
//! ```text
//! DHHC-1:<hh>:<base64 of key || CRC-32(key), little-endian>:
//! ```
//!
//! `hh` names the hash that turns the key into the one a response uses
//! (00: the key as it is; 01/02/03: SHA-256/384/512), the key is 32, 48 or
//! 64 bytes, and the CRC is the IEEE CRC-32 of the key.

use base64::Engine;
use zeroize::{Zeroize, Zeroizing};

use super::hash::HashFunction;

/// The prefix of every secret of this version of the representation.
pub const SECRET_PREFIX: &str = "DHHC-1:";
/// Key lengths the representation allows (bytes).
pub const KEY_LENGTHS: [usize; 3] = [32, 48, 64];
/// Longest secret text accepted (a 64-byte key is 92 base64 characters
/// plus prefix and separators); anything longer is not a secret.
pub const MAX_SECRET_TEXT: usize = 128;
/// The constant string the key transformation appends to the NQN.
const TRANSFORM_SUFFIX: &[u8] = b"NVMe-over-Fabrics";

/// A parsed secret. Its key never leaves this type but as a transformed
/// key, and is wiped when dropped.
pub struct Secret {
    key: Zeroizing<Vec<u8>>,
    transform: Option<HashFunction>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.debug_struct("Secret")
            .field("key_len", &self.key.len())
            .field("transform", &self.transform)
            .finish()
    }
}

/// Why a text is not a usable secret (never quotes the text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a secret starts with {SECRET_PREFIX:?}")]
    Prefix,
    #[error("the secret is longer than {MAX_SECRET_TEXT} characters")]
    TooLong,
    #[error("the hash identifier must be 00, 01, 02 or 03")]
    HashId,
    #[error("the key is not valid base64")]
    Base64,
    #[error("the key is {0} bytes; it must be 32, 48 or 64")]
    Length(usize),
    #[error("the key's CRC-32 does not match: the secret is corrupted")]
    Crc,
}

impl Secret {
    /// Parses a secret (surrounding whitespace ignored, the final ':'
    /// optional as hosts accept it both ways).
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        if text.len() > MAX_SECRET_TEXT {
            return Err(SecretError::TooLong);
        }
        let rest = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::Prefix)?;
        let (hash_id, encoded) = rest.split_once(':').ok_or(SecretError::HashId)?;
        let transform = match hash_id {
            "00" => None,
            "01" => Some(HashFunction::Sha256),
            "02" => Some(HashFunction::Sha384),
            "03" => Some(HashFunction::Sha512),
            _ => return Err(SecretError::HashId),
        };
        let encoded = encoded.strip_suffix(':').unwrap_or(encoded);
        let mut decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| SecretError::Base64)?,
        );
        let key_len = decoded.len().saturating_sub(4);
        if !KEY_LENGTHS.contains(&key_len) || decoded.len() < 4 {
            return Err(SecretError::Length(key_len));
        }
        let stored = u32::from_le_bytes(decoded[key_len..].try_into().expect("4 bytes"));
        if crc32fast::hash(&decoded[..key_len]) != stored {
            return Err(SecretError::Crc);
        }
        decoded.truncate(key_len);
        Ok(Self {
            key: decoded,
            transform,
        })
    }

    /// The text representation of `key` with transformation `transform`.
    pub fn encode(key: &[u8], transform: Option<HashFunction>) -> Zeroizing<String> {
        let mut bytes = Zeroizing::new(key.to_vec());
        bytes.extend_from_slice(&crc32fast::hash(key).to_le_bytes());
        let id = transform.map_or(0, HashFunction::id);
        let mut encoded = base64::engine::general_purpose::STANDARD.encode(bytes.as_slice());
        let text = Zeroizing::new(format!("{SECRET_PREFIX}{id:02}:{encoded}:"));
        encoded.zeroize();
        text
    }

    pub fn key_len(&self) -> usize {
        self.key.len()
    }

    pub fn transform(&self) -> Option<HashFunction> {
        self.transform
    }

    /// The transformed key for the entity named `nqn` (the host's NQN for
    /// its key, the subsystem's for the controller key):
    /// HMAC(hh, key, NQN || "NVMe-over-Fabrics"), or the key itself for 00.
    pub fn transformed(&self, nqn: &str) -> Zeroizing<Vec<u8>> {
        match self.transform {
            None => self.key.clone(),
            Some(hash) => hash.hmac(&self.key, &[nqn.as_bytes(), TRANSFORM_SUFFIX]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(len: usize) -> Vec<u8> {
        (0..len as u8).collect()
    }

    #[test]
    fn a_secret_round_trips_and_keeps_its_transform() {
        for len in KEY_LENGTHS {
            for transform in [None, Some(HashFunction::Sha256), Some(HashFunction::Sha512)] {
                let text = Secret::encode(&key(len), transform);
                let secret = Secret::parse(&text).expect("valid");
                assert_eq!(secret.key_len(), len);
                assert_eq!(secret.transform(), transform);
            }
        }
        // Without the final colon and with a newline, as files often are.
        let text = Secret::encode(&key(32), None);
        let trimmed = format!("{}\n", text.trim_end_matches(':'));
        assert!(Secret::parse(&trimmed).is_ok());
    }

    /// The reference values were computed from the spec's formulas with
    /// Python's zlib/base64/hmac (not with this code).
    #[test]
    fn known_answers_for_encoding_and_transformation() {
        let text = Secret::encode(&key(32), Some(HashFunction::Sha256));
        assert_eq!(
            text.as_str(),
            "DHHC-1:01:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:"
        );
        let secret = Secret::parse(&text).expect("valid");
        let transformed = secret.transformed("nqn.2014-08.org.nvmexpress:uuid:host-a");
        assert_eq!(
            crate::nvmf::auth::hash::tests::hex(&transformed),
            "6e6d8de2b99eef7acbff04059c974ace41b1add2f97cb03477816a6c4324802e"
        );
        let untransformed = Secret::parse(&Secret::encode(&key(32), None)).expect("valid");
        assert_eq!(
            untransformed.transformed("any").as_slice(),
            key(32).as_slice()
        );
    }

    #[test]
    fn a_corrupted_secret_fails_its_crc() {
        let text = Secret::encode(&key(48), None).to_string();
        // Flip one key character (stays valid base64).
        let mut chars: Vec<char> = text.chars().collect();
        let at = SECRET_PREFIX.len() + 4;
        chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
        let corrupted: String = chars.into_iter().collect();
        assert_eq!(Secret::parse(&corrupted).unwrap_err(), SecretError::Crc);
    }

    #[test]
    fn malformed_secrets_are_refused_without_echoing_them() {
        let good = Secret::encode(&key(32), None).to_string();
        let cases = [
            ("DHHC-2:00:AAAA:", SecretError::Prefix),
            ("DHHC-1:04:AAAA:", SecretError::HashId),
            ("DHHC-1:1:AAAA:", SecretError::HashId),
            ("DHHC-1:00:not base64!:", SecretError::Base64),
            ("DHHC-1:00:AAAAAAAA:", SecretError::Length(2)),
            ("DHHC-1:00:", SecretError::Length(0)),
        ];
        for (text, expected) in cases {
            let error = Secret::parse(text).unwrap_err();
            assert_eq!(error, expected, "{text}");
            assert!(!error.to_string().contains("AAAA"));
        }
        let long = format!("{good}{}", "A".repeat(MAX_SECRET_TEXT));
        assert_eq!(Secret::parse(&long).unwrap_err(), SecretError::TooLong);
        assert!(!format!("{:?}", Secret::parse(&good).unwrap()).contains("AAEC"));
    }
}

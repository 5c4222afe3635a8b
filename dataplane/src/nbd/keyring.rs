//! The TLS pre-shared keys NBD initiators authenticate with: PSK identity
//! -> key, loaded from key files in the format GnuTLS's `psktool` writes
//! and qemu, nbdkit and libnbd read (`identity:hexkey`, one a line).
//!
//! Keys stay in this module: they are never logged, never described, and
//! wiped from memory when removed.

use shoal_appliance::locks::Recover;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::bdev::BdevError;

/// Most PSK identities one data cluster holds: one per initiator host,
/// as many as it has exports.
pub const MAX_PSK_IDENTITIES: usize = 1024;
/// Longest PSK identity accepted. TLS allows 65535 bytes; initiator
/// names (host names, NQN-like strings) fit well within this.
pub const MAX_IDENTITY_BYTES: usize = 256;
/// Shortest key: 128 bits, the strength of the TLS cipher suites offered.
pub const MIN_PSK_BYTES: usize = 16;
/// Longest key: OpenSSL's own PSK limit (PSK_MAX_PSK_LEN is 512 bytes;
/// psktool writes 32 by default).
pub const MAX_PSK_BYTES: usize = 256;
/// Largest key file read: a psktool file of many identities.
pub const MAX_KEY_FILE_BYTES: u64 = 256 * 1024;

/// A key; its bytes are overwritten when it is dropped.
pub struct Psk(Vec<u8>);

impl Psk {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Psk {
    fn drop(&mut self) {
        for byte in self.0.iter_mut() {
            // SAFETY: a valid, exclusively borrowed byte.
            unsafe { std::ptr::write_volatile(byte, 0) };
        }
    }
}

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Psk(..)")
    }
}

/// Checks a PSK identity: 1 to [`MAX_IDENTITY_BYTES`] printable ASCII
/// characters without ':' (the key file's separator).
pub fn check_identity(identity: &str) -> Result<(), BdevError> {
    let printable = identity.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    if identity.is_empty() || identity.len() > MAX_IDENTITY_BYTES || !printable {
        return Err(BdevError::Invalid(format!(
            "PSK identity {identity:?} must be 1 to {MAX_IDENTITY_BYTES} printable ASCII \
             characters without ':' or spaces"
        )));
    }
    Ok(())
}

#[derive(Debug, Default)]
pub struct PskKeyring {
    keys: Mutex<BTreeMap<String, Arc<Psk>>>,
}

impl PskKeyring {
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads `identity`'s key from the psktool-format file at `path`,
    /// which must be a regular file nobody but its owner may read. Replaces
    /// a key the identity already has.
    pub fn add_from_file(&self, identity: &str, path: &Path) -> Result<(), BdevError> {
        check_identity(identity)?;
        let key = read_key(identity, path)?;
        let mut keys = self.keys.locked();
        if !keys.contains_key(identity) && keys.len() >= MAX_PSK_IDENTITIES {
            return Err(BdevError::Invalid(format!(
                "this data cluster already holds {MAX_PSK_IDENTITIES} NBD PSK identities"
            )));
        }
        keys.insert(identity.to_string(), Arc::new(key));
        tracing::info!(identity, "NBD PSK added");
        Ok(())
    }

    pub fn remove(&self, identity: &str) -> Result<(), BdevError> {
        self.keys
            .locked()
            .remove(identity)
            .ok_or_else(|| BdevError::NotFound(format!("NBD PSK identity {identity}")))?;
        tracing::info!(identity, "NBD PSK removed");
        Ok(())
    }

    /// The key of the identity a TLS client names, if known.
    pub fn key(&self, identity: &[u8]) -> Option<Arc<Psk>> {
        let identity = std::str::from_utf8(identity).ok()?;
        self.keys.locked().get(identity).cloned()
    }

    pub fn identities(&self) -> Vec<String> {
        self.keys.locked().keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.locked().is_empty()
    }
}

/// Reads `identity`'s key from a key file. Errors name the file and the
/// identity, never a byte of the file's content.
fn read_key(identity: &str, path: &Path) -> Result<Psk, BdevError> {
    let invalid = |why: &str| BdevError::Invalid(format!("key file {}: {why}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| invalid(&e.to_string()))?;
    let metadata = file.metadata().map_err(|e| invalid(&e.to_string()))?;
    if !metadata.is_file() {
        return Err(invalid("not a regular file"));
    }
    if metadata.permissions().mode() & 0o077 != 0 {
        return Err(invalid(
            "group or others may access it (it must be mode 0600 or stricter)",
        ));
    }
    let mut text = String::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|_| invalid("not a text file"))?;
    if text.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(invalid(&format!("larger than {MAX_KEY_FILE_BYTES} bytes")));
    }
    let hex = text
        .lines()
        .filter_map(|line| line.trim_end().split_once(':'))
        .find_map(|(name, hex)| (name == identity).then_some(hex));
    let Some(hex) = hex else {
        return Err(invalid(&format!("no line for identity {identity:?}")));
    };
    let key = decode_hex(hex);
    wipe(text);
    let key = key.ok_or_else(|| invalid("the key is not hexadecimal"))?;
    if !(MIN_PSK_BYTES..=MAX_PSK_BYTES).contains(&key.0.len()) {
        return Err(invalid(&format!(
            "the key must be {MIN_PSK_BYTES} to {MAX_PSK_BYTES} bytes"
        )));
    }
    Ok(key)
}

fn decode_hex(hex: &str) -> Option<Psk> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let mut key = Psk(Vec::with_capacity(hex.len() / 2));
    for pair in hex.as_bytes().chunks_exact(2) {
        let high = (pair[0] as char).to_digit(16)?;
        let low = (pair[1] as char).to_digit(16)?;
        key.0.push((high * 16 + low) as u8);
    }
    Some(key)
}

/// Overwrites a copy of a key file's text before freeing it.
fn wipe(text: String) {
    let mut bytes = text.into_bytes();
    for byte in bytes.iter_mut() {
        // SAFETY: a valid, exclusively borrowed byte.
        unsafe { std::ptr::write_volatile(byte, 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(dir: &Path, content: &str, mode: u32) -> std::path::PathBuf {
        let path = dir.join("keys.psk");
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn loads_the_named_identity_from_a_psktool_file() {
        let dir = tempfile::tempdir().unwrap();
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let path = key_file(dir.path(), &format!("other:{hex}\nhost-a:{hex}\n"), 0o600);
        let keyring = PskKeyring::new();
        keyring.add_from_file("host-a", &path).unwrap();
        assert_eq!(keyring.key(b"host-a").unwrap().bytes()[..2], [0x00, 0x11]);
        assert!(keyring.key(b"other").is_none());
        assert_eq!(keyring.identities(), ["host-a"]);
        keyring.remove("host-a").unwrap();
        assert!(keyring.is_empty());
    }

    #[test]
    fn refuses_readable_files_short_keys_and_bad_identities() {
        let dir = tempfile::tempdir().unwrap();
        let hex = "00112233445566778899aabbccddeeff";
        let keyring = PskKeyring::new();
        let open = key_file(dir.path(), &format!("a:{hex}\n"), 0o644);
        let error = keyring.add_from_file("a", &open).unwrap_err().to_string();
        assert!(error.contains("0600"), "{error}");
        assert!(!error.contains(hex), "{error}");
        let short = key_file(dir.path(), "a:0011\n", 0o600);
        assert!(keyring.add_from_file("a", &short).is_err());
        let bad = key_file(dir.path(), "a:zz112233445566778899aabbccddeeff\n", 0o600);
        let error = keyring.add_from_file("a", &bad).unwrap_err().to_string();
        assert!(!error.contains("zz11"), "{error}");
        assert!(keyring.add_from_file("a:b", &short).is_err());
        assert!(keyring.add_from_file("", &short).is_err());
        assert!(keyring.is_empty());
    }
}

//! Host credentials of connections: DH-HMAC-CHAP secrets in the NVMe
//! `DHHC-1` text form, what is derived from them (the NBD TLS PSK, stable
//! keyring names), and their sealing for the store.
//!
//! A `DHHC-1:<hh>:<base64>:` secret carries a key of 32, 48 or 64 bytes
//! followed by the CRC-32 (little endian) of the key, base64-encoded;
//! `<hh>` names the hash its key is transformed with (00 none, 01 SHA-256,
//! 02 SHA-384, 03 SHA-512), which also fixes the key length for 01-03.
//!
//! The store holds the secrets only sealed with ChaCha20-Poly1305 under a
//! key in its own file (`connection-keys.key`, 0600) beside the database,
//! so the database alone does not give them away.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Longest secret text accepted: a 64-byte key with its CRC in base64
/// (88 characters) and the `DHHC-1:hh:` frame, with room to spare.
pub const MAX_SECRET_CHARS: usize = 128;
/// The message prefix of the NBD PSK derivation (see the README); the PSK
/// identity follows it.
pub const NBD_PSK_LABEL: &str = "Shoal NBD PSK ";
/// The message of the keyring-name fingerprint (distinct from the PSK's).
const FINGERPRINT_LABEL: &[u8] = b"Shoal keyring name";
/// Bytes of the sealing key (ChaCha20-Poly1305 takes 256 bits).
const SEAL_KEY_BYTES: usize = 32;
/// Bytes of a ChaCha20-Poly1305 nonce; each seal draws a random one.
const NONCE_BYTES: usize = 12;
/// Associated data of every seal: a sealed blob means nothing elsewhere.
const SEAL_CONTEXT: &[u8] = b"shoal connection keys v1";

/// A validated DH-HMAC-CHAP secret. Its Debug form never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct DhchapSecret {
    text: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for DhchapSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DhchapSecret(..)")
    }
}

impl DhchapSecret {
    /// Parses the `DHHC-1` form. The error says what is wrong without
    /// repeating any of the text.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.len() > MAX_SECRET_CHARS {
            return Err("is longer than a DH-HMAC-CHAP secret can be");
        }
        let mut fields = text.split(':');
        let (Some("DHHC-1"), Some(hash), Some(payload), Some(""), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err("is not a DH-HMAC-CHAP secret of the form DHHC-1:<hash>:<base64 key>:");
        };
        let lengths: &[usize] = match hash {
            "00" => &[32, 48, 64],
            "01" => &[32],
            "02" => &[48],
            "03" => &[64],
            _ => return Err("names an unknown hash (it must be 00, 01, 02 or 03)"),
        };
        let decoded = STANDARD
            .decode(payload)
            .map_err(|_| "does not carry a base64 key")?;
        let Some(key_len) = decoded.len().checked_sub(4) else {
            return Err("carries a key of the wrong length");
        };
        if !lengths.contains(&key_len) {
            return Err("carries a key of the wrong length for its hash");
        }
        let (key, crc) = decoded.split_at(key_len);
        if crc32fast::hash(key).to_le_bytes() != crc {
            return Err("fails its CRC-32 check (mistyped?)");
        }
        Ok(Self {
            text: text.to_string(),
            key: key.to_vec(),
        })
    }

    /// The secret as the dataplane's key file takes it.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// A short stable name part for the keyring: an HMAC of a fixed label
    /// under the key (reveals nothing of a random 256-bit key).
    pub fn fingerprint(&self) -> String {
        hex(&hmac_sha256(&self.key, &[FINGERPRINT_LABEL])[..8])
    }

    /// The NBD TLS PSK of PSK identity `identity`:
    /// HMAC-SHA256(key, "Shoal NBD PSK " || identity).
    pub fn nbd_psk(&self, identity: &str) -> [u8; 32] {
        hmac_sha256(&self.key, &[NBD_PSK_LABEL.as_bytes(), identity.as_bytes()])
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An NBD TLS PSK (see [`DhchapSecret::nbd_psk`]). Its Debug form never
/// shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct NbdPsk(pub [u8; 32]);

impl std::fmt::Debug for NbdPsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NbdPsk(..)")
    }
}

impl NbdPsk {
    /// A short stable tag telling two PSKs apart without showing either.
    pub fn tag(&self) -> [u8; 8] {
        let mac = hmac_sha256(&self.0, &[FINGERPRINT_LABEL]);
        mac[..8].try_into().expect("8 of 32 bytes")
    }
}

/// A connection's credentials: the hosts' secret and, for bidirectional
/// authentication, the controller's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionKeys {
    pub local: DhchapSecret,
    pub peer: Option<DhchapSecret>,
}

/// Sealed [`ConnectionKeys`] as the store keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Base64 of the nonce.
    pub nonce: String,
    /// Base64 of the ciphertext with its tag.
    pub ciphertext: String,
}

/// The sealing key, read from (or created in) its file at first use.
pub struct SealKey {
    cipher: ChaCha20Poly1305,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("connection key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("sealed connection keys do not open under this appliance's key")]
    Open,
}

impl SealKey {
    /// Reads the key at `path`, or creates it (exclusively, mode 0600) if
    /// there is none.
    pub fn load_or_create(path: &Path) -> Result<Self, SealError> {
        let failed = |reason: String| SealError::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; SEAL_KEY_BYTES];
                getrandom::fill(&mut key).map_err(|e| failed(e.to_string()))?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| failed(e.to_string()))?;
                file.write_all(&key)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| failed(e.to_string()))?;
                key.to_vec()
            }
            Err(e) => return Err(failed(e.to_string())),
        };
        if bytes.len() != SEAL_KEY_BYTES {
            return Err(failed(format!(
                "holds {} bytes, not {SEAL_KEY_BYTES}",
                bytes.len()
            )));
        }
        Ok(Self {
            cipher: ChaCha20Poly1305::new(
                &Key::try_from(bytes.as_slice()).expect("checked length"),
            ),
        })
    }

    pub fn seal(&self, keys: &ConnectionKeys) -> Sealed {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).expect("the OS random source works");
        let plain = match &keys.peer {
            Some(peer) => format!("{}\n{}", keys.local.text, peer.text),
            None => keys.local.text.clone(),
        };
        let ciphertext = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: SEAL_CONTEXT,
                },
            )
            .expect("sealing a short message cannot fail");
        Sealed {
            nonce: STANDARD.encode(nonce),
            ciphertext: STANDARD.encode(ciphertext),
        }
    }

    pub fn open(&self, sealed: &Sealed) -> Result<ConnectionKeys, SealError> {
        let nonce = STANDARD
            .decode(&sealed.nonce)
            .map_err(|_| SealError::Open)?;
        let ciphertext = STANDARD
            .decode(&sealed.ciphertext)
            .map_err(|_| SealError::Open)?;
        let nonce = Nonce::try_from(nonce.as_slice()).map_err(|_| SealError::Open)?;
        let plain = self
            .cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: &ciphertext,
                    aad: SEAL_CONTEXT,
                },
            )
            .map_err(|_| SealError::Open)?;
        let plain = String::from_utf8(plain).map_err(|_| SealError::Open)?;
        let mut lines = plain.split('\n');
        let local = lines
            .next()
            .and_then(|t| DhchapSecret::parse(t).ok())
            .ok_or(SealError::Open)?;
        let peer = lines
            .next()
            .map(|t| DhchapSecret::parse(t).map_err(|_| SealError::Open))
            .transpose()?;
        Ok(ConnectionKeys { local, peer })
    }
}

/// Where the credentials live on disk: the sealing key's file, and the
/// runtime directory key files pass through on their way to a dataplane.
pub struct KeyFiles {
    pub seal_key_path: PathBuf,
    pub run_dir: PathBuf,
    seal: std::sync::OnceLock<SealKey>,
}

impl KeyFiles {
    /// Under the management state directory `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            seal_key_path: dir.join("connection-keys.key"),
            run_dir: dir.join("run-keys"),
            seal: std::sync::OnceLock::new(),
        }
    }

    /// The sealing key, loaded or created at first use.
    pub fn seal_key(&self) -> Result<&SealKey, SealError> {
        if let Some(key) = self.seal.get() {
            return Ok(key);
        }
        let key = SealKey::load_or_create(&self.seal_key_path)?;
        Ok(self.seal.get_or_init(|| key))
    }

    /// Writes `content` to a fresh 0600 file `name` in the runtime
    /// directory (made 0700), for a dataplane to read at once; the caller
    /// removes it with [`KeyFile`]'s drop.
    pub fn write(&self, name: &str, content: &str) -> std::io::Result<KeyFile> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.run_dir)?;
        std::fs::set_permissions(
            &self.run_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;
        let path = self.run_dir.join(name);
        // A file left by a crash between write and removal is replaced.
        let _ = std::fs::remove_file(&path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let key_file = KeyFile(path);
        file.write_all(content.as_bytes())?;
        Ok(key_file)
    }
}

use std::os::unix::fs::DirBuilderExt;

/// A key file in the runtime directory, removed when dropped.
pub struct KeyFile(PathBuf);

impl KeyFile {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A valid secret with a key of `fill` bytes (SHA-256 form).
    pub fn secret_text(fill: u8) -> String {
        let mut payload = vec![fill; 32];
        let crc = crc32fast::hash(&payload).to_le_bytes();
        payload.extend_from_slice(&crc);
        format!("DHHC-1:01:{}:", STANDARD.encode(payload))
    }

    pub fn secret(fill: u8) -> DhchapSecret {
        DhchapSecret::parse(&secret_text(fill)).unwrap()
    }

    #[test]
    fn secrets_are_checked_and_never_shown() {
        let text = secret_text(7);
        let parsed = DhchapSecret::parse(&text).unwrap();
        assert_eq!(parsed.expose(), text);
        assert!(!format!("{parsed:?}").contains("DHHC"));
        // A CRC error (a flipped key character), bad frames, bad lengths.
        let mut payload = STANDARD.decode(text.split(':').nth(2).unwrap()).unwrap();
        payload[0] ^= 1;
        let flipped = format!("DHHC-1:01:{}:", STANDARD.encode(&payload));
        for bad in [
            flipped.as_str(),
            "DHHC-1:01:AAAA:",
            "DHHC-1:09:AAAA:",
            "DHHC-2:01:AAAA:",
            "DHHC-1:01:not base64!:",
            &text[..text.len() - 1],
            "",
        ] {
            let error = DhchapSecret::parse(bad).unwrap_err();
            assert!(!error.contains("AAAA"), "{error}");
        }
        // The 02 hash wants 48 bytes; a 32-byte key is refused.
        assert!(DhchapSecret::parse(&text.replace(":01:", ":02:")).is_err());
        assert!(DhchapSecret::parse(&text.replace(":01:", ":00:")).is_ok());
    }

    #[test]
    fn the_nbd_psk_is_the_documented_hmac() {
        // key = 32 bytes of 7; HMAC-SHA256(key, "Shoal NBD PSK initiator1"),
        // as `openssl dgst -sha256 -mac HMAC -macopt hexkey:0707...` gives.
        let psk = secret(7).nbd_psk("initiator1");
        let expected = hmac_sha256(&[7u8; 32], &[b"Shoal NBD PSK initiator1"]);
        assert_eq!(psk, expected);
        assert_ne!(secret(7).nbd_psk("initiator2"), psk);
        assert_ne!(secret(7).fingerprint(), secret(8).fingerprint());
    }

    #[test]
    fn sealed_keys_open_only_under_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = SealKey::load_or_create(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let keys = ConnectionKeys {
            local: secret(1),
            peer: Some(secret(2)),
        };
        let sealed = key.seal(&keys);
        let json = serde_json::to_string(&sealed).unwrap();
        assert!(!json.contains(&secret_text(1)[10..40]));
        assert_eq!(
            SealKey::load_or_create(&path)
                .unwrap()
                .open(&sealed)
                .unwrap(),
            keys
        );
        let other = SealKey::load_or_create(&dir.path().join("other")).unwrap();
        assert!(other.open(&sealed).is_err());
    }

    #[tokio::test]
    async fn the_database_holds_no_secret_in_clear() {
        use crate::storage::model::{Access, Connection, VolumeAccess};
        use crate::store::{Store, Table};
        let dir = tempfile::tempdir().unwrap();
        let files = KeyFiles::new(dir.path());
        let keys = ConnectionKeys {
            local: secret(0x5a),
            peer: Some(secret(0xa5)),
        };
        let connection = Connection {
            id: 1,
            name: "c".into(),
            volumes: vec![VolumeAccess {
                volume: 1,
                access: Access::ReadWrite,
            }],
            initiators: vec![1],
            keys: Some(files.seal_key().unwrap().seal(&keys)),
        };
        {
            let store = Store::open(&dir.path().join("db")).unwrap();
            store
                .put(Table::Connections, "1", &connection)
                .await
                .unwrap();
            let back: Connection = store.get(Table::Connections, "1").unwrap().unwrap();
            assert_eq!(
                files
                    .seal_key()
                    .unwrap()
                    .open(back.keys.as_ref().unwrap())
                    .unwrap(),
                keys
            );
        }
        // Neither the text, nor its base64 payload, nor the raw key bytes.
        let needles: Vec<Vec<u8>> = [secret_text(0x5a), secret_text(0xa5)]
            .iter()
            .flat_map(|t| {
                let payload = t.split(':').nth(2).unwrap().to_string();
                [payload.as_bytes()[..24].to_vec(), t.as_bytes().to_vec()]
            })
            .chain([vec![0x5a; 16], vec![0xa5; 16]])
            .collect();
        let mut files_read = 0;
        for entry in walk(&dir.path().join("db")) {
            let bytes = std::fs::read(&entry).unwrap();
            files_read += 1;
            for needle in &needles {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                    "{} holds a secret",
                    entry.display()
                );
            }
        }
        assert!(files_read > 0);
        // The key itself is in its own 0600 file, outside the database.
        assert!(
            files.seal_key_path.exists() && !files.seal_key_path.starts_with(dir.path().join("db"))
        );
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }
}

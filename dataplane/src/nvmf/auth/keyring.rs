//! Named keys loaded from files, in the shape of SPDK's `keyring_file`
//! module: `keyring_file_add_key {name, path}` reads a DH-HMAC-CHAP secret
//! from a file only its owner can read; subsystems refer to keys by name.
//! A key's secret is never returned, described or logged.

use shoal_appliance::locks::Recover;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::secret::{MAX_SECRET_TEXT, Secret};

/// Most keys one data cluster holds: one or two per host entry; far more
/// than any appliance configures, small enough to bound memory.
pub const MAX_KEYS: usize = 4096;
/// Longest key name.
pub const MAX_KEY_NAME: usize = 255;
/// Largest key file read: a secret and some whitespace.
pub const MAX_KEY_FILE: u64 = 1024;

struct Entry {
    path: PathBuf,
    secret: Arc<Secret>,
}

#[derive(Default)]
pub struct Keyring {
    keys: Mutex<BTreeMap<String, Entry>>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("key {0} already exists")]
    Exists(String),
    #[error("key {0} not found")]
    NotFound(String),
    #[error("the keyring already holds {MAX_KEYS} keys")]
    Full,
    #[error("invalid key name: {0}")]
    Name(&'static str),
    #[error("{0}")]
    File(String),
}

impl Keyring {
    /// Adds key `name` from the secret in `path` (an absolute path to a
    /// regular file that no group or other user may access).
    pub fn add_file(&self, name: &str, path: &Path) -> Result<(), KeyringError> {
        check_name(name)?;
        let secret = Arc::new(read_secret(path)?);
        let mut keys = self.keys.locked();
        if keys.contains_key(name) {
            return Err(KeyringError::Exists(name.to_string()));
        }
        if keys.len() >= MAX_KEYS {
            return Err(KeyringError::Full);
        }
        keys.insert(
            name.to_string(),
            Entry {
                path: path.to_path_buf(),
                secret,
            },
        );
        Ok(())
    }

    pub fn remove(&self, name: &str) -> Result<(), KeyringError> {
        self.keys
            .locked()
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| KeyringError::NotFound(name.to_string()))
    }

    pub fn get(&self, name: &str) -> Option<Arc<Secret>> {
        self.keys.locked().get(name).map(|e| Arc::clone(&e.secret))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.keys.locked().contains_key(name)
    }

    /// `keyring_get_keys`: names and paths, never secrets.
    pub fn describe(&self) -> Value {
        let keys = self.keys.locked();
        Value::Array(
            keys.iter()
                .map(|(name, entry)| {
                    json!({
                        "name": name,
                        "module": "keyring_file",
                        "path": entry.path.display().to_string(),
                        "removed": false,
                        "probed": true,
                        // Holders besides the keyring itself.
                        "refcnt": Arc::strong_count(&entry.secret),
                    })
                })
                .collect(),
        )
    }
}

fn check_name(name: &str) -> Result<(), KeyringError> {
    if name.is_empty() || name.len() > MAX_KEY_NAME {
        return Err(KeyringError::Name("1 to 255 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
    {
        return Err(KeyringError::Name("letters, digits, '_', '-', '.', ':'"));
    }
    Ok(())
}

fn read_secret(path: &Path) -> Result<Secret, KeyringError> {
    let shown = path.display();
    if !path.is_absolute() {
        return Err(KeyringError::File(format!(
            "{shown}: the path must be absolute"
        )));
    }
    let metadata =
        std::fs::metadata(path).map_err(|e| KeyringError::File(format!("{shown}: {e}")))?;
    if !metadata.is_file() {
        return Err(KeyringError::File(format!("{shown}: not a regular file")));
    }
    if metadata.mode() & 0o077 != 0 {
        return Err(KeyringError::File(format!(
            "{shown}: mode {:04o} lets other users read it; it must be 0600",
            metadata.mode() & 0o777
        )));
    }
    if metadata.len() > MAX_KEY_FILE {
        return Err(KeyringError::File(format!(
            "{shown}: larger than {MAX_KEY_FILE} bytes: not a secret"
        )));
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| KeyringError::File(format!("{shown}: {e}")))?,
    );
    if text.trim().len() > MAX_SECRET_TEXT {
        return Err(KeyringError::File(format!("{shown}: not a DHHC-1 secret")));
    }
    Secret::parse(&text).map_err(|e| KeyringError::File(format!("{shown}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn keys_load_from_private_files_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = Secret::encode(&[7u8; 32], None);
        let good = write(dir.path(), "good", &format!("{}\n", secret.as_str()), 0o600);
        let open = write(dir.path(), "open", &secret, 0o644);
        let junk = write(dir.path(), "junk", "DHHC-1:00:nonsense:", 0o600);
        let keyring = Keyring::default();
        keyring.add_file("key0", &good).expect("added");
        assert!(keyring.get("key0").is_some());
        assert!(matches!(
            keyring.add_file("key0", &good),
            Err(KeyringError::Exists(_))
        ));
        let error = keyring.add_file("key1", &open).unwrap_err().to_string();
        assert!(error.contains("0600"), "{error}");
        let error = keyring.add_file("key1", &junk).unwrap_err().to_string();
        assert!(!error.contains("nonsense"), "{error}");
        assert!(keyring.add_file("key1", Path::new("relative")).is_err());
        assert!(keyring.add_file("bad name", &good).is_err());
        let described = keyring.describe().to_string();
        assert!(described.contains("key0") && !described.contains(&secret[10..30]));
        keyring.remove("key0").expect("removed");
        assert!(keyring.get("key0").is_none());
        assert!(keyring.remove("key0").is_err());
    }
}

//! The NBD exports this data cluster serves: export name -> bdev, and who
//! may reach each one.
//!
//! An export with a host list is visible and openable only over TLS, by a
//! PSK identity on its list. An export without one is served to anybody
//! who reaches a loopback listener (local tools), and to nobody else.

use shoal_appliance::locks::Recover;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::keyring::{PskKeyring, check_identity};
use crate::bdev::{Bdev, BdevError};

/// Most exports one data cluster serves.
pub const MAX_EXPORTS: usize = 1024;
/// Most PSK identities on one export's host list (initiators sharing a
/// volume, as a cluster file system's nodes do).
pub const MAX_HOSTS_PER_EXPORT: usize = 64;

/// Who a connection is, for deciding what it may see.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The listener is on a loopback address.
    pub loopback_listener: bool,
    /// The PSK identity it authenticated as over TLS, if it did.
    pub identity: Option<String>,
}

/// Who may reach an export, with a token per grant that revoking it fires
/// (ending the connections it let in).
#[derive(Debug, Default)]
struct Access {
    hosts: BTreeMap<String, CancellationToken>,
    /// Held by connections let in while the list was empty.
    anonymous: CancellationToken,
}

/// One export. Connections hold it; stopping it cancels them.
#[derive(Debug)]
pub struct Export {
    pub name: String,
    pub bdev: Arc<Bdev>,
    pub read_only: bool,
    stop: CancellationToken,
    connections: AtomicU32,
    access: Mutex<Access>,
}

impl Export {
    /// Whether `peer` may see and open this export; if so, a token that
    /// fires when that permission is revoked.
    pub fn admits(&self, peer: &Peer) -> Option<CancellationToken> {
        let access = self.access.locked();
        if access.hosts.is_empty() {
            return peer.loopback_listener.then(|| access.anonymous.clone());
        }
        access.hosts.get(peer.identity.as_deref()?).cloned()
    }

    /// Lets PSK identity `host` reach this export over TLS. The first host
    /// ends the connections let in while the export had no list.
    pub fn add_host(&self, host: &str) -> Result<(), BdevError> {
        check_identity(host)?;
        let mut access = self.access.locked();
        if access.hosts.contains_key(host) {
            return Ok(());
        }
        if access.hosts.len() >= MAX_HOSTS_PER_EXPORT {
            return Err(BdevError::Invalid(format!(
                "nbd export {} already lists {MAX_HOSTS_PER_EXPORT} hosts",
                self.name
            )));
        }
        if access.hosts.is_empty() {
            access.anonymous.cancel();
        }
        access
            .hosts
            .insert(host.to_string(), CancellationToken::new());
        tracing::info!(export = self.name, host, "NBD export host added");
        Ok(())
    }

    /// Takes `host` off the list and ends its connections.
    pub fn remove_host(&self, host: &str) -> Result<(), BdevError> {
        let mut access = self.access.locked();
        let token = access.hosts.remove(host).ok_or_else(|| {
            BdevError::NotFound(format!("host {host} of nbd export {}", self.name))
        })?;
        token.cancel();
        if access.hosts.is_empty() {
            access.anonymous = CancellationToken::new();
        }
        tracing::info!(export = self.name, host, "NBD export host removed");
        Ok(())
    }

    /// Ends `host`'s connections, keeping it on the list (its key changed
    /// or was removed).
    fn revoke(&self, host: &str) {
        let mut access = self.access.locked();
        if let Some(token) = access.hosts.get_mut(host) {
            std::mem::take(token).cancel();
        }
    }

    fn hosts(&self) -> Vec<String> {
        let access = self.access.locked();
        access.hosts.keys().cloned().collect()
    }

    /// Fires when the export is stopped.
    pub fn stopped(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.stop.cancelled()
    }

    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Counts a connection for as long as the guard lives.
    pub fn connect(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(Arc::clone(self))
    }

    fn owner_tag(&self) -> String {
        format!("nbd export {}", self.name)
    }

    pub fn describe(&self) -> Value {
        json!({
            "nbd_device": self.name,
            "export_name": self.name,
            "bdev_name": self.bdev.name(),
            "read_only": self.read_only,
            "connections": self.connections.load(Ordering::Relaxed),
            "hosts": self.hosts(),
        })
    }
}

pub struct ConnectionGuard(Arc<Export>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct Exports {
    by_name: Mutex<BTreeMap<String, Arc<Export>>>,
    keyring: Arc<PskKeyring>,
}

impl Exports {
    pub fn new() -> Self {
        Self::default()
    }

    /// The PSK identities and keys TLS clients authenticate with.
    pub fn keyring(&self) -> &Arc<PskKeyring> {
        &self.keyring
    }

    /// Loads `identity`'s key from `key_path` (see
    /// [`PskKeyring::add_from_file`]); a key replaced ends the TLS
    /// connections made with the old one.
    pub fn add_psk(&self, identity: &str, key_path: &std::path::Path) -> Result<(), BdevError> {
        self.keyring.add_from_file(identity, key_path)?;
        for export in self.list() {
            export.revoke(identity);
        }
        Ok(())
    }

    /// Removes `identity`'s key and ends its TLS connections.
    pub fn remove_psk(&self, identity: &str) -> Result<(), BdevError> {
        self.keyring.remove(identity)?;
        for export in self.list() {
            export.revoke(identity);
        }
        Ok(())
    }

    /// Starts serving `bdev` as `name`, to the PSK identities in `hosts`
    /// (over TLS), or to loopback clients when `hosts` is empty.
    pub fn start(
        &self,
        name: &str,
        bdev: Arc<Bdev>,
        read_only: bool,
        hosts: &[String],
    ) -> Result<Arc<Export>, BdevError> {
        if hosts.len() > MAX_HOSTS_PER_EXPORT {
            return Err(BdevError::Invalid(format!(
                "an nbd export lists at most {MAX_HOSTS_PER_EXPORT} hosts"
            )));
        }
        for host in hosts {
            check_identity(host)?;
        }
        if name.is_empty()
            || name.len() > super::proto::MAX_NAME_BYTES
            || name.chars().any(char::is_control)
        {
            return Err(BdevError::Invalid(format!(
                "export name {name:?} must be 1 to {} bytes without control characters",
                super::proto::MAX_NAME_BYTES
            )));
        }
        let mut exports = self.by_name.locked();
        if exports.contains_key(name) {
            return Err(BdevError::Exists(format!("nbd export {name}")));
        }
        if exports.len() >= MAX_EXPORTS {
            return Err(BdevError::Invalid(format!(
                "this data cluster already serves {MAX_EXPORTS} exports"
            )));
        }
        let export = Arc::new(Export {
            name: name.to_string(),
            bdev,
            read_only,
            stop: CancellationToken::new(),
            connections: AtomicU32::new(0),
            access: Mutex::new(Access {
                hosts: hosts
                    .iter()
                    .map(|host| (host.clone(), CancellationToken::new()))
                    .collect(),
                anonymous: CancellationToken::new(),
            }),
        });
        export.bdev.add_export(&export.owner_tag(), !read_only)?;
        exports.insert(name.to_string(), Arc::clone(&export));
        tracing::info!(
            export = name,
            bdev = export.bdev.name(),
            read_only,
            hosts = hosts.len(),
            "NBD export started"
        );
        Ok(export)
    }

    /// Stops an export and disconnects its clients.
    pub fn stop(&self, name: &str) -> Result<(), BdevError> {
        let export = self
            .by_name
            .locked()
            .remove(name)
            .ok_or_else(|| BdevError::NotFound(format!("nbd export {name}")))?;
        export.stop.cancel();
        export.bdev.remove_export(&export.owner_tag());
        tracing::info!(export = name, "NBD export stopped");
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<Arc<Export>> {
        self.by_name.locked().get(name).cloned()
    }

    /// The export an empty name selects: the only one, if there is exactly
    /// one (whether the client may open it is for the caller to check).
    pub fn default_export(&self) -> Option<Arc<Export>> {
        let exports = self.by_name.locked();
        if exports.len() == 1 {
            exports.values().next().cloned()
        } else {
            None
        }
    }

    pub fn list(&self) -> Vec<Arc<Export>> {
        self.by_name.locked().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bdev::malloc::create_malloc;
    use crate::bdev::{BdevRegistry, BdevSpec};

    fn export(exports: &Exports, name: &str, hosts: &[&str]) -> Arc<Export> {
        let registry = BdevRegistry::new();
        let spec = BdevSpec {
            name: format!("{name}-bdev"),
            uuid: None,
            block_size: 512,
            num_blocks: 8,
        };
        let bdev = create_malloc(&registry, spec).unwrap();
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        exports.start(name, bdev, false, &hosts).unwrap()
    }

    fn tls(identity: &str, loopback_listener: bool) -> Peer {
        Peer {
            loopback_listener,
            identity: Some(identity.into()),
        }
    }

    #[test]
    fn a_host_list_admits_only_its_identities_on_any_listener() {
        let exports = Exports::new();
        let listed = export(&exports, "listed", &["host-a"]);
        let plain_loopback = Peer {
            loopback_listener: true,
            identity: None,
        };
        assert!(listed.admits(&plain_loopback).is_none());
        assert!(listed.admits(&tls("host-b", true)).is_none());
        assert!(listed.admits(&tls("host-a", false)).is_some());

        let unlisted = export(&exports, "unlisted", &[]);
        assert!(unlisted.admits(&plain_loopback).is_some());
        assert!(unlisted.admits(&tls("host-a", false)).is_none());
        assert!(unlisted.admits(&Peer::default()).is_none());
    }

    #[test]
    fn removing_a_host_or_its_key_ends_its_connections() {
        let exports = Exports::new();
        let listed = export(&exports, "listed", &["host-a", "host-b"]);
        let a = listed.admits(&tls("host-a", false)).unwrap();
        let b = listed.admits(&tls("host-b", false)).unwrap();
        listed.remove_host("host-a").unwrap();
        assert!(a.is_cancelled() && !b.is_cancelled());
        assert!(listed.admits(&tls("host-a", false)).is_none());

        // A key removed: connections end, the host stays listed.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.psk");
        std::fs::write(&path, format!("host-b:{}\n", "ab".repeat(32))).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        exports.add_psk("host-b", &path).unwrap();
        assert!(b.is_cancelled(), "a replaced key ends the old sessions");
        let b = listed.admits(&tls("host-b", false)).unwrap();
        exports.remove_psk("host-b").unwrap();
        assert!(b.is_cancelled());
        assert!(listed.admits(&tls("host-b", false)).is_some());

        // The first host of an unlisted export ends its anonymous connections.
        let unlisted = export(&exports, "unlisted", &[]);
        let anonymous = unlisted
            .admits(&Peer {
                loopback_listener: true,
                identity: None,
            })
            .unwrap();
        unlisted.add_host("host-c").unwrap();
        assert!(anonymous.is_cancelled());
    }
}

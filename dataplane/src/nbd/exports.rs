//! The NBD exports this data cluster serves: export name -> bdev.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::bdev::{Bdev, BdevError};

/// Most exports one data cluster serves.
pub const MAX_EXPORTS: usize = 1024;

/// One export. Connections hold it; stopping it cancels them.
#[derive(Debug)]
pub struct Export {
    pub name: String,
    pub bdev: Arc<Bdev>,
    pub read_only: bool,
    stop: CancellationToken,
    connections: AtomicU32,
}

impl Export {
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
}

impl Exports {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts serving `bdev` as `name`.
    pub fn start(
        &self,
        name: &str,
        bdev: Arc<Bdev>,
        read_only: bool,
    ) -> Result<Arc<Export>, BdevError> {
        if name.is_empty()
            || name.len() > super::proto::MAX_NAME_BYTES
            || name.chars().any(char::is_control)
        {
            return Err(BdevError::Invalid(format!(
                "export name {name:?} must be 1 to {} bytes without control characters",
                super::proto::MAX_NAME_BYTES
            )));
        }
        let mut exports = self.by_name.lock().expect("exports lock");
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
        });
        export.bdev.add_export(&export.owner_tag(), !read_only)?;
        exports.insert(name.to_string(), Arc::clone(&export));
        tracing::info!(
            export = name,
            bdev = export.bdev.name(),
            read_only,
            "NBD export started"
        );
        Ok(export)
    }

    /// Stops an export and disconnects its clients.
    pub fn stop(&self, name: &str) -> Result<(), BdevError> {
        let export = self
            .by_name
            .lock()
            .expect("exports lock")
            .remove(name)
            .ok_or_else(|| BdevError::NotFound(format!("nbd export {name}")))?;
        export.stop.cancel();
        export.bdev.remove_export(&export.owner_tag());
        tracing::info!(export = name, "NBD export stopped");
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<Arc<Export>> {
        self.by_name
            .lock()
            .expect("exports lock")
            .get(name)
            .cloned()
    }

    /// The export an empty name selects: the only one, if there is exactly one.
    pub fn default_export(&self) -> Option<Arc<Export>> {
        let exports = self.by_name.lock().expect("exports lock");
        if exports.len() == 1 {
            exports.values().next().cloned()
        } else {
            None
        }
    }

    pub fn list(&self) -> Vec<Arc<Export>> {
        self.by_name
            .lock()
            .expect("exports lock")
            .values()
            .cloned()
            .collect()
    }
}

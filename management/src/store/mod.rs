//! Persistent service state in sled under `<state>/management/db`:
//! accounts, service settings and the storage model's desired state
//! (volumes, initiator endpoints, connections). Every write is flushed to disk before
//! the call returns, so a response never acknowledges state that a
//! `kill -9` right after it would lose.
//!
//! When the state file system is full the store turns *read-only*: sled
//! cannot open a database there (nor go on writing one that hit ENOSPC),
//! so it serves a copy taken outside that file system ([`snapshot`]) and
//! refuses every write with [`StoreError::Full`] until
//! [`Store::try_recover`] finds room and reopens the real database.

mod snapshot;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored value under {key} is unreadable: {source}")]
    Decode {
        key: String,
        source: serde_json::Error,
    },
    /// Writes are refused while the state file system is full.
    #[error("{0}")]
    Full(String),
}

/// One named collection of JSON values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Accounts,
    Settings,
    Volumes,
    Pools,
    Endpoints,
    Connections,
    Tasks,
    Subscriptions,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Accounts => "accounts",
            Table::Settings => "settings",
            Table::Volumes => "volumes",
            Table::Pools => "pools",
            Table::Endpoints => "endpoints",
            Table::Connections => "connections",
            Table::Tasks => "tasks",
            Table::Subscriptions => "subscriptions",
        }
    }
}

/// sled's page cache (its default is 1 GiB).
const STORE_CACHE_BYTES: u64 = 4 << 20;

/// Free bytes the state file system needs before the real database is
/// opened again after it was full.
pub const RECOVERY_FREE_BYTES: u64 = 4 << 20;

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// The database in use: the real one, or the copy while read-only.
    db: RwLock<sled::Db>,
    /// Set while the state file system is full (writes refused).
    read_only: RwLock<Option<ReadOnly>>,
}

struct ReadOnly {
    /// Why, for the answers to refused writes.
    reason: String,
    /// The copy being served (gone with this).
    _snapshot: Option<snapshot::Snapshot>,
}

fn open_db(dir: &Path) -> Result<sled::Db, sled::Error> {
    // The store holds accounts and settings, kilobytes: a small page
    // cache is plenty and keeps the service's RSS small.
    sled::Config::new()
        .path(dir)
        .cache_capacity(STORE_CACHE_BYTES)
        .open()
}

impl Store {
    /// Opens the database in `dir`; on a full file system, a read-only
    /// copy of it (see the module docs).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let (db, read_only) = match open_db(dir) {
            Ok(db) => (db, None),
            Err(e) if snapshot::is_out_of_space(&e) => {
                let (db, read_only) = Self::open_copy(dir, &e)?;
                (db, Some(read_only))
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                db: RwLock::new(db),
                read_only: RwLock::new(read_only),
            }),
        })
    }

    /// A copy of the database in `dir`, opened, after `cause`.
    fn open_copy(dir: &Path, cause: &sled::Error) -> Result<(sled::Db, ReadOnly), StoreError> {
        let reason = format!(
            "the state file system holding {} is full ({cause}): changes cannot be recorded \
             until space is freed there; what is recorded is still served",
            dir.display()
        );
        tracing::error!("{reason}");
        let snapshot = snapshot::copy(dir).map_err(|e| {
            StoreError::Full(format!("{reason}; no copy could be made to serve it: {e}"))
        })?;
        let db = open_db(&snapshot.dir)?;
        tracing::warn!(copy = %snapshot.dir.display(), "serving a read-only copy of the management database");
        Ok((
            db,
            ReadOnly {
                reason,
                _snapshot: Some(snapshot),
            },
        ))
    }

    /// Why writes are refused, while they are.
    pub fn read_only_reason(&self) -> Option<String> {
        self.inner
            .read_only
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|r| r.reason.clone())
    }

    fn db(&self) -> sled::Db {
        self.inner
            .db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The database to write to, unless writes are refused.
    fn writable(&self) -> Result<sled::Db, StoreError> {
        match self.read_only_reason() {
            Some(reason) => Err(StoreError::Full(reason)),
            None => Ok(self.db()),
        }
    }

    /// What a failed write means: a database that ran out of space is
    /// swapped for a read-only copy (sled keeps failing after one I/O
    /// error, so it is not used again until reopened).
    fn write_failed(&self, error: sled::Error) -> StoreError {
        if !snapshot::is_out_of_space(&error) {
            return error.into();
        }
        let mut read_only = self
            .inner
            .read_only
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(already) = read_only.as_ref() {
            return StoreError::Full(already.reason.clone());
        }
        match Self::open_copy(&self.inner.dir, &error) {
            Ok((copy, state)) => {
                let reason = state.reason.clone();
                *self.inner.db.write().unwrap_or_else(|e| e.into_inner()) = copy;
                *read_only = Some(state);
                StoreError::Full(reason)
            }
            Err(e) => {
                // Keep the failed database: reads may still work from its cache.
                let reason = e.to_string();
                *read_only = Some(ReadOnly {
                    reason: reason.clone(),
                    _snapshot: None,
                });
                StoreError::Full(reason)
            }
        }
    }

    /// While read-only: reopens the real database once its file system has
    /// [`RECOVERY_FREE_BYTES`] free again. True if writes are taken now.
    pub fn try_recover(&self) -> bool {
        if self.read_only_reason().is_none() {
            return true;
        }
        let free = nix::sys::statvfs::statvfs(self.inner.dir.parent().unwrap_or(&self.inner.dir))
            .map(|s| crate::storage::free_space::available_bytes(&s))
            .unwrap_or(0);
        if free < RECOVERY_FREE_BYTES {
            return false;
        }
        // The copy (or the failed database) stays in use until this works.
        match open_db(&self.inner.dir) {
            Ok(db) => {
                *self.inner.db.write().unwrap_or_else(|e| e.into_inner()) = db;
                *self
                    .inner
                    .read_only
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = None;
                tracing::info!(
                    dir = %self.inner.dir.display(),
                    "the state file system has room again: the management database takes changes again"
                );
                true
            }
            Err(e) => {
                tracing::debug!("the management database does not reopen yet: {e}");
                false
            }
        }
    }

    fn tree(&self, table: Table) -> Result<sled::Tree, StoreError> {
        Ok(self.db().open_tree(table.name())?)
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let Some(bytes) = self.tree(table)?.get(key)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Decode {
                key: key.to_string(),
                source,
            })
    }

    pub fn list<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<T>, StoreError> {
        self.tree(table)?
            .iter()
            .map(|entry| {
                let (key, bytes) = entry?;
                serde_json::from_slice(&bytes).map_err(|source| StoreError::Decode {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    source,
                })
            })
            .collect()
    }

    /// Stores `value` under `key` and waits until it is on disk.
    pub async fn put<T: Serialize>(
        &self,
        table: Table,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).expect("stored types serialise");
        let db = self.writable()?;
        let written = match db.open_tree(table.name()) {
            Ok(tree) => tree.insert(key, bytes).map(drop),
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => db.flush_async().await.map(drop),
            Err(e) => Err(e),
        }
        .map_err(|e| self.write_failed(e))
    }

    /// The next number of counter `name` (1, 2, ...), durably: a number is
    /// never handed out twice, even across restarts.
    pub async fn next_id(&self, name: &str) -> Result<u64, StoreError> {
        let key = format!("next_id.{name}");
        let decode = |bytes: Option<&[u8]>| {
            bytes
                .and_then(|b| serde_json::from_slice::<u64>(b).ok())
                .unwrap_or(1)
        };
        let db = self.writable()?;
        let previous = db
            .open_tree(Table::Settings.name())
            .and_then(|tree| {
                tree.fetch_and_update(&key, |bytes| {
                    let next = decode(bytes) + 1;
                    Some(serde_json::to_vec(&next).expect("numbers serialise"))
                })
            })
            .map_err(|e| self.write_failed(e))?;
        db.flush_async().await.map_err(|e| self.write_failed(e))?;
        Ok(decode(previous.as_deref()))
    }

    /// Removes `key`, durably; true if it existed.
    pub async fn remove(&self, table: Table, key: &str) -> Result<bool, StoreError> {
        let db = self.writable()?;
        let existed = db
            .open_tree(table.name())
            .and_then(|tree| tree.remove(key))
            .map_err(|e| self.write_failed(e))?
            .is_some();
        db.flush_async().await.map_err(|e| self.write_failed(e))?;
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn values_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .put(Table::Settings, "a", &serde_json::json!({"x": 1}))
                .await
                .unwrap();
            store.put(Table::Settings, "b", &2u32).await.unwrap();
            assert!(store.remove(Table::Settings, "b").await.unwrap());
        }
        // sled's flusher thread lets go of the file lock shortly after drop.
        let store = (0..100)
            .find_map(|_| {
                Store::open(dir.path()).ok().or_else(|| {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    None
                })
            })
            .expect("the database reopens");
        assert_eq!(store.next_id("volume").await.unwrap(), 1);
        assert_eq!(store.next_id("volume").await.unwrap(), 2);
        let a: serde_json::Value = store.get(Table::Settings, "a").unwrap().unwrap();
        assert_eq!(a["x"], 1);
        assert_eq!(store.get::<u32>(Table::Settings, "b").unwrap(), None);
    }
}

//! Persistent service state in sled under `<state>/management/db`:
//! accounts, service settings and the storage model's desired state
//! (volumes, initiator endpoints, connections). Every write is flushed to disk before
//! the call returns, so a response never acknowledges state that a
//! `kill -9` right after it would lose.

use std::path::Path;

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
}

/// One named collection of JSON values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Accounts,
    Settings,
    Volumes,
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
            Table::Endpoints => "endpoints",
            Table::Connections => "connections",
            Table::Tasks => "tasks",
            Table::Subscriptions => "subscriptions",
        }
    }
}

/// sled's page cache (its default is 1 GiB).
const STORE_CACHE_BYTES: u64 = 4 << 20;

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        // The store holds accounts and settings, kilobytes: a small page
        // cache is plenty and keeps the service's RSS small.
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(STORE_CACHE_BYTES)
            .open()?;
        Ok(Self { db })
    }

    fn tree(&self, table: Table) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(table.name())?)
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
        self.tree(table)?.insert(key, bytes)?;
        self.db.flush_async().await?;
        Ok(())
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
        let previous = self
            .tree(Table::Settings)?
            .fetch_and_update(&key, |bytes| {
                let next = decode(bytes) + 1;
                Some(serde_json::to_vec(&next).expect("numbers serialise"))
            })?;
        self.db.flush_async().await?;
        Ok(decode(previous.as_deref()))
    }

    /// Removes `key`, durably; true if it existed.
    pub async fn remove(&self, table: Table, key: &str) -> Result<bool, StoreError> {
        let existed = self.tree(table)?.remove(key)?.is_some();
        self.db.flush_async().await?;
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

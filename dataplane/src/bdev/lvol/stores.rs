//! The open lvol stores of this dataplane, and the steps every
//! `bdev_lvol_*` method shares: find a store or an lvol, register an
//! lvol's bdev. Bounded by the bdevs a dataplane has (one store per base).

use shoal_appliance::locks::Recover;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::store::StoreError;
use super::vbdev::{LvolBdev, Lvs};
use crate::bdev::{Bdev, BdevError, BdevRegistry, BdevSpec};

/// Open stores by uuid.
static STORES: Mutex<BTreeMap<Uuid, Arc<Lvs>>> = Mutex::new(BTreeMap::new());

pub fn add(lvs: Arc<Lvs>) {
    let uuid = lvs.read(|s| s.uuid());
    STORES.locked().insert(uuid, lvs);
}

pub fn remove(uuid: Uuid) -> Option<Arc<Lvs>> {
    STORES.locked().remove(&uuid)
}

pub fn list() -> Vec<Arc<Lvs>> {
    STORES.locked().values().cloned().collect()
}

/// A store by uuid or by name.
pub fn find(uuid: Option<Uuid>, name: Option<&str>) -> Result<Arc<Lvs>, BdevError> {
    let stores = STORES.locked();
    let found = match (uuid, name) {
        (Some(uuid), _) => stores.get(&uuid).cloned(),
        (None, Some(name)) => stores
            .values()
            .find(|lvs| lvs.read(|s| s.name() == name))
            .cloned(),
        (None, None) => {
            return Err(BdevError::Invalid(
                "name the lvol store by uuid or lvs_name".into(),
            ));
        }
    };
    found.ok_or_else(|| {
        BdevError::NotFound(format!(
            "lvol store {}",
            uuid.map(|u| u.to_string())
                .or(name.map(str::to_string))
                .unwrap_or_default()
        ))
    })
}

/// The lvol named `name`: its bdev's name (the lvol uuid) or
/// `lvs_name/lvol_name`, SPDK's alias.
pub fn lvol(registry: &BdevRegistry, name: &str) -> Result<(Arc<Lvs>, Uuid), BdevError> {
    if let Some((lvs_name, lvol_name)) = name.split_once('/') {
        let lvs = find(None, Some(lvs_name))?;
        let uuid = lvs
            .read(|s| s.find(lvol_name).map(|l| l.uuid()))
            .ok_or_else(|| BdevError::NotFound(name.to_string()))?;
        return Ok((lvs, uuid));
    }
    let bdev = registry.get(name)?;
    let lvol = bdev
        .backend()
        .as_any()
        .and_then(|any| any.downcast_ref::<LvolBdev>())
        .ok_or_else(|| BdevError::Invalid(format!("{name} is not an lvol")))?;
    Ok((Arc::clone(lvol.lvs()), lvol.lvol()))
}

/// Registers the bdev of lvol `uuid` of `lvs`, named by its uuid as
/// SPDK names it.
pub fn register(
    registry: &BdevRegistry,
    lvs: &Arc<Lvs>,
    uuid: Uuid,
) -> Result<Arc<Bdev>, BdevError> {
    let (read_only, clusters) = lvs
        .read(|s| {
            s.get(uuid)
                .map(|l| (l.record.read_only, l.record.size_clusters))
        })
        .ok_or(BdevError::NotFound(uuid.to_string()))?;
    let block_size = lvs.base().block_size();
    let cluster_blocks = lvs.geometry().cluster_bytes / u64::from(block_size);
    registry.register(
        BdevSpec {
            name: uuid.to_string(),
            uuid: Some(uuid),
            block_size,
            num_blocks: clusters * cluster_blocks,
        },
        Box::new(LvolBdev::new(Arc::clone(lvs), uuid, read_only)),
    )
}

/// The JSON-RPC view of a store error.
pub fn error(error: StoreError) -> BdevError {
    super::vbdev::store_error(error)
}

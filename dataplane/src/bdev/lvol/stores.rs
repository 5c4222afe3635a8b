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

/// Registers the bdev of lvol `uuid` of `lvs`, named by its uuid and
/// aliased `lvs_name/lvol_name`, as SPDK names them.
pub fn register(
    registry: &BdevRegistry,
    lvs: &Arc<Lvs>,
    uuid: Uuid,
) -> Result<Arc<Bdev>, BdevError> {
    let (read_only, clusters, alias) = lvs
        .read(|s| {
            s.get(uuid).map(|l| {
                let alias = format!("{}/{}", s.name(), l.name());
                (l.record.read_only, l.record.size_clusters, alias)
            })
        })
        .ok_or(BdevError::NotFound(uuid.to_string()))?;
    let block_size = lvs.base().block_size();
    let cluster_blocks = lvs.geometry().cluster_bytes / u64::from(block_size);
    let bdev = registry.register(
        BdevSpec {
            name: uuid.to_string(),
            uuid: Some(uuid),
            block_size,
            num_blocks: clusters * cluster_blocks,
        },
        Box::new(LvolBdev::new(Arc::clone(lvs), uuid, read_only)),
    )?;
    if let Err(error) = registry.add_alias(bdev.name(), &alias) {
        let _ = registry.unregister(bdev.name(), "lvol");
        return Err(error);
    }
    Ok(bdev)
}

/// Examines `base` for the lvol module (after a restart the bases come
/// back first, then this): opens the store it holds, adds it and
/// registers a bdev for each of its lvols. `Ok(None)`: no store there.
/// All or nothing: a store whose name or uuid is already open here (a
/// copy of a base) or whose lvol bdevs cannot all be registered is closed
/// again. Runs on a reactor.
pub async fn examine(
    registry: &BdevRegistry,
    base: Arc<Bdev>,
) -> Result<Option<Arc<Lvs>>, BdevError> {
    let Some(lvs) = Lvs::examine(base).await? else {
        return Ok(None);
    };
    let (uuid, name, lvols) = lvs.read(|s| {
        let lvols: Vec<Uuid> = s.lvols().map(|l| l.uuid()).collect();
        (s.uuid(), s.name().to_string(), lvols)
    });
    let clash = {
        let stores = STORES.locked();
        stores.contains_key(&uuid) || stores.values().any(|o| o.read(|s| s.name() == name))
    };
    if clash {
        lvs.close();
        return Err(BdevError::Exists(format!(
            "lvol store {name} ({uuid}), found on {}",
            lvs.base().name()
        )));
    }
    let mut registered = Vec::with_capacity(lvols.len());
    for lvol in lvols {
        match register(registry, &lvs, lvol) {
            Ok(bdev) => registered.push(bdev),
            Err(error) => {
                for bdev in registered {
                    // Just registered, nothing claimed them yet.
                    let _ = registry.unregister(bdev.name(), "lvol");
                }
                lvs.close();
                return Err(error);
            }
        }
    }
    add(Arc::clone(&lvs));
    Ok(Some(lvs))
}

/// The JSON-RPC view of a store error.
pub fn error(error: StoreError) -> BdevError {
    super::vbdev::store_error(error)
}

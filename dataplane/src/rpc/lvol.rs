//! lvol methods: SPDK's `bdev_lvol_*` (create and list stores; create,
//! snapshot, clone, resize, inflate, decouple, list and delete lvols).
//!
//! Every change does metadata I/O on the store's base, so it runs on
//! reactor 0, and answers only once the change is on the base.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use shoal_appliance::jsonrpc::{Router, RpcError};

use super::{Context, method, on_reactor, parse_uuid};
use crate::bdev::BdevError;
use crate::bdev::lvol::store::StoreOptions;
use crate::bdev::lvol::stores;
use crate::bdev::lvol::vbdev::Lvs;

pub fn register(router: Router, context: &Arc<Context>) -> Router {
    let router = method(router, "bdev_lvol_create_lvstore", context, create_lvstore);
    let router = method(router, "bdev_lvol_get_lvstores", context, get_lvstores);
    let router = method(router, "bdev_lvol_delete_lvstore", context, delete_lvstore);
    let router = method(router, "bdev_lvol_create", context, create);
    let router = method(router, "bdev_lvol_snapshot", context, snapshot);
    let router = method(router, "bdev_lvol_clone", context, clone);
    let router = method(router, "bdev_lvol_resize", context, resize);
    let router = method(router, "bdev_lvol_inflate", context, |c, p: Delete| {
        inflate(c, p, true)
    });
    let router = method(
        router,
        "bdev_lvol_decouple_parent",
        context,
        |c, p: Delete| inflate(c, p, false),
    );
    let router = method(router, "bdev_lvol_get_lvols", context, get_lvols);
    method(router, "bdev_lvol_delete", context, delete)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateLvstore {
    bdev_name: String,
    lvs_name: String,
    /// Cluster size in bytes (SPDK's name).
    cluster_sz: Option<u64>,
    /// SPDK clears the base on create; this store never reads a data
    /// cluster it did not write first, so only "none" and "unmap" are
    /// taken, and both mean "leave the data blocks as they are".
    clear_method: Option<String>,
}

async fn create_lvstore(context: Arc<Context>, p: CreateLvstore) -> Result<Value, RpcError> {
    if let Some(method) = p.clear_method.as_deref()
        && !matches!(method, "none" | "unmap")
    {
        return Err(RpcError::invalid_params(format!(
            "clear_method {method:?} is not one of none, unmap"
        )));
    }
    if stores::find(None, Some(&p.lvs_name)).is_ok() {
        return Err(BdevError::Exists(format!("lvol store {}", p.lvs_name)).into());
    }
    let base = context.registry.get(&p.bdev_name)?;
    let mut options = StoreOptions::new(&p.lvs_name);
    if let Some(bytes) = p.cluster_sz {
        options.cluster_bytes = bytes;
    }
    let lvs = on_reactor(&context, move || async move {
        Lvs::create(base, options).await.map_err(RpcError::from)
    })
    .await?;
    let uuid = lvs.read(|s| s.uuid());
    stores::add(lvs);
    Ok(json!(uuid.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreName {
    uuid: Option<String>,
    lvs_name: Option<String>,
}

fn describe_store(lvs: &Lvs) -> Value {
    let geometry = lvs.geometry();
    lvs.read(|s| {
        json!({
            "uuid": s.uuid().to_string(),
            "name": s.name(),
            "base_bdev": lvs.base().name(),
            "total_data_clusters": geometry.total_clusters,
            "free_clusters": s.free_clusters(),
            "block_size": lvs.base().block_size(),
            "cluster_size": geometry.cluster_bytes,
        })
    })
}

/// The stores `p` names, or all of them when it names none.
fn named_stores(p: &StoreName) -> Result<Vec<Arc<Lvs>>, RpcError> {
    if p.uuid.is_none() && p.lvs_name.is_none() {
        return Ok(stores::list());
    }
    Ok(vec![stores::find(
        parse_uuid(p.uuid.as_deref())?,
        p.lvs_name.as_deref(),
    )?])
}

async fn get_lvstores(_context: Arc<Context>, p: StoreName) -> Result<Value, RpcError> {
    let list = named_stores(&p)?;
    Ok(Value::Array(
        list.iter()
            .map(|lvs| describe_store(lvs.as_ref()))
            .collect(),
    ))
}

async fn delete_lvstore(_context: Arc<Context>, p: StoreName) -> Result<Value, RpcError> {
    let lvs = stores::find(parse_uuid(p.uuid.as_deref())?, p.lvs_name.as_deref())?;
    let (uuid, lvols) = lvs.read(|s| (s.uuid(), s.lvols().count()));
    if lvols > 0 {
        return Err(BdevError::Busy {
            name: format!("lvol store {}", lvs.read(|s| s.name().to_string())),
            user: format!("{lvols} lvols; delete them first"),
        }
        .into());
    }
    stores::remove(uuid);
    lvs.close();
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    lvol_name: String,
    size_in_mib: u64,
    thin_provision: Option<bool>,
    uuid: Option<String>,
    lvs_name: Option<String>,
    clear_method: Option<String>,
}

async fn create(context: Arc<Context>, p: Create) -> Result<Value, RpcError> {
    if let Some(method) = p.clear_method.as_deref()
        && !matches!(method, "none" | "unmap" | "write_zeroes")
    {
        return Err(RpcError::invalid_params(format!(
            "clear_method {method:?} is not one of none, unmap, write_zeroes"
        )));
    }
    let lvs = stores::find(parse_uuid(p.uuid.as_deref())?, p.lvs_name.as_deref())?;
    let cluster_bytes = lvs.geometry().cluster_bytes;
    let bytes = p
        .size_in_mib
        .checked_mul(1 << 20)
        .ok_or_else(|| RpcError::invalid_params("size_in_mib overflows"))?;
    let clusters = bytes.div_ceil(cluster_bytes);
    let thin = p.thin_provision.unwrap_or(false);
    let registry = Arc::clone(&context.registry);
    let name = p.lvol_name;
    on_reactor(&context, move || async move {
        // A thick lvol's clusters are zeroed before they are its own,
        // whatever `clear_method` says (see Lvs::create_lvol).
        let uuid = lvs
            .create_lvol(&name, clusters, thin)
            .await
            .map_err(stores::error)?;
        let bdev = stores::register(&registry, &lvs, uuid)?;
        Ok(json!(bdev.name()))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    lvol_name: String,
    snapshot_name: String,
}

async fn snapshot(context: Arc<Context>, p: Snapshot) -> Result<Value, RpcError> {
    let (lvs, origin) = stores::lvol(&context.registry, &p.lvol_name)?;
    let registry = Arc::clone(&context.registry);
    on_reactor(&context, move || async move {
        let snapshot = lvs
            .snapshot(origin, &p.snapshot_name)
            .await
            .map_err(stores::error)?;
        let bdev = stores::register(&registry, &lvs, snapshot)?;
        Ok(json!(bdev.name()))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloneParams {
    snapshot_name: String,
    clone_name: String,
}

async fn clone(context: Arc<Context>, p: CloneParams) -> Result<Value, RpcError> {
    let (lvs, snapshot) = stores::lvol(&context.registry, &p.snapshot_name)?;
    let registry = Arc::clone(&context.registry);
    on_reactor(&context, move || async move {
        let clone = lvs
            .change(|s| s.clone_snapshot(snapshot, &p.clone_name))
            .await
            .map_err(stores::error)?;
        let bdev = stores::register(&registry, &lvs, clone)?;
        Ok(json!(bdev.name()))
    })
    .await
}

async fn get_lvols(_context: Arc<Context>, p: StoreName) -> Result<Value, RpcError> {
    let list = named_stores(&p)?;
    let mut lvols = Vec::new();
    for lvs in list {
        let cluster_bytes = lvs.geometry().cluster_bytes;
        lvs.read(|s| {
            for l in s.lvols() {
                lvols.push(json!({
                    "alias": format!("{}/{}", s.name(), l.name()),
                    "uuid": l.uuid().to_string(),
                    "name": l.name(),
                    "is_thin_provisioned": l.record.thin,
                    "is_snapshot": l.record.read_only,
                    "is_clone": l.record.parent.is_some(),
                    "is_esnap_clone": false,
                    "num_allocated_clusters": l.allocated_clusters(),
                    "size_bytes": l.record.size_clusters * cluster_bytes,
                    "lvs": {"name": s.name(), "uuid": s.uuid().to_string()},
                }));
            }
        });
    }
    Ok(Value::Array(lvols))
}

/// A method that names one lvol.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Delete {
    name: String,
}

async fn delete(context: Arc<Context>, p: Delete) -> Result<Value, RpcError> {
    let (lvs, uuid) = stores::lvol(&context.registry, &p.name)?;
    // Refusals the store would make come first, so the bdev is not gone
    // from the registry for an lvol that stays.
    let clones: Vec<String> =
        lvs.read(|s| s.children(uuid).map(|c| c.name().to_string()).collect());
    // One child takes the snapshot's clusters over (see LvolStore::delete).
    if clones.len() > 1 {
        return Err(BdevError::Busy {
            name: p.name,
            user: format!("clones {}; delete or inflate them first", clones.join(", ")),
        }
        .into());
    }
    let bdev = context.registry.unregister(&uuid.to_string(), "lvol")?;
    let id = bdev.id();
    context
        .reactors
        .call_all(move || crate::bdev::channel::release_channel(id))
        .await;
    on_reactor(&context, move || async move {
        lvs.delete(uuid).await.map_err(stores::error)?;
        Ok(json!(true))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Resize {
    name: String,
    size_in_mib: u64,
}

/// Grows online (the bdev grows in place and NVMe-oF hosts are told).
/// A bdev never shrinks under its users, so a shrink takes the bdev away
/// and registers it again at the new size: refused (EBUSY) while it is
/// exported or claimed.
async fn resize(context: Arc<Context>, p: Resize) -> Result<Value, RpcError> {
    let (lvs, uuid) = stores::lvol(&context.registry, &p.name)?;
    let bdev = context.registry.get(&uuid.to_string())?;
    let clusters = p
        .size_in_mib
        .checked_mul(1 << 20)
        .map(|bytes| bytes.div_ceil(lvs.geometry().cluster_bytes))
        .ok_or_else(|| RpcError::invalid_params("size_in_mib overflows"))?;
    let blocks = clusters * (lvs.geometry().cluster_bytes / u64::from(bdev.block_size()));
    if blocks >= bdev.num_blocks() {
        let store = Arc::clone(&lvs);
        on_reactor(&context, move || async move {
            store.resize(uuid, clusters).await.map_err(stores::error)?;
            Ok(())
        })
        .await?;
        bdev.grow(blocks)?;
        return Ok(super::bdev::grown(&context, &bdev));
    }
    let gone = context.registry.unregister(&uuid.to_string(), "lvol")?;
    let id = gone.id();
    context
        .reactors
        .call_all(move || crate::bdev::channel::release_channel(id))
        .await;
    let registry = Arc::clone(&context.registry);
    on_reactor(&context, move || async move {
        let resized = lvs.resize(uuid, clusters).await.map_err(stores::error);
        // Back at whatever size the store now records, shrunk or not.
        stores::register(&registry, &lvs, uuid)?;
        resized?;
        Ok(json!(true))
    })
    .await
}

/// `bdev_lvol_inflate` (every cluster becomes the lvol's own: thick) and
/// `bdev_lvol_decouple_parent` (only what the chain holds; stays thin).
async fn inflate(context: Arc<Context>, p: Delete, all_clusters: bool) -> Result<Value, RpcError> {
    let (lvs, uuid) = stores::lvol(&context.registry, &p.name)?;
    on_reactor(&context, move || async move {
        lvs.inflate(uuid, all_clusters)
            .await
            .map_err(stores::error)?;
        Ok(json!(true))
    })
    .await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::rpc::router;
    use crate::rpc::tests::test_context;

    #[tokio::test]
    async fn stores_lvols_snapshots_and_clones_through_the_methods() {
        let context = test_context();
        let rpc = router(std::sync::Arc::clone(&context));
        let call = |method: &'static str, params: serde_json::Value| {
            let rpc = &rpc;
            async move { rpc.call(method, Some(params)).await }
        };
        call(
            "bdev_malloc_create",
            json!({"name": "lvbase", "num_blocks": 32768, "block_size": 512}),
        )
        .await
        .unwrap();
        let lvs = call(
            "bdev_lvol_create_lvstore",
            json!({"bdev_name": "lvbase", "lvs_name": "rpclvs", "cluster_sz": 1048576}),
        )
        .await
        .unwrap();
        let again = call(
            "bdev_lvol_create_lvstore",
            json!({"bdev_name": "lvbase", "lvs_name": "rpclvs"}),
        )
        .await
        .unwrap_err();
        assert_eq!(
            again.code,
            -i64::from(nix::libc::EEXIST),
            "{}",
            again.message
        );

        let stores = call("bdev_lvol_get_lvstores", json!({"lvs_name": "rpclvs"}))
            .await
            .unwrap();
        assert_eq!(stores[0]["uuid"], lvs);
        assert_eq!(stores[0]["cluster_size"], 1048576);
        let total = stores[0]["total_data_clusters"].as_u64().unwrap();
        assert_eq!(stores[0]["free_clusters"], total);

        // Thin: more than the store holds, nothing allocated.
        let thin = call(
            "bdev_lvol_create",
            json!({"lvol_name": "thin", "size_in_mib": 64, "thin_provision": true, "lvs_name": "rpclvs"}),
        )
        .await
        .unwrap();
        let thick = call(
            "bdev_lvol_create",
            json!({"lvol_name": "thick", "size_in_mib": 3, "uuid": lvs}),
        )
        .await
        .unwrap();
        let stores = call("bdev_lvol_get_lvstores", json!({})).await.unwrap();
        assert_eq!(stores[0]["free_clusters"], total - 3);
        let full = call(
            "bdev_lvol_create",
            json!({"lvol_name": "huge", "size_in_mib": 64, "lvs_name": "rpclvs"}),
        )
        .await
        .unwrap_err();
        assert_eq!(full.code, -i64::from(nix::libc::ENOSPC), "{}", full.message);

        let snapshot = call(
            "bdev_lvol_snapshot",
            json!({"lvol_name": "rpclvs/thin", "snapshot_name": "snap"}),
        )
        .await
        .unwrap();
        let clone = call(
            "bdev_lvol_clone",
            json!({"snapshot_name": snapshot, "clone_name": "clone"}),
        )
        .await
        .unwrap();
        let lvols = call("bdev_lvol_get_lvols", json!({"lvs_name": "rpclvs"}))
            .await
            .unwrap();
        let by_name = |name: &str| {
            lvols
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["name"] == name)
                .unwrap()
                .clone()
        };
        assert_eq!(by_name("snap")["is_snapshot"], true);
        assert_eq!(by_name("clone")["is_clone"], true);
        assert_eq!(by_name("thin")["uuid"], thin);
        assert_eq!(by_name("thick")["is_thin_provisioned"], false);
        assert_eq!(by_name("thin")["alias"], "rpclvs/thin");

        let bdevs = call(
            "bdev_get_bdevs",
            json!({"name": snapshot.as_str().unwrap()}),
        )
        .await
        .unwrap();
        assert_eq!(bdevs[0]["supported_io_types"]["write"], false, "read-only");
        assert_eq!(bdevs[0]["aliases"], json!(["rpclvs/snap"]));
        let by_alias = call("bdev_get_bdevs", json!({"name": "rpclvs/thin"}))
            .await
            .unwrap();
        assert_eq!(by_alias[0]["name"], thin);

        let refused = call("bdev_lvol_delete", json!({"name": snapshot}))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code,
            -i64::from(nix::libc::EBUSY),
            "{}",
            refused.message
        );
        assert!(refused.message.contains("clone"), "{}", refused.message);
        let busy = call("bdev_lvol_delete_lvstore", json!({"lvs_name": "rpclvs"}))
            .await
            .unwrap_err();
        assert_eq!(busy.code, -i64::from(nix::libc::EBUSY), "{}", busy.message);
        for name in [&clone, &thin, &snapshot, &thick] {
            call("bdev_lvol_delete", json!({"name": name}))
                .await
                .unwrap();
        }
        call("bdev_lvol_delete_lvstore", json!({"lvs_name": "rpclvs"}))
            .await
            .unwrap();
        // The base is free again.
        call("bdev_malloc_delete", json!({"name": "lvbase"}))
            .await
            .unwrap();
        context.reactors.shutdown();
    }

    #[tokio::test]
    async fn bdev_examine_finds_a_store_and_its_lvols_again() {
        let context = test_context();
        let rpc = router(std::sync::Arc::clone(&context));
        let call = |method: &'static str, params: serde_json::Value| {
            let rpc = &rpc;
            async move { rpc.call(method, Some(params)).await }
        };
        for base in ["exbase", "exempty"] {
            call(
                "bdev_malloc_create",
                json!({"name": base, "num_blocks": 32768, "block_size": 512}),
            )
            .await
            .unwrap();
        }
        let lvs = call(
            "bdev_lvol_create_lvstore",
            json!({"bdev_name": "exbase", "lvs_name": "exlvs", "cluster_sz": 1048576}),
        )
        .await
        .unwrap();
        let thin = call(
            "bdev_lvol_create",
            json!({"lvol_name": "thin", "size_in_mib": 8, "thin_provision": true, "lvs_name": "exlvs"}),
        )
        .await
        .unwrap();
        let snapshot = call(
            "bdev_lvol_snapshot",
            json!({"lvol_name": thin, "snapshot_name": "snap"}),
        )
        .await
        .unwrap();

        // What a restart leaves: the base, and no store or lvol open.
        let uuid = uuid::Uuid::parse_str(lvs.as_str().unwrap()).unwrap();
        let open = crate::bdev::lvol::stores::remove(uuid).unwrap();
        for lvol in [&thin, &snapshot] {
            context
                .registry
                .unregister(lvol.as_str().unwrap(), "lvol")
                .unwrap();
        }
        open.close();
        assert!(
            call("bdev_lvol_get_lvstores", json!({"lvs_name": "exlvs"}))
                .await
                .is_err()
        );

        assert_eq!(
            call("bdev_examine", json!({"name": "exempty"}))
                .await
                .unwrap(),
            true
        );
        assert_eq!(
            call("bdev_examine", json!({"name": "exbase"}))
                .await
                .unwrap(),
            true
        );
        let stores = call("bdev_lvol_get_lvstores", json!({"lvs_name": "exlvs"}))
            .await
            .unwrap();
        assert_eq!(stores[0]["uuid"], lvs);
        let lvols = call("bdev_lvol_get_lvols", json!({"lvs_name": "exlvs"}))
            .await
            .unwrap();
        let mut names: Vec<_> = lvols
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].clone())
            .collect();
        names.sort_by_key(|n| n.to_string());
        assert_eq!(names, [json!("snap"), json!("thin")]);
        let bdevs = call(
            "bdev_get_bdevs",
            json!({"name": snapshot.as_str().unwrap()}),
        )
        .await
        .unwrap();
        assert_eq!(
            bdevs[0]["supported_io_types"]["write"], false,
            "still read-only"
        );

        // Examined twice: the base is the open store's.
        let twice = call("bdev_examine", json!({"name": "exbase"}))
            .await
            .unwrap_err();
        assert_eq!(
            twice.code,
            -i64::from(nix::libc::EBUSY),
            "{}",
            twice.message
        );
        // The empty base was left unclaimed.
        call("bdev_malloc_delete", json!({"name": "exempty"}))
            .await
            .unwrap();

        for name in [&thin, &snapshot] {
            call("bdev_lvol_delete", json!({"name": name}))
                .await
                .unwrap();
        }
        call("bdev_lvol_delete_lvstore", json!({"lvs_name": "exlvs"}))
            .await
            .unwrap();
        call("bdev_malloc_delete", json!({"name": "exbase"}))
            .await
            .unwrap();
        context.reactors.shutdown();
    }

    #[tokio::test]
    async fn resize_grows_online_and_shrinks_only_what_nothing_holds() {
        let context = test_context();
        let rpc = router(std::sync::Arc::clone(&context));
        let call = |method: &'static str, params: serde_json::Value| {
            let rpc = &rpc;
            async move { rpc.call(method, Some(params)).await }
        };
        call(
            "bdev_malloc_create",
            json!({"name": "rsbase", "num_blocks": 32768, "block_size": 512}),
        )
        .await
        .unwrap();
        call(
            "bdev_lvol_create_lvstore",
            json!({"bdev_name": "rsbase", "lvs_name": "rslvs", "cluster_sz": 1048576}),
        )
        .await
        .unwrap();
        let lvol = call(
            "bdev_lvol_create",
            json!({"lvol_name": "v", "size_in_mib": 2, "thin_provision": true, "lvs_name": "rslvs"}),
        )
        .await
        .unwrap();
        let name = lvol.as_str().unwrap().to_string();
        let size = |bdevs: serde_json::Value| bdevs[0]["num_blocks"].as_u64().unwrap();
        let blocks = || call("bdev_get_bdevs", json!({"name": name.clone()}));

        call(
            "bdev_lvol_resize",
            json!({"name": "rslvs/v", "size_in_mib": 5}),
        )
        .await
        .unwrap();
        assert_eq!(size(blocks().await.unwrap()), 5 * 2048);
        call("bdev_lvol_resize", json!({"name": lvol, "size_in_mib": 1}))
            .await
            .unwrap();
        assert_eq!(size(blocks().await.unwrap()), 2048);

        // A bdev that something holds does not shrink under it.
        let bdev = context.registry.get(&name).unwrap();
        bdev.claim("test holder").unwrap();
        let busy = call("bdev_lvol_resize", json!({"name": lvol, "size_in_mib": 1}))
            .await
            .unwrap();
        assert_eq!(busy, true, "the same size is no shrink");
        let refused = call("bdev_lvol_resize", json!({"name": lvol, "size_in_mib": 0}))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code,
            -i64::from(nix::libc::EBUSY),
            "{}",
            refused.message
        );
        bdev.release_claim();
        let zero = call("bdev_lvol_resize", json!({"name": lvol, "size_in_mib": 0}))
            .await
            .unwrap_err();
        assert_eq!(zero.code, -i64::from(nix::libc::EINVAL), "{}", zero.message);
        // Refused in the store: the bdev is back at its size.
        assert_eq!(size(blocks().await.unwrap()), 2048);

        for method in ["bdev_lvol_inflate", "bdev_lvol_decouple_parent"] {
            call(method, json!({"name": lvol})).await.unwrap();
        }
        let lvols = call("bdev_lvol_get_lvols", json!({"lvs_name": "rslvs"}))
            .await
            .unwrap();
        assert_eq!(lvols[0]["is_thin_provisioned"], false, "inflated");
        assert_eq!(lvols[0]["num_allocated_clusters"], 1);

        call("bdev_lvol_delete", json!({"name": lvol}))
            .await
            .unwrap();
        call("bdev_lvol_delete_lvstore", json!({"lvs_name": "rslvs"}))
            .await
            .unwrap();
        call("bdev_malloc_delete", json!({"name": "rsbase"}))
            .await
            .unwrap();
        context.reactors.shutdown();
    }
}

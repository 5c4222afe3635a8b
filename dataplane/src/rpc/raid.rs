//! raid methods: SPDK's `bdev_raid_*` (create, delete, list, resize, add
//! and remove a base bdev, options) and Shoal's consistency check.
//!
//! Creating a mirrored raid and changing its legs do I/O (superblocks,
//! bitmaps), so those run on reactor 0, where the raid's background
//! processes then run too.

use std::sync::Arc;

use nix::errno::Errno;
use serde::Deserialize;
use serde_json::{Value, json};
use shoal_appliance::jsonrpc::{Router, RpcError};

use super::bdev::{Named, delete, grown};
use super::{Context, method, on_reactor, parse_uuid};
use crate::bdev::BdevError;
use crate::bdev::raid::Redundant;
use crate::bdev::raid::process::{self, RaidOptions};
use crate::bdev::raid::{RaidConfig, RaidLevel, create_raid};

pub fn register(router: Router, context: &Arc<Context>) -> Router {
    let router = method(router, "bdev_raid_create", context, raid_create);
    let router = method(router, "bdev_raid_delete", context, |c, p: Named| {
        delete(c, p, "raid")
    });
    let router = method(router, "bdev_raid_get_bdevs", context, raid_get_bdevs);
    let router = method(router, "bdev_raid_resize", context, raid_resize);
    let router = method(router, "bdev_raid_add_base_bdev", context, add_base_bdev);
    let router = method(
        router,
        "bdev_raid_remove_base_bdev",
        context,
        remove_base_bdev,
    );
    let router = method(router, "bdev_raid_set_options", context, set_options);
    method(
        router,
        "bdev_raid_check_consistency",
        context,
        check_consistency,
    )
}

#[derive(Deserialize)]
#[serde(untagged)]
enum BaseBdevs {
    List(Vec<String>),
    Spaced(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RaidCreate {
    name: String,
    raid_level: String,
    base_bdevs: BaseBdevs,
    strip_size_kb: Option<u32>,
    uuid: Option<String>,
    superblock: Option<bool>,
}

async fn raid_create(context: Arc<Context>, p: RaidCreate) -> Result<Value, RpcError> {
    let level = RaidLevel::parse(&p.raid_level).ok_or_else(|| {
        RpcError::invalid_params(format!(
            "raid_level {:?} is not one of raid0, raid1, raid10, raid5f, raid6, concat",
            p.raid_level
        ))
    })?;
    let base_bdevs = match p.base_bdevs {
        BaseBdevs::List(list) => list,
        BaseBdevs::Spaced(text) => text.split_whitespace().map(str::to_string).collect(),
    };
    let strip_size_kb = match (level, p.strip_size_kb) {
        (RaidLevel::Raid1, size) => size.unwrap_or(0),
        (_, Some(size)) => size,
        (_, None) => {
            return Err(RpcError::invalid_params(format!(
                "{} needs strip_size_kb",
                level.name()
            )));
        }
    };
    let config = RaidConfig {
        name: p.name,
        level,
        strip_size_kb,
        base_bdevs,
        uuid: parse_uuid(p.uuid.as_deref())?,
        superblock: p.superblock.unwrap_or(false),
    };
    let registry = Arc::clone(&context.registry);
    on_reactor(&context, move || async move {
        create_raid(&registry, config).await?;
        Ok(())
    })
    .await?;
    Ok(json!(true))
}

/// Grows a raid0 bdev as far as its legs have grown.
async fn raid_resize(context: Arc<Context>, p: Named) -> Result<Value, RpcError> {
    let bdev = context.registry.get(&p.name)?;
    if bdev.backend().module() != "raid" {
        return Err(RpcError::errno(
            Errno::EINVAL,
            format!("{} is not a raid bdev", p.name),
        ));
    }
    let room = bdev.backend().growth_room().ok_or_else(|| {
        RpcError::errno(
            Errno::EINVAL,
            format!("{} cannot grow (only raid0 grows in place)", p.name),
        )
    })?;
    bdev.grow(room)?;
    Ok(grown(&context, &bdev))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RaidGetBdevs {
    category: String,
}

async fn raid_get_bdevs(context: Arc<Context>, p: RaidGetBdevs) -> Result<Value, RpcError> {
    if !["all", "online", "configuring", "offline"].contains(&p.category.as_str()) {
        return Err(RpcError::invalid_params(format!(
            "category {:?} is not one of all, online, configuring, offline",
            p.category
        )));
    }
    let raids: Vec<Value> = context
        .registry
        .list()
        .iter()
        .filter(|b| b.backend().module() == "raid")
        .filter_map(|b| b.backend().driver_specific().map(|(_, info)| info))
        .filter(|info| p.category == "all" || info["state"] == p.category.as_str())
        .collect();
    Ok(json!(raids))
}

/// The redundant raid named `name`.
fn redundant(context: &Context, name: &str) -> Result<Arc<crate::bdev::Bdev>, RpcError> {
    let bdev = context.registry.get(name)?;
    if Redundant::of(&bdev).is_none() {
        return Err(RpcError::errno(
            Errno::EINVAL,
            format!("{name} is not a raid1, raid10, raid5f or raid6 bdev"),
        ));
    }
    Ok(bdev)
}

fn redundant_of(bdev: &crate::bdev::Bdev) -> Redundant<'_> {
    Redundant::of(bdev).expect("checked by redundant()")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBaseBdev {
    raid_bdev: String,
    base_bdev: String,
}

async fn add_base_bdev(context: Arc<Context>, p: AddBaseBdev) -> Result<Value, RpcError> {
    let raid = redundant(&context, &p.raid_bdev)?;
    let registry = Arc::clone(&context.registry);
    on_reactor(&context, move || async move {
        redundant_of(&raid)
            .add_base_bdev(&registry, &p.base_bdev)
            .await
            .map_err(RpcError::from)
    })
    .await?;
    Ok(json!(true))
}

async fn remove_base_bdev(context: Arc<Context>, p: Named) -> Result<Value, RpcError> {
    let raid = context
        .registry
        .list()
        .into_iter()
        .find(|b| {
            Redundant::of(b)
                .is_some_and(|raid| raid.legs().present().iter().any(|leg| leg.name() == p.name))
        })
        .ok_or_else(|| {
            RpcError::from(BdevError::NotFound(format!(
                "{} as a leg of a redundant raid",
                p.name
            )))
        })?;
    on_reactor(&context, move || async move {
        redundant_of(&raid)
            .remove_base_bdev(&p.name)
            .await
            .map_err(RpcError::from)
    })
    .await?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetOptions {
    process_window_size_kb: Option<u32>,
    process_max_bandwidth_mb_sec: Option<u32>,
}

async fn set_options(_context: Arc<Context>, p: SetOptions) -> Result<Value, RpcError> {
    let current = process::options();
    let wanted = RaidOptions {
        process_window_size_kb: p
            .process_window_size_kb
            .unwrap_or(current.process_window_size_kb),
        process_max_bandwidth_mb_sec: p
            .process_max_bandwidth_mb_sec
            .unwrap_or(current.process_max_bandwidth_mb_sec),
    };
    process::set_options(wanted).map_err(RpcError::invalid_params)?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckConsistency {
    name: String,
    repair: Option<bool>,
}

/// Starts a check of the mirrors or the parity; `bdev_raid_get_bdevs` shows its
/// progress and, under `shoal.last_check`, its result.
async fn check_consistency(context: Arc<Context>, p: CheckConsistency) -> Result<Value, RpcError> {
    let raid = redundant(&context, &p.name)?;
    let repair = p.repair.unwrap_or(false);
    on_reactor(&context, move || async move {
        redundant_of(&raid)
            .request_check(repair)
            .map_err(|e| RpcError::errno(Errno::EBUSY, e))
    })
    .await?;
    Ok(json!(true))
}

//! NBD export methods: `nbd_start_disk`, `nbd_stop_disk`, `nbd_get_disks`.
//!
//! SPDK's methods attach a bdev to a kernel `/dev/nbdX`; here a bdev
//! becomes a named export of this cluster's NBD server, and `nbd_device`
//! names that export (it defaults to the bdev name).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use shoal_appliance::jsonrpc::{Router, RpcError};

use super::{Context, method};

pub fn register(router: Router, context: &Arc<Context>) -> Router {
    let router = method(router, "nbd_start_disk", context, start_disk);
    let router = method(router, "nbd_stop_disk", context, stop_disk);
    method(router, "nbd_get_disks", context, get_disks)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartDisk {
    bdev_name: String,
    nbd_device: Option<String>,
    read_only: Option<bool>,
}

async fn start_disk(context: Arc<Context>, p: StartDisk) -> Result<Value, RpcError> {
    let bdev = context.registry.get(&p.bdev_name)?;
    let name = p.nbd_device.unwrap_or_else(|| p.bdev_name.clone());
    let export = context
        .exports
        .start(&name, bdev, p.read_only.unwrap_or(false))?;
    Ok(json!(export.name))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StopDisk {
    nbd_device: String,
}

async fn stop_disk(context: Arc<Context>, p: StopDisk) -> Result<Value, RpcError> {
    context.exports.stop(&p.nbd_device)?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetDisks {
    nbd_device: Option<String>,
}

async fn get_disks(context: Arc<Context>, p: GetDisks) -> Result<Value, RpcError> {
    let exports = match p.nbd_device {
        Some(name) => vec![context.exports.get(&name).ok_or_else(|| {
            RpcError::errno(
                nix::errno::Errno::ENODEV,
                format!("nbd export {name} not found"),
            )
        })?],
        None => context.exports.list(),
    };
    Ok(Value::Array(exports.iter().map(|e| e.describe()).collect()))
}

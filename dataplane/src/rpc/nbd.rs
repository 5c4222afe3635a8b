//! NBD export methods: `nbd_start_disk`, `nbd_stop_disk`, `nbd_get_disks`,
//! `nbd_disk_add_host`, `nbd_disk_remove_host`; and the TLS keys of NBD
//! initiators: `nbd_add_psk`, `nbd_remove_psk`, `nbd_get_psks`.
//!
//! SPDK's methods attach a bdev to a kernel `/dev/nbdX`; here a bdev
//! becomes a named export of this cluster's NBD server, and `nbd_device`
//! names that export (it defaults to the bdev name). SPDK's NBD has no
//! TLS: the host list and PSK methods are this server's own, named after
//! `nvmf_subsystem_add_host`. Keys are read from files and never returned.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use shoal_appliance::jsonrpc::{Router, RpcError};

use super::{Context, method};

pub fn register(router: Router, context: &Arc<Context>) -> Router {
    let router = method(router, "nbd_start_disk", context, start_disk);
    let router = method(router, "nbd_stop_disk", context, stop_disk);
    let router = method(router, "nbd_get_disks", context, get_disks);
    let router = method(router, "nbd_disk_add_host", context, add_host);
    let router = method(router, "nbd_disk_remove_host", context, remove_host);
    let router = method(router, "nbd_add_psk", context, add_psk);
    let router = method(router, "nbd_remove_psk", context, remove_psk);
    method(router, "nbd_get_psks", context, get_psks)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartDisk {
    bdev_name: String,
    nbd_device: Option<String>,
    read_only: Option<bool>,
    /// PSK identities that may reach the export over TLS; without any,
    /// only loopback clients may.
    #[serde(default)]
    hosts: Vec<String>,
}

async fn start_disk(context: Arc<Context>, p: StartDisk) -> Result<Value, RpcError> {
    let bdev = context.registry.get(&p.bdev_name)?;
    let name = p.nbd_device.unwrap_or_else(|| p.bdev_name.clone());
    let export = context
        .exports
        .start(&name, bdev, p.read_only.unwrap_or(false), &p.hosts)?;
    Ok(json!(export.name))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskHost {
    nbd_device: String,
    host: String,
}

fn export(context: &Context, name: &str) -> Result<Arc<crate::nbd::exports::Export>, RpcError> {
    context.exports.get(name).ok_or_else(|| {
        RpcError::errno(
            nix::errno::Errno::ENODEV,
            format!("nbd export {name} not found"),
        )
    })
}

async fn add_host(context: Arc<Context>, p: DiskHost) -> Result<Value, RpcError> {
    export(&context, &p.nbd_device)?.add_host(&p.host)?;
    Ok(json!(true))
}

async fn remove_host(context: Arc<Context>, p: DiskHost) -> Result<Value, RpcError> {
    export(&context, &p.nbd_device)?.remove_host(&p.host)?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddPsk {
    identity: String,
    /// A file in psktool's format (`identity:hexkey` lines), mode 0600.
    key_path: std::path::PathBuf,
}

async fn add_psk(context: Arc<Context>, p: AddPsk) -> Result<Value, RpcError> {
    context.exports.add_psk(&p.identity, &p.key_path)?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemovePsk {
    identity: String,
}

async fn remove_psk(context: Arc<Context>, p: RemovePsk) -> Result<Value, RpcError> {
    context.exports.remove_psk(&p.identity)?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetPsks {}

/// The identities that have keys; never the keys.
async fn get_psks(context: Arc<Context>, _: GetPsks) -> Result<Value, RpcError> {
    let identities = context.exports.keyring().identities();
    Ok(Value::Array(
        identities
            .into_iter()
            .map(|identity| json!({"identity": identity}))
            .collect(),
    ))
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
        Some(name) => vec![export(&context, &name)?],
        None => context.exports.list(),
    };
    Ok(Value::Array(exports.iter().map(|e| e.describe()).collect()))
}

//! Inter-cluster methods: remote bdevs and the rings' statistics.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use shoal_appliance::jsonrpc::{Router, RpcError};

use super::bdev::{Named, delete, grown};
use super::{Context, NoParams, method, parse_uuid};
use crate::bdev::remote::{RemoteSpec, create_remote, resize_remote, set_target};
use crate::interconnect::Interconnect;

pub fn register(router: Router, context: &Arc<Context>) -> Router {
    let router = method(router, "bdev_remote_create", context, remote_create);
    let router = method(router, "bdev_remote_delete", context, |c, p: Named| {
        delete(c, p, "remote")
    });
    let router = method(router, "bdev_remote_resize", context, remote_resize);
    let router = method(router, "bdev_remote_set_target", context, remote_set_target);
    method(router, "interconnect_get_stats", context, get_stats)
}

fn interconnect(context: &Context) -> Result<&Interconnect, RpcError> {
    context.interconnect.as_ref().ok_or_else(|| {
        RpcError::errno(
            nix::errno::Errno::ENOTSUP,
            "this dataplane runs without the inter-cluster rings (no --doorbells from shoald)",
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteCreate {
    name: String,
    /// The data cluster that owns the bdev.
    cluster: u32,
    /// The bdev's name on that cluster.
    remote_bdev: String,
    uuid: Option<String>,
    /// How long I/O waits while the other cluster is not running (ms, 0 =
    /// fail at once, up to `MAX_HOLD_TIMEOUT_MS`).
    #[serde(default)]
    hold_timeout_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteSetTarget {
    name: String,
    cluster: u32,
    remote_bdev: String,
}

async fn remote_create(context: Arc<Context>, p: RemoteCreate) -> Result<Value, RpcError> {
    let interconnect = interconnect(&context)?;
    let spec = RemoteSpec {
        name: p.name,
        uuid: parse_uuid(p.uuid.as_deref())?,
        cluster: p.cluster,
        remote_bdev: p.remote_bdev,
        hold_timeout_ms: p.hold_timeout_ms,
    };
    let bdev = create_remote(&context.registry, interconnect, spec).await?;
    Ok(json!(bdev.name()))
}

/// Grows a remote bdev to the size of its bdev on the other cluster.
async fn remote_resize(context: Arc<Context>, p: Named) -> Result<Value, RpcError> {
    let interconnect = interconnect(&context)?;
    let bdev = resize_remote(&context.registry, interconnect, &p.name).await?;
    Ok(grown(&context, &bdev))
}

/// Repoints a remote bdev at another cluster's bdev of the same geometry.
async fn remote_set_target(context: Arc<Context>, p: RemoteSetTarget) -> Result<Value, RpcError> {
    let interconnect = interconnect(&context)?;
    set_target(
        &context.registry,
        interconnect,
        &p.name,
        p.cluster,
        &p.remote_bdev,
    )
    .await?;
    Ok(json!(true))
}

async fn get_stats(context: Arc<Context>, _: NoParams) -> Result<Value, RpcError> {
    Ok(interconnect(&context)?.describe())
}

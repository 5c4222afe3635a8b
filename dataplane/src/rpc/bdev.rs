//! bdev methods: create/delete per module, raid, listing and statistics.

use std::sync::Arc;

use nix::errno::Errno;
use serde::Deserialize;
use serde_json::{Value, json};
use shoal_appliance::jsonrpc::{Router, RpcError};

use super::{Context, method, on_reactor, parse_uuid};
use crate::bdev::channel::submit;
use crate::bdev::channel::{channel_stats, release_channel};
use crate::bdev::malloc::create_malloc;
use crate::bdev::null::create_null;
use crate::bdev::part::{PartConfig, create_part};
use crate::bdev::stats::{IoStats, TICK_RATE};
use crate::bdev::uring::{UringConfig, create_uring};
use crate::bdev::{Bdev, BdevSpec, IoBuf, IoError, IoKind, IoRequest};

pub fn register(router: Router, context: &Arc<Context>) -> Router {
    let router = method(router, "bdev_malloc_create", context, malloc_create);
    let router = method(router, "bdev_malloc_delete", context, |c, p: Named| {
        delete(c, p, "malloc")
    });
    let router = method(router, "bdev_null_create", context, null_create);
    let router = method(router, "bdev_null_delete", context, |c, p: Named| {
        delete(c, p, "null")
    });
    let router = method(router, "bdev_uring_create", context, uring_create);
    let router = method(router, "bdev_uring_delete", context, |c, p: Named| {
        delete(c, p, "uring")
    });
    let router = method(router, "bdev_part_create", context, part_create);
    let router = method(router, "bdev_part_resize", context, part_resize);
    let router = method(router, "bdev_part_delete", context, |c, p: Named| {
        delete(c, p, "part")
    });
    let router = method(router, "bdev_examine", context, examine);
    let router = super::raid::register(router, context);
    let router = super::lvol::register(router, context);
    let router = method(router, "bdev_write_zeroes", context, |c, p| {
        range_io(c, p, IoKind::WriteZeroes)
    });
    let router = method(router, "bdev_unmap", context, |c, p| {
        range_io(c, p, IoKind::Unmap)
    });
    let router = method(router, "bdev_get_bdevs", context, get_bdevs);
    method(router, "bdev_get_iostat", context, get_iostat)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Named {
    pub(super) name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MallocCreate {
    name: Option<String>,
    num_blocks: u64,
    block_size: u32,
    uuid: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Examine {
    name: String,
}

/// SPDK's `bdev_examine`: bdevs are not examined when they are made (a
/// part starting at block 0 of a drive holding a store would otherwise
/// open that store a second time), only when this asks. The lvol module is the only one that examines: a base
/// holding a store gets the store opened and its lvols' bdevs registered.
async fn examine(context: Arc<Context>, p: Examine) -> Result<Value, RpcError> {
    let base = context.registry.get(&p.name)?;
    let registry = context.registry.clone();
    on_reactor(&context, move || async move {
        crate::bdev::lvol::stores::examine(&registry, base)
            .await
            .map_err(RpcError::from)
    })
    .await?;
    Ok(json!(true))
}

async fn malloc_create(context: Arc<Context>, p: MallocCreate) -> Result<Value, RpcError> {
    let name = match p.name {
        Some(name) => name,
        // SPDK names unnamed malloc bdevs Malloc0, Malloc1, ...
        None => (0..)
            .map(|i| format!("Malloc{i}"))
            .find(|n| context.registry.get(n).is_err())
            .expect("a free name"),
    };
    let spec = BdevSpec {
        name,
        uuid: parse_uuid(p.uuid.as_deref())?,
        block_size: p.block_size,
        num_blocks: p.num_blocks,
    };
    let bdev = create_malloc(&context.registry, spec)?;
    Ok(json!(bdev.name()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NullCreate {
    name: String,
    num_blocks: u64,
    block_size: u32,
    uuid: Option<String>,
}

async fn null_create(context: Arc<Context>, p: NullCreate) -> Result<Value, RpcError> {
    let spec = BdevSpec {
        name: p.name,
        uuid: parse_uuid(p.uuid.as_deref())?,
        block_size: p.block_size,
        num_blocks: p.num_blocks,
    };
    let bdev = create_null(&context.registry, spec)?;
    Ok(json!(bdev.name()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UringCreate {
    name: String,
    filename: std::path::PathBuf,
    block_size: Option<u32>,
    uuid: Option<String>,
}

async fn uring_create(context: Arc<Context>, p: UringCreate) -> Result<Value, RpcError> {
    let config = UringConfig {
        name: p.name,
        filename: p.filename,
        block_size: p.block_size,
        uuid: parse_uuid(p.uuid.as_deref())?,
    };
    // Opening a file may block briefly; it is the control thread.
    let bdev = create_uring(&context.registry, config)?;
    Ok(json!(bdev.name()))
}

/// SPDK accepts the base bdevs as a list or as one space-separated string.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartCreate {
    name: String,
    base_bdev: String,
    offset_blocks: u64,
    num_blocks: u64,
    uuid: Option<String>,
}

async fn part_create(context: Arc<Context>, p: PartCreate) -> Result<Value, RpcError> {
    let config = PartConfig {
        name: p.name,
        base_bdev: p.base_bdev,
        offset_blocks: p.offset_blocks,
        num_blocks: p.num_blocks,
        uuid: parse_uuid(p.uuid.as_deref())?,
    };
    let bdev = create_part(&context.registry, config)?;
    Ok(json!(bdev.name()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartResize {
    name: String,
    num_blocks: u64,
}

/// Grows a bdev and tells the NVMe-oF hosts that see it.
pub(super) fn grown(context: &Context, bdev: &Bdev) -> Value {
    context.nvmf.bdev_resized(bdev.id());
    json!(true)
}

/// Grows a part into the blocks right after it (if no other part has them).
async fn part_resize(context: Arc<Context>, p: PartResize) -> Result<Value, RpcError> {
    let bdev = context.registry.get(&p.name)?;
    if bdev.backend().module() != "part" {
        return Err(RpcError::errno(
            Errno::ENODEV,
            format!("{} is not a part", p.name),
        ));
    }
    bdev.grow(p.num_blocks)?;
    Ok(grown(&context, &bdev))
}

/// Deletes a bdev of `module` and drops its channels on every reactor.
pub(super) async fn delete(
    context: Arc<Context>,
    p: Named,
    module: &'static str,
) -> Result<Value, RpcError> {
    let bdev = context.registry.unregister(&p.name, module)?;
    let id = bdev.id();
    context.reactors.call_all(move || release_channel(id)).await;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockRange {
    name: String,
    offset_blocks: Option<u64>,
    num_blocks: Option<u64>,
}

/// Largest write-zeroes request sent at once, so a long range never holds
/// one I/O (and the reactor's queue) for long.
const ZEROES_CHUNK_BYTES: u64 = 64 << 20;

/// Size of each write that stands in for write zeroes on a bdev that
/// cannot zero (raid5f and raid6: their parity must follow the zeroes):
/// the largest buffer of the shared pool. The write and the pieces a raid
/// cuts from it then cross to other clusters without a copy; a heap buffer
/// larger than any pool buffer could not cross at all (a remote bdev fails
/// it). On four legs that is five to eight whole stripes per write.
const EMULATED_ZEROES_CHUNK_BYTES: u64 =
    shoal_appliance::region::pool::CLASS_SIZES[shoal_appliance::region::pool::CLASSES - 1];

/// Zeroes (`WriteZeroes`) or deallocates (`Unmap`) a range of a bdev
/// (all of it by default) with requests on reactor 0 and answers when
/// they are durable. The management service scrubs new volumes with
/// write zeroes and runs Volume.Initialize through it, in slices it
/// reports progress on; it unmaps the blocks of a deleted or rolled-back
/// volume so a file drive gives their space back to its file system.
///
/// Like SPDK's bdev layer, write zeroes on a bdev that cannot zero but can
/// write is carried out with writes of zeroes: that is how a new raid5f
/// or raid6 volume is scrubbed through its raid, which keeps the parity.
async fn range_io(context: Arc<Context>, p: BlockRange, kind: IoKind) -> Result<Value, RpcError> {
    let what = if kind == IoKind::Unmap {
        "unmap"
    } else {
        "write zeroes"
    };
    let bdev = context.registry.get(&p.name)?;
    let emulated = kind == IoKind::WriteZeroes
        && !bdev.supports(IoKind::WriteZeroes)
        && bdev.supports(IoKind::Write);
    if !bdev.supports(kind) && !emulated {
        return Err(RpcError::errno(
            Errno::EOPNOTSUPP,
            format!("bdev {} cannot {what}", p.name),
        ));
    }
    let offset = p.offset_blocks.unwrap_or(0);
    let blocks = p
        .num_blocks
        .unwrap_or_else(|| bdev.num_blocks().saturating_sub(offset));
    if offset
        .checked_add(blocks)
        .is_none_or(|end| end > bdev.num_blocks())
        || blocks == 0
    {
        return Err(RpcError::invalid_params(format!(
            "blocks {offset}+{blocks} are not within {}'s {} blocks",
            p.name,
            bdev.num_blocks()
        )));
    }
    let block_size = bdev.block_size();
    let chunk_bytes = if emulated {
        EMULATED_ZEROES_CHUNK_BYTES
    } else {
        ZEROES_CHUNK_BYTES
    };
    let chunk = (chunk_bytes / u64::from(block_size)).max(1);
    let reactor = context
        .reactors
        .get(0)
        .expect("a data cluster has a reactor");
    let target = Arc::clone(&bdev);
    let (done, result) = tokio::sync::oneshot::channel();
    reactor.spawn(move || async move {
        let mut at = offset;
        let end = offset + blocks;
        let mut outcome = Ok(());
        while at < end && outcome.is_ok() {
            let count = chunk.min(end - at);
            let io = if emulated {
                // Zeroed afresh each time: a pool buffer holds whatever
                // its last user left.
                let mut zeroes = IoBuf::for_io((count * u64::from(block_size)) as usize);
                zeroes.as_mut_slice().fill(0);
                IoRequest::write(at, zeroes, block_size)
            } else {
                IoRequest::range(kind, at, count)
            };
            outcome = submit(&target, io).await.result;
            at += count;
        }
        if outcome.is_ok() {
            outcome = submit(&target, IoRequest::range(IoKind::Flush, 0, 0))
                .await
                .result
                .or_else(|e| match e {
                    IoError::NotSupported => Ok(()),
                    e => Err(e),
                });
        }
        let _ = done.send(outcome);
    });
    match result.await {
        Ok(Ok(())) => Ok(json!(true)),
        Ok(Err(e)) => Err(RpcError::errno(
            e.errno(),
            format!("{what} on {} failed: {e}", p.name),
        )),
        Err(_) => Err(RpcError::errno(
            Errno::ESHUTDOWN,
            "the data cluster is stopping",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetBdevs {
    name: Option<String>,
    /// Accepted for rpc.py compatibility; bdevs never appear late here.
    #[allow(dead_code)]
    timeout: Option<u64>,
}

async fn get_bdevs(context: Arc<Context>, p: GetBdevs) -> Result<Value, RpcError> {
    let bdevs = match p.name {
        Some(name) => vec![context.registry.get(&name)?],
        None => context.registry.list(),
    };
    Ok(Value::Array(bdevs.iter().map(|b| b.describe()).collect()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetIostat {
    name: Option<String>,
    per_channel: Option<bool>,
}

async fn get_iostat(context: Arc<Context>, p: GetIostat) -> Result<Value, RpcError> {
    let bdevs: Vec<Arc<Bdev>> = match p.name {
        Some(name) => vec![context.registry.get(&name)?],
        None => context.registry.list(),
    };
    let mut out = Vec::new();
    let mut bytes_copied = 0;
    for bdev in bdevs {
        let id = bdev.id();
        let per_reactor = context.reactors.call_all(move || channel_stats(id)).await;
        let mut total = bdev.retired_stats();
        let mut channels = Vec::new();
        for (reactor, stats) in per_reactor.iter().enumerate() {
            if let Some(stats) = stats {
                total.add(stats);
                channels.push(stats_json(
                    stats,
                    json!({"thread_id": reactor, "thread_name": format!("reactor_{reactor}")}),
                ));
            }
        }
        let copied = bdev.backend().bytes_copied();
        bytes_copied += copied;
        let mut entry = stats_json(
            &total,
            json!({"name": bdev.name(), "inter_cluster_bytes_copied": copied}),
        );
        if p.per_channel == Some(true) {
            entry["channels"] = Value::Array(channels);
        }
        out.push(entry);
    }
    Ok(json!({
        "tick_rate": TICK_RATE,
        "ticks": shoal_appliance::clock::monotonic_ns(),
        "inter_cluster_bytes_copied": bytes_copied,
        "bdevs": out,
    }))
}

fn stats_json(stats: &IoStats, mut base: Value) -> Value {
    if let (Value::Object(base), Value::Object(fields)) =
        (&mut base, serde_json::to_value(stats).expect("stats"))
    {
        base.extend(fields);
    }
    base
}

//! `remote`: a bdev that stands for a bdev of another data cluster (the
//! seed's Remote_vBDEV). Its I/O travels as descriptors through the
//! inter-cluster rings; the payload stays in this cluster's pool buffer,
//! which the other cluster's bdev reads or writes in place.
//!
//! A request whose buffer is not in the pool (the pool was exhausted, or
//! the request is larger than its largest buffer) is copied through a pool
//! buffer: that is the only copy on this path, and it is counted in
//! `bytes_copied`, which `bdev_get_iostat` reports as
//! `inter_cluster_bytes_copied`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use super::{
    BackendChannel, Bdev, BdevBackend, BdevError, BdevRegistry, BdevSpec, IoBuf, IoCompletion,
    IoError, IoFuture, IoKind, IoRequest,
};
use crate::interconnect::{Interconnect, Op, wire};

struct Remote {
    interconnect: Interconnect,
    cluster: u32,
    remote_bdev: String,
    target: u64,
    bytes_copied: Arc<AtomicU64>,
}

/// What `bdev_remote_create` asks for.
pub struct RemoteSpec {
    pub name: String,
    pub uuid: Option<uuid::Uuid>,
    pub cluster: u32,
    pub remote_bdev: String,
}

/// Asks cluster `spec.cluster` for the geometry of `spec.remote_bdev` and
/// registers a bdev standing for it.
pub async fn create_remote(
    registry: &BdevRegistry,
    interconnect: &Interconnect,
    spec: RemoteSpec,
) -> Result<Arc<Bdev>, BdevError> {
    if spec.cluster == interconnect.cluster() || spec.cluster >= interconnect.clusters() {
        return Err(BdevError::Invalid(format!(
            "cluster {} is not another data cluster (this is cluster {} of {})",
            spec.cluster,
            interconnect.cluster(),
            interconnect.clusters()
        )));
    }
    if registry.get(&spec.name).is_ok() {
        return Err(BdevError::Exists(spec.name));
    }
    let target = wire::target_id(&spec.remote_bdev);
    let (block_size, num_blocks) = identify(interconnect, spec.cluster, &spec.remote_bdev).await?;
    let geometry = BdevSpec {
        name: spec.name,
        uuid: spec.uuid,
        block_size,
        num_blocks,
    };
    registry.register(
        geometry,
        Box::new(Remote {
            interconnect: interconnect.clone(),
            cluster: spec.cluster,
            remote_bdev: spec.remote_bdev,
            target,
            bytes_copied: Arc::new(AtomicU64::new(0)),
        }),
    )
}

/// Asks cluster `cluster` for the geometry of its bdev `remote_bdev`:
/// (block size, blocks).
async fn identify(
    interconnect: &Interconnect,
    cluster: u32,
    remote_bdev: &str,
) -> Result<(u32, u64), BdevError> {
    let target = wire::target_id(remote_bdev);
    let identify = interconnect.call(cluster, Op::Identify, target, 0, 0, None, false);
    let answer = tokio::time::timeout(IDENTIFY_TIMEOUT, identify)
        .await
        .map_err(|_| BdevError::Io {
            context: format!(
                "data cluster {cluster} did not answer within {} s",
                IDENTIFY_TIMEOUT.as_secs()
            ),
            source: std::io::Error::from_raw_os_error(libc::ETIMEDOUT),
        })?;
    match -answer.status {
        0 => {}
        libc::ENODEV => {
            return Err(BdevError::NotFound(format!(
                "{remote_bdev} on data cluster {cluster}"
            )));
        }
        errno => {
            return Err(BdevError::Io {
                context: format!("cannot reach data cluster {cluster}"),
                source: std::io::Error::from_raw_os_error(errno),
            });
        }
    }
    Ok((answer.descriptor.buf_len, answer.descriptor.offset_blocks))
}

/// Grows remote bdev `name` to the size its bdev on the other cluster has
/// now (after that one grew).
pub async fn resize_remote(
    registry: &BdevRegistry,
    interconnect: &Interconnect,
    name: &str,
) -> Result<Arc<Bdev>, BdevError> {
    let bdev = registry.get(name)?;
    let Some(("remote", specific)) = bdev.backend().driver_specific() else {
        return Err(BdevError::NotFound(format!("{name} (not a remote bdev)")));
    };
    let cluster = specific["cluster"].as_u64().unwrap_or(u64::MAX) as u32;
    let remote_bdev = specific["remote_bdev"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (block_size, num_blocks) = identify(interconnect, cluster, &remote_bdev).await?;
    if block_size != bdev.block_size() {
        return Err(BdevError::Invalid(format!(
            "{remote_bdev} on data cluster {cluster} now has {block_size}-byte blocks, not {}",
            bdev.block_size()
        )));
    }
    bdev.grow(num_blocks)?;
    Ok(bdev)
}

/// How long `bdev_remote_create` waits for the other cluster.
const IDENTIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl BdevBackend for Remote {
    fn module(&self) -> &'static str {
        "remote"
    }

    fn product_name(&self) -> &'static str {
        "Remote cluster disk"
    }

    /// Every kind is forwarded; the serving bdev refuses what it lacks.
    fn supports(&self, _kind: IoKind) -> bool {
        true
    }

    fn create_channel(&self) -> Box<dyn BackendChannel> {
        Box::new(RemoteChannel {
            interconnect: self.interconnect.clone(),
            cluster: self.cluster,
            target: self.target,
            bytes_copied: Arc::clone(&self.bytes_copied),
        })
    }

    fn driver_specific(&self) -> Option<(&'static str, Value)> {
        Some((
            "remote",
            json!({"cluster": self.cluster, "remote_bdev": self.remote_bdev}),
        ))
    }

    fn bytes_copied(&self) -> u64 {
        self.bytes_copied.load(Ordering::Relaxed)
    }

    /// The size comes from the other cluster (`bdev_remote_resize` asks
    /// it first); requests beyond its bdev are refused there.
    fn prepare_growth(&self, _blocks: u64) -> Result<(), BdevError> {
        Ok(())
    }
}

struct RemoteChannel {
    interconnect: Interconnect,
    cluster: u32,
    target: u64,
    bytes_copied: Arc<AtomicU64>,
}

impl BackendChannel for RemoteChannel {
    fn submit(&self, io: IoRequest) -> IoFuture {
        let interconnect = self.interconnect.clone();
        let cluster = self.cluster;
        let target = self.target;
        let bytes_copied = Arc::clone(&self.bytes_copied);
        Box::pin(async move {
            let IoRequest {
                kind,
                offset_blocks,
                num_blocks,
                buf,
                fua,
            } = io;
            // Zero-copy when the buffer is in the pool; else copy through one.
            let (wire_buf, original) = match buf {
                Some(buf) if buf.region_offset().is_none() => {
                    let mut bounce = IoBuf::for_io(buf.len());
                    if bounce.region_offset().is_none() {
                        tracing::warn!(
                            bytes = buf.len(),
                            "no pool buffer for an inter-cluster request: failing it"
                        );
                        return IoCompletion::new(Some(buf), Err(IoError::Io));
                    }
                    if kind == IoKind::Write {
                        bounce.as_mut_slice().copy_from_slice(buf.as_slice());
                        bytes_copied.fetch_add(buf.len() as u64, Ordering::Relaxed);
                    }
                    (Some(bounce), Some(buf))
                }
                other => (other, None),
            };
            let answer = interconnect
                .call(
                    cluster,
                    Op::from_kind(kind),
                    target,
                    offset_blocks,
                    num_blocks,
                    wire_buf,
                    fua,
                )
                .await;
            let result = wire::error_of(answer.status);
            let buf = match original {
                Some(mut original) => {
                    if kind == IoKind::Read
                        && result.is_ok()
                        && let Some(bounce) = &answer.buf
                    {
                        original.as_mut_slice().copy_from_slice(bounce.as_slice());
                        bytes_copied.fetch_add(original.len() as u64, Ordering::Relaxed);
                    }
                    Some(original)
                }
                None => answer.buf,
            };
            IoCompletion::new(buf, result)
        })
    }
}

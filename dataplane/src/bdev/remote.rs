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
//!
//! **Holding.** A remote bdev created with `hold_timeout_ms` > 0 (the
//! forwarding bdev of a redundant volume on a cluster that is not its
//! owner) does not fail an I/O because its target cluster is not running:
//! while the target's slot says it is not alive, its generation changed
//! under the request, or the target bdev is not there (yet), the I/O —
//! new or in flight — waits and is resubmitted, to the target as it is
//! then (`bdev_remote_set_target` may have repointed it), until the
//! timeout, then fails with EIO. Retrying an unacknowledged block I/O is
//! safe: nothing was acknowledged. At most [`MAX_HELD_REQUESTS`] wait per
//! bdev; beyond that an I/O fails at once, so a dead owner cannot pin all
//! of a cluster's buffers. With `hold_timeout_ms` 0 (raid legs) failures
//! are reported at once, so the raid above fails the leg and goes on.

use shoal_appliance::region::pool::CLASS_SIZES;
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{
    BackendChannel, Bdev, BdevBackend, BdevError, BdevRegistry, BdevSpec, IoBuf, IoCompletion,
    IoError, IoFuture, IoKind, IoRequest,
};
use crate::interconnect::{Interconnect, Op, wire};

/// Longest `hold_timeout_ms` accepted.
pub const MAX_HOLD_TIMEOUT_MS: u64 = 60_000;
/// Most I/Os one remote bdev holds at once (across its reactors); more
/// fail with EIO at once.
pub const MAX_HELD_REQUESTS: usize = 1024;
/// How often a held I/O looks whether its target is reachable again.
/// The poller itself notices a peer's death within its liveness tick; a
/// returning target is a fresh process, so a few ms more do not matter.
const HOLD_POLL: Duration = Duration::from_millis(10);

/// How long a request waits for a pool buffer to bounce its data through
/// while the pool is exhausted by other I/O in flight (back-pressure, not
/// a failure: a raid fails a leg whose I/O fails) before it fails.
pub const POOL_WAIT: Duration = Duration::from_secs(5);

/// How often a request waiting for a pool buffer tries again.
const POOL_POLL: Duration = Duration::from_millis(1);

/// A pool buffer of `len` bytes, waiting up to [`POOL_WAIT`] while the
/// pool is exhausted; `None` when it stays so, or when no buffer class is
/// that large or the pool is closed (waiting would not help).
async fn bounce_buffer(len: usize) -> Option<IoBuf> {
    let deadline = Instant::now() + POOL_WAIT;
    loop {
        if let Some(buf) = IoBuf::from_pool(len) {
            return Some(buf);
        }
        let may_free = crate::pool::get().is_some_and(|pool| pool.is_open())
            && len as u64 <= *CLASS_SIZES.last().expect("classes");
        if !may_free || Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POOL_POLL).await;
    }
}

/// Where the bdev's I/O goes: replaced whole by `bdev_remote_set_target`.
#[derive(Debug, Clone)]
struct Route {
    cluster: u32,
    remote_bdev: String,
    target: u64,
}

impl Route {
    fn new(cluster: u32, remote_bdev: String) -> Self {
        Self {
            cluster,
            target: wire::target_id(&remote_bdev),
            remote_bdev,
        }
    }
}

/// What the bdev and its channels on every reactor share.
struct Shared {
    interconnect: Interconnect,
    route: RwLock<Arc<Route>>,
    /// Bumped after every retarget: channels re-read `route` only then,
    /// so the I/O path takes no lock and touches no shared count.
    route_epoch: AtomicU64,
    /// 0: fail at once.
    hold: Duration,
    held: AtomicUsize,
    bytes_copied: AtomicU64,
}

impl Shared {
    /// The route now. A poisoned lock still holds a whole `Arc` (it is
    /// only ever replaced, never edited in place).
    fn route(&self) -> Arc<Route> {
        Arc::clone(&self.route.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A channel's copy of where I/O goes, `(cluster, target id)`, refreshed
/// when the bdev's route epoch moves. Lives on one reactor.
struct HopCache {
    epoch: Cell<u64>,
    hop: Cell<(u32, u64)>,
}

impl HopCache {
    fn new(shared: &Shared) -> Self {
        let cache = Self {
            epoch: Cell::new(u64::MAX),
            hop: Cell::new((0, 0)),
        };
        cache.hop(shared);
        cache
    }

    fn hop(&self, shared: &Shared) -> (u32, u64) {
        let epoch = shared.route_epoch.load(Ordering::Acquire);
        if epoch != self.epoch.get() {
            let route = shared.route();
            self.hop.set((route.cluster, route.target));
            self.epoch.set(epoch);
        }
        self.hop.get()
    }
}

struct Remote {
    shared: Arc<Shared>,
}

/// What `bdev_remote_create` asks for.
pub struct RemoteSpec {
    pub name: String,
    pub uuid: Option<uuid::Uuid>,
    pub cluster: u32,
    pub remote_bdev: String,
    /// How long an I/O waits for an unreachable target (0: not at all).
    pub hold_timeout_ms: u64,
}

fn check_cluster(interconnect: &Interconnect, cluster: u32) -> Result<(), BdevError> {
    if cluster == interconnect.cluster() || cluster >= interconnect.clusters() {
        return Err(BdevError::Invalid(format!(
            "cluster {cluster} is not another data cluster (this is cluster {} of {})",
            interconnect.cluster(),
            interconnect.clusters()
        )));
    }
    Ok(())
}

/// Asks cluster `spec.cluster` for the geometry of `spec.remote_bdev` and
/// registers a bdev standing for it.
pub async fn create_remote(
    registry: &BdevRegistry,
    interconnect: &Interconnect,
    spec: RemoteSpec,
) -> Result<Arc<Bdev>, BdevError> {
    check_cluster(interconnect, spec.cluster)?;
    if spec.hold_timeout_ms > MAX_HOLD_TIMEOUT_MS {
        return Err(BdevError::Invalid(format!(
            "hold_timeout_ms {} is above the limit of {MAX_HOLD_TIMEOUT_MS}",
            spec.hold_timeout_ms
        )));
    }
    if registry.get(&spec.name).is_ok() {
        return Err(BdevError::Exists(spec.name));
    }
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
            shared: Arc::new(Shared {
                interconnect: interconnect.clone(),
                route: RwLock::new(Arc::new(Route::new(spec.cluster, spec.remote_bdev))),
                route_epoch: AtomicU64::new(0),
                hold: Duration::from_millis(spec.hold_timeout_ms),
                held: AtomicUsize::new(0),
                bytes_copied: AtomicU64::new(0),
            }),
        }),
    )
}

/// `bdev_remote_set_target`: points remote bdev `name` at `remote_bdev`
/// of `cluster` (a redundant volume's new owner). The new target must
/// have the same geometry; I/O held meanwhile goes there.
pub async fn set_target(
    registry: &BdevRegistry,
    interconnect: &Interconnect,
    name: &str,
    cluster: u32,
    remote_bdev: &str,
) -> Result<Arc<Bdev>, BdevError> {
    let bdev = registry.get(name)?;
    let Some(remote) = bdev
        .backend()
        .as_any()
        .and_then(|any| any.downcast_ref::<Remote>())
    else {
        return Err(BdevError::NotFound(format!("{name} (not a remote bdev)")));
    };
    check_cluster(interconnect, cluster)?;
    let (block_size, num_blocks) = identify(interconnect, cluster, remote_bdev).await?;
    if block_size != bdev.block_size() || num_blocks != bdev.num_blocks() {
        return Err(BdevError::Invalid(format!(
            "{remote_bdev} on data cluster {cluster} has {num_blocks} blocks of {block_size} bytes; \
             {name} has {} of {}: the geometry must match",
            bdev.num_blocks(),
            bdev.block_size()
        )));
    }
    let route = Arc::new(Route::new(cluster, remote_bdev.to_string()));
    *remote
        .shared
        .route
        .write()
        .unwrap_or_else(|e| e.into_inner()) = route;
    remote.shared.route_epoch.fetch_add(1, Ordering::Release);
    tracing::info!(bdev = name, cluster, remote_bdev, "remote bdev retargeted");
    Ok(bdev)
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
    if !bdev.backend().as_any().is_some_and(|a| a.is::<Remote>()) {
        return Err(BdevError::NotFound(format!("{name} (not a remote bdev)")));
    }
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
            hops: Rc::new(HopCache::new(&self.shared)),
            shared: Arc::clone(&self.shared),
        })
    }

    fn driver_specific(&self) -> Option<(&'static str, Value)> {
        let route = self.shared.route();
        Some((
            "remote",
            json!({
                "cluster": route.cluster,
                "remote_bdev": route.remote_bdev,
                "hold_timeout_ms": self.shared.hold.as_millis() as u64,
                "held_requests": self.shared.held.load(Ordering::Relaxed),
            }),
        ))
    }

    fn bytes_copied(&self) -> u64 {
        self.shared.bytes_copied.load(Ordering::Relaxed)
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    /// The size comes from the other cluster (`bdev_remote_resize` asks
    /// it first); requests beyond its bdev are refused there.
    fn prepare_growth(&self, _blocks: u64) -> Result<(), BdevError> {
        Ok(())
    }
}

struct RemoteChannel {
    shared: Arc<Shared>,
    hops: Rc<HopCache>,
}

/// Whether a failed attempt may be retried once the target is back: the
/// target cluster was not alive, went away or restarted under the request
/// (its generation changed), or does not have the bdev (a restarted or
/// new owner before its volume is built).
fn unreachable(interconnect: &Interconnect, cluster: u32, before: u64, status: i32) -> bool {
    status == -libc::ENODEV || interconnect.peer_life(cluster) != Some(before)
}

/// One held I/O's place in the bdev's bound; given back on drop.
struct HeldSlot<'a>(&'a AtomicUsize);

impl<'a> HeldSlot<'a> {
    fn take(held: &'a AtomicUsize) -> Option<Self> {
        held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_HELD_REQUESTS).then_some(n + 1)
        })
        .ok()
        .map(|_| Self(held))
    }
}

impl Drop for HeldSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl BackendChannel for RemoteChannel {
    fn submit(&self, io: IoRequest) -> IoFuture {
        let shared = Arc::clone(&self.shared);
        let hops = Rc::clone(&self.hops);
        Box::pin(async move {
            let IoRequest {
                kind,
                offset_blocks,
                num_blocks,
                buf,
                fua,
            } = io;
            // Zero-copy when the buffer is in our arena of the pool; else
            // (a heap buffer, or one a third cluster lent us: a volume's
            // owner passing a forwarded write on to a leg) copy through one.
            let (mut wire_buf, original) = match buf {
                Some(buf) if !buf.in_own_pool() => {
                    let Some(mut bounce) = bounce_buffer(buf.len()).await else {
                        tracing::warn!(
                            bytes = buf.len(),
                            "no pool buffer for an inter-cluster request: failing it"
                        );
                        return IoCompletion::new(Some(buf), Err(IoError::Io));
                    };
                    if kind == IoKind::Write {
                        bounce.as_mut_slice().copy_from_slice(buf.as_slice());
                        shared
                            .bytes_copied
                            .fetch_add(buf.len() as u64, Ordering::Relaxed);
                    }
                    (Some(bounce), Some(buf))
                }
                other => (other, None),
            };
            let has_data = wire_buf.is_some();
            let interconnect = &shared.interconnect;
            let mut held: Option<(HeldSlot<'_>, Instant)> = None;
            let (result, answer_buf) = loop {
                let (cluster, target) = hops.hop(&shared);
                let life = interconnect.peer_life(cluster);
                let attempt = match life {
                    // Not running: with a hold, wait without asking.
                    None if !shared.hold.is_zero() => None,
                    _ => {
                        let answer = interconnect
                            .call(
                                cluster,
                                Op::from_kind(kind),
                                target,
                                offset_blocks,
                                num_blocks,
                                wire_buf.take(),
                                fua,
                            )
                            .await;
                        let retry = !shared.hold.is_zero()
                            && answer.status != 0
                            && life.is_some_and(|before| {
                                unreachable(interconnect, cluster, before, answer.status)
                            });
                        if !retry {
                            break (wire::error_of(answer.status), answer.buf);
                        }
                        Some(answer.buf)
                    }
                };
                if let Some(back) = attempt {
                    // A buffer the poller lost (it stopped) cannot be sent again.
                    if has_data && back.is_none() {
                        break (Err(IoError::Io), None);
                    }
                    wire_buf = back;
                }
                let since = match &held {
                    Some((_, since)) => *since,
                    None => match HeldSlot::take(&shared.held) {
                        Some(slot) => {
                            let now = Instant::now();
                            held = Some((slot, now));
                            now
                        }
                        None => {
                            tracing::warn!(
                                cluster = cluster,
                                "{MAX_HELD_REQUESTS} I/Os already wait for data cluster {}: failing this one",
                                cluster
                            );
                            break (Err(IoError::Io), wire_buf.take());
                        }
                    },
                };
                let left = shared.hold.saturating_sub(since.elapsed());
                if left.is_zero() {
                    tracing::warn!(
                        cluster = cluster,
                        "data cluster {} unreachable for {} ms: failing a held I/O",
                        cluster,
                        shared.hold.as_millis()
                    );
                    break (Err(IoError::Io), wire_buf.take());
                }
                tokio::time::sleep(HOLD_POLL.min(left)).await;
            };
            drop(held);
            let buf = match original {
                Some(mut original) => {
                    if kind == IoKind::Read
                        && result.is_ok()
                        && let Some(bounce) = &answer_buf
                    {
                        original.as_mut_slice().copy_from_slice(bounce.as_slice());
                        shared
                            .bytes_copied
                            .fetch_add(original.len() as u64, Ordering::Relaxed);
                    }
                    Some(original)
                }
                None => answer_buf,
            };
            IoCompletion::new(buf, result)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_slots_are_bounded_and_given_back() {
        let held = AtomicUsize::new(0);
        let slots: Vec<HeldSlot<'_>> = (0..MAX_HELD_REQUESTS)
            .map(|_| HeldSlot::take(&held).expect("below the bound"))
            .collect();
        assert!(HeldSlot::take(&held).is_none(), "one beyond the bound");
        drop(slots);
        assert_eq!(held.load(Ordering::Relaxed), 0);
        assert!(HeldSlot::take(&held).is_some());
    }
}

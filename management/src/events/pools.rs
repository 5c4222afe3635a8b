//! Thin pools running low: ResourceEvent `ResourceWarningThresholdExceeded`
//! when a pool's remaining capacity goes below one of its
//! `LowSpaceWarningThresholdPercents`, `ResourceWarningThresholdCleared`
//! when it is back at or above it, from the store's figures the reconciler
//! last saw. Which thresholds were crossed is `storage::low_space`.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::redfish::message::registry_message;
use crate::resources::storage_pools;
use crate::state::AppState;
use crate::storage::low_space;
use crate::storage::model::VolumeState;

/// How often the pools' space is compared with the last look.
const WATCH_PERIOD: Duration = Duration::from_secs(1);

/// Publishes an event for every threshold a pool's remaining capacity
/// crosses.
pub async fn watch(state: AppState, stop: CancellationToken) {
    // One entry per pool that exists: bounded by `model::MAX_POOLS`.
    let mut seen: BTreeMap<u64, u8> = BTreeMap::new();
    loop {
        if let Ok(desired) = crate::storage::desired(&state) {
            seen.retain(|id, _| desired.pool(*id).is_some());
            for pool in &desired.pools {
                if pool.state != VolumeState::Ready {
                    continue;
                }
                let Some((total, free)) = crate::storage::store_bytes(&state, pool.id) else {
                    continue;
                };
                let now = low_space::remaining_percent(total, free);
                let before = seen.insert(pool.id, now);
                let uri = storage_pools::uri(pool.id);
                let property = format!("{uri}#/RemainingCapacityPercent");
                for crossing in low_space::crossings(&pool.low_space_warning_percents, before, now)
                {
                    let key = if crossing.below {
                        "ResourceWarningThresholdExceeded"
                    } else {
                        "ResourceWarningThresholdCleared"
                    };
                    tracing::info!(
                        pool = pool.id,
                        remaining = now,
                        threshold = crossing.threshold,
                        "{key}"
                    );
                    let message = registry_message(
                        "ResourceEvent",
                        key,
                        &[&property, &crossing.threshold.to_string()],
                    );
                    state.events.publish_message(
                        "ResourceEvent",
                        message,
                        Some((&uri, "StoragePool")),
                    );
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(WATCH_PERIOD) => {}
        }
    }
}

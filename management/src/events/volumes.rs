//! Redundant volumes losing and regaining their redundancy, as
//! StorageDevice events about the volume (`VolumeDegraded`,
//! `VolumeRebuilding`, `VolumeOK`, `VolumeFailure`), from what the
//! reconciler last saw of each volume's raid. Which events a change gives
//! is `storage::health::transition`.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::resources::volumes;
use crate::state::AppState;
use crate::storage::health::{self, VolumeHealth};
use crate::storage::model::VolumeState;

/// How often the volumes' health is compared with the last look (the
/// reconciler refreshes what it saw every `storage::RECONCILE_PERIOD`).
const WATCH_PERIOD: Duration = Duration::from_secs(1);

/// Publishes the events of every redundant volume's health changes.
pub async fn watch(state: AppState, stop: CancellationToken) {
    // One entry per volume that exists: bounded by `model::MAX_VOLUMES`.
    let mut seen: BTreeMap<u64, VolumeHealth> = BTreeMap::new();
    loop {
        if let Ok(desired) = crate::storage::desired(&state) {
            // Deleted volumes are forgotten (an ID is never reused).
            seen.retain(|id, _| desired.volume(*id).is_some());
            for volume in &desired.volumes {
                // A volume being created has no raid yet: not a failure.
                if !volume.raid_type.is_redundant() || volume.state != VolumeState::Ready {
                    continue;
                }
                let Some((now, owner)) = health::observe(&state, volume) else {
                    continue;
                };
                let before = seen.insert(volume.id, now);
                let uri = volumes::uri(volume.id);
                for key in health::transition(before, now) {
                    let message = volumes::health_message(volume.id, key, owner);
                    state
                        .events
                        .publish_message("StorageDevice", message, Some((&uri, "Volume")));
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(WATCH_PERIOD) => {}
        }
    }
}

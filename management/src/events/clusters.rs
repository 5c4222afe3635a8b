//! Data clusters failing and recovering, as events about their storage
//! controllers (`StorageDevice.ControllerFailure` / `ControllerOK`),
//! from the supervisor's status.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::resources::{appliance, storage_controllers};
use crate::state::AppState;

/// How often the supervisor's view is compared with the last one.
const WATCH_PERIOD: Duration = Duration::from_secs(1);

/// A cluster as last seen: running, and how often it was restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    running: bool,
    restarts: u64,
}

/// What happened between two looks at a cluster: (failed, recovered). A
/// cluster restarted between them (faster than the watch period) did both.
fn changes(before: Seen, now: Seen) -> (bool, bool) {
    let restarted = now.restarts > before.restarts;
    let failed = before.running && (!now.running || restarted);
    let recovered = now.running && (!before.running || restarted);
    (failed, recovered)
}

/// Publishes an event whenever a data cluster stops or starts running.
pub async fn watch(state: AppState, stop: CancellationToken) {
    let mut seen: BTreeMap<u32, Seen> = BTreeMap::new();
    loop {
        if let Some(status) = appliance::status(&state).await {
            for cluster in status["clusters"].as_array().into_iter().flatten() {
                let Some(index) = cluster["index"].as_u64().map(|i| i as u32) else {
                    continue;
                };
                let now = Seen {
                    running: cluster["state"] == "running",
                    restarts: cluster["restarts"].as_u64().unwrap_or(0),
                };
                // The first sighting only sets the baseline.
                let Some(before) = seen.insert(index, now) else {
                    continue;
                };
                let (failed, recovered) = changes(before, now);
                if recovered {
                    crate::storage::wake(&state);
                }
                let uri = storage_controllers::uri(index);
                for (happened, key) in [(failed, "ControllerFailure"), (recovered, "ControllerOK")]
                {
                    if happened {
                        state.events.publish(
                            "StorageDevice",
                            key,
                            &[&uri],
                            Some((&uri, "StorageController")),
                        );
                    }
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(WATCH_PERIOD) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quick_restart_is_a_failure_and_a_recovery() {
        let up = |restarts| Seen {
            running: true,
            restarts,
        };
        let down = |restarts| Seen {
            running: false,
            restarts,
        };
        assert_eq!(changes(up(0), up(0)), (false, false));
        assert_eq!(changes(up(0), down(1)), (true, false));
        assert_eq!(changes(down(1), up(1)), (false, true));
        assert_eq!(changes(up(0), up(1)), (true, true));
        assert_eq!(changes(down(3), down(4)), (false, false));
    }
}

//! The health of a redundant volume, read from its raid as the owner
//! cluster describes it, and which StorageDevice registry messages a
//! change of health is announced with. Both are pure, so the policy is
//! tested exactly; the volume health watcher (`events::volumes`) and the
//! Volume resource's `Status.Conditions` only apply it.

use serde_json::Value;

use super::model::{Pool, Volume};
use super::plan;
use crate::state::AppState;
use crate::store::Table;

/// A redundant volume's health, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeHealth {
    /// Every leg in sync.
    Ok,
    /// A leg is being rebuilt (or stale regions resynced): the data is
    /// there, its redundancy is coming back.
    Rebuilding,
    /// A leg is missing or failed and nothing rebuilds it yet.
    Degraded,
    /// No running cluster holds an online raid: the volume serves no I/O.
    Failed,
}

impl VolumeHealth {
    /// From the raid's `bdev_raid_get_bdevs` description; `None` when no
    /// running cluster holds the raid.
    pub fn of_raid(raid: Option<&Value>) -> Self {
        let Some(raid) = raid else {
            return Self::Failed;
        };
        if raid["state"] != "online" {
            return Self::Failed;
        }
        let process = raid["process"]["type"].as_str();
        let leg_rebuilding = raid["shoal"]["legs"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|leg| leg["state"] == "rebuilding");
        // A rebuilding leg also makes the raid `degraded`: it counts as
        // rebuilding, the state that ends by itself.
        if matches!(process, Some("rebuild" | "resync")) || leg_rebuilding {
            Self::Rebuilding
        } else if raid["shoal"]["degraded"] == true {
            Self::Degraded
        } else {
            Self::Ok
        }
    }

    /// The StorageDevice message announcing that the volume is now so.
    pub fn message_key(self) -> &'static str {
        match self {
            Self::Ok => "VolumeOK",
            Self::Rebuilding => "VolumeRebuilding",
            Self::Degraded => "VolumeDegraded",
            Self::Failed => "VolumeFailure",
        }
    }

    /// The StorageDevice message of the volume's `Status.Conditions` entry;
    /// none when it is OK (a healthy volume has no condition).
    pub fn condition_key(self) -> Option<&'static str> {
        (self != Self::Ok).then(|| self.message_key())
    }

    /// Redfish `Status.State` and `Status.Health`.
    pub fn status(self) -> (&'static str, &'static str) {
        match self {
            Self::Ok => ("Enabled", "OK"),
            Self::Rebuilding | Self::Degraded => ("Enabled", "Warning"),
            Self::Failed => ("UnavailableOffline", "Critical"),
        }
    }
}

/// The events (StorageDevice message keys, in order) for a volume seen
/// `before` and then `now`. The first look (`before` is `None`) only sets
/// the baseline: a restarted service does not announce old news.
///
/// Degraded straight to OK means a rebuild ran and ended between two
/// looks (the raid takes a leg back only through a rebuild, and one from
/// the write-intent bitmap can take less than the watch period): it is
/// announced too, so a listener always hears how the volume recovered.
pub fn transition(before: Option<VolumeHealth>, now: VolumeHealth) -> Vec<&'static str> {
    match before {
        None => Vec::new(),
        Some(before) if before == now => Vec::new(),
        Some(VolumeHealth::Degraded) if now == VolumeHealth::Ok => {
            vec!["VolumeRebuilding", "VolumeOK"]
        }
        Some(_) => vec![now.message_key()],
    }
}

/// What the last reconciliation pass saw of a redundant volume: its
/// health, and the cluster holding its raid (the "controller" the
/// StorageDevice messages name). `None` when no pass has looked yet.
///
/// A volume of a storage pool has the health of the pool's volume, whose
/// raid holds it, and is Failed while no cluster has its lvol.
pub fn observe(state: &AppState, volume: &Volume) -> Option<(VolumeHealth, Option<u32>)> {
    let observation = state.storage.observed()?;
    let mut raid_volume = volume.id;
    if let (Some(pool), Some(alias)) = (volume.pool, volume.lvol_alias()) {
        let pool: Option<Pool> = state.store.get(Table::Pools, &pool.to_string()).ok()?;
        let served = observation
            .report
            .views
            .values()
            .any(|view| view.lvols.contains_key(&alias));
        match pool {
            Some(pool) if served => raid_volume = pool.volume,
            _ => return Some((VolumeHealth::Failed, None)),
        }
    }
    let bdev = plan::volume_bdev(raid_volume);
    let held = observation.report.views.iter().find_map(|(cluster, view)| {
        let raid = &view.bdevs.get(&bdev)?["driver_specific"]["raid"];
        raid.is_object().then_some((*cluster, raid))
    });
    Some(match held {
        Some((owner, raid)) => (VolumeHealth::of_raid(Some(raid)), Some(owner)),
        None => (VolumeHealth::Failed, None),
    })
}

#[cfg(test)]
mod tests {
    use super::VolumeHealth::*;
    use super::*;
    use serde_json::json;

    fn raid(state: &str, degraded: bool, process: Option<&str>, legs: &[&str]) -> Value {
        json!({
            "state": state,
            "process": process.map(|p| json!({"type": p, "progress": {"percent": 10.0}})),
            "shoal": {
                "degraded": degraded,
                "legs": legs.iter().map(|s| json!({"state": s})).collect::<Vec<_>>(),
            },
        })
    }

    #[test]
    fn health_follows_the_raid() {
        let cases = [
            (None, Failed),
            (
                Some(raid("offline", false, None, &["online", "online"])),
                Failed,
            ),
            (Some(raid("online", false, None, &["online", "online"])), Ok),
            (
                Some(raid("online", true, None, &["online", "missing"])),
                Degraded,
            ),
            (
                Some(raid("online", true, None, &["online", "failed"])),
                Degraded,
            ),
            (
                Some(raid("online", true, None, &["online", "rebuilding"])),
                Rebuilding,
            ),
            (
                Some(raid(
                    "online",
                    true,
                    Some("rebuild"),
                    &["online", "rebuilding"],
                )),
                Rebuilding,
            ),
            (
                Some(raid("online", false, Some("resync"), &["online", "online"])),
                Rebuilding,
            ),
            // A check reads; it does not change the volume's health.
            (
                Some(raid("online", false, Some("check"), &["online", "online"])),
                Ok,
            ),
        ];
        for (raid, expected) in cases {
            assert_eq!(VolumeHealth::of_raid(raid.as_ref()), expected, "{raid:?}");
        }
    }

    #[test]
    fn each_health_has_its_message_status_and_condition() {
        assert_eq!(
            [Ok, Rebuilding, Degraded, Failed].map(VolumeHealth::message_key),
            [
                "VolumeOK",
                "VolumeRebuilding",
                "VolumeDegraded",
                "VolumeFailure"
            ]
        );
        assert_eq!(
            [Ok, Rebuilding, Degraded, Failed].map(VolumeHealth::condition_key),
            [
                None,
                Some("VolumeRebuilding"),
                Some("VolumeDegraded"),
                Some("VolumeFailure")
            ]
        );
        assert_eq!(
            [Ok, Rebuilding, Degraded, Failed].map(VolumeHealth::status),
            [
                ("Enabled", "OK"),
                ("Enabled", "Warning"),
                ("Enabled", "Warning"),
                ("UnavailableOffline", "Critical")
            ]
        );
    }

    #[test]
    fn transitions_announce_the_new_health() {
        let all = [Ok, Rebuilding, Degraded, Failed];
        for now in all {
            assert_eq!(transition(None, now), Vec::<&str>::new(), "baseline");
            assert_eq!(transition(Some(now), now), Vec::<&str>::new(), "no change");
        }
        let cases: [(VolumeHealth, VolumeHealth, &[&str]); 12] = [
            (Ok, Degraded, &["VolumeDegraded"]),
            (Ok, Rebuilding, &["VolumeRebuilding"]),
            (Ok, Failed, &["VolumeFailure"]),
            (Degraded, Rebuilding, &["VolumeRebuilding"]),
            // Rebuilt between two looks.
            (Degraded, Ok, &["VolumeRebuilding", "VolumeOK"]),
            (Degraded, Failed, &["VolumeFailure"]),
            (Rebuilding, Ok, &["VolumeOK"]),
            // The leg being rebuilt failed again.
            (Rebuilding, Degraded, &["VolumeDegraded"]),
            (Rebuilding, Failed, &["VolumeFailure"]),
            // Reassembled with every leg, or without one, or resyncing.
            (Failed, Ok, &["VolumeOK"]),
            (Failed, Degraded, &["VolumeDegraded"]),
            (Failed, Rebuilding, &["VolumeRebuilding"]),
        ];
        for (before, now, expected) in cases {
            assert_eq!(
                transition(Some(before), now),
                expected,
                "{before:?} -> {now:?}"
            );
        }
    }
}

//! Consistency checks (`Volume.CheckConsistency`): a scrub of a redundant
//! volume's raid on its owner cluster, which compares the mirrors (or the
//! parity) block by block without repairing. Starting one is refused up
//! front when it could not give a meaningful answer (no redundancy, a leg
//! not in sync, a check already running); then it is followed on the
//! owner until the raid reports its result.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::health::{self, VolumeHealth};
use super::model::Volume;
use super::reconcile::Failure;
use super::{StorageError, desired, not_found, plan, running_clusters};
use crate::state::AppState;

/// How often a running check's progress is read from the owner.
const POLL: Duration = Duration::from_millis(250);
/// Longest one call to the owner may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Reads of the owner that may fail in a row before the check counts as
/// lost (a busy reactor may miss one; a dead cluster misses them all, and
/// its raid is assembled again without the check).
const MAX_MISSED_READS: u32 = 8;
/// Reads in a row that may find the raid running no process at all, and
/// no new result, before the check counts as lost (see `follow`).
const MAX_IDLE_READS: u32 = 20;
/// Longest a check is followed: the raid reads every block of every leg,
/// at the dataplane's process rate, so a large volume takes hours; a
/// check that takes longer is reported lost rather than followed forever.
const CHECK_TIMEOUT: Duration = Duration::from_secs(12 * 3600);

/// Why a check was not started.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// RAID0 and None have nothing to compare.
    #[error("{0} volumes hold no redundant data to check")]
    NotRedundant(&'static str),
    /// A leg is missing, failed or being rebuilt: the check would compare
    /// against a leg that is not in sync.
    #[error("{0}")]
    NotInSync(String),
    /// One check at a time per volume.
    #[error("{0}")]
    Running(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What a finished check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckResult {
    pub checked_blocks: u64,
    pub mismatched_blocks: u64,
}

/// The volumes a check runs on: at most one each, so the table is bounded
/// by the volumes (`model::MAX_VOLUMES`).
pub type Checks = std::sync::Mutex<BTreeSet<u64>>;

/// Whether a check of volume `id` runs (its volume is not deleted then).
pub fn running(state: &AppState, id: u64) -> bool {
    state
        .storage
        .checks
        .lock()
        .expect("checks lock")
        .contains(&id)
}

/// A check started on the owner; dropping it frees the volume for the
/// next one.
pub struct RunningCheck {
    state: AppState,
    pub volume: Volume,
    owner: u32,
    socket: PathBuf,
    /// `shoal.last_check.sequence` before the check was asked for: the
    /// result is in when it grows.
    before: u64,
}

impl Drop for RunningCheck {
    fn drop(&mut self) {
        self.state
            .storage
            .checks
            .lock()
            .expect("checks lock")
            .remove(&self.volume.id);
    }
}

/// Starts a check of volume `id` on its owner, or says why not.
pub async fn start_check(state: &AppState, id: u64) -> Result<RunningCheck, CheckError> {
    let volume = desired(state)
        .map_err(StorageError::from)?
        .volume(id)
        .cloned()
        .ok_or_else(|| not_found("volume", id))?;
    if let Some(pool) = volume.pool {
        return Err(CheckError::Storage(StorageError::Invalid {
            property: "Volume",
            value: volume.name.clone(),
            reason: format!(
                "a volume of storage pool {pool} is an lvol, not a raid; check the pool's volume"
            ),
        }));
    }
    if !volume.raid_type.is_redundant() {
        return Err(CheckError::NotRedundant(volume.raid_type.redfish()));
    }
    if !state.storage.checks.lock().expect("checks lock").insert(id) {
        return Err(CheckError::Running(format!(
            "a consistency check of volume {} runs already",
            volume.name
        )));
    }
    // From here on the claim is released by the guard, whatever happens.
    let mut check = RunningCheck {
        state: state.clone(),
        volume,
        owner: 0,
        socket: PathBuf::new(),
        before: 0,
    };
    let unavailable = |why: String| CheckError::Storage(StorageError::Unavailable(why));
    let owner = health::observe(state, &check.volume)
        .and_then(|(_, owner)| owner)
        .ok_or_else(|| unavailable("no running data cluster holds the volume's raid".into()))?;
    let socket = running_clusters(state)
        .await
        .into_iter()
        .find(|(c, _)| *c == owner)
        .map(|(_, s)| s)
        .ok_or_else(|| unavailable(format!("data cluster {owner}, the owner, is not running")))?;
    let name = plan::volume_bdev(id);
    let raid = read_raid(&socket, &name)
        .await
        .map_err(|e| unavailable(format!("data cluster {owner}: {e}")))?;
    match VolumeHealth::of_raid(Some(&raid)) {
        VolumeHealth::Ok => {}
        VolumeHealth::Failed => return Err(unavailable("the volume's raid is offline".into())),
        other => {
            return Err(CheckError::NotInSync(format!(
                "volume {} is {}: a check compares legs in sync; run it once the volume is OK",
                check.volume.name,
                match other {
                    VolumeHealth::Rebuilding => "being rebuilt",
                    _ => "degraded",
                }
            )));
        }
    }
    if raid["process"]["type"] == "check" {
        return Err(CheckError::Running(format!(
            "a consistency check of volume {} runs already on data cluster {owner}",
            check.volume.name
        )));
    }
    check.before = raid["shoal"]["last_check"]["sequence"]
        .as_u64()
        .unwrap_or(0);
    call(
        &socket,
        "bdev_raid_check_consistency",
        json!({"name": name, "repair": false}),
    )
    .await
    .map_err(|e| {
        // The raid refuses a second queued check (EBUSY); anything else
        // means the owner could not take it.
        CheckError::Storage(StorageError::Dataplane(vec![Failure {
            cluster: owner,
            object: name.clone(),
            error: e,
        }]))
    })?;
    tracing::info!(volume = id, owner, "consistency check started");
    check.owner = owner;
    check.socket = socket;
    Ok(check)
}

impl RunningCheck {
    /// Follows the check to its end; `progress` hears its percentage.
    pub async fn follow(self, progress: impl Fn(u8)) -> Result<CheckResult, StorageError> {
        let name = plan::volume_bdev(self.volume.id);
        let lost = |error: String| {
            StorageError::Dataplane(vec![Failure {
                cluster: self.owner,
                object: name.clone(),
                error,
            }])
        };
        let deadline = Instant::now() + CHECK_TIMEOUT;
        let mut missed = 0;
        let mut idle = 0;
        loop {
            tokio::time::sleep(POLL).await;
            if Instant::now() > deadline {
                return Err(lost(format!(
                    "the check did not end within {CHECK_TIMEOUT:?}"
                )));
            }
            let raid = match read_raid(&self.socket, &name).await {
                Ok(raid) => {
                    missed = 0;
                    raid
                }
                Err(e) => {
                    missed += 1;
                    if missed >= MAX_MISSED_READS {
                        return Err(lost(format!(
                            "the owner stopped answering during the check: {e}"
                        )));
                    }
                    continue;
                }
            };
            let last = &raid["shoal"]["last_check"];
            match ended(self.before, last) {
                Some(Ok(result)) => {
                    tracing::info!(
                        volume = self.volume.id,
                        checked = result.checked_blocks,
                        mismatched = result.mismatched_blocks,
                        "consistency check ended"
                    );
                    return Ok(result);
                }
                Some(Err(why)) => return Err(lost(why)),
                None => {}
            }
            // A queued check starts at once unless another process runs,
            // and its end grows the sequence: a raid that stays idle
            // without it was assembled again (its owner restarted) and
            // the check went with the old one.
            idle = if raid["process"].is_null() {
                idle + 1
            } else {
                0
            };
            if idle >= MAX_IDLE_READS {
                return Err(lost(
                    "the raid no longer runs the check (assembled again?)".into(),
                ));
            }
            if raid["process"]["type"] == "check"
                && let Some(percent) = raid["process"]["progress"]["percent"].as_f64()
            {
                progress(percent.clamp(0.0, 100.0) as u8);
            }
        }
    }
}

/// The check's outcome once `last_check` (the raid's report of its last
/// check) is newer than sequence `before`: the counts, or why it stopped.
fn ended(before: u64, last: &Value) -> Option<Result<CheckResult, String>> {
    let sequence = last["sequence"].as_u64()?;
    if sequence <= before {
        return None;
    }
    if last["finished"] != true {
        return Some(Err(
            "the check stopped before the end (a leg failed or the raid stopped)".into(),
        ));
    }
    Some(Ok(CheckResult {
        checked_blocks: last["checked_blocks"].as_u64().unwrap_or(0),
        mismatched_blocks: last["mismatched_blocks"].as_u64().unwrap_or(0),
    }))
}

/// The raid `name` as the cluster behind `socket` describes it.
async fn read_raid(socket: &std::path::Path, name: &str) -> Result<Value, String> {
    let list = call(socket, "bdev_get_bdevs", json!({"name": name})).await?;
    let raid = &list[0]["driver_specific"]["raid"];
    if raid.is_object() {
        Ok(raid.clone())
    } else {
        Err(format!("{name} is not a raid there"))
    }
}

async fn call(socket: &std::path::Path, method: &str, params: Value) -> Result<Value, String> {
    super::volumes::call(socket, method, params, CALL_TIMEOUT).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_has_ended_when_the_raids_report_is_newer() {
        let report = |sequence: u64, finished: bool, mismatched: u64| {
            json!({"checked_blocks": 8192, "mismatched_blocks": mismatched,
                   "repaired": false, "finished": finished, "sequence": sequence})
        };
        // No check ever ended, or only the one before ours.
        assert_eq!(ended(0, &Value::Null), None);
        assert_eq!(ended(3, &report(3, true, 0)), None);
        // Ours, with the same counts as the last one: still told apart.
        assert_eq!(
            ended(3, &report(4, true, 0)),
            Some(Ok(CheckResult {
                checked_blocks: 8192,
                mismatched_blocks: 0
            }))
        );
        assert_eq!(
            ended(0, &report(1, true, 5)),
            Some(Ok(CheckResult {
                checked_blocks: 8192,
                mismatched_blocks: 5
            }))
        );
        assert!(matches!(ended(0, &report(1, false, 0)), Some(Err(_))));
    }
}

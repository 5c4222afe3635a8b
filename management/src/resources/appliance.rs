//! What the management service knows of the appliance it runs in: the
//! supervisor's view (clusters, their states) over its JSON-RPC socket,
//! and the machine (CPUs, memory).

use std::time::Duration;

use serde_json::Value;
use shoal_appliance::jsonrpc::RpcClient;

use crate::state::AppState;
use std::sync::Arc;

/// Longest wait for the supervisor before a resource reports it unknown.
const SUPERVISOR_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a supervisor status answer is reused. Health changes are
/// seen within this; a busy Redfish client does not turn every GET into a
/// round trip to the single-threaded supervisor.
pub const STATUS_MAX_AGE: Duration = Duration::from_millis(500);

/// The last answer and when it came.
#[derive(Default)]
pub struct StatusCache(std::sync::Mutex<Option<(std::time::Instant, Arc<Value>)>>);

/// `appliance_get_status` (at most `STATUS_MAX_AGE` old), or `None` when
/// the supervisor does not answer.
pub async fn status(state: &AppState) -> Option<Arc<Value>> {
    if let Some((at, value)) = state.status_cache.0.lock().expect("status cache").as_ref()
        && at.elapsed() < STATUS_MAX_AGE
    {
        return Some(Arc::clone(value));
    }
    fresh_status(state).await
}

/// `appliance_get_status` asked now (and cached), for an answer that must
/// not be refused on a view up to `STATUS_MAX_AGE` old: a cluster that
/// became ready since, as right after the appliance reports ready.
pub async fn fresh_status(state: &AppState) -> Option<Arc<Value>> {
    let call = async {
        let mut client = RpcClient::connect(&state.supervisor_socket).await.ok()?;
        client.call("appliance_get_status", None).await.ok()
    };
    let value = Arc::new(
        tokio::time::timeout(SUPERVISOR_TIMEOUT, call)
            .await
            .ok()
            .flatten()?,
    );
    *state.status_cache.0.lock().expect("status cache") =
        Some((std::time::Instant::now(), Arc::clone(&value)));
    Some(value)
}

/// Whether every data cluster of `status` runs.
pub fn all_running(status: &Value) -> bool {
    status["clusters"]
        .as_array()
        .is_some_and(|clusters| clusters.iter().all(|c| c["state"] == "running"))
}

/// Redfish `Status` for the appliance from the supervisor's status: OK
/// when every data cluster runs, Warning while one restarts, Critical when
/// one failed for good or the supervisor does not answer.
pub fn health(status: Option<&Value>) -> Value {
    let Some(status) = status else {
        return serde_json::json!({"State": "Enabled", "Health": "Critical"});
    };
    let states: Vec<&str> = status["clusters"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["state"].as_str()).collect())
        .unwrap_or_default();
    let health = if states.contains(&"failed") {
        "Critical"
    } else if states.iter().all(|s| *s == "running") {
        "OK"
    } else {
        "Warning"
    };
    serde_json::json!({"State": "Enabled", "Health": health})
}

/// Online CPUs of this machine, read once: the answer involves reading
/// cgroup files, too slow for every GET.
pub fn cpu_count() -> usize {
    static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *COUNT.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Total memory in GiB, from /proc/meminfo, read once.
pub fn memory_gib() -> f64 {
    static GIB: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *GIB.get_or_init(read_memory_gib)
}

fn read_memory_gib() -> f64 {
    let kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    (kib / (1024.0 * 1024.0) * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_the_clusters() {
        let running = serde_json::json!({"clusters": [{"state": "running"}, {"state": "running"}]});
        assert_eq!(health(Some(&running))["Health"], "OK");
        let failed = serde_json::json!({"clusters": [{"state": "running"}, {"state": "failed"}]});
        assert_eq!(health(Some(&failed))["Health"], "Critical");
        let backoff = serde_json::json!({"clusters": [{"state": "backoff"}]});
        assert_eq!(health(Some(&backoff))["Health"], "Warning");
        assert_eq!(health(None)["Health"], "Critical");
        assert!(memory_gib() > 0.0);
    }
}

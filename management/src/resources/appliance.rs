//! What the management service knows of the appliance it runs in: the
//! supervisor's view (clusters, their states) over its JSON-RPC socket,
//! and the machine (CPUs, memory).

use std::time::Duration;

use serde_json::Value;
use shoal_appliance::jsonrpc::RpcClient;

use crate::state::AppState;

/// Longest wait for the supervisor before a resource reports it unknown.
const SUPERVISOR_TIMEOUT: Duration = Duration::from_secs(2);

/// `appliance_get_status`, or `None` when the supervisor does not answer.
pub async fn status(state: &AppState) -> Option<Value> {
    let call = async {
        let mut client = RpcClient::connect(&state.supervisor_socket).await.ok()?;
        client.call("appliance_get_status", None).await.ok()
    };
    tokio::time::timeout(SUPERVISOR_TIMEOUT, call)
        .await
        .ok()
        .flatten()
}

/// Redfish `Status` for the appliance from the supervisor's status: OK
/// when every data cluster runs, Warning while one restarts, Critical when
/// one failed for good, Unknown without an answer.
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

/// Online CPUs of this machine.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Total memory in GiB, from /proc/meminfo.
pub fn memory_gib() -> f64 {
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

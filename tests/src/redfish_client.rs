//! A Redfish client for end-to-end tests: HTTPS to the appliance's
//! self-signed service as `admin` (HTTP Basic), JSON in and out.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::Value;

use crate::Appliance;

pub struct RedfishClient {
    pub base: String,
    pub client: Client,
    pub password: String,
}

impl RedfishClient {
    /// A client of `appliance`'s service, logged in as `admin` with the
    /// generated first password.
    pub fn new(appliance: &Appliance) -> Self {
        let client = Client::builder()
            // The appliance's certificate is self-signed on first start.
            .danger_accept_invalid_certs(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Self {
            base: appliance.redfish_base(),
            client,
            password: appliance.admin_password(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn send(&self, request: RequestBuilder) -> (StatusCode, Value) {
        let response = request
            .basic_auth("admin", Some(&self.password))
            .send()
            .expect("the Redfish service answers");
        let status = response.status();
        let text = response.text().unwrap_or_default();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        (status, body)
    }

    pub fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.get(self.url(path)))
    }

    pub fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.client.post(self.url(path)).json(body))
    }

    pub fn patch(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.client.patch(self.url(path)).json(body))
    }

    pub fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.delete(self.url(path)))
    }

    /// Polls GET `path` until its body satisfies `done` and returns it;
    /// panics with the last body after `timeout`.
    pub fn wait_for(
        &self,
        path: &str,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let (status, body) = self.get(path);
            if status == StatusCode::OK && done(&body) {
                return body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}: {body}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `#Volume.CheckConsistency` on the redundant volume at `volume`
    /// once its health is OK (the action refuses a volume that is not)
    /// and follows the task until it ends. Returns the task, which must
    /// have completed, and the counts its Description gives.
    pub fn check_consistency(&self, volume: &str) -> (Value, CheckCounts) {
        self.wait_for(
            volume,
            "the volume OK to check",
            Duration::from_secs(30),
            |v| v["Status"]["Health"] == "OK",
        );
        let action = format!("{volume}/Actions/Volume.CheckConsistency");
        let (status, accepted) = self.post(&action, &serde_json::json!({}));
        assert_eq!(status, StatusCode::ACCEPTED, "POST {action}: {accepted}");
        let task_uri = accepted["@odata.id"].as_str().expect("a task").to_string();
        let task = self.wait_for(
            &task_uri,
            "the check to end",
            Duration::from_secs(90),
            |t| t["TaskState"] != "Running" && t["TaskState"] != "New",
        );
        assert_eq!(task["TaskState"], "Completed", "{task}");
        let counts = CheckCounts::parse(task["Description"].as_str().unwrap_or_default())
            .unwrap_or_else(|| panic!("no counts in the check's Description: {task}"));
        (task, counts)
    }

    pub fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }
}

/// The registry key of an error body's first message
/// (`Base.1.22.InsufficientStorage` → `InsufficientStorage`).
pub fn message_key(body: &Value) -> String {
    body["error"]["@Message.ExtendedInfo"][0]["MessageId"]
        .as_str()
        .unwrap_or_default()
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// What a finished `Volume.CheckConsistency` task says it compared:
/// "Checked N blocks of B bytes of volume X: M mismatched".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckCounts {
    pub checked_blocks: u64,
    pub block_bytes: u64,
    pub mismatched_blocks: u64,
}

impl CheckCounts {
    fn parse(description: &str) -> Option<Self> {
        let rest = description.strip_prefix("Checked ")?;
        let (checked, rest) = rest.split_once(" blocks of ")?;
        let (block, rest) = rest.split_once(" bytes of volume ")?;
        let (_, rest) = rest.rsplit_once(": ")?;
        let mismatched = rest.strip_suffix(" mismatched")?;
        Some(Self {
            checked_blocks: checked.parse().ok()?,
            block_bytes: block.parse().ok()?,
            mismatched_blocks: mismatched.parse().ok()?,
        })
    }

    /// Bytes of the volume the check covered.
    pub fn checked_bytes(&self) -> u64 {
        self.checked_blocks * self.block_bytes
    }
}

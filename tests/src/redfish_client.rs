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

    /// GET that must succeed.
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

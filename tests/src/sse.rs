//! A reader of the Redfish service's server-sent event stream
//! (`/redfish/v1/EventService/SSE`) for tests: a thread parses the stream
//! and hands each event, with its SSE `id`, to the test as it arrives.

use std::io::{BufRead, BufReader};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::STARTUP_TIMEOUT;
use crate::redfish_client::RedfishClient;

/// An open SSE stream: its events (SSE `id`, Event JSON), oldest first.
pub struct EventStream {
    arriving: mpsc::Receiver<(String, Value)>,
}

impl EventStream {
    /// Opens the stream with `$filter` `filter` as `admin`; panics unless
    /// the service answers 200 with `text/event-stream`.
    pub fn open(r: &RedfishClient, filter: &str) -> Self {
        let client = reqwest::blocking::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(None)
            .build()
            .unwrap();
        let response = client
            .get(r.url("/redfish/v1/EventService/SSE"))
            .query(&[("$filter", filter)])
            .header("accept", "text/event-stream")
            .basic_auth("admin", Some(&r.password))
            .send()
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let (events, arriving) = mpsc::channel();
        std::thread::spawn(move || {
            let mut id = String::new();
            for line in BufReader::new(response).lines() {
                let Ok(line) = line else { return };
                if let Some(value) = line.strip_prefix("id:") {
                    id = value.trim().to_string();
                } else if let Some(data) = line.strip_prefix("data:") {
                    let event: Value =
                        serde_json::from_str(data.trim()).expect("data is one JSON line");
                    if events.send((id.clone(), event)).is_err() {
                        return;
                    }
                }
            }
        });
        Self { arriving }
    }

    /// The next event within `timeout`; `Disconnected` once the stream
    /// has ended and every event was taken.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<(String, Value), RecvTimeoutError> {
        self.arriving.recv_timeout(timeout)
    }

    /// The next event whose first record's MessageId ends with
    /// `message_id`, skipping others; panics after [`STARTUP_TIMEOUT`]
    /// without one.
    pub fn next_event(&self, message_id: &str) -> (String, Value) {
        loop {
            let (id, event) = self
                .recv_timeout(STARTUP_TIMEOUT)
                .unwrap_or_else(|e| panic!("no {message_id} event: {e}"));
            if event["Events"][0]["MessageId"]
                .as_str()
                .is_some_and(|m| m.ends_with(message_id))
            {
                return (id, event);
            }
        }
    }

    /// The next event record about `origin` (its OriginOfCondition),
    /// skipping others; its MessageId is added to `seen` (oldest first).
    pub fn next_about(&self, origin: &str, seen: &mut Vec<String>) -> Value {
        loop {
            let (_, event) = self
                .recv_timeout(STARTUP_TIMEOUT)
                .unwrap_or_else(|e| panic!("no event about {origin} (seen {seen:?}): {e}"));
            let record = event["Events"][0].clone();
            if record["OriginOfCondition"]["@odata.id"] == origin {
                seen.push(record["MessageId"].as_str().unwrap().to_string());
                return record;
            }
        }
    }

    /// The next record about `origin` whose message is `key` of registry
    /// `prefix` (`StorageDevice.<version>.<key>`), with every message about
    /// `origin` on the way in `seen`.
    pub fn wait_about(
        &self,
        origin: &str,
        prefix: &str,
        key: &str,
        seen: &mut Vec<String>,
    ) -> Value {
        loop {
            let record = self.next_about(origin, seen);
            if record["MessageId"].as_str().is_some_and(|m| {
                m.starts_with(&format!("{prefix}.")) && m.ends_with(&format!(".{key}"))
            }) {
                return record;
            }
        }
    }
}

//! An HTTP server on loopback that receives Redfish event deliveries
//! (POSTs of Event JSON) for tests, answering each with a status the test
//! chooses, and keeping what arrived.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Deliveries received so far, and the status codes still to answer with
/// before answering 200.
#[derive(Default)]
struct Shared {
    received: Vec<Value>,
    failures_left: u32,
}

pub struct EventReceiver {
    pub url: String,
    shared: Arc<Mutex<Shared>>,
}

impl EventReceiver {
    /// Listens on a free loopback port; the first `failures` deliveries
    /// get 503, every later one 200.
    pub fn start(failures: u32) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let shared = Arc::new(Mutex::new(Shared {
            received: Vec::new(),
            failures_left: failures,
        }));
        let state = Arc::clone(&shared);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = Arc::clone(&state);
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        Self { url, shared }
    }

    /// Every delivery so far (failed ones included), in arrival order.
    pub fn received(&self) -> Vec<Value> {
        self.shared.lock().unwrap().received.clone()
    }

    /// Waits until a delivery satisfies `found`; panics after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, found: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.received().into_iter().find(&found) {
                return event;
            }
            assert!(
                Instant::now() < deadline,
                "no delivery of {what} within {timeout:?}; got {:#?}",
                self.received()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One connection: requests until the peer closes.
fn serve(stream: std::net::TcpStream, shared: &Mutex<Shared>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let status = {
            let mut shared = shared.lock().unwrap();
            shared
                .received
                .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            if shared.failures_left > 0 {
                shared.failures_left -= 1;
                "503 Service Unavailable"
            } else {
                "200 OK"
            }
        };
        let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

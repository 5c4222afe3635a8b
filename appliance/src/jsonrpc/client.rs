//! Calling a JSON-RPC server on a Unix socket.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::framing::Decoder;
use super::message::{Request, RpcError};

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server answered with an error object.
    #[error("{0}")]
    Rpc(RpcError),
    /// The server's answer was not a valid JSON-RPC response.
    #[error("bad response: {0}")]
    Protocol(String),
}

/// A connection to a JSON-RPC server, calls made one at a time.
#[derive(Debug)]
pub struct RpcClient {
    stream: UnixStream,
    decoder: Decoder,
    next_id: u64,
}

impl RpcClient {
    pub async fn connect(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            stream: UnixStream::connect(path).await?,
            decoder: Decoder::new(),
            next_id: 1,
        })
    }

    /// Calls `method` and waits for its response.
    pub async fn call(&mut self, method: &str, params: Option<Value>) -> Result<Value, CallError> {
        let id = self.next_id;
        self.next_id += 1;
        let request = encode(id, method, params);
        self.stream.write_all(&request).await?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(value) = self
                .decoder
                .next_value()
                .map_err(|e| CallError::Protocol(e.to_string()))?
            {
                return decode_response(value, id);
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(CallError::Protocol(
                    "connection closed before the response".into(),
                ));
            }
            self.decoder.push(&chunk[..n]);
        }
    }
}

/// One call on a fresh connection, blocking, bounded by `timeout` per
/// socket operation. For CLIs and tests that have no runtime.
pub fn call_blocking(
    path: &Path,
    method: &str,
    params: Option<Value>,
    timeout: Duration,
) -> Result<Value, CallError> {
    let mut stream = std::os::unix::net::UnixStream::connect(path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(&encode(1, method, params))?;
    let mut decoder = Decoder::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(value) = decoder
            .next_value()
            .map_err(|e| CallError::Protocol(e.to_string()))?
        {
            return decode_response(value, 1);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(CallError::Protocol(
                "connection closed before the response".into(),
            ));
        }
        decoder.push(&chunk[..n]);
    }
}

fn encode(id: u64, method: &str, params: Option<Value>) -> Vec<u8> {
    let request = Request {
        id: Some(json!(id)),
        method: method.to_string(),
        params,
    };
    serde_json::to_vec(&request.to_value()).expect("JSON values serialise")
}

fn decode_response(mut value: Value, id: u64) -> Result<Value, CallError> {
    if value.get("id") != Some(&json!(id)) {
        // A parse error from the server carries a null id; surface it.
        if let Some(error) = value.get_mut("error").map(Value::take) {
            return Err(parse_error_object(error));
        }
        return Err(CallError::Protocol(format!(
            "response for another request: {value}"
        )));
    }
    if let Some(error) = value.get_mut("error").map(Value::take) {
        return Err(parse_error_object(error));
    }
    value
        .get_mut("result")
        .map(Value::take)
        .ok_or_else(|| CallError::Protocol(format!("neither result nor error in {value}")))
}

fn parse_error_object(error: Value) -> CallError {
    match serde_json::from_value::<RpcError>(error.clone()) {
        Ok(error) => CallError::Rpc(error),
        Err(_) => CallError::Protocol(format!("malformed error object {error}")),
    }
}

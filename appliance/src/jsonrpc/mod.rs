//! JSON-RPC 2.0 over Unix stream sockets, as SPDK speaks it.
//!
//! Requests and responses are JSON values written back to back on the
//! stream (SPDK's `rpc.py` framing: no length prefix, no delimiter required;
//! we end each response with a newline for humans and `socat`). The
//! supervisor, every dataplane and the `shoal-rpc` CLI share this module.
//!
//! - [`message`]: request/response shapes and the error codes;
//! - [`framing`]: splits a byte stream into JSON values;
//! - [`server`]: a method router and the socket server;
//! - [`client`]: async and blocking callers.

pub mod client;
pub mod framing;
pub mod message;
pub mod server;

pub use client::{CallError, RpcClient, call_blocking};
pub use message::{RpcError, parse_params};
pub use server::{MethodResult, Router, serve};

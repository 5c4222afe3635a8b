//! HTTP transport: TLS identity and the listeners.

pub mod connections;
pub mod server;
pub mod tls;

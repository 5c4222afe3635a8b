//! HTTP transport: TLS identity and the listeners.

pub mod server;
pub mod tls;

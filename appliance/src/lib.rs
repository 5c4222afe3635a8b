//! Shoal appliance core.
//!
//! Everything the processes of one appliance agree on lives here: the
//! configuration and its conventions ([`config`]), how clusters map onto CPUs
//! ([`topology`]), the shared hugepage region and its versioned header
//! ([`region`], [`hugepages`]), the heartbeat a child process keeps in that
//! region ([`participant`]), JSON-RPC 2.0 over Unix sockets ([`jsonrpc`]) and
//! log setup ([`logging`]). The supervisor binary `shoald` and the `shoal-rpc`
//! CLI are built on top of it; the dataplane and management crates depend on
//! it, never the other way round.

pub mod accept_backoff;
pub mod clock;
pub mod config;
pub mod doorbell;
pub mod hugepages;
pub mod jsonrpc;
pub mod locks;
pub mod logging;
pub mod nqn;
pub mod participant;
pub mod region;
pub mod topology;

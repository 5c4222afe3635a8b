//! The Shoal I/O engine, one process per data cluster, in SPDK's model:
//! [`reactor`]s (one thread per core, messages and pollers), the [`bdev`]
//! layer (modules, per-reactor I/O channels, virtual bdevs), front-ends
//! ([`nbd`]), and the JSON-RPC control plane ([`rpc`]) with SPDK's method
//! names. [`service`] ties them to the appliance's process lifecycle.

pub mod args;
pub mod bdev;
pub mod nbd;
pub mod reactor;
pub mod rpc;
pub mod service;
pub mod startup_config;

//! The Shoal I/O engine, one process per data cluster, in SPDK's model:
//! [`reactor`]s (one thread per core, messages and pollers), the [`bdev`]
//! layer (modules, per-reactor I/O channels, virtual bdevs), front-ends
//! ([`nbd`], the NVMe/TCP target [`nvmf`]), the [`interconnect`] that lets clusters use each other's
//! bdevs through rings in the shared region with buffers from the shared
//! [`pool`], and the JSON-RPC control plane ([`rpc`]) with SPDK's method
//! names. [`service`] ties them to the appliance's process lifecycle.

pub mod args;
pub mod bdev;
pub mod interconnect;
pub mod nbd;
pub mod nvmf;
pub mod pool;
pub mod reactor;
pub mod rpc;
pub mod service;
pub mod startup_config;

//! The Shoal I/O engine, one process per data cluster.
//!
//! This crate grows into SPDK's model (reactors, pollers, bdevs,
//! front-ends). Today it is the process skeleton every later layer plugs
//! into: it joins the appliance's shared region, reports its lifecycle and
//! heartbeat there, and serves its JSON-RPC control socket.

pub mod args;
pub mod bdev;
pub mod nbd;
pub mod reactor;
pub mod rpc;
pub mod service;
pub mod startup_config;

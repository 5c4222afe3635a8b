//! The Shoal management service: the appliance's Redfish face (standing
//! in for Intel RSD PSME), on the control cluster, started by shoald.
//!
//! [`http`] is the transport (TLS, listeners), [`redfish`] the protocol
//! (messages, rules, router), [`auth`] accounts, sessions and privileges,
//! [`resources`] one module per resource, [`storage`] the storage model and
//! its reconciler, [`store`] the persistent state.

pub mod args;
pub mod auth;
pub mod dataplane;
pub mod events;
pub mod http;
pub mod redfish;
pub mod resources;
pub mod service;
pub mod state;
pub mod storage;
pub mod store;
pub mod tasks;

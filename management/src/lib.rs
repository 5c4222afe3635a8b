//! The Shoal management service: the appliance's Redfish/Swordfish face.
//!
//! It runs on the control cluster, started by shoald. Today it is the
//! process skeleton the Redfish service plugs into: it joins the shared
//! region as the control cluster and heartbeats there.

pub mod args;
pub mod service;

//! One module per Redfish resource (or resource family), bmcweb style.

pub mod account_service;
pub mod appliance;
pub mod chassis;
pub mod drives;
pub mod managers;
pub mod odata;
pub mod registries;
pub mod schemas;
pub mod service_root;
pub mod session_service;
pub mod systems;
pub mod time;

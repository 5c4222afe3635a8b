//! One module per Redfish resource (or resource family), bmcweb style.

pub mod account_service;
pub mod appliance;
pub mod chassis;
pub mod connections;
pub mod drives;
pub mod endpoint_groups;
pub mod endpoints;
pub mod event_service;
pub mod fabrics;
pub mod managers;
pub mod odata;
pub mod registries;
pub mod schemas;
pub mod service_root;
pub mod session_service;
pub mod storage;
pub mod storage_controllers;
pub mod storage_pools;
pub mod systems;
pub mod task_service;
pub mod time;
pub mod volumes;

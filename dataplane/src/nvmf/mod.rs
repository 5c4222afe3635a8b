//! The NVMe-oF target over TCP (NVMe over Fabrics 1.1, NVMe/TCP transport
//! 1.0): [`pdu`]s on the wire, [`connection`]s that become admin or I/O
//! [`queue`]s of a [`controller`] with Fabrics Connect, the admin and NVM
//! command sets ([`admin_commands`], [`io_commands`]) with [`identify`]
//! data and log pages, the [`subsystem`] configuration SPDK's `nvmf_*`
//! RPCs change, and the [`listener`]s (portals) connections arrive on.

pub mod admin_commands;
pub mod auth;
pub mod command;
pub mod connection;
pub mod controller;
pub mod identify;
pub mod io_commands;
pub mod listener;
pub mod pdu;
pub mod queue;
pub mod queue_auth;
pub mod subsystem;

//! The NBD front-end: serves bdevs as named exports over TCP to qemu,
//! libnbd (nbdinfo, nbdcopy, fio's nbd engine) and the kernel's nbd-client.
//!
//! - [`proto`]: the wire format;
//! - [`handshake`]: fixed newstyle option negotiation;
//! - [`transmission`]: the request/reply loop;
//! - [`budget`]: what a connection and the cluster may hold in flight;
//! - [`exports`]: export name -> bdev, and who may reach it;
//! - [`keyring`]: the TLS pre-shared keys of initiators;
//! - [`tls`]: NBD_OPT_STARTTLS's TLS-PSK sessions;
//! - [`server`]: the listener, spreading connections over the reactors.

pub mod budget;
pub mod exports;
pub mod handshake;
pub mod keyring;
pub mod proto;
pub mod server;
pub mod tls;
pub mod transmission;

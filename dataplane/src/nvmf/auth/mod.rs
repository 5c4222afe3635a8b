//! In-band authentication of NVMe-oF queues: DH-HMAC-CHAP (NVMe Base 2.0
//! §8.13.5, from TP 8006) with SHA-256/384/512, the null group and the
//! RFC 7919 groups ffdhe2048-8192, host and bidirectional.
//!
//! [`secret`] parses the `DHHC-1:` secret representation, [`messages`]
//! encodes and decodes the messages carried by Authentication
//! Send/Receive, [`dhchap`] is the controller's state machine for one
//! queue, [`dh`] and [`hash`] the groups and hashes, and [`keyring`] the
//! named keys the RPCs load from files.

pub mod dh;
pub mod dhchap;
pub mod hash;
pub mod keyring;
pub mod messages;
pub mod secret;

/// SECP of Authentication Send/Receive for DH-HMAC-CHAP ("NVMe in-band
/// authentication" security protocol).
pub const SECP_AUTHENTICATION: u8 = 0xe9;
/// SPSP0 and SPSP1 of every Authentication Send/Receive of this protocol.
pub const SPSP: u8 = 0x01;

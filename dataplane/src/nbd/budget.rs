//! What a connection may hold at once: request slots and payload bytes,
//! per connection and for the whole data cluster. A request reserves its
//! share before its buffer is allocated (a read's data, a write's payload)
//! and gives it back only when its reply has been written to the socket,
//! so a client that stops reading its replies holds no more than its
//! budget, whatever it keeps asking for.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};

use super::proto::MAX_PAYLOAD_BYTES;

/// Requests one connection may have in flight (read, executing, or with
/// a reply not yet written); the reader waits beyond. qemu keeps at most
/// 16 in flight, nbdcopy 64: this is twice the deepest real client.
pub const MAX_IN_FLIGHT: usize = 128;

/// Payload bytes (read data and write payloads) one connection may hold
/// from the moment its buffer is allocated until its reply is written.
/// Exactly one largest request, or nbdcopy's default pipeline (64 requests
/// of 256 KiB) twice over; a client that never reads its socket pins this
/// much and no more.
pub const MAX_IN_FLIGHT_BYTES: u32 = MAX_PAYLOAD_BYTES;

/// Payload bytes all NBD connections of this data cluster may hold
/// together: four largest requests at once. Without it 1024 connections
/// of 32 MiB each could pin 32 GiB; with it a dataplane's NBD buffers stay
/// within a small, fixed share of the appliance's memory, and a client
/// beyond it waits (its payload stays in the kernel's socket buffers).
pub const MAX_CLUSTER_IN_FLIGHT_BYTES: u32 = 4 * MAX_PAYLOAD_BYTES;

const _: () = assert!(MAX_PAYLOAD_BYTES <= MAX_IN_FLIGHT_BYTES);
const _: () = assert!(MAX_IN_FLIGHT_BYTES <= MAX_CLUSTER_IN_FLIGHT_BYTES);

/// The cluster-wide byte budget: one dataplane process serves one cluster.
static CLUSTER_BYTES: Semaphore = Semaphore::const_new(MAX_CLUSTER_IN_FLIGHT_BYTES as usize);

/// One connection's budget.
pub struct ConnectionBudget {
    slots: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
}

/// What one request holds until its reply is written; dropping it gives
/// everything back.
pub struct Reservation {
    _slot: OwnedSemaphorePermit,
    _bytes: Option<(OwnedSemaphorePermit, SemaphorePermit<'static>)>,
}

impl Default for ConnectionBudget {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnectionBudget {
    pub fn new() -> Self {
        Self {
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            bytes: Arc::new(Semaphore::new(MAX_IN_FLIGHT_BYTES as usize)),
        }
    }

    /// Waits for a request slot.
    pub async fn slot(&self) -> Reservation {
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("budget semaphores are never closed");
        Reservation {
            _slot: slot,
            _bytes: None,
        }
    }

    /// Adds `bytes` of payload to `reservation`, waiting until this
    /// connection and then the cluster have them. `bytes` must not exceed
    /// [`MAX_PAYLOAD_BYTES`] (larger requests are refused before this).
    pub async fn add_bytes(&self, reservation: &mut Reservation, bytes: u32) {
        debug_assert!(bytes <= MAX_PAYLOAD_BYTES);
        if bytes == 0 {
            return;
        }
        let bytes = bytes.min(MAX_PAYLOAD_BYTES);
        // The connection's own share first, so one connection waits on the
        // cluster for at most one request at a time.
        let connection = Arc::clone(&self.bytes)
            .acquire_many_owned(bytes)
            .await
            .expect("budget semaphores are never closed");
        let cluster = CLUSTER_BYTES
            .acquire_many(bytes)
            .await
            .expect("budget semaphores are never closed");
        reservation._bytes = Some((connection, cluster));
    }
}

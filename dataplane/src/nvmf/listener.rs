//! The NVMe/TCP portals of this data cluster: one listening socket per
//! transport address. The cluster's own portal opens at start; RPCs may
//! open more (`nvmf_subsystem_add_listener` on an address not yet open).
//! Each accepts on reactor 0 and hands connections to the reactors in
//! turn ([`Acceptor`]), like the NBD server.

use shoal_appliance::locks::Recover;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

use super::connection;
use super::subsystem::Target;
use crate::reactor::ReactorHandle;
use crate::reactor::acceptor::{Accepted, Acceptor};

/// Connections one data cluster serves at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 4096;
/// Portals one data cluster listens on.
pub const MAX_PORTALS: usize = 64;

pub struct Portals {
    target: Arc<Target>,
    reactors: Arc<Vec<ReactorHandle>>,
    open: Mutex<BTreeMap<SocketAddr, SocketAddr>>,
    connections: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Portals {
    pub fn new(target: Arc<Target>, reactors: Vec<ReactorHandle>) -> Self {
        Self {
            target,
            reactors: Arc::new(reactors),
            open: Mutex::new(BTreeMap::new()),
            connections: Arc::new(AtomicUsize::new(0)),
            stop: CancellationToken::new(),
        }
    }

    /// Listens on `address` unless a portal already does. Returns the
    /// bound address (port 0 picks a free port).
    pub fn listen(&self, address: SocketAddr) -> std::io::Result<SocketAddr> {
        let mut open = self.open.locked();
        if address.port() != 0
            && let Some(bound) = open.get(&address)
        {
            return Ok(*bound);
        }
        if open.len() >= MAX_PORTALS {
            return Err(std::io::Error::other(format!(
                "this cluster already listens on {MAX_PORTALS} portals"
            )));
        }
        let listener = std::net::TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        let bound = listener.local_addr()?;
        open.insert(if address.port() == 0 { bound } else { address }, bound);
        let acceptor = Acceptor {
            protocol: "NVMe/TCP",
            reactors: Arc::clone(&self.reactors),
            max_connections: MAX_CONNECTIONS,
            open: Arc::clone(&self.connections),
            stop: self.stop.clone(),
        };
        let target = Arc::clone(&self.target);
        let stop = self.stop.clone();
        self.reactors[0].spawn(move || {
            acceptor.run(listener, move |accepted: Accepted| {
                let target = Arc::clone(&target);
                let stop = stop.clone();
                async move {
                    connection::serve(accepted.stream, target, accepted.local, accepted.peer, stop)
                        .await
                }
            })
        });
        tracing::info!(address = %bound, "NVMe/TCP portal listening");
        Ok(bound)
    }

    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.open.locked().values().copied().collect()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Closes every portal and connection.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

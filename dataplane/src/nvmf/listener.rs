//! The NVMe/TCP portals of this data cluster: one listening socket per
//! transport address. The cluster's own portal opens at start; RPCs may
//! open more (`nvmf_subsystem_add_listener` on an address not yet open).
//! Each accepts on reactor 0 and hands connections to the reactors in
//! turn, like the NBD server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::connection;
use super::subsystem::Target;
use crate::reactor::ReactorHandle;

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
        let mut open = self.open.lock().expect("portals lock");
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
        let target = Arc::clone(&self.target);
        let reactors = Arc::clone(&self.reactors);
        let connections = Arc::clone(&self.connections);
        let stop = self.stop.clone();
        self.reactors[0].spawn(move || accept_loop(listener, target, reactors, connections, stop));
        tracing::info!(address = %bound, "NVMe/TCP portal listening");
        Ok(bound)
    }

    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.open
            .lock()
            .expect("portals lock")
            .values()
            .copied()
            .collect()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Closes every portal and connection.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    target: Arc<Target>,
    reactors: Arc<Vec<ReactorHandle>>,
    connections: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("cannot use the NVMe/TCP listener: {e}");
            return;
        }
    };
    let mut next = 0usize;
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("NVMe/TCP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        if connections.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            tracing::warn!(%peer, "refusing NVMe/TCP connection: {MAX_CONNECTIONS} already open");
            continue;
        }
        let local = match stream.local_addr() {
            Ok(local) => local,
            Err(_) => continue,
        };
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let reactor = &reactors[next % reactors.len()];
        next = next.wrapping_add(1);
        let target = Arc::clone(&target);
        let connections = Arc::clone(&connections);
        connections.fetch_add(1, Ordering::Relaxed);
        let stop = stop.clone();
        reactor.spawn(move || async move {
            match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    connection::serve(stream, target, local, peer, stop).await;
                }
                Err(e) => tracing::warn!(%peer, "cannot register NVMe/TCP connection: {e}"),
            }
            connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

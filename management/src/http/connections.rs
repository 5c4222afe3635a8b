//! Who holds a listener's connections, and for how long.
//!
//! Every connection starts unauthenticated. Unauthenticated connections
//! are few (`Limits::max_unauthenticated`), the oldest is evicted to admit
//! a newer one, and each is closed `Limits::unauthenticated_deadline` after
//! it was accepted: idle TLS handshakes or HTTP/2 prefaces cannot hold the
//! listener, however many a client opens. A connection on which a caller
//! proved who they are (a request answered with a [`Principal`]) is no
//! longer evictable and stays until it has been idle for
//! `Limits::idle_timeout`.
//!
//! [`Principal`]: crate::auth::Principal

use shoal_appliance::locks::Recover;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How often a connection's deadlines are checked. Deadlines are seconds
/// long, so a second of slack is of no consequence.
const WATCH_TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; beyond it, the oldest unauthenticated
    /// one is evicted, or the new one closed if all are authenticated.
    pub max_connections: usize,
    /// Connections not (yet) authenticated, at once.
    pub max_unauthenticated: usize,
    /// Life of a connection that has not authenticated.
    pub unauthenticated_deadline: Duration,
    /// Life of an authenticated connection without a request in flight.
    pub idle_timeout: Duration,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    /// By admission order, so the first entry is the oldest.
    unauthenticated: BTreeMap<u64, CancellationToken>,
    authenticated: HashSet<u64>,
}

/// The connections of one listener.
pub struct Connections {
    limits: Limits,
    table: Mutex<Table>,
}

/// Why a connection is to be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Pushed out by a newer unauthenticated connection: close now.
    Evicted,
    /// Not authenticated within the deadline: finish what is in flight.
    Unauthenticated,
    /// Authenticated, but idle: finish what is in flight (nothing).
    Idle,
}

/// One admitted connection; leaves the table when dropped.
pub struct Connection {
    connections: Arc<Connections>,
    id: u64,
    evicted: CancellationToken,
    authenticated: AtomicBool,
    accepted: Instant,
    in_flight: AtomicUsize,
    last_active: Mutex<Instant>,
}

/// A request in flight on a connection (until its response body ends).
pub struct InFlight(Arc<Connection>);

impl Connections {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            table: Mutex::default(),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Admits a new connection, evicting the oldest unauthenticated one if
    /// either limit is reached; `None` when every slot is authenticated.
    pub fn admit(self: &Arc<Self>) -> Option<Arc<Connection>> {
        let mut table = self.table.locked();
        let full = |t: &Table| {
            t.unauthenticated.len() >= self.limits.max_unauthenticated
                || t.unauthenticated.len() + t.authenticated.len() >= self.limits.max_connections
        };
        if full(&table) {
            match table.unauthenticated.pop_first() {
                Some((_, evicted)) => evicted.cancel(),
                None => return None,
            }
        }
        table.next_id += 1;
        let id = table.next_id;
        let evicted = CancellationToken::new();
        table.unauthenticated.insert(id, evicted.clone());
        let now = Instant::now();
        Some(Arc::new(Connection {
            connections: Arc::clone(self),
            id,
            evicted,
            authenticated: AtomicBool::new(false),
            accepted: now,
            in_flight: AtomicUsize::new(0),
            last_active: Mutex::new(now),
        }))
    }

    /// (unauthenticated, authenticated) connections now.
    pub fn counts(&self) -> (usize, usize) {
        let table = self.table.locked();
        (table.unauthenticated.len(), table.authenticated.len())
    }
}

impl Connection {
    /// A caller proved who they are on this connection: it is no longer
    /// evictable, and only idleness ends it.
    pub fn mark_authenticated(&self) {
        if self.authenticated.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut table = self.connections.table.locked();
        // Already evicted: it is closing, and no longer counted.
        if table.unauthenticated.remove(&self.id).is_some() {
            table.authenticated.insert(self.id);
        }
    }

    pub fn begin_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InFlight(Arc::clone(self))
    }

    fn touch(&self) {
        *self.last_active.locked() = Instant::now();
    }

    /// Resolves when the connection should be closed, and why.
    pub async fn closing(&self) -> Closing {
        let limits = self.connections.limits;
        loop {
            tokio::select! {
                _ = self.evicted.cancelled() => return Closing::Evicted,
                _ = tokio::time::sleep(WATCH_TICK) => {}
            }
            let now = Instant::now();
            if !self.authenticated.load(Ordering::Relaxed) {
                if now.duration_since(self.accepted) >= limits.unauthenticated_deadline {
                    return Closing::Unauthenticated;
                }
            } else if self.in_flight.load(Ordering::Relaxed) == 0 {
                let last = *self.last_active.locked();
                if now.duration_since(last) >= limits.idle_timeout {
                    return Closing::Idle;
                }
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut table = self.connections.table.locked();
        table.unauthenticated.remove(&self.id);
        table.authenticated.remove(&self.id);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 3,
            max_unauthenticated: 2,
            unauthenticated_deadline: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn the_oldest_unauthenticated_connection_makes_room() {
        let connections = Connections::new(limits());
        let a = connections.admit().unwrap();
        let b = connections.admit().unwrap();
        let c = connections.admit().unwrap();
        assert!(a.evicted.is_cancelled(), "oldest evicted");
        assert!(!b.evicted.is_cancelled());
        assert_eq!(a.closing().await, Closing::Evicted);
        b.mark_authenticated();
        c.mark_authenticated();
        assert_eq!(connections.counts(), (0, 2));
        let d = connections.admit().unwrap();
        assert_eq!(connections.counts(), (1, 2));
        d.mark_authenticated();
        assert!(
            connections.admit().is_none(),
            "authenticated ones are never evicted"
        );
        drop(b);
        assert!(connections.admit().is_some());
    }

    #[tokio::test]
    async fn deadlines_close_unauthenticated_and_idle_connections() {
        let connections = Connections::new(Limits {
            unauthenticated_deadline: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            ..limits()
        });
        let unauthenticated = connections.admit().unwrap();
        let _request = unauthenticated.begin_request();
        assert_eq!(unauthenticated.closing().await, Closing::Unauthenticated);
        let authenticated = connections.admit().unwrap();
        authenticated.mark_authenticated();
        let request = authenticated.begin_request();
        let waiting = tokio::time::timeout(Duration::from_millis(2500), authenticated.closing());
        assert!(waiting.await.is_err(), "busy is not idle");
        drop(request);
        assert_eq!(authenticated.closing().await, Closing::Idle);
    }
}

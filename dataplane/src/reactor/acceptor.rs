//! Accepting a front-end's TCP connections: the accept loop runs on one
//! reactor and hands each connection to the next reactor in turn, where it
//! lives until it ends. Connections open at once are bounded; beyond the
//! bound new ones are closed at accept. When `accept` fails (out of file
//! descriptors, typically) the loop backs off instead of spinning.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use shoal_appliance::accept_backoff::AcceptBackoff;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::ReactorHandle;

/// What a front-end's accept loop needs besides its listener.
pub struct Acceptor {
    /// Named in log lines ("NBD", "NVMe/TCP").
    pub protocol: &'static str,
    pub reactors: Arc<Vec<ReactorHandle>>,
    pub max_connections: usize,
    /// Connections open now, shared with whoever reports it.
    pub open: Arc<AtomicUsize>,
    /// Ends the loop and every connection it accepted.
    pub stop: CancellationToken,
}

/// A new connection: the stream (registered on its reactor), the peer and
/// the local address it arrived on.
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

impl Acceptor {
    /// Accepts on `listener` until stopped; runs `serve` for each
    /// connection on its reactor. `serve` is cloned per connection and
    /// may build a future that is not `Send`.
    pub async fn run<F, Fut>(self, listener: std::net::TcpListener, serve: F)
    where
        F: Fn(Accepted) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!("cannot use the {} listener: {e}", self.protocol);
                return;
            }
        };
        let mut next = 0usize;
        let mut backoff = AcceptBackoff::new(self.protocol);
        // Refusals at the limit are logged once per episode: a peer that
        // reconnects in a loop must not turn into a log line per attempt.
        let mut refusing = false;
        loop {
            let (stream, peer) = tokio::select! {
                _ = self.stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tokio::select! {
                            _ = self.stop.cancelled() => return,
                            _ = backoff.failed(&e) => {}
                        }
                        continue;
                    }
                },
            };
            backoff.succeeded();
            if self.open.load(Ordering::Relaxed) >= self.max_connections {
                if !refusing {
                    tracing::warn!(%peer, "refusing {} connections: {} already open (not logged again until one is accepted)", self.protocol, self.max_connections);
                    refusing = true;
                }
                continue;
            }
            refusing = false;
            let (Ok(local), Ok(stream)) = (stream.local_addr(), stream.into_std()) else {
                tracing::warn!(%peer, "cannot hand over the {} connection", self.protocol);
                continue;
            };
            let reactor = &self.reactors[next % self.reactors.len()];
            next = next.wrapping_add(1);
            let open = Arc::clone(&self.open);
            open.fetch_add(1, Ordering::Relaxed);
            let stop = self.stop.clone();
            let serve = serve.clone();
            let protocol = self.protocol;
            reactor.spawn(move || async move {
                match TcpStream::from_std(stream) {
                    Ok(stream) => {
                        let _ = stream.set_nodelay(true);
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = serve(Accepted { stream, peer, local }) => {}
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%peer, "cannot register the {protocol} connection: {e}")
                    }
                }
                open.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
}

//! The NBD listener. It accepts on reactor 0 and hands each connection to
//! the next reactor in turn; the connection then lives on that reactor.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::exports::Exports;
use super::handshake::{Outcome, negotiate};
use super::transmission::transmit;
use crate::reactor::ReactorHandle;

/// Connections one data cluster serves at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 1024;
/// Time a client has to finish negotiation.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts until `stop` fires. Runs on a reactor.
pub async fn accept_loop(
    listener: std::net::TcpListener,
    exports: Arc<Exports>,
    reactors: Arc<Vec<ReactorHandle>>,
    stop: CancellationToken,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("cannot use the NBD listener: {e}");
            return;
        }
    };
    let open = Arc::new(AtomicUsize::new(0));
    let mut next = 0usize;
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("NBD accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            tracing::warn!(%peer, "refusing NBD connection: {MAX_CONNECTIONS} already open");
            continue;
        }
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(%peer, "cannot hand over NBD connection: {e}");
                continue;
            }
        };
        let reactor = &reactors[next % reactors.len()];
        next = next.wrapping_add(1);
        let exports = Arc::clone(&exports);
        let open = Arc::clone(&open);
        open.fetch_add(1, Ordering::Relaxed);
        let stop = stop.clone();
        reactor.spawn(move || async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = serve(stream, &exports, peer) => {}
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn serve(stream: std::net::TcpStream, exports: &Exports, peer: std::net::SocketAddr) {
    let mut stream = match TcpStream::from_std(stream) {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(%peer, "cannot register NBD connection: {e}");
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let outcome =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, negotiate(&mut stream, exports)).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => {
                tracing::debug!(%peer, "NBD negotiation ended: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "NBD negotiation timed out");
                return;
            }
        };
    if let Outcome::Transmit { export, structured } = outcome {
        tracing::debug!(%peer, export = export.name, structured, "NBD client connected");
        if let Err(e) = transmit(stream, export, structured).await {
            tracing::debug!(%peer, "NBD connection ended: {e}");
        }
    }
}

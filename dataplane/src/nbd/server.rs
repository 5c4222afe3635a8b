//! The NBD listener: accepts on reactor 0 and hands each connection to the
//! next reactor in turn ([`Acceptor`]); the connection then lives there.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::exports::Exports;
use super::handshake::{Outcome, negotiate};
use super::transmission::transmit;
use crate::reactor::ReactorHandle;
use crate::reactor::acceptor::{Accepted, Acceptor};

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
    let acceptor = Acceptor {
        protocol: "NBD",
        reactors,
        max_connections: MAX_CONNECTIONS,
        open: Arc::new(AtomicUsize::new(0)),
        stop,
    };
    acceptor
        .run(listener, move |accepted: Accepted| {
            let exports = Arc::clone(&exports);
            async move { serve(accepted.stream, &exports, accepted.peer).await }
        })
        .await;
}

async fn serve(mut stream: TcpStream, exports: &Exports, peer: std::net::SocketAddr) {
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
        if let Err(e) = transmit(stream, export, structured, CancellationToken::new()).await {
            tracing::debug!(%peer, "NBD connection ended: {e}");
        }
    }
}

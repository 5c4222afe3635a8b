//! The NBD listener: accepts on reactor 0 and hands each connection to the
//! next reactor in turn ([`Acceptor`]); the connection then lives there.
//!
//! The address the listener is bound to sets its policy: on a loopback
//! address plaintext is served to local tools and TLS is offered; on any
//! other (0.0.0.0 and :: included) nothing is served before
//! NBD_OPT_STARTTLS.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use openssl::ssl::SslContext;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::exports::{Exports, Peer};
use super::handshake::{Outcome, Session, greet, negotiate};
use super::tls::{self, TlsStream};
use super::transmission::{transmit, transmit_on};
use crate::reactor::ReactorHandle;
use crate::reactor::acceptor::{Accepted, Acceptor};

/// Connections one data cluster serves at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 1024;
/// Time a client has to finish negotiation, TLS handshake included.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a listener serves, from the address it is bound to.
#[derive(Clone)]
struct Policy {
    loopback: bool,
    tls: Option<SslContext>,
}

/// Whether `ip` is a loopback address (an IPv4-mapped one included).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Accepts until `stop` fires. Runs on a reactor.
pub async fn accept_loop(
    listener: std::net::TcpListener,
    exports: Arc<Exports>,
    reactors: Arc<Vec<ReactorHandle>>,
    stop: CancellationToken,
) {
    let loopback = listener
        .local_addr()
        .is_ok_and(|bound| is_loopback(bound.ip()));
    let tls = match tls::server_context(Arc::clone(exports.keyring())) {
        Ok(context) => Some(context),
        Err(e) => {
            tracing::error!("NBD TLS is unavailable: {e}");
            None
        }
    };
    if !loopback {
        tracing::info!("NBD listener is not on loopback: TLS only");
    }
    let policy = Policy { loopback, tls };
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
            let policy = policy.clone();
            async move { serve(accepted.stream, &exports, &policy, accepted.peer).await }
        })
        .await;
}

/// A connection that finished negotiation.
enum Established {
    Plain(TcpStream, Outcome),
    Tls(Box<TlsStream>, Outcome),
    Closed,
}

async fn serve(stream: TcpStream, exports: &Exports, policy: &Policy, peer: SocketAddr) {
    let established =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, establish(stream, exports, policy)).await {
            Ok(Ok(established)) => established,
            Ok(Err(e)) => {
                tracing::debug!(%peer, "NBD negotiation ended: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "NBD negotiation timed out");
                return;
            }
        };
    let result = match established {
        Established::Plain(
            stream,
            Outcome::Transmit {
                export,
                structured,
                revoked,
            },
        ) => {
            tracing::debug!(%peer, export = export.name, structured, "NBD client connected");
            transmit(stream, export, structured, revoked).await
        }
        Established::Tls(
            stream,
            Outcome::Transmit {
                export,
                structured,
                revoked,
            },
        ) => {
            tracing::debug!(%peer, export = export.name, structured, "NBD TLS client connected");
            let (read_half, write_half) = tokio::io::split(*stream);
            transmit_on(read_half, write_half, export, structured, revoked).await
        }
        _ => Ok(()),
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "NBD connection ended: {e}");
    }
}

/// Greeting, options, and STARTTLS's handshake when the client asks.
async fn establish(
    mut stream: TcpStream,
    exports: &Exports,
    policy: &Policy,
) -> std::io::Result<Established> {
    let mut session = Session {
        peer: Peer {
            loopback_listener: policy.loopback,
            identity: None,
        },
        tls_required: !policy.loopback,
        tls_offered: policy.tls.is_some() && !exports.keyring().is_empty(),
    };
    let Some(no_zeroes) = greet(&mut stream).await? else {
        return Ok(Established::Closed);
    };
    match negotiate(&mut stream, exports, &session, no_zeroes).await? {
        Outcome::StartTls => {}
        Outcome::Close => return Ok(Established::Closed),
        transmit => return Ok(Established::Plain(stream, transmit)),
    }
    let Some(context) = &policy.tls else {
        return Ok(Established::Closed);
    };
    let (mut stream, identity) = tls::accept(context, stream).await?;
    tracing::debug!(
        identity,
        version = stream.ssl().version_str(),
        cipher = stream.ssl().current_cipher().map(|c| c.name()),
        "NBD TLS session established"
    );
    session.peer.identity = Some(identity);
    match negotiate(&mut stream, exports, &session, no_zeroes).await? {
        transmit @ Outcome::Transmit { .. } => Ok(Established::Tls(Box::new(stream), transmit)),
        _ => Ok(Established::Closed),
    }
}

//! The listeners: HTTPS serving the Redfish router over HTTP/1.1 and
//! HTTP/2, and plain HTTP answering every request with a redirect to
//! HTTPS. Connections are bounded and have deadlines ([`connections`]);
//! handshakes and request headers have deadlines too, and HTTP/2 streams
//! and flow-control windows are small, so a slow, silent or
//! unauthenticated client holds little for long.
//!
//! [`connections`]: super::connections

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::connections::{Closing, Connection, Connections, Limits};
use crate::auth::{ConnectionAuthenticated, Principal};

/// Connections served at once per listener.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections that have not authenticated, at once: the rest of
/// `MAX_CONNECTIONS` is only reachable by proving who one is, and the
/// oldest unauthenticated connection is evicted for a new one, so idle
/// connections cannot lock legitimate clients out.
pub const MAX_UNAUTHENTICATED_CONNECTIONS: usize = 64;
/// Life of a connection on which nobody authenticated: enough for a
/// handshake, a login and a few open documents.
pub const UNAUTHENTICATED_DEADLINE: Duration = Duration::from_secs(10);
/// Life of an authenticated connection with nothing in flight (an open SSE
/// stream is in flight).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time for a TLS handshake (also bounded by `UNAUTHENTICATED_DEADLINE`
/// and eviction).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a request's headers to arrive.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time in-flight requests get to finish once a connection is closing.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// HTTP/2 streams one connection may have open at once (bmcweb and most
/// clients use a handful; each stream may hold a request body).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 16;
/// HTTP/2 flow-control windows: what a client may send on one stream, and
/// on one connection, before the service has read it. hyper's 1 MiB
/// defaults let a client park 1 MiB of unread body per connection; a
/// request body is read only after authentication.
pub const STREAM_WINDOW_BYTES: u32 = 64 << 10;
pub const CONNECTION_WINDOW_BYTES: u32 = 128 << 10;

fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES);
    builder
}

fn https_limits() -> Limits {
    Limits {
        max_connections: MAX_CONNECTIONS,
        max_unauthenticated: MAX_UNAUTHENTICATED_CONNECTIONS,
        unauthenticated_deadline: UNAUTHENTICATED_DEADLINE,
        idle_timeout: IDLE_TIMEOUT,
    }
}

/// Accepts connections until `stop`, admitting each into `connections`
/// and handing it to `serve`.
async fn accept_loop<F, Fut>(
    listener: TcpListener,
    connections: Arc<Connections>,
    stop: CancellationToken,
    serve: F,
) where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr, Arc<Connection>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(connection) = connections.admit() else {
            tracing::warn!(
                %peer,
                "connection limit ({}) reached by authenticated connections: closing",
                connections.limits().max_connections
            );
            continue;
        };
        tokio::spawn(serve(stream, peer, connection));
    }
}

/// Serves one connection until it ends, `stop` is cancelled, or the
/// connection's deadlines or eviction close it.
async fn serve_connection<I, S>(
    io: I,
    service: S,
    connection: &Connection,
    stop: &CancellationToken,
    peer: std::net::SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<Body>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let builder = builder();
    let served = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(served);
    let closing = tokio::select! {
        result = served.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            return;
        }
        _ = stop.cancelled() => None,
        why = connection.closing() => Some(why),
    };
    if closing == Some(Closing::Evicted) {
        tracing::debug!(%peer, "unauthenticated connection evicted for a newer one");
        return;
    }
    tracing::debug!(%peer, ?closing, "closing connection");
    served.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, served).await;
}

/// The router as a per-connection service: counts the requests in flight
/// (until each response body ends) and marks the connection authenticated
/// as soon as a request's caller is proven ([`ConnectionAuthenticated`]), or
/// when a response carries the caller's [`Principal`] (a login).
fn connection_service(
    app: Router,
    connection: Arc<Connection>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = hyper::Response<Body>,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<Output = Result<hyper::Response<Body>, std::convert::Infallible>>
             + Send,
> + Send
+ 'static {
    hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let in_flight = connection.begin_request();
        let connection = Arc::clone(&connection);
        let marked = Arc::clone(&connection);
        request
            .extensions_mut()
            .insert(ConnectionAuthenticated::new(move || {
                marked.mark_authenticated()
            }));
        let app = app.clone();
        async move {
            let response = app.oneshot(request.map(Body::new)).await?;
            if response.extensions().get::<Principal>().is_some() {
                connection.mark_authenticated();
            }
            Ok(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _request_in_flight = &in_flight;
                    frame
                }))
            }))
        }
    })
}

/// Serves `app` over TLS on `listener` until `stop` is cancelled.
pub async fn serve_https(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    stop: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let connections = Connections::new(https_limits());
    let serve_stop = stop.clone();
    accept_loop(
        listener,
        connections,
        stop,
        move |stream, peer, connection| {
            let acceptor = acceptor.clone();
            let app = app.clone();
            let stop = serve_stop.clone();
            async move {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                let tls = tokio::select! {
                    done = handshake => match done {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, "TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    },
                    _ = connection.closing() => return,
                    _ = stop.cancelled() => return,
                };
                let service = connection_service(app, Arc::clone(&connection));
                serve_connection(tls, service, &connection, &stop, peer).await;
            }
        },
    )
    .await;
}

/// Plain-HTTP connections: nobody authenticates there, so all of them
/// live under the unauthenticated limits.
fn redirect_limits() -> Limits {
    Limits {
        max_connections: MAX_UNAUTHENTICATED_CONNECTIONS,
        max_unauthenticated: MAX_UNAUTHENTICATED_CONNECTIONS,
        unauthenticated_deadline: UNAUTHENTICATED_DEADLINE,
        idle_timeout: UNAUTHENTICATED_DEADLINE,
    }
}

/// Answers every plain-HTTP request with 308 to the same path on
/// `https://<host_name>:<https_port>`. The host is the configured one,
/// never the request's `Host` header: a redirect must not send a client
/// (and its credentials, next) wherever the request says.
pub async fn serve_redirect(
    listener: TcpListener,
    host_name: String,
    https_port: u16,
    stop: CancellationToken,
) {
    let origin: Arc<str> = Arc::from(https_origin(&host_name, https_port));
    let connections = Connections::new(redirect_limits());
    let serve_stop = stop.clone();
    accept_loop(
        listener,
        connections,
        stop,
        move |stream, peer, connection| {
            let origin = Arc::clone(&origin);
            let stop = serve_stop.clone();
            async move {
                let service =
                    hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                        let response = redirect(&request, &origin);
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                serve_connection(stream, service, &connection, &stop, peer).await;
            }
        },
    )
    .await;
}

/// `https://host:port`, with an IPv6 literal in brackets.
fn https_origin(host_name: &str, port: u16) -> String {
    if host_name.contains(':') && !host_name.starts_with('[') {
        format!("https://[{host_name}]:{port}")
    } else {
        format!("https://{host_name}:{port}")
    }
}

fn redirect(request: &hyper::Request<Incoming>, origin: &str) -> hyper::Response<Body> {
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    hyper::Response::builder()
        .status(hyper::StatusCode::PERMANENT_REDIRECT)
        .header(hyper::header::LOCATION, format!("{origin}{path}"))
        .body(Body::empty())
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redirect_origin_brackets_ipv6() {
        assert_eq!(https_origin("bmc.example", 443), "https://bmc.example:443");
        assert_eq!(https_origin("::1", 8443), "https://[::1]:8443");
        assert_eq!(https_origin("[::1]", 8443), "https://[::1]:8443");
    }
}

//! TLS for NBD_OPT_STARTTLS, authenticated by pre-shared keys (the
//! `tls-creds-psk` of qemu, `--tls-psk` of nbdkit, `tls-psk-file` of
//! libnbd): no certificates; the client names a PSK identity from the
//! [`PskKeyring`], and knowing its key is what authenticates it.
//!
//! OpenSSL serves it: TLS 1.3 (with or without ECDHE, as the client asks)
//! and, for older clients, TLS 1.2's ECDHE-PSK and PSK suites.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::ssl::{
    Ssl, SslContext, SslMethod, SslOptions, SslSessionCacheMode, SslVerifyMode, SslVersion,
};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use super::keyring::PskKeyring;

/// TLS 1.2 suites offered: PSK with AEAD, forward-secret ones first.
const TLS12_CIPHERS: &str = "ECDHE-PSK-CHACHA20-POLY1305:PSK-AES256-GCM-SHA384:\
                             PSK-AES128-GCM-SHA256:PSK-CHACHA20-POLY1305";

/// A TLS session of an NBD connection.
pub type TlsStream = SslStream<TcpStream>;

/// Where a handshake leaves the identity the client authenticated as.
fn identity_index() -> Result<Index<Ssl, String>, ErrorStack> {
    static INDEX: OnceLock<Index<Ssl, String>> = OnceLock::new();
    if let Some(index) = INDEX.get() {
        return Ok(*index);
    }
    let index = Ssl::new_ex_index()?;
    Ok(*INDEX.get_or_init(|| index))
}

/// The server side of NBD's TLS, keyed from `keyring` at each handshake.
pub fn server_context(keyring: Arc<PskKeyring>) -> Result<SslContext, ErrorStack> {
    let index = identity_index()?;
    let mut builder = SslContext::builder(SslMethod::tls_server())?;
    builder.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    builder.set_cipher_list(TLS12_CIPHERS)?;
    builder.set_options(SslOptions::NO_RENEGOTIATION | SslOptions::NO_TICKET);
    builder.set_session_cache_mode(SslSessionCacheMode::OFF);
    // Resumption would let a session outlive its key's removal.
    builder.set_num_tickets(0)?;
    builder.set_verify(SslVerifyMode::NONE);
    builder.set_psk_server_callback(move |ssl, identity, psk_out| {
        let Some(identity) = identity else {
            return Ok(0);
        };
        let Some(key) = keyring.key(identity) else {
            tracing::debug!(
                identity = %String::from_utf8_lossy(identity),
                "NBD TLS client named an unknown PSK identity"
            );
            return Ok(0);
        };
        let key = key.bytes();
        if key.len() > psk_out.len() {
            return Ok(0);
        }
        psk_out[..key.len()].copy_from_slice(key);
        ssl.set_ex_data(index, String::from_utf8_lossy(identity).into_owned());
        Ok(key.len())
    });
    Ok(builder.build())
}

/// Runs the server's TLS handshake on `stream`; returns the session and
/// the PSK identity the client proved it holds the key of.
pub async fn accept(
    context: &SslContext,
    stream: TcpStream,
) -> std::io::Result<(TlsStream, String)> {
    let ssl = Ssl::new(context).map_err(std::io::Error::other)?;
    let mut tls = SslStream::new(ssl, stream).map_err(std::io::Error::other)?;
    Pin::new(&mut tls)
        .accept()
        .await
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.to_string()))?;
    let index = identity_index().map_err(std::io::Error::other)?;
    let identity = tls.ssl().ex_data(index).cloned().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no PSK identity")
    })?;
    Ok((tls, identity))
}

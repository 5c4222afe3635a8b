//! The harness the bounded fuzz tests share: a reactor-like runtime and
//! a peer that sends bytes to a server over an in-memory pipe.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs `f` on a current-thread runtime with a LocalSet, as a reactor does.
pub fn on_reactor<F: std::future::Future>(f: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&runtime, f)
}

/// Sends `input` as the peer, then closes; returns what the server said.
/// The server must finish within 10 s and must not panic.
pub async fn drive<F, Fut>(input: Vec<u8>, server: F) -> Vec<u8>
where
    F: FnOnce(tokio::io::DuplexStream) -> Fut,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let (mut client, server_end) = tokio::io::duplex(1 << 20);
    let server = tokio::task::spawn_local(server(server_end));
    let client_side = async move {
        let _ = client.write_all(&input).await;
        let _ = client.shutdown().await;
        let mut output = Vec::new();
        let _ = client.read_to_end(&mut output).await;
        output
    };
    let finished = tokio::time::timeout(Duration::from_secs(10), async {
        let output = client_side.await;
        server.await.expect("server task panicked");
        output
    })
    .await;
    finished.expect("server did not finish")
}

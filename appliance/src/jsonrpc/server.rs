//! Method routing and the Unix-socket server.
//!
//! The server serves [`MAX_CONNECTIONS`] connections at once. A connection
//! is *idle* while it waits for its next complete request; idle ones are
//! closed after [`IDLE_TIMEOUT`], and when every slot is taken a new client
//! takes the slot of the connection idle longest. So peers that connect and
//! say nothing cannot keep the reconciler (or the CLI) out: a new client
//! waits only while all connections are running requests.

use crate::locks::Recover;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, Semaphore};

use super::framing::{Decoder, FrameError};
use super::message::{self, Request, RpcError, parse_params};
use crate::accept_backoff::AcceptBackoff;

/// What a method returns: its result, or the error to send back.
pub type MethodResult = Result<Value, RpcError>;
type BoxedFuture = Pin<Box<dyn Future<Output = MethodResult> + Send>>;
type Handler = Arc<dyn Fn(Option<Value>) -> BoxedFuture + Send + Sync>;

/// Connections served at once. Beyond it a new connection replaces the
/// one idle longest, or waits (in the listen backlog) while none is idle.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a connection may wait for its next complete request (counted from
/// when it connected or last got an answer, so trickling bytes does not
/// extend it) before it is closed. Calls themselves are not limited here.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a new client that found every connection busy with a request
/// looks again for one that has become idle.
const EVICTION_RETRY: Duration = Duration::from_millis(50);

/// Maps method names to handlers. `rpc_get_methods` is always present.
#[derive(Clone, Default)]
pub struct Router {
    methods: BTreeMap<String, Handler>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // accepted for rpc.py compatibility; every method is always current
struct GetMethodsParams {
    #[serde(default)]
    current: bool,
    #[serde(default)]
    include_aliases: bool,
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `name`. A later registration of the same name replaces it.
    pub fn method<F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        F: Fn(Option<Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = MethodResult> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |params| Box::pin(handler(params)));
        self.methods.insert(name.to_string(), handler);
        self
    }

    /// Registered method names, sorted, `rpc_get_methods` included.
    pub fn method_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.methods.keys().cloned().collect();
        names.push("rpc_get_methods".into());
        names.sort();
        names.dedup();
        names
    }

    /// Answers one received value: a request or a batch. `None` when
    /// nothing is to be sent back (notifications only).
    pub async fn handle_value(&self, value: Value) -> Option<Value> {
        match value {
            Value::Array(batch) if batch.is_empty() => Some(message::failure(
                Value::Null,
                &RpcError::invalid_request("empty batch"),
            )),
            Value::Array(batch) => {
                let mut replies = Vec::new();
                for item in batch {
                    if let Some(reply) = self.handle_single(item).await {
                        replies.push(reply);
                    }
                }
                (!replies.is_empty()).then_some(Value::Array(replies))
            }
            single => self.handle_single(single).await,
        }
    }

    async fn handle_single(&self, value: Value) -> Option<Value> {
        let request = match Request::from_value(value) {
            Ok(request) => request,
            Err((id, error)) => return Some(message::failure(id, &error)),
        };
        let result = self.call(&request.method, request.params).await;
        let id = request.id?;
        Some(match result {
            Ok(result) => message::success(id, result),
            Err(error) => message::failure(id, &error),
        })
    }

    /// Runs a method. Each call runs as its own task so a panicking handler
    /// costs that call an internal error, not the server.
    pub async fn call(&self, method: &str, params: Option<Value>) -> MethodResult {
        if method == "rpc_get_methods" {
            parse_params::<GetMethodsParams>(params)?;
            return Ok(serde_json::to_value(self.method_names()).expect("strings serialise"));
        }
        let Some(handler) = self.methods.get(method) else {
            return Err(RpcError::method_not_found(method));
        };
        match tokio::spawn(handler(params)).await {
            Ok(result) => result,
            Err(join_error) => {
                tracing::error!(method, "RPC handler failed: {join_error}");
                Err(RpcError::internal(format!("{method} failed unexpectedly")))
            }
        }
    }
}

/// Binds `path` (replacing a stale socket file) with mode 0600: only the
/// appliance's own user may drive it.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::debug!(path = %path.display(), "removed stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(listener)
}

/// One open connection as the accept loop sees it.
#[derive(Default)]
struct Connection {
    /// Since when it has waited for a request; `None` while it runs one.
    idle_since: Mutex<Option<Instant>>,
    /// Told to close to make room for a new client.
    evict: Notify,
}

impl Connection {
    fn set_idle(&self, idle: bool) {
        *self.idle_since.locked() = idle.then(Instant::now);
    }

    fn idle_since(&self) -> Option<Instant> {
        *self.idle_since.locked()
    }
}

/// The open connections, to find the one idle longest.
#[derive(Default)]
struct Connections(Mutex<Vec<Arc<Connection>>>);

impl Connections {
    fn add(&self) -> Arc<Connection> {
        let connection = Arc::new(Connection::default());
        connection.set_idle(true);
        self.0.locked().push(Arc::clone(&connection));
        connection
    }

    fn remove(&self, connection: &Arc<Connection>) {
        self.0.locked().retain(|c| !Arc::ptr_eq(c, connection));
    }

    /// Tells the connection idle longest to close; false if none is idle.
    fn evict_longest_idle(&self) -> bool {
        let connections = self.0.locked();
        let longest = connections
            .iter()
            .filter_map(|c| c.idle_since().map(|since| (since, c)))
            .min_by_key(|(since, _)| *since);
        match longest {
            Some((_, connection)) => {
                // Not idle any more: the next new client picks another.
                connection.set_idle(false);
                connection.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: UnixListener,
    router: Arc<Router>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = Arc::new(Connections::default());
    let mut backoff = AcceptBackoff::new("JSON-RPC");
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = backoff.failed(&e) => {}
                    }
                    continue;
                }
            },
        };
        backoff.succeeded();
        let permit = loop {
            if let Ok(permit) = Arc::clone(&slots).try_acquire_owned() {
                break permit;
            }
            // Every slot taken: free the one idle longest, or, while all
            // are running requests, look again shortly.
            let evicted = connections.evict_longest_idle();
            if evicted {
                tracing::debug!(
                    "JSON-RPC connection limit ({MAX_CONNECTIONS}) reached: closing the connection idle longest"
                );
            }
            tokio::select! {
                _ = &mut shutdown => return,
                permit = Arc::clone(&slots).acquire_owned() => break permit.expect("semaphore never closed"),
                _ = tokio::time::sleep(EVICTION_RETRY), if !evicted => {}
            }
        };
        // Registered before its task runs, so that the next client can
        // already find it idle.
        let connection = connections.add();
        let router = Arc::clone(&router);
        let connections = Arc::clone(&connections);
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, &router, &connection).await {
                tracing::debug!("JSON-RPC connection ended: {e}");
            }
            connections.remove(&connection);
            drop(permit);
        });
    }
}

async fn serve_connection(
    mut stream: UnixStream,
    router: &Router,
    connection: &Connection,
) -> std::io::Result<()> {
    let mut decoder = Decoder::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut idle_deadline = tokio::time::Instant::now() + IDLE_TIMEOUT;
    loop {
        loop {
            match decoder.next_value() {
                Ok(Some(value)) => {
                    connection.set_idle(false);
                    if let Some(reply) = router.handle_value(value).await {
                        write_value(&mut stream, &reply).await?;
                    }
                    connection.set_idle(true);
                    idle_deadline = tokio::time::Instant::now() + IDLE_TIMEOUT;
                }
                Ok(None) => break,
                Err(error) => {
                    // The stream cannot be resynchronised after bad framing:
                    // say why, then close this connection only.
                    let error = match error {
                        FrameError::Syntax(detail) => RpcError::parse_error(detail),
                        FrameError::TooLarge => RpcError::parse_error(error),
                    };
                    write_value(&mut stream, &message::failure(Value::Null, &error)).await?;
                    return Ok(());
                }
            }
        }
        let n = tokio::select! {
            read = stream.read(&mut chunk) => read?,
            _ = tokio::time::sleep_until(idle_deadline) => {
                tracing::debug!("JSON-RPC connection idle for {IDLE_TIMEOUT:?}: closing");
                return Ok(());
            }
            _ = connection.evict.notified() => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        decoder.push(&chunk[..n]);
    }
}

/// Writes one answer; a peer that does not read it within [`IDLE_TIMEOUT`]
/// loses the connection rather than holding its slot.
async fn write_value(stream: &mut UnixStream, value: &Value) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(value).expect("JSON values serialise");
    bytes.push(b'\n');
    match tokio::time::timeout(IDLE_TIMEOUT, stream.write_all(&bytes)).await {
        Ok(written) => written,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the peer did not read its answer",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::message::codes;
    use serde_json::json;

    fn router() -> Router {
        Router::new()
            .method(
                "echo",
                |params| async move { Ok(params.unwrap_or(Value::Null)) },
            )
            .method("boom", |_| async move { panic!("handler bug") })
    }

    #[tokio::test]
    async fn dispatch_success_errors_and_batches() {
        let r = router();
        let reply = r
            .handle_value(json!({"jsonrpc":"2.0","method":"echo","params":[1],"id":1}))
            .await;
        assert_eq!(reply, Some(json!({"jsonrpc":"2.0","id":1,"result":[1]})));

        let reply = r
            .handle_value(json!({"jsonrpc":"2.0","method":"nope","id":2}))
            .await
            .unwrap();
        assert_eq!(reply["error"]["code"], codes::METHOD_NOT_FOUND);

        let reply = r
            .handle_value(json!({"jsonrpc":"2.0","method":"boom","id":3}))
            .await
            .unwrap();
        assert_eq!(reply["error"]["code"], codes::INTERNAL_ERROR);

        // A notification gets no answer.
        assert_eq!(
            r.handle_value(json!({"jsonrpc":"2.0","method":"echo"}))
                .await,
            None
        );

        let reply = r
            .handle_value(json!([
                {"jsonrpc":"2.0","method":"echo","params":{"a":1},"id":"x"},
                {"jsonrpc":"2.0","method":"echo"},
                {"bad": true}
            ]))
            .await
            .unwrap();
        let replies = reply.as_array().unwrap();
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0]["result"], json!({"a":1}));
        assert_eq!(replies[1]["error"]["code"], codes::INVALID_REQUEST);

        let reply = r.handle_value(json!([])).await.unwrap();
        assert_eq!(reply["error"]["code"], codes::INVALID_REQUEST);
    }

    #[tokio::test]
    async fn rpc_get_methods_lists_everything() {
        let names = router().call("rpc_get_methods", None).await.unwrap();
        assert_eq!(names, json!(["boom", "echo", "rpc_get_methods"]));
        let err = router()
            .call("rpc_get_methods", Some(json!({"bogus": 1})))
            .await
            .unwrap_err();
        assert_eq!(err.code, codes::INVALID_PARAMS);
    }

    #[tokio::test]
    async fn socket_survives_garbage_and_serves_the_next_client() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sock");
        let listener = bind(&path).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::new(router()), async {
            let _ = stopped.await;
        }));

        let mut raw = UnixStream::connect(&path).await.unwrap();
        raw.write_all(b"{\"jsonrpc\": oops}").await.unwrap();
        let mut reply = String::new();
        raw.read_to_string(&mut reply).await.unwrap();
        let reply: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(reply["error"]["code"], codes::PARSE_ERROR);

        let mut client = crate::jsonrpc::RpcClient::connect(&path).await.unwrap();
        let result = client.call("echo", Some(json!({"k": "v"}))).await.unwrap();
        assert_eq!(result, json!({"k": "v"}));
        let err = client.call("missing", None).await.unwrap_err();
        assert!(
            matches!(err, crate::jsonrpc::CallError::Rpc(e) if e.code == codes::METHOD_NOT_FOUND)
        );

        stop.send(()).unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_new_client_takes_the_slot_of_the_one_idle_longest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sock");
        let listener = bind(&path).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::new(router()), async {
            let _ = stopped.await;
        }));
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(UnixStream::connect(&path).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut client = crate::jsonrpc::RpcClient::connect(&path).await.unwrap();
        let result = tokio::time::timeout(Duration::from_secs(5), client.call("echo", None))
            .await
            .expect("answered while every slot was taken by an idle peer")
            .unwrap();
        assert_eq!(result, Value::Null);
        // The first idle peer was the one closed.
        let mut byte = [0u8; 1];
        assert_eq!(idle[0].read(&mut byte).await.unwrap(), 0);
        stop.send(()).unwrap();
        server.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sock");
        let listener = bind(&path).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::new(router()), async {
            let _ = stopped.await;
        }));
        let mut client = crate::jsonrpc::RpcClient::connect(&path).await.unwrap();
        client.call("echo", None).await.unwrap();
        let mut trickler = UnixStream::connect(&path).await.unwrap();
        let started = tokio::time::Instant::now();
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(IDLE_TIMEOUT * 2, async {
            loop {
                // Bytes that never make a request do not keep it open.
                trickler.write_all(b" ").await.unwrap();
                tokio::select! {
                    // End of stream or reset: closed either way.
                    read = trickler.read(&mut byte) => return read.unwrap_or(0),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        })
        .await
        .expect("closed");
        assert_eq!(closed, 0);
        let elapsed = started.elapsed();
        assert!(
            elapsed >= IDLE_TIMEOUT - Duration::from_secs(1),
            "{elapsed:?}"
        );
        assert!(
            elapsed <= IDLE_TIMEOUT + Duration::from_secs(1),
            "{elapsed:?}"
        );
        assert!(
            client.call("echo", None).await.is_err(),
            "the idle client is closed too"
        );
        stop.send(()).unwrap();
        server.await.unwrap();
    }
}

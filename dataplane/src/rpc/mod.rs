//! The dataplane's JSON-RPC methods, with SPDK's names and parameters.
//!
//! Handlers run on the control thread; they change the bdev registry and
//! export table (control-path locks) and reach reactor-local state only by
//! message.

mod bdev;
mod framework;
mod interconnect;
mod keyring;
mod lvol;
mod nbd;
mod nvmf;
mod raid;
pub mod version;

use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use shoal_appliance::jsonrpc::{MethodResult, Router, RpcError, parse_params};

use crate::bdev::BdevRegistry;
use crate::interconnect::Interconnect;
use crate::nbd::exports::Exports;
use crate::reactor::Reactors;

/// What the handlers work on.
pub struct Context {
    pub cluster: u32,
    pub registry: Arc<BdevRegistry>,
    pub exports: Arc<Exports>,
    pub nvmf: Arc<crate::nvmf::subsystem::Target>,
    pub portals: Arc<crate::nvmf::listener::Portals>,
    pub reactors: Arc<Reactors>,
    /// Absent when the dataplane runs without doorbells (outside shoald).
    pub interconnect: Option<Interconnect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

/// Every method this data cluster serves.
pub fn router(context: Arc<Context>) -> Router {
    let router = Router::new().method("spdk_get_version", |params| async move {
        parse_params::<NoParams>(params)?;
        Ok(version::version())
    });
    let router = bdev::register(router, &context);
    let router = nbd::register(router, &context);
    let router = nvmf::register(router, &context);
    let router = interconnect::register(router, &context);
    let router = keyring::register(router, &context);
    framework::register(router, &context)
}

/// Registers `name` with a handler taking typed params and the context.
fn method<P, F, Fut>(router: Router, name: &str, context: &Arc<Context>, handler: F) -> Router
where
    P: DeserializeOwned + Send + 'static,
    F: Fn(Arc<Context>, P) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = MethodResult> + Send + 'static,
{
    let context = Arc::clone(context);
    router.method(name, move |params: Option<Value>| {
        let context = Arc::clone(&context);
        async move {
            let params: P = parse_params(params)?;
            handler(context, params).await
        }
    })
}

/// Runs `work` on reactor 0 and waits for its answer (methods whose
/// bdev changes do I/O: raid and lvol).
async fn on_reactor<T, F, Fut>(context: &Context, work: F) -> Result<T, RpcError>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, RpcError>> + 'static,
{
    let reactor = context
        .reactors
        .get(0)
        .expect("a data cluster has a reactor");
    let (done, answer) = tokio::sync::oneshot::channel();
    let sent = reactor.spawn(move || async move {
        let _ = done.send(work().await);
    });
    if !sent {
        return Err(stopping());
    }
    answer.await.unwrap_or_else(|_| Err(stopping()))
}

fn stopping() -> RpcError {
    RpcError::errno(nix::errno::Errno::ESHUTDOWN, "the data cluster is stopping")
}

/// A UUID parameter, named in the error when malformed.
fn parse_uuid(text: Option<&str>) -> Result<Option<uuid::Uuid>, RpcError> {
    text.map(|t| {
        uuid::Uuid::parse_str(t)
            .map_err(|e| RpcError::invalid_params(format!("uuid {t:?} is not a UUID: {e}")))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data cluster's context with one reactor and no bdevs.
    pub(crate) fn test_context() -> Arc<Context> {
        let reactors = Arc::new(Reactors::start(1, &[], false).unwrap());
        let nvmf = Arc::new(crate::nvmf::subsystem::Target::new());
        Arc::new(Context {
            cluster: 0,
            registry: Arc::new(BdevRegistry::new()),
            exports: Arc::new(Exports::new()),
            portals: Arc::new(crate::nvmf::listener::Portals::new(
                Arc::clone(&nvmf),
                reactors.handles(),
            )),
            nvmf,
            reactors,
            interconnect: None,
        })
    }

    #[tokio::test]
    async fn version_has_spdk_shape() {
        let context = test_context();
        let router = router(Arc::clone(&context));
        let v = router.call("spdk_get_version", None).await.unwrap();
        assert!(v["version"].as_str().unwrap().starts_with("Shoal v"));
        assert!(v["fields"]["major"].is_u64());
        let err = router
            .call("spdk_get_version", Some(serde_json::json!({"x": 1})))
            .await
            .unwrap_err();
        assert_eq!(err.code, -32602);
        context.reactors.shutdown();
    }
}

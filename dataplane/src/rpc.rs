//! The dataplane's JSON-RPC methods, named and shaped as SPDK's.

use serde::Deserialize;
use serde_json::json;
use shoal_appliance::jsonrpc::{Router, parse_params};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

/// The methods this cluster serves.
pub fn router() -> Router {
    Router::new().method("spdk_get_version", |params| async move {
        parse_params::<NoParams>(params)?;
        Ok(version())
    })
}

/// `spdk_get_version`'s answer: the same shape as SPDK's, naming Shoal.
pub fn version() -> serde_json::Value {
    let number = |text: &str| text.parse::<u32>().unwrap_or(0);
    json!({
        "version": format!("Shoal v{}", env!("CARGO_PKG_VERSION")),
        "fields": {
            "major": number(env!("CARGO_PKG_VERSION_MAJOR")),
            "minor": number(env!("CARGO_PKG_VERSION_MINOR")),
            "patch": number(env!("CARGO_PKG_VERSION_PATCH")),
            "suffix": env!("CARGO_PKG_VERSION_PRE"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn version_has_spdk_shape() {
        let v = router().call("spdk_get_version", None).await.unwrap();
        assert!(v["version"].as_str().unwrap().starts_with("Shoal v"));
        assert!(v["fields"]["major"].is_u64());
        let err = router()
            .call("spdk_get_version", Some(json!({"x": 1})))
            .await
            .unwrap_err();
        assert_eq!(err.code, -32602);
    }
}

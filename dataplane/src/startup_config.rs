//! The startup configuration: a JSON file of RPC calls applied before the
//! cluster serves, in SPDK's JSON config format:
//!
//! ```json
//! {"subsystems": [{"subsystem": "bdev", "config": [
//!     {"method": "bdev_malloc_create", "params": {"name": "m0", "num_blocks": 2048, "block_size": 512}}
//! ]}]}
//! ```
//!
//! Calls run in file order; the first failure stops the start with a
//! message naming the call.

use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;
use shoal_appliance::jsonrpc::Router;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    subsystems: Vec<Subsystem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Subsystem {
    subsystem: String,
    #[serde(default)]
    config: Option<Vec<Call>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Call {
    method: String,
    #[serde(default)]
    params: Option<Value>,
}

/// Applies every call in `path` through `router`.
pub async fn apply(path: &Path, router: &Router) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: ConfigFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an SPDK-style JSON config", path.display()))?;
    let mut applied = 0;
    for subsystem in file.subsystems {
        for (index, call) in subsystem.config.unwrap_or_default().into_iter().enumerate() {
            if let Err(e) = router.call(&call.method, call.params).await {
                bail!(
                    "{}: subsystem {} call {index} ({}) failed: {e}",
                    path.display(),
                    subsystem.subsystem,
                    call.method
                );
            }
            applied += 1;
        }
    }
    tracing::info!(path = %path.display(), calls = applied, "startup configuration applied");
    Ok(())
}

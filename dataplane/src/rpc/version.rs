//! `spdk_get_version`.

use serde_json::{Value, json};

/// The same shape as SPDK's answer, naming Shoal.
pub fn version() -> Value {
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

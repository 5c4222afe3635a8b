//! `cargo run` convenience: build the sibling binaries shoald spawns.
//!
//! `cargo run` builds only the package holding the binary it runs, so on a
//! fresh checkout `shoal-dataplane` and `shoal-management` would be missing
//! (or stale after an edit). When shoald sees it was started by `cargo run`
//! of this package, it asks the same cargo to build them, with the profile
//! it was built with, before spawning anything. Installed binaries (images,
//! tests) never take this path.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

/// Builds shoal-dataplane and shoal-management when shoald runs under
/// `cargo run`. Returns whether it did.
pub fn build_siblings_under_cargo_run(binaries_dir: &Path) -> anyhow::Result<bool> {
    let (Some(cargo), Some(manifest_dir)) = (
        std::env::var_os("CARGO"),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) else {
        return Ok(false);
    };
    if std::env::var_os("CARGO_PKG_NAME").is_none_or(|name| name != env!("CARGO_PKG_NAME")) {
        return Ok(false);
    }
    let profile = match binaries_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => return Ok(false),
    };
    let workspace_manifest = Path::new(&manifest_dir)
        .parent()
        .context("package directory has no parent")?
        .join("Cargo.toml");
    tracing::info!(
        "started by cargo run: building shoal-dataplane and shoal-management ({profile} profile)"
    );
    let status = Command::new(cargo)
        .args([
            "build",
            "--profile",
            profile,
            "--bins",
            "-p",
            "shoal-dataplane",
            "-p",
            "shoal-management",
        ])
        .arg("--manifest-path")
        .arg(&workspace_manifest)
        .status()
        .context("cannot run cargo")?;
    anyhow::ensure!(
        status.success(),
        "cargo build of the sibling binaries failed ({status})"
    );
    Ok(true)
}

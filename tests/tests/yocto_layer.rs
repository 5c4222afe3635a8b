//! The Yocto layer builds the workspace from the crates listed in
//! `yocto-layer/recipes-shoal/shoal/shoal-crates.inc`; BitBake fetches
//! exactly those and cargo builds `--frozen` against them. These tests fail
//! when that list no longer matches `Cargo.lock`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const GENERATOR: &str = "yocto-layer/scripts/generate-crates-inc";
const CRATES_INC: &str = "yocto-layer/recipes-shoal/shoal/shoal-crates.inc";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn generator(root: &Path, args: &[&str]) -> Output {
    Command::new("python3")
        .arg(root.join(GENERATOR))
        .args(args)
        .output()
        .expect("python3 runs")
}

#[test]
fn shoal_crates_inc_matches_cargo_lock() {
    let output = generator(&workspace(), &["--check"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The check itself: a copy of the layer whose list misses a crate is
/// reported stale, and regenerating it gives the committed file.
#[test]
fn a_stale_crate_list_is_detected_and_regenerated() {
    let real = workspace();
    let copy = tempfile::tempdir().expect("temp dir");
    for file in ["Cargo.lock", GENERATOR, CRATES_INC] {
        let target = copy.path().join(file);
        std::fs::create_dir_all(target.parent().expect("has a parent")).expect("mkdir");
        std::fs::copy(real.join(file), &target).expect("copy");
    }
    let committed = std::fs::read_to_string(real.join(CRATES_INC)).expect("read");
    let stale: String = committed
        .lines()
        .filter(|line| !line.contains("crates.io/tokio/"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_ne!(stale, committed, "the list names tokio");
    std::fs::write(copy.path().join(CRATES_INC), stale).expect("write");

    let check = generator(copy.path(), &["--check"]);
    assert_eq!(
        check.status.code(),
        Some(1),
        "a stale list passes the check"
    );
    assert!(String::from_utf8_lossy(&check.stderr).contains("out of date"));

    assert!(generator(copy.path(), &[]).status.success());
    assert!(generator(copy.path(), &["--check"]).status.success());
    let regenerated = std::fs::read_to_string(copy.path().join(CRATES_INC)).expect("read");
    assert_eq!(regenerated, committed);
}

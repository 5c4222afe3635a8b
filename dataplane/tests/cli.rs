//! shoal-dataplane refuses to run without a valid appliance region.

use std::process::Command;

fn dataplane(region: &std::path::Path, socket: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shoal-dataplane"))
        .args(["--cluster", "0", "--region"])
        .arg(region)
        .arg("--rpc-socket")
        .arg(socket)
        .output()
        .unwrap()
}

#[test]
fn a_file_that_is_not_a_region_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.region");
    std::fs::write(&junk, vec![0xa5u8; 1 << 16]).unwrap();
    let output = dataplane(&junk, &dir.path().join("dp.sock"));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a Shoal region"), "{stderr}");
    assert!(
        !dir.path().join("dp.sock").exists(),
        "no socket without a region"
    );
}

#[test]
fn a_missing_region_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let output = dataplane(
        &dir.path().join("absent.region"),
        &dir.path().join("dp.sock"),
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("absent.region"));
}

#[test]
fn out_of_range_arguments_are_usage_errors() {
    let output = Command::new(env!("CARGO_BIN_EXE_shoal-dataplane"))
        .args([
            "--cluster",
            "0",
            "--region",
            "r",
            "--rpc-socket",
            "s",
            "--cores",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--cores"));
}

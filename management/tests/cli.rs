//! shoal-management refuses to run without a valid appliance region.

use std::process::Command;

#[test]
fn a_file_that_is_not_a_region_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.region");
    std::fs::write(&junk, vec![0u8; 1 << 16]).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_shoal-management"))
        .arg("--state-dir")
        .arg(dir.path())
        .arg("--region")
        .arg(&junk)
        .arg("--supervisor-socket")
        .arg(dir.path().join("shoald.sock"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a Shoal region"), "{stderr}");
}

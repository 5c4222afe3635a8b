//! The command lines of shoald and shoal-rpc.

use std::path::Path;
use std::process::Command;

use shoal_appliance::config::ApplianceConfig;

fn shoald() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shoald"));
    command.env_remove("SHOAL_STATE_DIR");
    command
}

#[test]
fn printed_default_config_is_the_default() {
    let output = shoald().arg("--print-default-config").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let parsed = ApplianceConfig::from_toml(&text, Path::new("printed")).unwrap();
    assert_eq!(parsed, ApplianceConfig::default());
    assert!(
        text.contains("# "),
        "the printed default keeps its comments"
    );
}

#[test]
fn check_config_applies_the_state_dir_override() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("a.toml");
    std::fs::write(&config, "[topology]\ndata_clusters = 2\n").unwrap();
    let output = shoald()
        .arg("--config")
        .arg(&config)
        .arg("--check-config")
        .env("SHOAL_STATE_DIR", "/srv/shoal")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let effective: ApplianceConfig =
        toml::from_str(&String::from_utf8(output.stdout).unwrap()).unwrap();
    assert_eq!(effective.topology.data_clusters, 2);
    assert_eq!(effective.state_dir, Path::new("/srv/shoal"));
}

#[test]
fn missing_config_file_is_named() {
    let output = shoald()
        .args(["--config", "/nonexistent/shoal.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/shoal.toml"));
}

#[test]
fn shoal_rpc_rejects_bad_params_and_names_an_absent_socket() {
    let rpc = env!("CARGO_BIN_EXE_shoal-rpc");
    let output = Command::new(rpc)
        .args(["-s", "/nonexistent.sock", "m", "[1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not valid JSON"));

    let output = Command::new(rpc)
        .args(["-s", "/nonexistent.sock", "m", "42"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));

    let output = Command::new(rpc)
        .args(["-s", "/nonexistent.sock", "appliance_get_status"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent.sock"));
}

//! Dataplane launchers for failure tests: a shell script that shoald runs
//! instead of the dataplane binary, doing `step` first and then `exec`ing
//! the real binary with the same arguments. In `step`, `$2` is the
//! cluster index (`--cluster <i>` comes first).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::bin_dir;

/// Writes the launcher into `dir` and returns its path.
pub fn dataplane_launcher(dir: &Path, step: &str) -> PathBuf {
    let script = dir.join("dataplane-launcher");
    let real = bin_dir().join("shoal-dataplane");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{step}\nexec '{real}' \"$@\"\n",
            real = real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// A launcher that holds cluster `i` back for `seconds` before it starts
/// while `<dir>/slow-start-<i>` exists ([`hold_back`]): a killed cluster
/// then stays away long enough for the test to see the appliance without
/// it, and returns once [`let_back`] removes the file.
pub fn slow_start_launcher(dir: &Path, seconds: u32) -> PathBuf {
    dataplane_launcher(
        dir,
        &format!(
            "[ -e '{}/slow-start-'\"$2\" ] && sleep {seconds}",
            dir.display()
        ),
    )
}

/// Makes cluster `cluster` start slowly next time (see
/// [`slow_start_launcher`]).
pub fn hold_back(dir: &Path, cluster: u32) {
    std::fs::write(dir.join(format!("slow-start-{cluster}")), b"").unwrap();
}

/// Lets cluster `cluster` start at once again.
pub fn let_back(dir: &Path, cluster: u32) {
    let _ = std::fs::remove_file(dir.join(format!("slow-start-{cluster}")));
}

/// An appliance of `clusters` for redundant-volume tests: drives of
/// 128 MiB, a 64 MiB region, and clusters that stay away `seconds` after
/// a kill while [`hold_back`] is in effect. Returns it with the directory
/// [`hold_back`] and [`let_back`] take.
pub fn redundancy_appliance(clusters: u32, seconds: u32) -> (crate::Appliance, PathBuf) {
    let builder = crate::Appliance::builder(clusters);
    let dir = builder.dir().to_path_buf();
    let launcher = slow_start_launcher(&dir, seconds);
    let appliance = builder
        .set("memory.region_mib", 64)
        .set("dataplane.drive_size_mib", 128)
        .set("binaries.dataplane", launcher.display().to_string())
        .start_ready();
    (appliance, dir)
}

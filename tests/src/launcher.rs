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

//! Duties of PID 1 in the quick image, where shoald is `/init`.
//!
//! The kernel starts us with nothing mounted. We mount the pseudo file
//! systems the appliance needs, reap every orphan (the supervisor's
//! `waitpid(-1)` loop already does), and when asked to stop we power the
//! machine off instead of exiting: PID 1 exiting panics the kernel.

use std::path::Path;

use nix::mount::{MsFlags, mount};

/// True when this process is the first process or was started as `init`.
pub fn running_as_init() -> bool {
    let invoked_as_init = std::env::args_os()
        .next()
        .and_then(|argv0| Path::new(&argv0).file_name().map(|n| n == "init"))
        .unwrap_or(false);
    std::process::id() == 1 || invoked_as_init
}

/// Mounts /proc, /sys, /dev, /dev/shm, /run and /dev/hugepages. A file
/// system that is already mounted is left as it is.
pub fn mount_pseudo_filesystems() {
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let table: [(&str, &str, &str, MsFlags, Option<&str>); 6] = [
        (
            "proc",
            "/proc",
            "proc",
            nosuid_nodev | MsFlags::MS_NOEXEC,
            None,
        ),
        (
            "sysfs",
            "/sys",
            "sysfs",
            nosuid_nodev | MsFlags::MS_NOEXEC,
            None,
        ),
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ),
        (
            "tmpfs",
            "/dev/shm",
            "tmpfs",
            nosuid_nodev,
            Some("mode=1777"),
        ),
        ("tmpfs", "/run", "tmpfs", nosuid_nodev, Some("mode=0755")),
        (
            "hugetlbfs",
            "/dev/hugepages",
            "hugetlbfs",
            nosuid_nodev,
            Some("mode=0700"),
        ),
    ];
    for (source, target, fstype, flags, data) in table {
        if let Err(e) = std::fs::create_dir_all(target) {
            tracing::warn!("cannot create {target}: {e}");
            continue;
        }
        match mount(Some(source), target, Some(fstype), flags, data) {
            Ok(()) => tracing::info!("mounted {fstype} on {target}"),
            Err(nix::errno::Errno::EBUSY) => tracing::debug!("{target} already mounted"),
            Err(e) => tracing::warn!("cannot mount {fstype} on {target}: {e}"),
        }
    }
}

/// Flushes file systems and powers off. Never returns.
pub fn power_off() -> ! {
    nix::unistd::sync();
    match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF) {
        Ok(never) => match never {},
        Err(e) => {
            tracing::error!("power off failed: {e}; halting in a sleep loop");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }
}

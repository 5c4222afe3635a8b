//! Starting a child process the way the supervisor needs it.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::sched::CpuSet;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Everything needed to start (and restart) one child.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Affinity applied before exec, so every thread the child creates
    /// inherits it. `None`: unpinned.
    pub cpus: Option<CpuSet>,
    /// Descriptors the child inherits (close-on-exec is cleared for it
    /// alone, between fork and exec).
    pub inherit_fds: Vec<std::os::fd::RawFd>,
}

/// Environment that belongs to shoald alone: systemd's notification and
/// watchdog contract is with the supervisor, not with its children.
const SUPERVISOR_ONLY_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
];

/// Spawns the child and returns its pid. The child is never waited for
/// through `std::process::Child`: the supervisor reaps every pid itself with
/// `waitpid(-1)`, which it must do anyway as PID 1.
pub fn launch(spec: &LaunchSpec) -> std::io::Result<Pid> {
    let mut command = Command::new(&spec.program);
    command.args(&spec.args).stdin(Stdio::null());
    for name in SUPERVISOR_ONLY_ENV {
        command.env_remove(name);
    }
    // Own process group: Ctrl-C on a terminal reaches shoald alone, which
    // then stops the children in order (management first, then dataplanes).
    command.process_group(0);
    let supervisor = nix::unistd::getpid();
    let cpus = spec.cpus;
    let inherit_fds = spec.inherit_fds.clone();
    // SAFETY: runs between fork and exec in the child; it only makes
    // async-signal-safe system calls (prctl, getppid, sched_setaffinity,
    // fcntl) and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            // The supervisor runs everything on its main thread, so "parent
            // died" really means shoald died: don't outlive it.
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
            if nix::unistd::getppid() != supervisor {
                return Err(std::io::Error::other("supervisor exited during spawn"));
            }
            if let Some(cpus) = &cpus {
                nix::sched::sched_setaffinity(Pid::from_raw(0), cpus)?;
            }
            for &fd in &inherit_fds {
                // fcntl on a descriptor number is async-signal-safe.
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    Ok(Pid::from_raw(child.id() as i32))
}

//! Doorbells: how one data cluster wakes another after putting descriptors
//! in its rings.
//!
//! A doorbell is an eventfd. The supervisor creates one per data cluster
//! before starting any of them and hands every dataplane all of them as
//! inherited file descriptors (`--doorbells 5,6,7,8`); a restarted
//! dataplane inherits the same ones, so its peers never have to learn
//! anything new. The owner of doorbell `i` (cluster `i`) waits on it; every
//! other cluster rings it after pushing into a ring `i` drains. The counter
//! an eventfd keeps means a ring that happens while the owner is busy is
//! not lost: its next wait returns at once.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};

#[derive(Debug)]
pub struct Doorbell {
    fd: OwnedFd,
}

impl Doorbell {
    /// A new, non-blocking doorbell. Close-on-exec: the supervisor decides
    /// explicitly which children inherit it.
    pub fn new() -> std::io::Result<Self> {
        let eventfd =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        Ok(Self {
            fd: OwnedFd::from(eventfd),
        })
    }

    /// Takes ownership of an inherited descriptor after checking that it
    /// is an eventfd (a wrong number on the command line must not make the
    /// dataplane write into some other file).
    pub fn from_inherited(raw: RawFd) -> std::io::Result<Self> {
        let link = std::fs::read_link(format!("/proc/self/fd/{raw}")).map_err(|e| {
            std::io::Error::new(e.kind(), format!("doorbell fd {raw} is not open: {e}"))
        })?;
        if link.as_os_str() != "anon_inode:[eventfd]" {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("doorbell fd {raw} is {}, not an eventfd", link.display()),
            ));
        }
        // SAFETY: the descriptor is open (checked above) and was handed to
        // this process for it to own; nothing else in the process uses it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // The flag is per open file description, shared with the
        // supervisor, which already set it; setting it again is harmless
        // and makes the doorbell usable however the fd was created.
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )?;
        Ok(Self { fd })
    }

    /// Wakes the owner. A counter at its maximum already means "awake".
    pub fn ring(&self) {
        match nix::unistd::write(&self.fd, &1u64.to_ne_bytes()) {
            Ok(_) | Err(Errno::EAGAIN) => {}
            Err(errno) => tracing::warn!("cannot ring doorbell: {errno}"),
        }
    }

    /// Owner: clears pending rings; true if there were any.
    pub fn drain(&self) -> bool {
        let mut value = [0u8; 8];
        matches!(nix::unistd::read(&self.fd, &mut value), Ok(8))
    }
}

impl AsFd for Doorbell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Doorbell {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Parses `--doorbells` ("5,6,7,8") into doorbells, one per data cluster.
pub fn from_inherited_list(fds: &[RawFd]) -> std::io::Result<Vec<Doorbell>> {
    fds.iter().map(|&fd| Doorbell::from_inherited(fd)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_then_drain_once() {
        let bell = Doorbell::new().unwrap();
        assert!(!bell.drain(), "a new doorbell is quiet");
        bell.ring();
        bell.ring();
        assert!(bell.drain(), "rings accumulate");
        assert!(!bell.drain(), "one drain clears them all");
    }

    #[test]
    fn only_an_eventfd_is_accepted_as_inherited() {
        let file = tempfile::tempfile().unwrap();
        let err = Doorbell::from_inherited(file.as_raw_fd()).unwrap_err();
        assert!(err.to_string().contains("not an eventfd"), "{err}");
        let err = Doorbell::from_inherited(987_654).unwrap_err();
        assert!(err.to_string().contains("not open"), "{err}");
    }
}

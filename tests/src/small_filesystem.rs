//! A small, size-limited file system for tests of what happens when one
//! fills up: a tmpfs mounted in a private mount namespace of the calling
//! thread, so nothing else on the machine sees it and it cannot outlive
//! the test's processes. Processes the thread starts afterwards (shoald
//! and its children) inherit the namespace and see the mount.

use std::io::Write;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

pub struct SmallFilesystem {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl SmallFilesystem {
    /// A tmpfs of `size_mib` MiB; `None` (the test says it is skipped)
    /// where this process may not make mount namespaces (not root).
    pub fn tmpfs(size_mib: u64) -> Option<Self> {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("SKIPPED: a size-limited file system needs root");
            return None;
        }
        // This thread's own mount namespace, whose mounts do not
        // propagate back to the machine's.
        unshare(CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .expect("make / private");
        let dir = tempfile::Builder::new()
            .prefix("shoal-small-fs-")
            .tempdir()
            .unwrap();
        let mount_point = dir.path().join("fs");
        std::fs::create_dir(&mount_point).unwrap();
        mount(
            Some("tmpfs"),
            &mount_point,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("size={size_mib}m,mode=0700").as_str()),
        )
        .expect("mount a tmpfs");
        Some(Self {
            _dir: dir,
            mount: mount_point,
        })
    }

    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// Bytes still free (statvfs `f_bavail`).
    // The field types are u64 on 64-bit Linux only.
    #[allow(clippy::useless_conversion)]
    pub fn free_bytes(&self) -> u64 {
        let stats = nix::sys::statvfs::statvfs(&self.mount).unwrap();
        u64::from(stats.blocks_available()) * u64::from(stats.fragment_size())
    }

    /// Fills the file system with file `name` until nothing more fits,
    /// leaving `leave_bytes` free; returns the file (remove it to free).
    pub fn fill(&self, name: &str, leave_bytes: u64) -> PathBuf {
        let path = self.mount.join(name);
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0x5au8; 64 << 10];
        while self.free_bytes() > leave_bytes {
            let room = (self.free_bytes() - leave_bytes).min(chunk.len() as u64) as usize;
            if file.write_all(&chunk[..room]).is_err() {
                break;
            }
        }
        file.sync_all().ok();
        path
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        // Detached: a process of the test that still holds a file there
        // cannot keep the mount (or the test) alive.
        let _ = umount2(&self.mount, MntFlags::MNT_DETACH);
    }
}

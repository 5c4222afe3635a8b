//! Whether new blocks on the drives fit the space really there.
//!
//! A drive in the dev setup is a sparse file: its nominal size (what
//! placement counts) says nothing about the file system under it, which
//! other drives, the management database and anything else on the machine
//! share. So before a volume takes new blocks, the blocks each file system
//! would have to hold are added up and compared with what it has free
//! (`statvfs`, space available to unprivileged writers), less a reserve
//! that keeps the state directory writable. A block device drive has its
//! nominal size for real and is not checked.
//!
//! The check is at creation: blocks are not reserved, so space that others
//! take later still runs out, and writes then fail with ENOSPC on the host.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Bytes each file system keeps free beyond any volume: room for the
/// management database, logs and the file systems' own metadata.
pub const RESERVE_BYTES: u64 = 16 << 20;

/// The file system under one drive file, as `statvfs` saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSystemSpace {
    /// `st_dev` of the drive file: drives with the same one share space.
    pub device: u64,
    /// Bytes an unprivileged writer may still take (`f_bavail × f_frsize`).
    pub available_bytes: u64,
    /// The drive file, to name the file system in messages.
    pub path: PathBuf,
}

/// The space under drive file `path`; `None` for a block device (its size
/// is real) or a path that is not a regular file.
pub fn probe(path: &Path) -> std::io::Result<Option<FileSystemSpace>> {
    let metadata = std::fs::metadata(path)?;
    if metadata.file_type().is_block_device() || !metadata.is_file() {
        return Ok(None);
    }
    let stats = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    Ok(Some(FileSystemSpace {
        device: metadata.dev(),
        available_bytes: available_bytes(&stats),
        path: path.to_path_buf(),
    }))
}

/// Bytes an unprivileged writer may still take on a file system.
// The field types are u64 on 64-bit Linux only (c_ulong, fsblkcnt_t).
#[allow(clippy::useless_conversion)]
pub fn available_bytes(stats: &nix::sys::statvfs::Statvfs) -> u64 {
    u64::from(stats.blocks_available()).saturating_mul(u64::from(stats.fragment_size()))
}

/// A file system that cannot hold the new blocks asked of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// A drive file on that file system.
    pub path: PathBuf,
    pub needed_bytes: u64,
    pub available_bytes: u64,
    pub reserve_bytes: u64,
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the file system holding {} has {} bytes free, {} of them kept in reserve, \
             and the new blocks on its drives need {} bytes",
            self.path.display(),
            self.available_bytes,
            self.reserve_bytes,
            self.needed_bytes
        )
    }
}

/// The first file system (in device order) whose new blocks do not fit
/// its free space less `reserve_bytes`, given each drive's file system
/// (`None`: a block device, never short) and the bytes it would take.
pub fn shortfall(
    demands: &[(Option<FileSystemSpace>, u64)],
    reserve_bytes: u64,
) -> Option<Shortfall> {
    let mut needed: BTreeMap<u64, (&FileSystemSpace, u64)> = BTreeMap::new();
    for (space, bytes) in demands {
        if let Some(space) = space {
            let entry = needed.entry(space.device).or_insert((space, 0));
            entry.1 = entry.1.saturating_add(*bytes);
        }
    }
    needed.into_values().find_map(|(space, bytes)| {
        let usable = space.available_bytes.saturating_sub(reserve_bytes);
        (bytes > usable).then(|| Shortfall {
            path: space.path.clone(),
            needed_bytes: bytes,
            available_bytes: space.available_bytes,
            reserve_bytes,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn fs(device: u64, available_mib: u64) -> Option<FileSystemSpace> {
        Some(FileSystemSpace {
            device,
            available_bytes: available_mib * MIB,
            path: PathBuf::from(format!("/fs{device}/drive.img")),
        })
    }

    #[test]
    fn blocks_that_fit_beside_the_reserve_pass() {
        let demands = [(fs(1, 100), 40 * MIB), (fs(1, 100), 44 * MIB)];
        assert_eq!(shortfall(&demands, 16 * MIB), None, "84 + 16 = 100 fits");
    }

    #[test]
    fn drives_on_one_file_system_add_up() {
        let demands = [(fs(1, 100), 50 * MIB), (fs(1, 100), 50 * MIB)];
        assert_eq!(
            shortfall(&demands, 16 * MIB),
            Some(Shortfall {
                path: PathBuf::from("/fs1/drive.img"),
                needed_bytes: 100 * MIB,
                available_bytes: 100 * MIB,
                reserve_bytes: 16 * MIB,
            })
        );
    }

    #[test]
    fn each_file_system_is_judged_on_its_own() {
        let demands = [(fs(1, 100), 80 * MIB), (fs(2, 50), 40 * MIB)];
        let short = shortfall(&demands, 16 * MIB).expect("fs2 is short");
        assert_eq!(short.path, PathBuf::from("/fs2/drive.img"));
        assert_eq!(short.needed_bytes, 40 * MIB);
        assert_eq!(shortfall(&demands[..1], 16 * MIB), None);
    }

    #[test]
    fn block_devices_and_nothing_asked_never_fall_short() {
        assert_eq!(shortfall(&[(None, u64::MAX)], RESERVE_BYTES), None);
        assert_eq!(shortfall(&[(fs(1, 0), 0)], RESERVE_BYTES), None);
        assert_eq!(shortfall(&[], RESERVE_BYTES), None);
    }

    #[test]
    fn a_full_file_system_refuses_even_one_byte() {
        let short = shortfall(&[(fs(1, 10), 1)], 16 * MIB).expect("short");
        assert_eq!(short.available_bytes, 10 * MIB);
        assert!(short.to_string().contains("/fs1/drive.img"), "{short}");
    }

    #[test]
    fn probing_a_real_file_reports_its_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drive.img");
        std::fs::File::create(&path)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let space = probe(&path).unwrap().expect("a regular file");
        assert_eq!(space.path, path);
        assert!(space.available_bytes > 0);
        assert_eq!(probe(dir.path()).unwrap(), None, "not a drive file");
    }
}

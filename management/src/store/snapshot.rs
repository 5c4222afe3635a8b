//! A copy of the database outside the state file system, opened when the
//! state file system is full: sled cannot open (nor keep writing) a
//! database without free space, yet the service must still serve what is
//! recorded. The copy holds exactly what was acknowledged (every write is
//! flushed before its response) and is thrown away once the real database
//! opens again; nothing is written to it meanwhile.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where copies go, in order: memory (tmpfs), then the system's temp dir.
const COPY_PARENTS: [&str; 2] = ["/dev/shm", "/tmp"];

/// A copied database directory, removed on drop.
#[derive(Debug)]
pub struct Snapshot {
    pub dir: PathBuf,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Copies database directory `source` (missing: an empty copy) to the
/// first parent that takes it.
pub fn copy(source: &Path) -> std::io::Result<Snapshot> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut last_error = None;
    for parent in COPY_PARENTS {
        let name = format!(
            "shoal-management-db-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let snapshot = Snapshot {
            dir: Path::new(parent).join(name),
        };
        match copy_tree(source, &snapshot.dir) {
            Ok(()) => return Ok(snapshot),
            // The partial copy goes with `snapshot`.
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("nowhere to copy the database")))
}

fn copy_tree(source: &Path, target: &Path) -> std::io::Result<()> {
    std::fs::create_dir(target)?;
    let entries = match std::fs::read_dir(source) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let to = target.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &to)?;
        } else {
            std::fs::copy(entry.path(), &to)?;
        }
    }
    Ok(())
}

/// Whether sled failed for want of space (or quota) on its file system.
/// By the kind, not only the errno: sled hands later callers a clone of
/// its first I/O error, which keeps the kind and loses the errno.
pub fn is_out_of_space(error: &sled::Error) -> bool {
    match error {
        sled::Error::Io(e) => {
            matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
                || matches!(
                    e.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                )
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_holds_the_tree_and_goes_away_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        std::fs::write(dir.path().join("conf"), b"c").unwrap();
        std::fs::write(dir.path().join("blobs/1"), b"b").unwrap();
        let snapshot = copy(dir.path()).unwrap();
        assert_eq!(std::fs::read(snapshot.dir.join("conf")).unwrap(), b"c");
        assert_eq!(std::fs::read(snapshot.dir.join("blobs/1")).unwrap(), b"b");
        let copied = snapshot.dir.clone();
        drop(snapshot);
        assert!(!copied.exists());
    }

    #[test]
    fn only_space_errors_count_as_out_of_space() {
        let io = |errno| sled::Error::Io(std::io::Error::from_raw_os_error(errno));
        assert!(is_out_of_space(&io(libc::ENOSPC)));
        assert!(is_out_of_space(&io(libc::EDQUOT)));
        assert!(!is_out_of_space(&io(libc::EIO)));
        // What sled returns after its first failure: a clone of that error.
        let sticky = io(libc::ENOSPC).clone();
        assert!(is_out_of_space(&sticky), "{sticky}");
        assert!(!is_out_of_space(&sled::Error::Unsupported("x".into())));
    }
}

//! Keeping the appliance's files to its own user.
//!
//! The state directory holds the drive images (every volume's data), the
//! account database (password hashes), the TLS private key, the control
//! sockets and the first admin password. Nobody else on the machine has any
//! business reading them, so shoald sets its umask to 0077 before it creates
//! anything (children inherit the umask, so their files are owner-only too)
//! and tightens what an older version left readable by group or others.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::sys::stat::{Mode, umask};

/// The umask of shoald and everything it starts: nothing for group or
/// others.
const OWNER_ONLY_UMASK: u32 = 0o077;

/// Permission bits that must be clear on everything in the state directory.
const GROUP_AND_OTHER_BITS: u32 = 0o077;

/// How deep the tightening walk goes below the state directory. The deepest
/// path shoald and its children create is
/// `management/<database>/blobs/<file>`; the bound only keeps an odd tree
/// (a symlink loop is never followed anyway) from costing the start.
const MAX_TIGHTEN_DEPTH: usize = 8;

/// How many tightened paths the start log names; the rest are counted.
const MAX_PATHS_LOGGED: usize = 8;

/// Sets the owner-only umask. Call first thing in `main`, before anything
/// is created.
pub fn set_umask() {
    umask(Mode::from_bits_truncate(OWNER_ONLY_UMASK));
}

/// Creates the state directory (mode 0700) if it is missing, then removes
/// group and other permissions from it and from everything under it, and
/// logs once what had to change.
pub fn prepare_state_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create state directory {}", dir.display()))?;
    let tightened = tighten(dir);
    if !tightened.is_empty() {
        let named: Vec<String> = tightened
            .iter()
            .take(MAX_PATHS_LOGGED)
            .map(|(path, mode)| format!("{} ({mode:04o})", path.display()))
            .collect();
        let more = tightened.len().saturating_sub(MAX_PATHS_LOGGED);
        tracing::warn!(
            "state directory {} was readable by other users: made {} owner-only: {}{}",
            dir.display(),
            match tightened.len() {
                1 => "1 entry".to_string(),
                n => format!("{n} entries"),
            },
            named.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// Clears group/other bits under `root` (itself included) without following
/// symlinks; returns each changed path with its old mode.
pub fn tighten(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut changed = Vec::new();
    let mut pending = vec![(root.to_path_buf(), 0usize)];
    while let Some((path, depth)) = pending.pop() {
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if metadata.file_type().is_symlink() {
            continue;
        }
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & GROUP_AND_OTHER_BITS != 0 {
            let owner_only = mode & !GROUP_AND_OTHER_BITS;
            match std::fs::set_permissions(&path, PermissionsExt::from_mode(owner_only)) {
                Ok(()) => changed.push((path.clone(), mode)),
                Err(e) => tracing::warn!("cannot make {} owner-only: {e}", path.display()),
            }
        }
        if metadata.is_dir()
            && depth < MAX_TIGHTEN_DEPTH
            && let Ok(entries) = std::fs::read_dir(&path)
        {
            pending.extend(entries.flatten().map(|e| (e.path(), depth + 1)));
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn tightens_directories_and_files_but_not_symlink_targets() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("not-ours");
        std::fs::write(&target, "x").unwrap();
        std::fs::set_permissions(&target, PermissionsExt::from_mode(0o644)).unwrap();

        let state = tempfile::tempdir().unwrap();
        let root = state.path().join("state");
        std::fs::create_dir_all(root.join("drives")).unwrap();
        std::fs::write(root.join("drives/drive0.img"), "").unwrap();
        std::os::unix::fs::symlink(&target, root.join("link")).unwrap();
        for (path, m) in [
            (root.clone(), 0o755),
            (root.join("drives"), 0o750),
            (root.join("drives/drive0.img"), 0o644),
        ] {
            std::fs::set_permissions(path, PermissionsExt::from_mode(m)).unwrap();
        }

        let changed = tighten(&root);
        assert_eq!(changed.len(), 3, "{changed:?}");
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("drives")), 0o700);
        assert_eq!(mode(&root.join("drives/drive0.img")), 0o600);
        assert_eq!(mode(&target), 0o644, "a symlink's target is not ours");
        assert!(tighten(&root).is_empty(), "a second pass changes nothing");
    }

    #[test]
    fn creates_a_missing_state_dir_owner_only() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("new-state");
        prepare_state_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }
}

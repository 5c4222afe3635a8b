//! Supervisor side of the shared region: find or make the memory, create the
//! region file, and undo all of it at shutdown.
//!
//! Hugepages come first: a hugetlbfs mount (an existing one, or one mounted
//! under the state directory), pages reserved through sysfs when running as
//! root, and the mapping populated up front so a shortage is an error here
//! rather than SIGBUS in a dataplane later. When that fails and the mode is
//! `auto`, the region goes to ordinary shared memory with one WARN line.
//! Everything this module changed on the system (file, mount, reserved
//! pages) is recorded so [`ProvisionedRegion::teardown`] gives it back.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::unistd::Uid;

use super::layout::Backing;
use super::{RegionError, RegionSpec, SharedRegion};
use crate::config::{HugepageMode, MemoryConfig};
use crate::hugepages;

const MIB: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("memory.hugepages = \"require\" but hugepages cannot be used: {0}")]
    HugepagesRequired(String),
    #[error("cannot create the shared region in {dir}: {reason}")]
    SharedMemory { dir: PathBuf, reason: String },
}

/// The region plus everything done on the system to make it.
#[derive(Debug)]
pub struct ProvisionedRegion {
    region: Option<SharedRegion>,
    undo: Undo,
}

/// System changes to reverse, in reverse order of making them.
#[derive(Debug, Default)]
struct Undo {
    file: Option<PathBuf>,
    mounted: Option<PathBuf>,
    /// Pages added to the pool of this page size.
    reserved: Option<(u64, u64)>,
}

impl Undo {
    fn run(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(file) = self.file.take()
            && let Err(e) = std::fs::remove_file(&file)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            problems.push(format!("remove {}: {e}", file.display()));
        }
        if let Some(dir) = self.mounted.take() {
            match umount2(&dir, MntFlags::empty()) {
                Ok(()) => {
                    let _ = std::fs::remove_dir(&dir);
                }
                Err(errno) => problems.push(format!("umount {}: {errno}", dir.display())),
            }
        }
        if let Some((page_size, pages)) = self.reserved.take() {
            match hugepages::adjust_pool(page_size, -(pages as i64)) {
                Ok(released) => tracing::info!(
                    pages = -released,
                    "returned the hugepages reserved at start to the kernel"
                ),
                Err(e) => problems.push(format!("give back {pages} hugepages: {e}")),
            }
        }
        problems
    }
}

impl ProvisionedRegion {
    /// Creates the region for `cluster_count` data clusters following
    /// `config`. The file name derives from `state_dir`, which the caller
    /// holds locked, so a file of that name is a leftover of this same
    /// appliance and is replaced.
    pub fn create(
        config: &MemoryConfig,
        state_dir: &Path,
        cluster_count: u32,
    ) -> Result<Self, ProvisionError> {
        let name = region_file_name(state_dir);
        let size = config.region_mib * MIB;
        match config.hugepages {
            HugepageMode::Off => tracing::warn!(
                "memory.hugepages = \"off\": the shared region uses ordinary shared memory; I/O performance is degraded"
            ),
            mode => match on_hugetlbfs(config, state_dir, &name, size, cluster_count) {
                Ok(region) => return Ok(region),
                Err(reason) if mode == HugepageMode::Auto => tracing::warn!(
                    "hugepages unavailable ({reason}); the shared region falls back to ordinary shared memory and I/O performance is degraded"
                ),
                Err(reason) => return Err(ProvisionError::HugepagesRequired(reason)),
            },
        }
        in_shared_memory(config, &name, size, cluster_count)
    }

    pub fn region(&self) -> &SharedRegion {
        self.region
            .as_ref()
            .expect("region is present until teardown")
    }

    /// Unmaps the region, removes its file, unmounts what was mounted and
    /// gives back reserved pages. Returns what could not be undone.
    pub fn teardown(mut self) -> Vec<String> {
        self.region = None;
        self.undo.run()
    }
}

impl Drop for ProvisionedRegion {
    fn drop(&mut self) {
        self.region = None;
        for problem in self.undo.run() {
            tracing::warn!("shared region cleanup: {problem}");
        }
    }
}

/// `shoal-<hash of the state directory>.region`: unique per appliance
/// instance, stable across its restarts.
pub fn region_file_name(state_dir: &Path) -> String {
    let canonical = state_dir
        .canonicalize()
        .unwrap_or_else(|_| state_dir.to_path_buf());
    // FNV-1a: tiny, and stable across Rust releases unlike DefaultHasher.
    let hash = canonical
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("shoal-{hash:016x}.region")
}

fn on_hugetlbfs(
    config: &MemoryConfig,
    state_dir: &Path,
    name: &str,
    wanted: u64,
    cluster_count: u32,
) -> Result<ProvisionedRegion, String> {
    let page_size = hugepages::default_page_size()
        .map_err(|e| format!("cannot read /proc/meminfo: {e}"))?
        .ok_or("the kernel has no hugepage support")?;
    let mut undo = Undo::default();
    let result = (|| {
        let mount_dir = hugetlbfs_dir(config, state_dir, page_size, &mut undo)?;
        let size = wanted.div_ceil(page_size) * page_size;
        let pages = size / page_size;
        ensure_pages(config, page_size, pages, &mut undo)?;

        let path = mount_dir.join(name);
        let file = create_region_file(&path, size, &mut undo).map_err(|e| e.to_string())?;
        let spec = RegionSpec {
            cluster_count,
            page_size,
            backing: Backing::Hugetlbfs,
        };
        let region = SharedRegion::initialise(&file, &path, size as usize, spec, true).map_err(
            |e| match e {
                RegionError::Map { errno, .. } => {
                    format!(
                        "mapping {pages} hugepages of {} KiB failed: {errno}",
                        page_size / 1024
                    )
                }
                other => other.to_string(),
            },
        )?;
        tracing::info!(
            path = %path.display(),
            size_mib = size / MIB,
            page_kib = page_size / 1024,
            "shared region on hugetlbfs"
        );
        Ok(region)
    })();
    match result {
        Ok(region) => Ok(ProvisionedRegion {
            region: Some(region),
            undo,
        }),
        Err(reason) => {
            for problem in undo.run() {
                tracing::warn!("undoing hugepage setup: {problem}");
            }
            Err(reason)
        }
    }
}

/// Where the region's hugetlbfs comes from.
#[derive(Debug, PartialEq, Eq)]
enum HugetlbfsChoice {
    /// The operator's `memory.hugetlbfs_mount`: used, never unmounted.
    Configured(PathBuf),
    /// `<state>/hugepages` is already a hugetlbfs of the right page size:
    /// left mounted by an earlier run of this appliance (killed before it
    /// could unmount). It is ours: used, and unmounted at shutdown.
    OwnLeftover(PathBuf),
    /// Mount a new one at `<state>/hugepages`.
    Mount(PathBuf),
}

/// Picks the hugetlbfs for the region: the configured mount, else the
/// appliance's own under its state directory. Never just any hugetlbfs
/// that happens to be mounted: that may be another appliance's private
/// `<state>/hugepages`, or a stale mount of a killed one, and when its
/// owner unmounts it no child of ours could map the region again.
fn choose_hugetlbfs(
    configured: &Path,
    state_dir: &Path,
    page_size: u64,
    mounts: &[hugepages::HugetlbfsMount],
) -> Result<HugetlbfsChoice, String> {
    if !configured.as_os_str().is_empty() {
        return match mounts.iter().find(|m| m.path == configured) {
            Some(m) if m.page_size == page_size => Ok(HugetlbfsChoice::Configured(m.path.clone())),
            Some(m) => Err(format!(
                "memory.hugetlbfs_mount {} has {} KiB pages, not the default {} KiB",
                configured.display(),
                m.page_size / 1024,
                page_size / 1024
            )),
            None => Err(format!(
                "memory.hugetlbfs_mount {} is not a hugetlbfs mount",
                configured.display()
            )),
        };
    }
    let own = state_dir.join("hugepages");
    // The last matching line of /proc/mounts is the mount on top.
    Ok(match mounts.iter().rev().find(|m| m.path == own) {
        Some(m) if m.page_size == page_size => HugetlbfsChoice::OwnLeftover(own),
        Some(m) => {
            return Err(format!(
                "{} is a hugetlbfs of {} KiB pages, not the default {} KiB",
                own.display(),
                m.page_size / 1024,
                page_size / 1024
            ));
        }
        None => HugetlbfsChoice::Mount(own),
    })
}

/// The hugetlbfs directory for the region (see [`choose_hugetlbfs`]),
/// mounting the appliance's own when needed.
fn hugetlbfs_dir(
    config: &MemoryConfig,
    state_dir: &Path,
    page_size: u64,
    undo: &mut Undo,
) -> Result<PathBuf, String> {
    let mounts = hugepages::hugetlbfs_mounts(page_size)
        .map_err(|e| format!("cannot read /proc/mounts: {e}"))?;
    let dir = match choose_hugetlbfs(&config.hugetlbfs_mount, state_dir, page_size, &mounts)? {
        HugetlbfsChoice::Configured(dir) => return Ok(dir),
        HugetlbfsChoice::OwnLeftover(dir) => {
            tracing::info!(path = %dir.display(), "reusing the hugetlbfs an earlier run left mounted");
            undo.mounted = Some(dir.clone());
            return Ok(dir);
        }
        HugetlbfsChoice::Mount(dir) => dir,
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let options = format!("pagesize={}K,mode=0700", page_size / 1024);
    mount(
        Some("shoal-hugetlbfs"),
        &dir,
        Some("hugetlbfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(options.as_str()),
    )
    .map_err(|errno| {
        format!(
            "mounting hugetlbfs at {} failed: {errno} (memory.hugetlbfs_mount names an existing mount)",
            dir.display()
        )
    })?;
    tracing::info!(path = %dir.display(), "mounted hugetlbfs");
    undo.mounted = Some(dir.clone());
    Ok(dir)
}

/// Makes sure `pages` pages are available, reserving the shortfall when
/// allowed.
fn ensure_pages(
    config: &MemoryConfig,
    page_size: u64,
    pages: u64,
    undo: &mut Undo,
) -> Result<(), String> {
    let pool =
        hugepages::pool(page_size).map_err(|e| format!("cannot read the hugepage pool: {e}"))?;
    let shortfall = pages.saturating_sub(pool.available());
    if shortfall == 0 {
        return Ok(());
    }
    let describe = |pool: hugepages::Pool| {
        format!(
            "{pages} hugepages of {} KiB needed, {} available (vm.nr_hugepages = {})",
            page_size / 1024,
            pool.available(),
            pool.total
        )
    };
    if !config.reserve_hugepages {
        return Err(format!(
            "{}; memory.reserve_hugepages is false",
            describe(pool)
        ));
    }
    if !Uid::effective().is_root() {
        return Err(format!("{}; reserving more needs root", describe(pool)));
    }
    let added = hugepages::adjust_pool(page_size, shortfall as i64)
        .map_err(|e| format!("{}; reserving {shortfall} more failed: {e}", describe(pool)))?;
    if added > 0 {
        undo.reserved = Some((page_size, added as u64));
        tracing::info!(pages = added, "reserved hugepages for the shared region");
    }
    let after =
        hugepages::pool(page_size).map_err(|e| format!("cannot read the hugepage pool: {e}"))?;
    if after.available() < pages {
        return Err(format!(
            "{}; the kernel granted only {added} more",
            describe(after)
        ));
    }
    Ok(())
}

fn in_shared_memory(
    config: &MemoryConfig,
    name: &str,
    size: u64,
    cluster_count: u32,
) -> Result<ProvisionedRegion, ProvisionError> {
    let dir = &config.shm_dir;
    let fail = |reason: String| ProvisionError::SharedMemory {
        dir: dir.clone(),
        reason,
    };
    let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    let mut undo = Undo::default();
    let path = dir.join(name);
    let file = create_region_file(&path, size, &mut undo).map_err(|e| fail(e.to_string()))?;
    let spec = RegionSpec {
        cluster_count,
        page_size,
        backing: Backing::SharedMemory,
    };
    let region = match SharedRegion::initialise(&file, &path, size as usize, spec, false) {
        Ok(region) => region,
        Err(e) => {
            undo.run();
            return Err(fail(e.to_string()));
        }
    };
    tracing::info!(path = %path.display(), size_mib = size / MIB, "shared region in ordinary shared memory");
    Ok(ProvisionedRegion {
        region: Some(region),
        undo,
    })
}

/// Creates the region file (replacing a leftover of a previous run) and
/// sizes it (a whole number of pages on hugetlbfs).
fn create_region_file(path: &Path, len: u64, undo: &mut Undo) -> std::io::Result<File> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "removed a region file left by an earlier run")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    undo.file = Some(path.to_path_buf());
    file.set_len(len)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(path: &str, page_size: u64) -> hugepages::HugetlbfsMount {
        hugepages::HugetlbfsMount {
            path: PathBuf::from(path),
            page_size,
        }
    }

    const TWO_MIB: u64 = 2 << 20;

    #[test]
    fn region_never_goes_to_someone_elses_hugetlbfs() {
        // /dev/hugepages (systemd's), another appliance's private mount and
        // a stale one of a killed appliance: none is ours.
        let mounts = [
            mount("/dev/hugepages", TWO_MIB),
            mount("/srv/other/state/hugepages", TWO_MIB),
            mount("/tmp/killed/state/hugepages", TWO_MIB),
        ];
        let state = Path::new("/srv/mine/state");
        assert_eq!(
            choose_hugetlbfs(Path::new(""), state, TWO_MIB, &mounts),
            Ok(HugetlbfsChoice::Mount(state.join("hugepages")))
        );
    }

    #[test]
    fn own_leftover_or_configured_hugetlbfs_is_used() {
        let state = Path::new("/srv/mine/state");
        let mounts = [
            mount("/dev/hugepages", TWO_MIB),
            mount("/srv/mine/state/hugepages", TWO_MIB),
        ];
        assert_eq!(
            choose_hugetlbfs(Path::new(""), state, TWO_MIB, &mounts),
            Ok(HugetlbfsChoice::OwnLeftover(state.join("hugepages")))
        );
        assert_eq!(
            choose_hugetlbfs(Path::new("/dev/hugepages"), state, TWO_MIB, &mounts),
            Ok(HugetlbfsChoice::Configured(PathBuf::from("/dev/hugepages")))
        );
        let err = choose_hugetlbfs(Path::new("/mnt/huge"), state, TWO_MIB, &mounts).unwrap_err();
        assert!(err.contains("/mnt/huge is not a hugetlbfs mount"), "{err}");
        let gigantic = [mount("/dev/hugepages", 1 << 30)];
        let err =
            choose_hugetlbfs(Path::new("/dev/hugepages"), state, TWO_MIB, &gigantic).unwrap_err();
        assert!(err.contains("1048576 KiB pages"), "{err}");
    }

    #[test]
    fn region_name_is_stable_and_distinct_per_state_dir() {
        let a = region_file_name(Path::new("/nonexistent/a"));
        assert_eq!(a, region_file_name(Path::new("/nonexistent/a")));
        assert_ne!(a, region_file_name(Path::new("/nonexistent/b")));
        assert!(a.starts_with("shoal-") && a.ends_with(".region"));
    }

    #[test]
    fn shared_memory_region_is_created_and_removed() {
        let state = tempfile::tempdir().unwrap();
        let shm = tempfile::tempdir().unwrap();
        let config = MemoryConfig {
            region_mib: 8,
            hugepages: HugepageMode::Off,
            shm_dir: shm.path().to_path_buf(),
            ..Default::default()
        };
        let provisioned = ProvisionedRegion::create(&config, state.path(), 3).unwrap();
        let path = provisioned.region().path().to_path_buf();
        assert_eq!(
            provisioned.region().header().backing(),
            Some(Backing::SharedMemory)
        );
        assert_eq!(provisioned.region().len(), 8 << 20);
        assert!(SharedRegion::open(&path).is_ok());
        assert!(provisioned.teardown().is_empty());
        assert!(!path.exists());
    }

    #[test]
    fn shared_memory_failure_names_the_directory() {
        let state = tempfile::tempdir().unwrap();
        let config = MemoryConfig {
            region_mib: 2,
            hugepages: HugepageMode::Off,
            shm_dir: PathBuf::from("/nonexistent/shm"),
            ..Default::default()
        };
        let err = ProvisionedRegion::create(&config, state.path(), 1).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/shm"), "{err}");
    }
}

//! What shoald leaves on the machine for other local users: the state
//! directory and everything in it owner-only (drive images, the account
//! database, the TLS key, the sockets, the first admin password), older
//! state directories tightened at start, and the open-file limit its
//! children inherit raised above the kernel's default of 1024.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use shoal_tests::Appliance;

/// The soft RLIMIT_NOFILE shoald asks for (its `NOFILE_TARGET`).
const NOFILE_TARGET: u64 = 65536;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every entry under `root` (itself included) that group or others may use,
/// as `path (mode)`.
fn open_to_others(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let metadata = std::fs::symlink_metadata(&path).unwrap();
        if metadata.file_type().is_symlink() {
            continue;
        }
        if mode(&path) & 0o077 != 0 {
            found.push(format!("{} ({:04o})", path.display(), mode(&path)));
        }
        if metadata.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    found
}

#[test]
fn state_dir_and_everything_in_it_are_owner_only() {
    let appliance = Appliance::start_ready(2);
    let state = &appliance.state_dir;
    // The secrets and data, by name: they must exist for the walk to mean
    // anything.
    let expected = [
        (state.clone(), 0o700),
        (state.join("drives"), 0o700),
        (state.join("drives/drive0.img"), 0o600),
        (state.join("drives/drive1.img"), 0o600),
        (state.join("management"), 0o700),
        (state.join("management/db"), 0o700),
        (state.join("management/tls"), 0o700),
        (state.join("initial-admin-password"), 0o600),
        (state.join("shoald.sock"), 0o600),
        (state.join("dataplane-0.sock"), 0o600),
        (state.join("dataplane-1.sock"), 0o600),
        (state.join("shoald.lock"), 0o600),
    ];
    for (path, wanted) in expected {
        assert_eq!(mode(&path), wanted, "{}", path.display());
    }
    let open = open_to_others(state);
    assert!(open.is_empty(), "readable by other users: {open:?}");
    // The region lives outside the state directory (shm_dir here).
    let region = appliance.status()["region"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(mode(Path::new(&region)), 0o600, "{region}");
}

#[test]
fn older_state_dir_open_to_others_is_tightened_at_start() {
    let builder = Appliance::builder(2);
    let state = builder.dir().join("state");
    let drives = state.join("drives");
    std::fs::create_dir_all(&drives).unwrap();
    for cluster in 0..2 {
        let drive = drives.join(format!("drive{cluster}.img"));
        std::fs::File::create(&drive)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        std::fs::set_permissions(&drive, PermissionsExt::from_mode(0o644)).unwrap();
    }
    for dir in [&state, &drives] {
        std::fs::set_permissions(dir, PermissionsExt::from_mode(0o755)).unwrap();
    }

    let appliance = builder.start();
    appliance.wait_for("all children running", shoal_tests::STARTUP_TIMEOUT, |s| {
        s["state"] == "running"
    });
    let open = open_to_others(&appliance.state_dir);
    assert!(open.is_empty(), "still readable by others: {open:?}");
    assert_eq!(mode(&drives.join("drive0.img")), 0o600);
    let log = appliance.log();
    let line = log
        .lines()
        .find(|l| l.contains("was readable by other users"))
        .unwrap_or_else(|| panic!("no line says what was tightened:\n{log}"));
    assert!(line.contains("made 4 entries owner-only"), "{line}");
    assert!(line.contains("drive0.img (0644)"), "{line}");
}

/// The soft and hard "Max open files" of `pid`, from /proc/<pid>/limits.
fn open_file_limits(pid: i64) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no open-file limit in\n{limits}"));
    let mut numbers = line
        .split_whitespace()
        .filter_map(|word| word.parse::<u64>().ok());
    (numbers.next().unwrap(), numbers.next().unwrap())
}

#[test]
fn children_inherit_a_raised_open_file_limit() {
    // Start shoald the way a login shell or an init without LimitNOFILE=
    // would: soft limit 1024. (Only this test binary's own limit changes.)
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, 1024.min(hard), hard).unwrap();
    let appliance = Appliance::start_ready(2);

    let status = appliance.status();
    // Without CAP_SYS_RESOURCE the hard limit is the ceiling; with it
    // shoald raises that too.
    let wanted = NOFILE_TARGET.min(hard);
    for cluster in status["clusters"].as_array().unwrap() {
        let (soft, _) = open_file_limits(cluster["pid"].as_i64().unwrap());
        assert!(
            soft >= wanted,
            "data cluster soft limit {soft}, wanted {wanted}"
        );
    }
    let (soft, _) = open_file_limits(status["management"]["pid"].as_i64().unwrap());
    assert!(
        soft >= wanted,
        "management soft limit {soft}, wanted {wanted}"
    );
    assert!(
        appliance.log().contains("open-file limit"),
        "{}",
        appliance.log()
    );
}

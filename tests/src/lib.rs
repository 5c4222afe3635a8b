//! Harness for end-to-end tests: runs the real `shoald` (which runs the real
//! dataplane and management binaries) in a temporary state directory with
//! free loopback ports, talks to it over its control socket, and always
//! cleans up its processes.

pub mod dhchap_host;
pub mod event_receiver;
pub mod launcher;
pub mod load;
pub mod nbd_client;
pub mod nvme_initiator;
pub mod pattern_writer;
pub mod ports;
pub mod raw_tls;
pub mod redfish_client;
pub mod small_filesystem;
pub mod sse;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use shoal_appliance::jsonrpc::{CallError, call_blocking};

/// Directory holding shoald, shoal-dataplane, shoal-management and
/// shoal-rpc. `SHOAL_BIN_DIR` points at installed binaries; otherwise they
/// are built (or found up to date) with the cargo profile of this test.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("SHOAL_BIN_DIR") {
            return PathBuf::from(dir);
        }
        // target/<profile>/deps/<test binary>
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps layout");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_string(),
            Some(other) => other.to_string(),
            None => panic!("cannot tell the cargo profile from {}", exe.display()),
        };
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let status = Command::new(env!("CARGO"))
            .args(["build", "--bins", "--profile", &profile])
            .args([
                "-p",
                "shoal-appliance",
                "-p",
                "shoal-dataplane",
                "-p",
                "shoal-management",
            ])
            .arg("--manifest-path")
            .arg(&manifest)
            .status()
            .expect("run cargo build for the binaries under test");
        assert!(status.success(), "building the binaries under test failed");
        profile_dir.to_path_buf()
    })
}

/// A loopback port reserved for this test process (see [`ports`]).
pub fn free_port() -> u16 {
    ports::reserve(1)
}

/// The first of `count` consecutive loopback ports reserved for this process.
pub fn free_port_block(count: u16) -> u16 {
    ports::reserve(count)
}

/// Configuration for one test appliance, as a TOML table.
pub struct ApplianceBuilder {
    dir: tempfile::TempDir,
    config: toml::Table,
    envs: Vec<(String, String)>,
}

impl ApplianceBuilder {
    /// Sets a dotted key (`"supervisor.crash_loop_limit"`) in the config.
    pub fn set(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        let mut table = &mut self.config;
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().expect("non-empty key");
        for part in parts {
            table = table
                .entry(part)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .expect("key path goes through tables");
        }
        table.insert(last.to_string(), value.into());
        self
    }

    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.envs.push((name.to_string(), value.into()));
        self
    }

    /// The temporary directory everything of this appliance lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the config and starts shoald. Does not wait for readiness.
    /// Starts the appliance and waits until every child runs.
    pub fn start_ready(self) -> Appliance {
        let appliance = self.start();
        appliance.wait_for("all children running", STARTUP_TIMEOUT, |s| {
            s["state"] == "running"
        });
        appliance
    }

    pub fn start(self) -> Appliance {
        let config_path = self.dir.path().join("appliance.toml");
        std::fs::write(&config_path, toml::to_string(&self.config).unwrap()).unwrap();
        let log_path = self.dir.path().join("shoald.log");
        let process = spawn_shoald(&config_path, &log_path, &self.envs);
        // Where `state_dir` points (a test may move it, e.g. onto a small
        // file system).
        let state_dir = self
            .config
            .get("state_dir")
            .and_then(|v| v.as_str())
            .map(PathBuf::from)
            .unwrap_or_else(|| self.dir.path().join("state"));
        Appliance {
            dir: self.dir,
            state_dir,
            config_path,
            log_path,
            envs: self.envs,
            process: Some(process),
        }
    }
}

/// Starts shoald with `config`, appending its log (and its children's) to
/// `log_path`.
fn spawn_shoald(config: &Path, log_path: &Path, envs: &[(String, String)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap();
    let mut command = Command::new(bin_dir().join("shoald"));
    command
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .env_remove("SHOAL_STATE_DIR")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for (name, value) in envs {
        command.env(name, value);
    }
    command.spawn().expect("start shoald")
}

/// A running shoald and everything it started.
pub struct Appliance {
    pub dir: tempfile::TempDir,
    pub state_dir: PathBuf,
    pub config_path: PathBuf,
    log_path: PathBuf,
    envs: Vec<(String, String)>,
    process: Option<Child>,
}

/// How long a test waits for the appliance to reach a state before it
/// fails with the appliance's log. Generous: a test binary starts several
/// appliances at once on CI's two cores.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

impl Appliance {
    /// A test appliance: `clusters` data clusters, ordinary shared memory in
    /// the temp dir, free ports, fast heartbeats.
    pub fn builder(clusters: u32) -> ApplianceBuilder {
        let dir = tempfile::Builder::new()
            .prefix("shoal-test-")
            .tempdir()
            .unwrap();
        let shm = dir.path().join("shm");
        std::fs::create_dir(&shm).unwrap();
        let state_dir = dir.path().join("state");
        let clusters_i = i64::from(clusters);
        let block = free_port_block(2 * clusters as u16 + 1);
        ApplianceBuilder {
            config: toml::Table::new(),
            envs: Vec::new(),
            dir,
        }
        .set("state_dir", state_dir.display().to_string())
        .set("topology.data_clusters", clusters_i)
        .set("memory.hugepages", "off")
        .set("memory.region_mib", 8)
        .set("memory.shm_dir", shm.display().to_string())
        .set("supervisor.heartbeat_interval_ms", 50)
        .set("supervisor.heartbeat_timeout_ms", 1000)
        .set("supervisor.start_timeout_ms", 10_000)
        .set("supervisor.restart_backoff_initial_ms", 50)
        .set("supervisor.restart_backoff_max_ms", 500)
        .set("supervisor.stop_timeout_ms", 3000)
        .set(
            "management.https_listen",
            format!("127.0.0.1:{}", free_port()),
        )
        .set(
            "management.http_redirect_listen",
            format!("127.0.0.1:{}", free_port()),
        )
        // Sparse drive files in the test's state directory, small.
        .set("dataplane.drive_size_mib", 64)
        .set("dataplane.nvmf_base_port", i64::from(block))
        .set("dataplane.nbd_base_port", i64::from(block) + clusters_i)
        .set(
            "dataplane.discovery_port",
            i64::from(block) + 2 * clusters_i,
        )
    }

    /// Starts a default test appliance and waits until every child runs.
    pub fn start_ready(clusters: u32) -> Self {
        Self::builder(clusters).start_ready()
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.process.as_ref().expect("shoald running").id() as i32)
    }

    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("shoald.sock")
    }

    /// Calls a supervisor method.
    pub fn rpc(&self, method: &str, params: Option<Value>) -> Result<Value, CallError> {
        call_blocking(&self.socket(), method, params, Duration::from_secs(10))
    }

    pub fn status(&self) -> Value {
        self.rpc("appliance_get_status", None)
            .unwrap_or_else(|e| panic!("appliance_get_status failed: {e}\n{}", self.log()))
    }

    /// Status of data cluster `index`.
    pub fn cluster(&self, index: usize) -> Value {
        self.status()["clusters"][index].clone()
    }

    /// Polls the status until `done` holds; panics with the log on timeout.
    pub fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(status) = self.rpc("appliance_get_status", None)
                && done(&status)
            {
                return status;
            }
            if Instant::now() > deadline {
                let last = self.rpc("appliance_get_status", None).ok();
                panic!(
                    "timed out after {timeout:?} waiting for {what}\nlast status: {last:#?}\nlog:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal shoald");
    }

    /// Waits for shoald to exit; panics with the log after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let process = self.process.as_mut().expect("shoald was started");
        loop {
            if let Some(status) = process.try_wait().expect("wait for shoald") {
                self.process = None;
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "shoald did not exit within {timeout:?}\nlog:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the whole appliance cleanly (SIGTERM) and starts it again on
    /// the same configuration and state directory; waits until it runs.
    pub fn restart(&mut self) {
        self.signal(Signal::SIGTERM);
        let status = self.wait_exit(Duration::from_secs(30));
        assert!(
            status.success(),
            "shoald stopped with {status}\n{}",
            self.log()
        );
        self.process = Some(spawn_shoald(&self.config_path, &self.log_path, &self.envs));
        self.wait_for("all children running again", STARTUP_TIMEOUT, |s| {
            s["state"] == "running"
        });
    }

    /// Everything shoald and its children logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        let Some(mut process) = self.process.take() else {
            return;
        };
        let pid = Pid::from_raw(process.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = process.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Children die with shoald (PR_SET_PDEATHSIG).
        let _ = process.kill();
        let _ = process.wait();
    }
}

/// True while `pid` names a live (not zombie) process.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The executable name of `pid`.
pub fn process_name(pid: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// The pids of every child in a status answer.
pub fn child_pids(status: &Value) -> Vec<i32> {
    status["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(std::iter::once(&status["management"]))
        .filter_map(|c| c["pid"].as_i64())
        .map(|p| p as i32)
        .collect()
}

impl Appliance {
    /// Calls a method on data cluster `index`'s JSON-RPC socket.
    pub fn dataplane_rpc(
        &self,
        index: u32,
        method: &str,
        params: Option<Value>,
    ) -> Result<Value, CallError> {
        let socket = self.state_dir.join(format!("dataplane-{index}.sock"));
        call_blocking(&socket, method, params, Duration::from_secs(30))
    }

    /// Calls a method on data cluster `index` that must succeed (test
    /// setup): panics naming the method and cluster otherwise.
    pub fn dataplane_call(&self, index: u32, method: &str, params: Value) -> Value {
        self.dataplane_rpc(index, method, Some(params))
            .unwrap_or_else(|e| panic!("{method} on cluster {index}: {e}"))
    }

    /// Opens `<appliance dir>/<name>.img` (made sparse, `bytes` long, when
    /// it does not exist yet: a leg keeps its data over a restart of its
    /// cluster) as an io_uring bdev `name` with `block_size` blocks on data
    /// cluster `index`.
    pub fn file_bdev(&self, index: u32, name: &str, bytes: u64, block_size: u64) {
        let filename = self.dir.path().join(format!("{name}.img"));
        if !filename.exists() {
            std::fs::File::create(&filename)
                .and_then(|file| file.set_len(bytes))
                .unwrap_or_else(|e| panic!("creating {}: {e}", filename.display()));
        }
        self.dataplane_call(
            index,
            "bdev_uring_create",
            serde_json::json!({"name": name, "filename": filename, "block_size": block_size}),
        );
    }

    /// The cluster (of the first `clusters`) that holds `bdev` as a raid,
    /// with the raid's description: a redundant volume's owner.
    pub fn raid_holder(&self, clusters: u32, bdev: &str) -> Option<(u32, Value)> {
        (0..clusters).find_map(|cluster| {
            let list = self
                .dataplane_rpc(
                    cluster,
                    "bdev_get_bdevs",
                    Some(serde_json::json!({"name": bdev})),
                )
                .ok()?;
            let raid = list[0]["driver_specific"]["raid"].clone();
            raid.is_object().then_some((cluster, raid))
        })
    }

    /// Runs the consistency check of raid `bdev` on cluster `cluster`, which
    /// holds it, and waits up to `timeout` for its report (told from an
    /// earlier check's by its sequence number); panics unless the check
    /// ran to the end. Returns the report (`shoal.last_check`).
    pub fn raid_check(&self, cluster: u32, bdev: &str, timeout: Duration) -> Value {
        let raid = || {
            self.dataplane_call(cluster, "bdev_get_bdevs", serde_json::json!({"name": bdev}))[0]
                ["driver_specific"]["raid"]
                .clone()
        };
        let sequence = |raid: &Value| raid["shoal"]["last_check"]["sequence"].as_u64();
        let before = sequence(&raid()).unwrap_or(0);
        self.dataplane_call(
            cluster,
            "bdev_raid_check_consistency",
            serde_json::json!({"name": bdev}),
        );
        self.wait_for(&format!("the check of {bdev}"), timeout, |_| {
            let raid = raid();
            raid["process"].is_null() && sequence(&raid) > Some(before)
        });
        let check = raid()["shoal"]["last_check"].clone();
        assert_eq!(check["finished"], true, "{check}");
        check
    }

    /// SIGKILLs data cluster `index` and returns its restart count from
    /// before, to wait for its return with [`Self::wait_restarted`].
    pub fn kill_cluster(&self, index: u32) -> u64 {
        let before = self.cluster(index as usize);
        kill(
            Pid::from_raw(before["pid"].as_i64().expect("a running cluster") as i32),
            Signal::SIGKILL,
        )
        .expect("kill the cluster");
        before["restarts"].as_u64().unwrap_or(0)
    }

    /// Waits until cluster `index` runs again after more than `restarts`
    /// restarts.
    pub fn wait_restarted(&self, index: u32, restarts: u64) {
        self.wait_for(
            &format!("cluster {index} restarted"),
            STARTUP_TIMEOUT,
            |s| {
                let cluster = &s["clusters"][index as usize];
                cluster["state"] == "running" && cluster["restarts"].as_u64() > Some(restarts)
            },
        );
    }

    /// The running configuration (`appliance_get_config`).
    pub fn config(&self) -> Value {
        self.rpc("appliance_get_config", None)
            .expect("appliance_get_config")
    }

    /// `https://127.0.0.1:<port>` of the Redfish service, from the running config.
    pub fn redfish_base(&self) -> String {
        let config = self.config();
        let listen = config["management"]["https_listen"]
            .as_str()
            .expect("management.https_listen");
        format!("https://{listen}")
    }

    /// The pid of the running management service.
    pub fn management_pid(&self) -> i32 {
        self.status()["management"]["pid"]
            .as_i64()
            .expect("management pid") as i32
    }

    /// The generated password of `admin`, written once at first start.
    pub fn admin_password(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("initial-admin-password"))
            .expect("the initial admin password file")
            .trim()
            .to_string()
    }

    /// The NBD URI of `export` on data cluster `index`.
    pub fn nbd_uri(&self, index: u32, export: &str) -> String {
        format!("nbd://127.0.0.1:{}/{export}", self.nbd_port(index))
    }

    /// The NVMe/TCP portal of data cluster `index`, from the running config.
    pub fn nvmf_address(&self, index: u32) -> std::net::SocketAddr {
        let config = self.config();
        let base = config["dataplane"]["nvmf_base_port"]
            .as_u64()
            .expect("nvmf_base_port");
        std::net::SocketAddr::from(([127, 0, 0, 1], (base + u64::from(index)) as u16))
    }

    /// The discovery controller's portal (on data cluster 0).
    pub fn discovery_address(&self) -> std::net::SocketAddr {
        let config = self.config();
        let port = config["dataplane"]["discovery_port"]
            .as_u64()
            .expect("discovery_port");
        std::net::SocketAddr::from(([127, 0, 0, 1], port as u16))
    }

    /// The NBD port of data cluster `index`, from the running config.
    pub fn nbd_port(&self, index: u32) -> u16 {
        let config = self.config();
        let base = config["dataplane"]["nbd_base_port"]
            .as_u64()
            .expect("nbd_base_port");
        (base + u64::from(index)) as u16
    }

    /// The first `len` bytes of NBD export `export` through cluster
    /// `index`, read in 1 MiB requests; panics on an NBD error.
    pub fn nbd_read_all(&self, index: u32, export: &str, len: usize) -> Vec<u8> {
        const PIECE: usize = 1 << 20;
        let mut s = nbd_client::connect(self.nbd_port(index), export);
        let mut data = Vec::with_capacity(len);
        for (cookie, at) in (0..len).step_by(PIECE).enumerate() {
            let piece =
                nbd_client::read(&mut s, cookie as u64, at as u64, PIECE.min(len - at) as u32)
                    .unwrap_or_else(|e| {
                        panic!("NBD error {e} reading {export} on cluster {index}")
                    });
            data.extend_from_slice(&piece);
        }
        data
    }
}

/// Whether an external client program is installed. `.ci/run` sets
/// `SHOAL_REQUIRE_INTEROP=1`, which turns a missing program into a test
/// failure; elsewhere the test says it is skipped and why.
pub fn have_tool(program: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var_os("SHOAL_REQUIRE_INTEROP").is_none(),
            "{program} is required (Debian package {package})"
        );
        eprintln!("SKIPPED: {program} is not installed (Debian package {package})");
    }
    found
}

/// Runs a program, failing the test with its output when it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

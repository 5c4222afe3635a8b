//! The supervisor: owns the topology, the shared region and the children,
//! and runs the loop that keeps them alive.
//!
//! Everything happens on one thread (a current-thread tokio runtime): child
//! state has a single owner, `PR_SET_PDEATHSIG` in the children refers to a
//! thread that lives as long as shoald, and reaping with `waitpid(-1)` cannot
//! race another waiter. The control socket talks to the loop through
//! [`Command`] messages.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use serde_json::{Value, json};
use shoal_appliance::config::ApplianceConfig;
use shoal_appliance::doorbell::Doorbell;
use shoal_appliance::jsonrpc::RpcError;
use shoal_appliance::region::layout::{ParticipantSlot, RegionHeader, SlotStatus};
use shoal_appliance::region::provision::ProvisionedRegion;
use shoal_appliance::topology::{Placement, Topology, cpu_set};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use crate::child::{Child, ChildKind, State, Timeouts};
use crate::launch::LaunchSpec;
use crate::notify::Notifier;
use crate::restart_policy::RestartPolicy;

/// Requests from the control socket to the loop.
pub enum Command {
    Status(oneshot::Sender<Value>),
    RestartCluster(u32, oneshot::Sender<Result<Value, RpcError>>),
}

pub struct Supervisor {
    config: ApplianceConfig,
    topology: Topology,
    region: ProvisionedRegion,
    /// One per data cluster, inherited by every dataplane (see
    /// `shoal_appliance::doorbell`); kept open across restarts.
    _doorbells: Vec<Doorbell>,
    dataplanes: Vec<Child>,
    management: Option<Child>,
    notifier: Notifier,
    started: Instant,
    ready: bool,
    stopping: bool,
    _lock: StateDirLock,
}

/// Exclusive use of the state directory: two supervisors on one state
/// directory would fight over its sockets and region.
struct StateDirLock {
    path: PathBuf,
    _lock: Flock<File>,
}

impl StateDirLock {
    fn acquire(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join("shoald.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .read(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                anyhow::bail!(
                    "another shoald (pid {}) is using the state directory {}",
                    holder.trim(),
                    state_dir.display()
                );
            }
            Err((_, errno)) => anyhow::bail!("cannot lock {}: {errno}", path.display()),
        };
        lock.set_len(0)?;
        std::io::Write::write_all(&mut &*lock, format!("{}\n", std::process::id()).as_bytes())?;
        Ok(Self { path, _lock: lock })
    }
}

impl Drop for StateDirLock {
    fn drop(&mut self) {
        // Removed while still held, so no other shoald can slip in between.
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Supervisor {
    /// Claims the state directory, plans the topology and creates the shared
    /// region. No child runs yet.
    pub fn prepare(mut config: ApplianceConfig, binaries_dir: &Path) -> anyhow::Result<Self> {
        crate::owner_only::prepare_state_dir(&config.state_dir)?;
        config.state_dir = config
            .state_dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", config.state_dir.display()))?;
        let lock = StateDirLock::acquire(&config.state_dir)?;

        let nbd = config.dataplane.nbd_listen_address;
        if !nbd.is_loopback() {
            tracing::info!(
                "NBD listens on {nbd}: there it serves TLS-PSK only, to the hosts of each export"
            );
        }

        let topology = Topology::plan_for_this_machine(&config.topology);
        tracing::info!("topology: {}", topology.summary());
        if topology.pinned
            && let Err(e) = nix::sched::sched_setaffinity(
                nix::unistd::Pid::from_raw(0),
                &cpu_set(&topology.control.cpus)?,
            )
        {
            tracing::warn!("cannot pin shoald to the control cluster's CPUs: {e}");
        }

        let region = ProvisionedRegion::create(
            &config.memory,
            &config.state_dir,
            config.topology.data_clusters,
        )?;

        let timeouts = Timeouts {
            heartbeat_interval: Duration::from_millis(config.supervisor.heartbeat_interval_ms),
            heartbeat: Duration::from_millis(config.supervisor.heartbeat_timeout_ms),
            stall_hard_limit: Duration::from_millis(config.supervisor.stall_hard_limit_ms),
            start: Duration::from_millis(config.supervisor.start_timeout_ms),
        };
        let policy = RestartPolicy::new(&config.supervisor);
        let region_path = region.region().path().to_path_buf();
        let pin = |placement: &Placement| -> anyhow::Result<_> {
            Ok(if topology.pinned {
                Some(cpu_set(&placement.cpus)?)
            } else {
                None
            })
        };

        let doorbells = (0..config.topology.data_clusters)
            .map(|_| Doorbell::new())
            .collect::<std::io::Result<Vec<_>>>()
            .context("cannot create the inter-cluster doorbells")?;
        let doorbell_fds: Vec<RawFd> = doorbells.iter().map(AsRawFd::as_raw_fd).collect();

        for index in 0..config.topology.data_clusters {
            prepare_drive(&config, index)?;
        }

        let mut dataplanes = Vec::new();
        for (index, placement) in (0u32..).zip(&topology.data) {
            let mut args = dataplane_args(&config, index, placement, topology.pinned, &region_path);
            args.push("--doorbells".into());
            args.push(
                doorbell_fds
                    .iter()
                    .map(RawFd::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
                    .into(),
            );
            let launch = LaunchSpec {
                program: binaries_dir.join(&config.binaries.dataplane),
                args,
                cpus: pin(placement)?,
                inherit_fds: doorbell_fds.clone(),
            };
            dataplanes.push(Child::new(
                ChildKind::Dataplane(index),
                launch,
                placement.clone(),
                policy.clone(),
                timeouts,
            ));
        }
        let management = if config.management.enabled {
            let launch = LaunchSpec {
                program: binaries_dir.join(&config.binaries.management),
                args: management_args(&config, &region_path),
                cpus: pin(&topology.control)?,
                inherit_fds: Vec::new(),
            };
            Some(Child::new(
                ChildKind::Management,
                launch,
                topology.control.clone(),
                policy,
                timeouts,
            ))
        } else {
            tracing::info!("management service disabled by management.enabled = false");
            None
        };

        Ok(Self {
            config,
            topology,
            region,
            _doorbells: doorbells,
            dataplanes,
            management,
            notifier: Notifier::from_env(),
            started: Instant::now(),
            ready: false,
            stopping: false,
            _lock: lock,
        })
    }

    pub fn config(&self) -> &ApplianceConfig {
        &self.config
    }

    /// Runs until SIGTERM or SIGINT, then stops everything in order.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) -> anyhow::Result<()> {
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigchld = signal(SignalKind::child())?;

        let now = Instant::now();
        let header = self.region.region().header();
        // Data clusters first: the management service drives them.
        for (index, child) in (0u32..).zip(&mut self.dataplanes) {
            child.spawn(cluster_slot(header, index), now);
        }
        if let Some(management) = &mut self.management {
            management.spawn(header.control_slot(), now);
        }

        let tick_every = Duration::from_millis(self.config.supervisor.heartbeat_interval_ms / 2);
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sigterm.recv() => { tracing::info!("SIGTERM received: shutting down"); break; }
                _ = sigint.recv() => { tracing::info!("SIGINT received: shutting down"); break; }
                _ = sigchld.recv() => self.reap(),
                Some(command) = commands.recv() => self.handle(command),
                _ = tick.tick() => self.on_tick(),
            }
        }
        drop(commands);
        self.shutdown(&mut sigchld).await;
        Ok(())
    }

    /// Collects every exited child (and, as PID 1, every orphan). The slot
    /// of a reaped child is marked exited by the child's index, not by the
    /// pid in the slot: a child that died before it claimed its slot left
    /// pid 0 there, and its peers must fail their I/O to it now, not wait for
    /// a restart that may never come (a crash-looped cluster is left down).
    fn reap(&mut self) {
        let now = Instant::now();
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(status) => {
                    let Some(pid) = status.pid() else { continue };
                    let header = self.region.region().header();
                    let is_child = |c: &Child| c.state.pid() == Some(pid);
                    if let Some(index) = self.dataplanes.iter().position(is_child) {
                        cluster_slot(header, index as u32).set_status(SlotStatus::Exited);
                        self.dataplanes[index].on_exit(status, now);
                    } else if let Some(management) =
                        self.management.as_mut().filter(|c| is_child(c))
                    {
                        header.control_slot().set_status(SlotStatus::Exited);
                        management.on_exit(status, now);
                    } else {
                        tracing::debug!(pid = pid.as_raw(), "reaped {status:?}");
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    tracing::error!("waitpid failed: {errno}");
                    return;
                }
            }
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let header = self.region.region().header();
        for (index, child) in (0u32..).zip(&mut self.dataplanes) {
            child.on_tick(cluster_slot(header, index), now);
        }
        if let Some(management) = &mut self.management {
            management.on_tick(header.control_slot(), now);
        }
        if !self.ready && self.children().all(Child::is_settled) {
            self.ready = true;
            self.announce_ready();
        }
        let summary = self.summary();
        self.notifier.status(&summary);
        self.notifier.tick(now);
    }

    fn children(&self) -> impl Iterator<Item = &Child> {
        self.dataplanes.iter().chain(self.management.iter())
    }

    fn summary(&self) -> String {
        let running = self
            .dataplanes
            .iter()
            .filter(|c| matches!(c.state, State::Running { .. }))
            .count();
        let failed = self
            .dataplanes
            .iter()
            .filter(|c| c.state == State::Failed)
            .count();
        let mut text = format!("{running}/{} data clusters running", self.dataplanes.len());
        if failed > 0 {
            text.push_str(&format!(", {failed} failed"));
        }
        if let Some(management) = &self.management {
            text.push_str(&format!(", management {}", management.state.name()));
        }
        text
    }

    fn announce_ready(&self) {
        self.notifier.ready();
        let management = match &self.management {
            Some(m) if matches!(m.state, State::Running { .. }) => format!(
                "Redfish service at https://{}/redfish/v1 (user admin; password from \
                 SHOAL_ADMIN_PASSWORD at first start, else in {})",
                self.config.management.https_listen,
                self.config
                    .state_dir
                    .join("initial-admin-password")
                    .display()
            ),
            Some(_) => "management service failed".to_string(),
            None => "management service disabled".to_string(),
        };
        tracing::info!(
            "appliance ready: {}; {management}; control socket {}",
            self.summary(),
            self.config.supervisor_socket().display()
        );
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::RestartCluster(index, reply) => {
                let result = if self.stopping {
                    Err(RpcError::errno(
                        Errno::ESHUTDOWN,
                        "the appliance is shutting down",
                    ))
                } else if let Some(child) = self.dataplanes.get_mut(index as usize) {
                    tracing::info!(
                        "restart of data cluster {index} requested over the control socket"
                    );
                    child.request_restart(Instant::now());
                    Ok(json!({"cluster": index, "state": child.state.name()}))
                } else {
                    Err(RpcError::invalid_params(format!(
                        "cluster {index} does not exist: the appliance has {} data clusters (0 to {})",
                        self.dataplanes.len(),
                        self.dataplanes.len().saturating_sub(1)
                    )))
                };
                let _ = reply.send(result);
            }
        }
    }

    fn status(&self) -> Value {
        let any_failed = self.children().any(|c| c.state == State::Failed);
        let overall = if self.stopping {
            "stopping"
        } else if self
            .children()
            .all(|c| matches!(c.state, State::Running { .. }))
        {
            "running"
        } else if any_failed || self.ready {
            "degraded"
        } else {
            "starting"
        };
        let header = self.region.region().header();
        let clusters: Vec<Value> = self
            .dataplanes
            .iter()
            .enumerate()
            .map(|(index, child)| {
                let mut status = child.status(cluster_slot(header, index as u32));
                status["index"] = json!(index);
                status["rpc_socket"] = json!(self.config.dataplane_socket(index as u32));
                status
            })
            .collect();
        let management = self.management.as_ref().map(|child| {
            let mut status = child.status(header.control_slot());
            status["https_listen"] = json!(self.config.management.https_listen.to_string());
            status["http_redirect_listen"] =
                json!(self.config.management.http_redirect_listen.to_string());
            status
        });
        json!({
            "state": overall,
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": self.started.elapsed().as_secs(),
            "state_dir": self.config.state_dir,
            "socket": self.config.supervisor_socket(),
            "topology": self.topology,
            "region": {
                "path": self.region.region().path(),
                "backing": header.backing(),
                "size_bytes": header.region_size(),
                "page_size": header.page_size(),
                "layout_version": header.layout_version(),
            },
            "management": management,
            "clusters": clusters,
        })
    }

    /// Stops the management service, then every data cluster, then removes
    /// the sockets and the region.
    async fn shutdown(mut self, sigchld: &mut tokio::signal::unix::Signal) {
        self.stopping = true;
        self.notifier.stopping();
        let grace = Duration::from_millis(self.config.supervisor.stop_timeout_ms);
        if let Some(management) = &mut self.management {
            management.begin_stop(Instant::now(), grace);
        }
        self.wait_stopped(sigchld, |s| s.management.iter_mut().collect())
            .await;
        for child in &mut self.dataplanes {
            child.begin_stop(Instant::now(), grace);
        }
        self.wait_stopped(sigchld, |s| s.dataplanes.iter_mut().collect())
            .await;

        for index in 0..self.dataplanes.len() {
            let socket = self.config.dataplane_socket(index as u32);
            if std::fs::remove_file(&socket).is_ok() {
                tracing::info!(
                    "removed socket {} left by data cluster {index}",
                    socket.display()
                );
            }
        }
        let _ = std::fs::remove_file(self.config.supervisor_socket());
        let Supervisor { region, .. } = self;
        for problem in region.teardown() {
            tracing::warn!("shared region cleanup: {problem}");
        }
        tracing::info!("shutdown complete");
    }

    async fn wait_stopped(
        &mut self,
        sigchld: &mut tokio::signal::unix::Signal,
        group: impl Fn(&mut Self) -> Vec<&mut Child>,
    ) {
        let mut poll = tokio::time::interval(Duration::from_millis(20));
        loop {
            self.reap();
            let now = Instant::now();
            let mut all_stopped = true;
            for child in group(self) {
                if let State::Stopping { .. } = child.state {
                    child.enforce_stop_deadline(now);
                    all_stopped = false;
                }
            }
            if all_stopped {
                return;
            }
            tokio::select! {
                _ = sigchld.recv() => {}
                _ = poll.tick() => {}
            }
        }
    }
}

fn cluster_slot(header: &RegionHeader, index: u32) -> &ParticipantSlot {
    header
        .cluster_slot(index)
        .expect("the region was created with a slot for every configured cluster")
}

/// Creates data cluster `index`'s drive file when the configuration
/// keeps drives in the state directory and it does not exist yet: sparse,
/// so it costs disk space only as it is written. Configured paths (block
/// devices) are the operator's; a missing one is reported by the cluster.
fn prepare_drive(config: &ApplianceConfig, index: u32) -> anyhow::Result<()> {
    let (path, create) = config.drive(index);
    if !create || path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("cannot create drive file {}", path.display()))?;
    file.set_len(config.dataplane.drive_size_mib << 20)
        .with_context(|| format!("cannot size drive file {}", path.display()))?;
    tracing::info!(
        path = %path.display(),
        size_mib = config.dataplane.drive_size_mib,
        "created the drive of data cluster {index}"
    );
    Ok(())
}

fn dataplane_args(
    config: &ApplianceConfig,
    index: u32,
    placement: &Placement,
    pinned: bool,
    region: &Path,
) -> Vec<OsString> {
    let cpus = placement
        .cpus
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let nbd =
        std::net::SocketAddr::new(config.dataplane.nbd_listen_address, config.nbd_port(index));
    let mut args: Vec<OsString> = vec![
        "--cluster".into(),
        index.to_string().into(),
        "--region".into(),
        region.into(),
        "--rpc-socket".into(),
        config.dataplane_socket(index).into(),
        "--cores".into(),
        placement.cores.to_string().into(),
        "--cpus".into(),
        cpus.into(),
        "--heartbeat-interval-ms".into(),
        config.supervisor.heartbeat_interval_ms.to_string().into(),
        "--nbd-listen".into(),
        nbd.to_string().into(),
        "--drive".into(),
        config.drive(index).0.into(),
        "--nvmf-listen".into(),
        std::net::SocketAddr::new(config.dataplane.listen_address, config.nvmf_port(index))
            .to_string()
            .into(),
    ];
    // The appliance's one discovery controller lives on cluster 0.
    if index == 0 {
        args.push("--discovery-listen".into());
        args.push(
            std::net::SocketAddr::new(
                config.dataplane.listen_address,
                config.dataplane.discovery_port,
            )
            .to_string()
            .into(),
        );
    }
    if pinned {
        args.push("--pin".into());
    }
    if let Some(startup) = config.dataplane_startup_config(index) {
        args.push("--config".into());
        args.push(startup.into());
    }
    args
}

fn management_args(config: &ApplianceConfig, region: &Path) -> Vec<OsString> {
    let m = &config.management;
    let mut args: Vec<OsString> = vec![
        "--state-dir".into(),
        config.state_dir.clone().into(),
        "--region".into(),
        region.into(),
        "--supervisor-socket".into(),
        config.supervisor_socket().into(),
        "--https-listen".into(),
        m.https_listen.to_string().into(),
        "--heartbeat-interval-ms".into(),
        config.supervisor.heartbeat_interval_ms.to_string().into(),
        "--session-timeout-s".into(),
        m.session_timeout_s.to_string().into(),
        "--max-sessions".into(),
        m.max_sessions.to_string().into(),
    ];
    if !m.host_name.is_empty() {
        args.push("--host-name".into());
        args.push(m.host_name.clone().into());
    }
    if m.event_destinations_allow_local {
        args.push("--event-destinations-allow-local".into());
    }
    if m.http_redirect {
        args.push("--http-redirect-listen".into());
        args.push(m.http_redirect_listen.to_string().into());
    }
    if let (Some(certificate), Some(key)) = (&m.tls_certificate, &m.tls_private_key) {
        args.push("--tls-certificate".into());
        args.push(certificate.into());
        args.push("--tls-private-key".into());
        args.push(key.into());
    }
    args
}

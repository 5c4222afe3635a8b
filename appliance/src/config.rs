//! The appliance configuration (`appliance.toml`) and the conventions other
//! tools script against: state directory, socket paths, ports, binary names.
//!
//! The embedded default, `appliance/default-config.toml`, is the documented
//! form of [`ApplianceConfig::default`]; a test keeps the two equal. A user
//! file only needs the keys it changes. Unknown keys are rejected by serde
//! (`deny_unknown_fields`, the message names the key and its line) and values
//! that cannot work are rejected by [`ApplianceConfig::validate`], which names
//! the key too.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::region::layout::MAX_DATA_CLUSTERS;

/// The embedded default configuration, printed by `shoald --print-default-config`.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../default-config.toml");

/// Largest number of cores a single cluster may ask for.
pub const MAX_CORES_PER_CLUSTER: u32 = 64;
/// Redfish SessionTimeout bounds, seconds (the schema's own limits).
pub const MIN_SESSION_TIMEOUT_S: u64 = 30;
pub const MAX_SESSION_TIMEOUT_S: u64 = 86_400;
/// Most Redfish sessions open at once.
pub const MAX_SESSIONS: u32 = 1024;
/// Largest shared region, in MiB (64 GiB).
pub const MAX_REGION_MIB: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApplianceConfig {
    pub state_dir: PathBuf,
    pub topology: TopologyConfig,
    pub memory: MemoryConfig,
    pub supervisor: SupervisorConfig,
    pub binaries: BinariesConfig,
    pub management: ManagementConfig,
    pub dataplane: DataplaneConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pinning {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopologyConfig {
    pub data_clusters: u32,
    pub cores_per_cluster: u32,
    pub control_cores: u32,
    pub pinning: Pinning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HugepageMode {
    Auto,
    Require,
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    pub region_mib: u64,
    pub hugepages: HugepageMode,
    pub reserve_hugepages: bool,
    pub hugetlbfs_mount: PathBuf,
    pub shm_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorConfig {
    pub socket: PathBuf,
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    /// A child that is stopped by a signal or starved of CPU is not killed
    /// for a silent heartbeat (it is not stuck) until its heartbeat is this
    /// old: the bound on how long I/O to it can wait.
    pub stall_hard_limit_ms: u64,
    pub start_timeout_ms: u64,
    pub restart_backoff_initial_ms: u64,
    pub restart_backoff_max_ms: u64,
    pub crash_loop_limit: u32,
    pub crash_loop_window_s: u64,
    pub stop_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BinariesConfig {
    pub dir: PathBuf,
    pub dataplane: PathBuf,
    pub management: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManagementConfig {
    pub enabled: bool,
    pub https_listen: SocketAddr,
    /// Plain HTTP that only redirects to HTTPS; off when false.
    pub http_redirect: bool,
    pub http_redirect_listen: SocketAddr,
    /// Operator-supplied PEM certificate chain and private key; when both
    /// are absent, a self-signed certificate is generated once and kept in
    /// the state directory.
    pub tls_certificate: Option<PathBuf>,
    pub tls_private_key: Option<PathBuf>,
    /// Idle time after which a Redfish session expires (SessionTimeout).
    pub session_timeout_s: u64,
    /// Redfish sessions open at once; logins beyond it are refused.
    pub max_sessions: u32,
    /// The appliance's host name, as clients reach it: the subject of the
    /// generated certificate and the host the HTTP redirect sends clients
    /// to. Empty: the machine's host name.
    pub host_name: String,
    /// Let event subscriptions send to loopback, link-local, unspecified
    /// and multicast addresses. Off: the management service would
    /// otherwise POST, for any client allowed to subscribe, to services
    /// only the appliance itself reaches.
    pub event_destinations_allow_local: bool,
    /// Serve every volume over NBD too (as export `volume<N>` on each data
    /// cluster's NBD port). NBD has no host access control: any client
    /// that reaches the port reaches the volume.
    pub nbd_volume_exports: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataplaneConfig {
    pub listen_address: IpAddr,
    /// Address the data clusters' NBD servers listen on. A non-loopback
    /// listener serves TLS-PSK only (the dataplane's policy): exports with
    /// a host list, to initiators holding their PSK; plaintext exports
    /// without a list stay reachable from loopback listeners only.
    pub nbd_listen_address: IpAddr,
    pub nvmf_base_port: u16,
    pub discovery_port: u16,
    pub nbd_base_port: u16,
    pub rpc_socket_dir: PathBuf,
    pub startup_config_dir: PathBuf,
    /// Each data cluster's backing drive (its SSD): a path template where
    /// `{i}` is the cluster index. Empty: a sparse file
    /// `<state_dir>/drives/drive{i}.img` of `drive_size_mib`, created at
    /// first start.
    pub drive_path: String,
    /// Size of the drive files shoald creates.
    pub drive_size_mib: u64,
}

/// A DNS name (labels of letters, digits and `-`, at most 253 characters)
/// or an IP address literal.
pub fn is_host_name(name: &str) -> bool {
    if name.parse::<IpAddr>().is_ok() {
        return true;
    }
    name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Largest drive file shoald creates: 16 TiB.
pub const MAX_DRIVE_SIZE_MIB: u64 = 16 << 20;

impl Default for ApplianceConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("./shoal-state"),
            topology: TopologyConfig::default(),
            memory: MemoryConfig::default(),
            supervisor: SupervisorConfig::default(),
            binaries: BinariesConfig::default(),
            management: ManagementConfig::default(),
            dataplane: DataplaneConfig::default(),
        }
    }
}

impl Default for TopologyConfig {
    fn default() -> Self {
        Self {
            data_clusters: 4,
            cores_per_cluster: 1,
            control_cores: 1,
            pinning: Pinning::Auto,
        }
    }
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            region_mib: 256,
            hugepages: HugepageMode::Auto,
            reserve_hugepages: true,
            hugetlbfs_mount: PathBuf::new(),
            shm_dir: PathBuf::from("/dev/shm"),
        }
    }
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::new(),
            heartbeat_interval_ms: 100,
            heartbeat_timeout_ms: 2000,
            stall_hard_limit_ms: 10_000,
            start_timeout_ms: 10_000,
            restart_backoff_initial_ms: 100,
            restart_backoff_max_ms: 10_000,
            crash_loop_limit: 5,
            crash_loop_window_s: 60,
            stop_timeout_ms: 5000,
        }
    }
}

impl Default for BinariesConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::new(),
            dataplane: PathBuf::from("shoal-dataplane"),
            management: PathBuf::from("shoal-management"),
        }
    }
}

impl Default for ManagementConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            https_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8443)),
            http_redirect: true,
            http_redirect_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            tls_certificate: None,
            tls_private_key: None,
            session_timeout_s: 1800,
            max_sessions: 64,
            host_name: String::new(),
            event_destinations_allow_local: false,
            nbd_volume_exports: true,
        }
    }
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        Self {
            listen_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            nbd_listen_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            nvmf_base_port: 4420,
            discovery_port: 8009,
            nbd_base_port: 10809,
            rpc_socket_dir: PathBuf::new(),
            startup_config_dir: PathBuf::new(),
            drive_path: String::new(),
            drive_size_mib: 1024,
        }
    }
}

impl ApplianceConfig {
    /// Parses a configuration text; `origin` names it in error messages.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads `path`, or the embedded default when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                Self::from_toml(&text, path)
            }
            None => Self::from_toml(DEFAULT_CONFIG_TOML, Path::new("<embedded default>")),
        }
    }

    /// Every value that cannot work, each message naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, message: String| {
            if !ok {
                problems.push(message);
            }
        };
        let t = &self.topology;
        check(
            (1..=MAX_DATA_CLUSTERS as u32).contains(&t.data_clusters),
            format!(
                "topology.data_clusters = {}: must be 1 to {MAX_DATA_CLUSTERS}",
                t.data_clusters
            ),
        );
        check(
            (1..=MAX_CORES_PER_CLUSTER).contains(&t.cores_per_cluster),
            format!(
                "topology.cores_per_cluster = {}: must be 1 to {MAX_CORES_PER_CLUSTER}",
                t.cores_per_cluster
            ),
        );
        check(
            (1..=MAX_CORES_PER_CLUSTER).contains(&t.control_cores),
            format!(
                "topology.control_cores = {}: must be 1 to {MAX_CORES_PER_CLUSTER}",
                t.control_cores
            ),
        );
        check(
            (1..=MAX_REGION_MIB).contains(&self.memory.region_mib),
            format!(
                "memory.region_mib = {}: must be 1 to {MAX_REGION_MIB}",
                self.memory.region_mib
            ),
        );
        let interconnect = crate::region::interconnect::InterconnectLayout::plan(
            self.memory.region_mib << 20,
            t.data_clusters,
        );
        check(
            interconnect.is_ok(),
            format!(
                "memory.region_mib = {}: too small for {} data clusters (at least {} MiB)",
                self.memory.region_mib,
                t.data_clusters,
                interconnect
                    .as_ref()
                    .err()
                    .map_or(0, |e| e.needed.div_ceil(1 << 20))
            ),
        );
        check(
            !self.state_dir.as_os_str().is_empty(),
            "state_dir is empty: it must name a directory".to_string(),
        );
        check(
            self.memory.shm_dir.is_absolute(),
            format!(
                "memory.shm_dir = {:?}: must be an absolute path",
                self.memory.shm_dir
            ),
        );

        let m = &self.management;
        check(
            m.tls_certificate.is_some() == m.tls_private_key.is_some(),
            "management.tls_certificate and management.tls_private_key: give both or neither"
                .to_string(),
        );
        check(
            (MIN_SESSION_TIMEOUT_S..=MAX_SESSION_TIMEOUT_S).contains(&m.session_timeout_s),
            format!(
                "management.session_timeout_s = {}: must be {MIN_SESSION_TIMEOUT_S} to {MAX_SESSION_TIMEOUT_S}",
                m.session_timeout_s
            ),
        );
        check(
            m.host_name.is_empty() || is_host_name(&m.host_name),
            format!(
                "management.host_name = {:?}: must be a DNS name or an IP address",
                m.host_name
            ),
        );
        check(
            (1..=MAX_SESSIONS).contains(&m.max_sessions),
            format!(
                "management.max_sessions = {}: must be 1 to {MAX_SESSIONS}",
                m.max_sessions
            ),
        );

        let s = &self.supervisor;
        check(
            s.heartbeat_interval_ms >= 10,
            format!(
                "supervisor.heartbeat_interval_ms = {}: must be at least 10",
                s.heartbeat_interval_ms
            ),
        );
        check(
            s.heartbeat_timeout_ms >= 3 * s.heartbeat_interval_ms,
            format!(
                "supervisor.heartbeat_timeout_ms = {}: must be at least 3 x heartbeat_interval_ms ({})",
                s.heartbeat_timeout_ms,
                3 * s.heartbeat_interval_ms
            ),
        );
        check(
            s.stall_hard_limit_ms >= s.heartbeat_timeout_ms,
            format!(
                "supervisor.stall_hard_limit_ms = {}: must be at least heartbeat_timeout_ms ({})",
                s.stall_hard_limit_ms, s.heartbeat_timeout_ms
            ),
        );
        check(
            s.start_timeout_ms >= s.heartbeat_timeout_ms,
            format!(
                "supervisor.start_timeout_ms = {}: must be at least heartbeat_timeout_ms ({})",
                s.start_timeout_ms, s.heartbeat_timeout_ms
            ),
        );
        check(
            s.restart_backoff_initial_ms >= 1,
            "supervisor.restart_backoff_initial_ms = 0: must be at least 1".to_string(),
        );
        check(
            s.restart_backoff_max_ms >= s.restart_backoff_initial_ms,
            format!(
                "supervisor.restart_backoff_max_ms = {}: must be at least restart_backoff_initial_ms ({})",
                s.restart_backoff_max_ms, s.restart_backoff_initial_ms
            ),
        );
        check(
            s.crash_loop_window_s >= 1,
            "supervisor.crash_loop_window_s = 0: must be at least 1".to_string(),
        );
        check(
            s.stop_timeout_ms >= 100,
            format!(
                "supervisor.stop_timeout_ms = {}: must be at least 100",
                s.stop_timeout_ms
            ),
        );

        for (key, value) in [
            ("binaries.dataplane", &self.binaries.dataplane),
            ("binaries.management", &self.binaries.management),
        ] {
            check(
                !value.as_os_str().is_empty(),
                format!("{key} is empty: it must name a program"),
            );
        }

        let d = &self.dataplane;
        let last_cluster = t.data_clusters.saturating_sub(1);
        for (key, base) in [
            ("dataplane.nvmf_base_port", d.nvmf_base_port),
            ("dataplane.nbd_base_port", d.nbd_base_port),
        ] {
            check(
                base != 0 && u32::from(base) + last_cluster <= u32::from(u16::MAX),
                format!(
                    "{key} = {base}: ports {base} to {base}+{last_cluster} must lie within 1 to 65535"
                ),
            );
        }
        check(
            d.discovery_port != 0,
            "dataplane.discovery_port = 0: must be 1 to 65535".to_string(),
        );
        check(
            (1..=MAX_DRIVE_SIZE_MIB).contains(&d.drive_size_mib),
            format!(
                "dataplane.drive_size_mib = {}: must be 1 to {MAX_DRIVE_SIZE_MIB}",
                d.drive_size_mib
            ),
        );
        check(
            d.drive_path.is_empty() || t.data_clusters == 1 || d.drive_path.contains("{i}"),
            format!(
                "dataplane.drive_path = {:?}: with {} data clusters it must contain {{i}}, or every cluster would use the same drive",
                d.drive_path, t.data_clusters
            ),
        );

        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The supervisor's JSON-RPC socket.
    pub fn supervisor_socket(&self) -> PathBuf {
        or_in(&self.supervisor.socket, &self.state_dir, "shoald.sock")
    }

    /// The JSON-RPC socket of data cluster `index`.
    pub fn dataplane_socket(&self, index: u32) -> PathBuf {
        let dir = if self.dataplane.rpc_socket_dir.as_os_str().is_empty() {
            &self.state_dir
        } else {
            &self.dataplane.rpc_socket_dir
        };
        dir.join(format!("dataplane-{index}.sock"))
    }

    /// The startup RPC file of data cluster `index`, if the configuration
    /// names a directory and the file exists there.
    pub fn dataplane_startup_config(&self, index: u32) -> Option<PathBuf> {
        if self.dataplane.startup_config_dir.as_os_str().is_empty() {
            return None;
        }
        let path = self
            .dataplane
            .startup_config_dir
            .join(format!("dataplane-{index}.json"));
        path.exists().then_some(path)
    }

    /// The backing drive of data cluster `index`, and whether shoald
    /// creates it (a file in the state directory) when it is missing.
    pub fn drive(&self, index: u32) -> (PathBuf, bool) {
        if self.dataplane.drive_path.is_empty() {
            let file = self
                .state_dir
                .join("drives")
                .join(format!("drive{index}.img"));
            (file, true)
        } else {
            let path = self.dataplane.drive_path.replace("{i}", &index.to_string());
            (PathBuf::from(path), false)
        }
    }

    /// NVMe/TCP port of data cluster `index`.
    pub fn nvmf_port(&self, index: u32) -> u16 {
        port_for(self.dataplane.nvmf_base_port, index)
    }

    /// NBD port of data cluster `index`.
    pub fn nbd_port(&self, index: u32) -> u16 {
        port_for(self.dataplane.nbd_base_port, index)
    }
}

fn or_in(configured: &Path, dir: &Path, name: &str) -> PathBuf {
    if configured.as_os_str().is_empty() {
        dir.join(name)
    } else {
        configured.to_path_buf()
    }
}

fn port_for(base: u16, index: u32) -> u16 {
    // validate() guarantees base + (data_clusters - 1) fits in a u16.
    u16::try_from(u32::from(base) + index).expect("validated port range")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ApplianceConfig, ConfigError> {
        ApplianceConfig::from_toml(text, Path::new("test.toml"))
    }

    #[test]
    fn drives_are_files_in_the_state_dir_or_a_template() {
        let config = parse("state_dir = \"/s\"\n").unwrap();
        assert_eq!(
            config.drive(2),
            (PathBuf::from("/s/drives/drive2.img"), true)
        );
        let config = parse("[dataplane]\ndrive_path = \"/dev/shoal/drive{i}\"\n").unwrap();
        assert_eq!(config.drive(3), (PathBuf::from("/dev/shoal/drive3"), false));
        let err = parse("[dataplane]\ndrive_path = \"/dev/nvme0n1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("{i}"), "{err}");
        let err = parse("[dataplane]\ndrive_size_mib = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dataplane.drive_size_mib"), "{err}");
        // One cluster may name its drive without a template.
        assert!(
            parse("[topology]\ndata_clusters = 1\n[dataplane]\ndrive_path = \"/dev/nvme0n1\"\n")
                .is_ok()
        );
    }

    #[test]
    fn embedded_default_documents_the_rust_default() {
        let embedded = ApplianceConfig::load(None).unwrap();
        assert_eq!(embedded, ApplianceConfig::default());
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let config = parse("[topology]\ndata_clusters = 2\n").unwrap();
        assert_eq!(config.topology.data_clusters, 2);
        assert_eq!(config.memory, MemoryConfig::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("[memory]\nregion_mb = 64\n").unwrap_err().to_string();
        assert!(err.contains("region_mb"), "{err}");
        let err = parse("bogus_section_key = 1\n").unwrap_err().to_string();
        assert!(err.contains("bogus_section_key"), "{err}");
    }

    #[test]
    fn impossible_values_are_named() {
        let err = parse("[topology]\ndata_clusters = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("topology.data_clusters"), "{err}");
        let err = parse("[topology]\ndata_clusters = 65\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("topology.data_clusters"), "{err}");
        let err = parse("[supervisor]\nheartbeat_timeout_ms = 100\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("supervisor.heartbeat_timeout_ms"), "{err}");
        let err = parse("[dataplane]\nnbd_base_port = 65534\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dataplane.nbd_base_port"), "{err}");
    }

    #[test]
    fn wrong_types_and_enum_values_are_named() {
        let err = parse("[memory]\nhugepages = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sometimes") && err.contains("hugepages"),
            "{err}"
        );
        let err = parse("[management]\nhttps_listen = \"not an address\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("https_listen"), "{err}");
    }

    #[test]
    fn the_host_name_is_a_dns_name_or_an_address() {
        for good in ["bmc", "bmc-1.example.com", "192.0.2.7", "::1"] {
            assert!(is_host_name(good), "{good}");
        }
        for bad in ["", "a..b", "-a", "a b", "a/b", "evil.com:1@x"] {
            assert!(!is_host_name(bad), "{bad}");
        }
        let err = parse("[management]\nhost_name = \"a b\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("management.host_name"), "{err}");
    }

    #[test]
    fn conventions_follow_the_state_dir() {
        let mut config = ApplianceConfig {
            state_dir: PathBuf::from("/var/lib/shoal"),
            ..Default::default()
        };
        assert_eq!(
            config.supervisor_socket(),
            Path::new("/var/lib/shoal/shoald.sock")
        );
        assert_eq!(
            config.dataplane_socket(3),
            Path::new("/var/lib/shoal/dataplane-3.sock")
        );
        assert_eq!(config.nvmf_port(3), 4423);
        assert_eq!(config.nbd_port(1), 10810);
        config.dataplane.rpc_socket_dir = PathBuf::from("/run/shoal");
        assert_eq!(
            config.dataplane_socket(0),
            Path::new("/run/shoal/dataplane-0.sock")
        );
    }
}

//! Command line of `shoal-management`, as the supervisor passes it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "shoal-management",
    version,
    about = "Shoal Redfish/Swordfish management service"
)]
pub struct Args {
    /// The appliance's state directory (persistent service state lives here).
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// The appliance's shared region (created by shoald).
    #[arg(long, value_name = "PATH")]
    pub region: PathBuf,
    /// The supervisor's JSON-RPC socket.
    #[arg(long, value_name = "PATH")]
    pub supervisor_socket: PathBuf,
    /// Address for the Redfish service over HTTPS.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub https_listen: SocketAddr,
    /// Address for plain HTTP, which only redirects to HTTPS; none when absent.
    #[arg(long)]
    pub http_redirect_listen: Option<SocketAddr>,
    /// PEM certificate chain for HTTPS (with --tls-private-key); without
    /// it a self-signed certificate is generated once in the state dir.
    #[arg(long, value_name = "PEM", requires = "tls_private_key")]
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key matching --tls-certificate.
    #[arg(long, value_name = "PEM", requires = "tls_certificate")]
    pub tls_private_key: Option<PathBuf>,
    /// Idle seconds before a Redfish session expires.
    #[arg(long, default_value_t = 1800, value_parser = clap::value_parser!(u64).range(30..=86_400))]
    pub session_timeout_s: u64,
    /// Redfish sessions open at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_sessions: u32,
    /// Directory of the shipped DMTF schema files (csdl/, json-schema/).
    #[arg(long, value_name = "DIR", default_value_os_t = crate::resources::schemas::default_dir())]
    pub schema_dir: PathBuf,
    /// The appliance's host name: the subject of the generated certificate
    /// and the host of the HTTP redirect. Empty: the machine's host name.
    #[arg(long, default_value = "")]
    pub host_name: String,
    /// Accept event subscriptions to loopback, link-local, unspecified and
    /// multicast addresses (off: such a destination could reach services
    /// only the appliance itself can, on the client's behalf).
    #[arg(long)]
    pub event_destinations_allow_local: bool,
    /// Heartbeat period in milliseconds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub heartbeat_interval_ms: u64,
}

impl Args {
    /// `--host-name`, or the machine's host name, or `shoal`.
    pub fn host_name(&self) -> String {
        if !self.host_name.is_empty() {
            return self.host_name.clone();
        }
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "shoal".to_string())
    }
}

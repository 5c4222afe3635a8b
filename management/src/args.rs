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
    /// Address for plain HTTP, which only redirects to HTTPS.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http_redirect_listen: SocketAddr,
    /// Heartbeat period in milliseconds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub heartbeat_interval_ms: u64,
}

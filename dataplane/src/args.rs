//! Command line of `shoal-dataplane`, as the supervisor passes it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "shoal-dataplane",
    version,
    about = "Shoal I/O engine for one data cluster"
)]
pub struct Args {
    /// Index of the data cluster this process runs.
    #[arg(long)]
    pub cluster: u32,
    /// The appliance's shared region (created by shoald).
    #[arg(long, value_name = "PATH")]
    pub region: PathBuf,
    /// JSON-RPC control socket to serve.
    #[arg(long, value_name = "PATH")]
    pub rpc_socket: PathBuf,
    /// Reactor cores this cluster runs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub cores: u32,
    /// CPUs assigned to the cluster, comma separated.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub cpus: Vec<usize>,
    /// Pin reactor i to CPU cpus[i % len] (shoald asks for it when every
    /// cluster has CPUs of its own).
    #[arg(long)]
    pub pin: bool,
    /// Address of this cluster's NBD server; none when absent.
    #[arg(long, value_name = "ADDR:PORT")]
    pub nbd_listen: Option<SocketAddr>,
    /// This cluster's backing drive (file or block device), opened as bdev
    /// `drive<cluster>`; none when absent.
    #[arg(long, value_name = "PATH")]
    pub drive: Option<PathBuf>,
    /// This cluster's NVMe/TCP portal; none when absent.
    #[arg(long, value_name = "ADDR:PORT")]
    pub nvmf_listen: Option<SocketAddr>,
    /// A portal for the NVMe-oF discovery controller (port 8009 by
    /// convention); none when absent.
    #[arg(long, value_name = "ADDR:PORT")]
    pub discovery_listen: Option<SocketAddr>,
    /// JSON file of RPC calls applied at start (SPDK's JSON config format).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Inherited eventfds, one per data cluster in cluster order, that
    /// wake a cluster's inter-cluster poller (shoald passes them). Without
    /// them the cluster runs alone: no remote bdevs.
    #[arg(long, value_delimiter = ',', value_name = "FDS")]
    pub doorbells: Vec<i32>,
    /// Heartbeat period in milliseconds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub heartbeat_interval_ms: u64,
}

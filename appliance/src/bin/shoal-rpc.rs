//! shoal-rpc: send one JSON-RPC call to shoald or a dataplane, like SPDK's
//! `rpc.py`, and print the result as JSON.
//!
//! ```text
//! shoal-rpc appliance_get_status
//! shoal-rpc -s shoal-state/dataplane-0.sock spdk_get_version
//! shoal-rpc -s shoal-state/dataplane-0.sock bdev_malloc_create '{"num_blocks": 2048, "block_size": 512}'
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;
use shoal_appliance::jsonrpc::{CallError, call_blocking};

#[derive(Parser)]
#[command(
    name = "shoal-rpc",
    version,
    about = "Send a JSON-RPC 2.0 call to a Shoal socket"
)]
struct Cli {
    /// Socket to talk to. Default: the supervisor's socket in the state directory.
    #[arg(short = 's', long, value_name = "SOCKET")]
    socket: Option<PathBuf>,
    /// State directory whose shoald.sock is the default socket.
    #[arg(
        long,
        env = "SHOAL_STATE_DIR",
        default_value = "./shoal-state",
        value_name = "DIR"
    )]
    state_dir: PathBuf,
    /// Seconds to wait for the answer.
    #[arg(short = 't', long, default_value_t = 60.0)]
    timeout: f64,
    /// Method name, e.g. appliance_get_status or bdev_get_bdevs.
    method: String,
    /// Parameters as a JSON object or array.
    params: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let params = match cli.params.as_deref().map(serde_json::from_str::<Value>) {
        None => None,
        Some(Ok(value @ (Value::Object(_) | Value::Array(_)))) => Some(value),
        Some(Ok(_)) => {
            eprintln!("shoal-rpc: params must be a JSON object or array");
            return ExitCode::from(2);
        }
        Some(Err(e)) => {
            eprintln!("shoal-rpc: params are not valid JSON: {e}");
            return ExitCode::from(2);
        }
    };
    if !(cli.timeout.is_finite() && cli.timeout > 0.0) {
        eprintln!("shoal-rpc: --timeout must be a positive number of seconds");
        return ExitCode::from(2);
    }
    let socket = cli
        .socket
        .unwrap_or_else(|| cli.state_dir.join("shoald.sock"));
    match call_blocking(
        &socket,
        &cli.method,
        params,
        Duration::from_secs_f64(cli.timeout),
    ) {
        Ok(result) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&result).expect("JSON values serialise")
            );
            ExitCode::SUCCESS
        }
        Err(CallError::Rpc(error)) => {
            // rpc.py prints the error object; scripts read the code from it.
            eprintln!(
                "{}",
                serde_json::to_string_pretty(&error).expect("errors serialise")
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("shoal-rpc: {}: {e}", socket.display());
            ExitCode::FAILURE
        }
    }
}

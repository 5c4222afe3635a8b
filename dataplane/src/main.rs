//! shoal-dataplane: the I/O engine of one data cluster, started by shoald.

use std::process::ExitCode;

use clap::Parser;
use shoal_appliance::logging::{self, Role};
use shoal_dataplane::args::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    logging::init(Role::Dataplane {
        cluster: args.cluster,
    });
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(shoal_dataplane::service::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

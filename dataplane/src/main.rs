//! shoal-dataplane: the I/O engine of one data cluster, started by shoald.

use std::process::ExitCode;

use clap::Parser;
use shoal_appliance::logging::{self, Role};
use shoal_appliance::participant::child_main;
use shoal_dataplane::args::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    logging::init(Role::Dataplane {
        cluster: args.cluster,
    });
    child_main(false, shoal_dataplane::service::run(args))
}

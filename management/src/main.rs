//! shoal-management: the Redfish/Swordfish service, started by shoald.

use std::process::ExitCode;

use clap::Parser;
use shoal_appliance::logging::{self, Role};
use shoal_appliance::participant::child_main;
use shoal_management::args::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    logging::init(Role::Management);
    child_main(true, shoal_management::service::run(args))
}

//! shoal-management: the Redfish/Swordfish service, started by shoald.

use std::process::ExitCode;

use clap::Parser;
use shoal_appliance::logging::{self, Role};
use shoal_appliance::participant::child_main;
use shoal_management::args::Args;

fn main() -> ExitCode {
    return_large_blocks_to_the_os();
    let args = Args::parse();
    logging::init(Role::Management);
    child_main(true, shoal_management::service::run(args))
}

/// Serves allocations of 256 KiB and more straight from mmap, so they go
/// back to the kernel when freed. glibc otherwise raises this threshold to
/// the size of the first large block freed (argon2's 19 MiB) and keeps
/// later ones in a heap arena: a single login would pin 19 MiB of RSS in
/// a service that needs a few.
fn return_large_blocks_to_the_os() {
    const MMAP_THRESHOLD: libc::c_int = 256 * 1024;
    // SAFETY: mallopt only sets an allocator parameter; it is called
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

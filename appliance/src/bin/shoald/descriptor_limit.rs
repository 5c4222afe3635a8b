//! Raising the open-file limit (RLIMIT_NOFILE) that every child inherits.
//!
//! Linux starts processes with a soft limit of 1024 descriptors, fewer than
//! one data cluster may legitimately hold: it serves up to
//! `nvmf::listener::MAX_CONNECTIONS` (4096) NVMe/TCP connections plus
//! `nbd::server::MAX_CONNECTIONS` (1024) NBD connections, 64 JSON-RPC
//! connections, up to 64 listening portals, and per reactor core an
//! io_uring and its event descriptors, about 5,300 in all. At 1024, a
//! thousand idle NBD connections used up a dataplane's descriptors and it
//! could no longer accept anything, NVMe/TCP included. shoald raises the
//! limit before it starts any child, so each child gets it through exec.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The soft limit shoald asks for: more than ten times what one data cluster
/// needs at its configured connection bounds (about 5,300, see above), so
/// the connection bounds, not the descriptor limit, are what refuses a
/// client. Capped at the hard limit when shoald may not raise that.
pub const NOFILE_TARGET: u64 = 65536;

/// Raises the soft (and, when shoald may, the hard) RLIMIT_NOFILE to
/// [`NOFILE_TARGET`], never lowering either. Returns the soft limit now in
/// force, which is logged.
pub fn raise() -> u64 {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!("cannot read the open-file limit: {e}");
            return 0;
        }
    };
    // Raising the hard limit needs CAP_SYS_RESOURCE (root in the quick
    // image, where PID 1 starts with a hard limit of 4096); elsewhere the
    // hard limit is the ceiling (systemd's LimitNOFILE= sets both).
    let new_hard = hard.max(NOFILE_TARGET);
    let new_soft = soft.max(NOFILE_TARGET);
    if new_hard > hard && setrlimit(Resource::RLIMIT_NOFILE, new_soft, new_hard).is_ok() {
        tracing::info!(soft = new_soft, hard = new_hard, "open-file limit raised");
        return new_soft;
    }
    let new_soft = soft.max(NOFILE_TARGET.min(hard));
    if new_soft > soft
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, new_soft, hard)
    {
        tracing::warn!("cannot raise the open-file limit from {soft} to {new_soft}: {e}");
        return soft;
    }
    if new_soft < NOFILE_TARGET {
        tracing::warn!(
            soft = new_soft,
            hard,
            "open-file limit below the {NOFILE_TARGET} the data clusters are sized for; \
             raise the hard limit (LimitNOFILE=)"
        );
    } else {
        tracing::info!(soft = new_soft, hard, "open-file limit");
    }
    new_soft
}

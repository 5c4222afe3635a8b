//! One clock every process of the appliance can compare.
//!
//! Heartbeats are written by one process and judged by another, so they use
//! `CLOCK_MONOTONIC`, which is system-wide (unlike `Instant`, whose epoch is
//! unspecified) and never jumps with wall-clock changes.

use nix::time::{ClockId, clock_gettime};

/// Nanoseconds on the system-wide monotonic clock. Never 0 on a running
/// system, so 0 can mean "no heartbeat yet" in the shared region.
pub fn monotonic_ns() -> u64 {
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always available");
    (now.tv_sec() as u64) * 1_000_000_000 + now.tv_nsec() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = monotonic_ns();
        assert!(a > 0);
        assert!(b >= a + 1_000_000, "{b} should be at least 1 ms after {a}");
    }
}

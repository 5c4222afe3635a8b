//! Loopback ports for test appliances that nobody else will take.
//!
//! A port found free by binding to port 0 comes from the kernel's ephemeral
//! range, the same range every outgoing connection takes its source port
//! from. Between the test releasing it and the appliance binding it, a
//! client socket of a test running in parallel can take it, and the data
//! cluster then fails with "Address already in use" (a CI run failed exactly
//! so). Ports here come from below the ephemeral range, in slots of
//! [`SLOT_PORTS`] that a test process claims with an exclusive `flock` held
//! for its lifetime, so neither parallel tests in one binary nor parallel
//! test binaries share a port.

use std::fs::File;
use std::net::TcpListener;
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};

/// Ports in one slot; the largest block one appliance asks for must fit.
pub const SLOT_PORTS: u16 = 32;
/// Lowest port handed out: above the well-known and commonly registered ones.
const FIRST_PORT: u16 = 20_000;
/// Where the slot lock files live (shared by every test process).
const LOCK_DIR: &str = "/tmp/shoal-test-ports";

struct Slot {
    next: u16,
    end: u16,
}

/// The slot this process is handing ports out of, and every lock it holds.
struct Claims {
    current: Option<Slot>,
    held: Vec<Flock<File>>,
    tried: u32,
}

static CLAIMS: Mutex<Claims> = Mutex::new(Claims {
    current: None,
    held: Vec::new(),
    tried: 0,
});

/// The first of `count` consecutive loopback ports that are free now and
/// reserved for this process from now on.
pub fn reserve(count: u16) -> u16 {
    assert!(
        (1..=SLOT_PORTS).contains(&count),
        "a port block holds 1..={SLOT_PORTS} ports, not {count}"
    );
    let mut claims = CLAIMS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        if let Some(slot) = claims.current.as_mut()
            && slot.end - slot.next >= count
        {
            let base = slot.next;
            slot.next += count;
            if (base..base + count).all(bindable) {
                return base;
            }
            continue;
        }
        let slot = claim_slot(&mut claims);
        claims.current = Some(slot);
    }
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The kernel's ephemeral range starts here (client source ports).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

fn claim_slot(claims: &mut Claims) -> Slot {
    let low = ephemeral_low();
    // Without room below the ephemeral range, use the ports above it.
    let (first, last) = if low >= FIRST_PORT + 8 * SLOT_PORTS {
        (FIRST_PORT, low)
    } else {
        (FIRST_PORT, u16::MAX)
    };
    let slots = u32::from((last - first) / SLOT_PORTS);
    std::fs::create_dir_all(LOCK_DIR).expect("create the port lock directory");
    // Start at a place that differs per process, so processes rarely contend.
    let start = std::process::id().wrapping_mul(2_654_435_761);
    for _ in 0..slots {
        let index = start.wrapping_add(claims.tried) % slots;
        claims.tried += 1;
        let base = first + (index as u16) * SLOT_PORTS;
        let path = format!("{LOCK_DIR}/slot-{base}");
        let Ok(file) = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
        else {
            continue;
        };
        if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            claims.held.push(lock);
            return Slot {
                next: base,
                end: base + SLOT_PORTS,
            };
        }
    }
    panic!("every test port slot in {first}..{last} is claimed by another process");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_never_overlap_and_stay_below_the_ephemeral_range() {
        let low = ephemeral_low();
        let mut seen = std::collections::HashSet::new();
        for count in [1u16, 9, 3, 32, 1, 17] {
            let base = reserve(count);
            for port in base..base + count {
                assert!(seen.insert(port), "port {port} handed out twice");
                if low >= FIRST_PORT + 8 * SLOT_PORTS {
                    assert!(port < low, "port {port} is in the ephemeral range");
                }
            }
        }
    }
}

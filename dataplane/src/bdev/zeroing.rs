//! How a file bdev writes zeroes, and what it falls back to where the
//! file system refuses a method.
//!
//! `fallocate(FALLOC_FL_ZERO_RANGE)` is the fast way (ext4, xfs, block
//! devices), but tmpfs and some other file systems answer EOPNOTSUPP.
//! Punching a hole (`PUNCH_HOLE | KEEP_SIZE`) reads back as zeroes on every
//! file system that has it, and releases the space instead of keeping it.
//! Where neither exists, zeroes are written like data. The first method
//! that works is remembered per bdev, so only the first request pays for
//! the refusals.

use std::sync::atomic::{AtomicU8, Ordering};

/// One way of zeroing a byte range, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ZeroingMethod {
    /// `fallocate(ZERO_RANGE | KEEP_SIZE)`: zeroed, space kept allocated.
    ZeroRange = 0,
    /// `fallocate(PUNCH_HOLE | KEEP_SIZE)`: zeroed, space released.
    PunchHole = 1,
    /// Writes of a zero-filled buffer: works on anything writable.
    WriteBuffers = 2,
}

impl ZeroingMethod {
    /// The method to try once this one was refused as unsupported.
    pub fn fallback(self) -> Option<Self> {
        match self {
            ZeroingMethod::ZeroRange => Some(ZeroingMethod::PunchHole),
            ZeroingMethod::PunchHole => Some(ZeroingMethod::WriteBuffers),
            ZeroingMethod::WriteBuffers => None,
        }
    }

    /// The `fallocate` mode of this method; `None` for written zeroes.
    pub fn fallocate_mode(self) -> Option<i32> {
        match self {
            ZeroingMethod::ZeroRange => {
                Some(libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE)
            }
            ZeroingMethod::PunchHole => {
                Some(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
            }
            ZeroingMethod::WriteBuffers => None,
        }
    }

    fn from_raw(raw: u8) -> Self {
        match raw {
            0 => ZeroingMethod::ZeroRange,
            1 => ZeroingMethod::PunchHole,
            _ => ZeroingMethod::WriteBuffers,
        }
    }
}

/// The method a bdev uses now, shared by all its channels (reactors).
#[derive(Debug, Default)]
pub struct ZeroingChoice(AtomicU8);

impl ZeroingChoice {
    pub fn current(&self) -> ZeroingMethod {
        ZeroingMethod::from_raw(self.0.load(Ordering::Relaxed))
    }

    /// `method` was refused as unsupported: moves on to its fallback and
    /// returns the method to try next (`None`: nothing is left). Only
    /// ever moves forward, so channels that race agree on the outcome.
    pub fn refused(&self, method: ZeroingMethod) -> Option<ZeroingMethod> {
        let next = method.fallback()?;
        self.0.fetch_max(next as u8, Ordering::Relaxed);
        Some(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_fall_back_in_order_and_end() {
        let choice = ZeroingChoice::default();
        assert_eq!(choice.current(), ZeroingMethod::ZeroRange);
        assert_eq!(
            choice.refused(ZeroingMethod::ZeroRange),
            Some(ZeroingMethod::PunchHole)
        );
        assert_eq!(
            choice.refused(ZeroingMethod::PunchHole),
            Some(ZeroingMethod::WriteBuffers)
        );
        assert_eq!(choice.refused(ZeroingMethod::WriteBuffers), None);
        assert_eq!(choice.current(), ZeroingMethod::WriteBuffers);
    }

    #[test]
    fn a_late_refusal_of_an_earlier_method_never_moves_back() {
        let choice = ZeroingChoice::default();
        choice.refused(ZeroingMethod::PunchHole);
        assert_eq!(choice.current(), ZeroingMethod::WriteBuffers);
        // A channel whose ZERO_RANGE was in flight meanwhile reports it.
        assert_eq!(
            choice.refused(ZeroingMethod::ZeroRange),
            Some(ZeroingMethod::WriteBuffers)
        );
    }

    #[test]
    fn fallocate_modes_keep_the_file_size() {
        for method in [ZeroingMethod::ZeroRange, ZeroingMethod::PunchHole] {
            let mode = method.fallocate_mode().unwrap();
            assert_ne!(mode & libc::FALLOC_FL_KEEP_SIZE, 0, "{method:?}");
        }
        assert_eq!(ZeroingMethod::WriteBuffers.fallocate_mode(), None);
    }
}

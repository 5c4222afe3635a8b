//! Per-channel I/O statistics, summed per bdev for `bdev_get_iostat`.
//! Latencies are in nanoseconds, reported as ticks with a 1 GHz tick rate.

use std::time::Duration;

use serde::Serialize;

use super::IoKind;

/// Tick rate of every latency this module reports.
pub const TICK_RATE: u64 = 1_000_000_000;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IoStats {
    pub bytes_read: u64,
    pub num_read_ops: u64,
    pub bytes_written: u64,
    pub num_write_ops: u64,
    pub bytes_unmapped: u64,
    pub num_unmap_ops: u64,
    pub num_flush_ops: u64,
    pub num_write_zeroes_ops: u64,
    pub num_reset_ops: u64,
    pub read_latency_ticks: u64,
    pub max_read_latency_ticks: u64,
    pub write_latency_ticks: u64,
    pub max_write_latency_ticks: u64,
    pub unmap_latency_ticks: u64,
    pub num_io_errors: u64,
}

impl IoStats {
    /// Accounts one completed I/O.
    pub fn record(&mut self, kind: IoKind, bytes: u64, latency: Duration, failed: bool) {
        let ticks = latency.as_nanos() as u64;
        if failed {
            self.num_io_errors += 1;
            return;
        }
        match kind {
            IoKind::Read => {
                self.num_read_ops += 1;
                self.bytes_read += bytes;
                self.read_latency_ticks += ticks;
                self.max_read_latency_ticks = self.max_read_latency_ticks.max(ticks);
            }
            IoKind::Write => {
                self.num_write_ops += 1;
                self.bytes_written += bytes;
                self.write_latency_ticks += ticks;
                self.max_write_latency_ticks = self.max_write_latency_ticks.max(ticks);
            }
            IoKind::Unmap => {
                self.num_unmap_ops += 1;
                self.bytes_unmapped += bytes;
                self.unmap_latency_ticks += ticks;
            }
            IoKind::Flush => self.num_flush_ops += 1,
            IoKind::WriteZeroes => self.num_write_zeroes_ops += 1,
            IoKind::Reset => self.num_reset_ops += 1,
        }
    }

    pub fn add(&mut self, other: &IoStats) {
        self.bytes_read += other.bytes_read;
        self.num_read_ops += other.num_read_ops;
        self.bytes_written += other.bytes_written;
        self.num_write_ops += other.num_write_ops;
        self.bytes_unmapped += other.bytes_unmapped;
        self.num_unmap_ops += other.num_unmap_ops;
        self.num_flush_ops += other.num_flush_ops;
        self.num_write_zeroes_ops += other.num_write_zeroes_ops;
        self.num_reset_ops += other.num_reset_ops;
        self.read_latency_ticks += other.read_latency_ticks;
        self.max_read_latency_ticks = self
            .max_read_latency_ticks
            .max(other.max_read_latency_ticks);
        self.write_latency_ticks += other.write_latency_ticks;
        self.max_write_latency_ticks = self
            .max_write_latency_ticks
            .max(other.max_write_latency_ticks);
        self.unmap_latency_ticks += other.unmap_latency_ticks;
        self.num_io_errors += other.num_io_errors;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_and_sum() {
        let mut a = IoStats::default();
        a.record(IoKind::Read, 4096, Duration::from_micros(10), false);
        a.record(IoKind::Read, 4096, Duration::from_micros(30), false);
        a.record(IoKind::Write, 512, Duration::from_micros(5), true);
        let mut total = IoStats::default();
        total.add(&a);
        total.add(&a);
        assert_eq!(total.num_read_ops, 4);
        assert_eq!(total.bytes_read, 16384);
        assert_eq!(total.max_read_latency_ticks, 30_000);
        assert_eq!(total.num_write_ops, 0);
        assert_eq!(total.num_io_errors, 2);
    }
}

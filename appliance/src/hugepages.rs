//! What the kernel offers in hugepages: the default page size, the pool of
//! reserved pages, hugetlbfs mounts, and growing or shrinking the pool.
//!
//! Reads `/proc/meminfo`, `/proc/mounts` and
//! `/sys/kernel/mm/hugepages/hugepages-<size>kB/`, the same places
//! `hugeadm` and SPDK's setup script look.

use std::io;
use std::path::{Path, PathBuf};

const MEMINFO: &str = "/proc/meminfo";
const MOUNTS: &str = "/proc/mounts";
const SYSFS_HUGEPAGES: &str = "/sys/kernel/mm/hugepages";

/// The kernel's default hugepage size in bytes (`Hugepagesize` in
/// /proc/meminfo), or `None` when the kernel has no hugepage support.
pub fn default_page_size() -> io::Result<Option<u64>> {
    let meminfo = std::fs::read_to_string(MEMINFO)?;
    Ok(parse_meminfo_hugepagesize(&meminfo))
}

fn parse_meminfo_hugepagesize(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix("Hugepagesize:")?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    })
}

/// The pool of hugepages of one size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub page_size: u64,
    /// Pages reserved (`nr_hugepages`).
    pub total: u64,
    /// Pages not yet faulted in by anybody.
    pub free: u64,
    /// Free pages already promised to existing mappings.
    pub reserved: u64,
}

impl Pool {
    /// Pages a new mapping can still count on.
    pub fn available(&self) -> u64 {
        self.free.saturating_sub(self.reserved)
    }
}

fn sysfs_dir(page_size: u64) -> PathBuf {
    Path::new(SYSFS_HUGEPAGES).join(format!("hugepages-{}kB", page_size / 1024))
}

fn read_counter(dir: &Path, name: &str) -> io::Result<u64> {
    let text = std::fs::read_to_string(dir.join(name))?;
    text.trim()
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{name}: {e}")))
}

/// The current pool of `page_size` pages.
pub fn pool(page_size: u64) -> io::Result<Pool> {
    let dir = sysfs_dir(page_size);
    Ok(Pool {
        page_size,
        total: read_counter(&dir, "nr_hugepages")?,
        free: read_counter(&dir, "free_hugepages")?,
        reserved: read_counter(&dir, "resv_hugepages")?,
    })
}

/// Asks the kernel to grow (or shrink) the pool by `delta` pages and returns
/// how many pages the pool actually changed by; the kernel may grant fewer
/// than asked when memory is fragmented.
pub fn adjust_pool(page_size: u64, delta: i64) -> io::Result<i64> {
    let dir = sysfs_dir(page_size);
    let before = read_counter(&dir, "nr_hugepages")?;
    let wanted = before.saturating_add_signed(delta);
    std::fs::write(dir.join("nr_hugepages"), wanted.to_string())?;
    let after = read_counter(&dir, "nr_hugepages")?;
    Ok(after as i64 - before as i64)
}

/// A mounted hugetlbfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HugetlbfsMount {
    pub path: PathBuf,
    /// Page size from the `pagesize=` option, or the default when absent.
    pub page_size: u64,
}

/// Every hugetlbfs in /proc/mounts.
pub fn hugetlbfs_mounts(default_page_size: u64) -> io::Result<Vec<HugetlbfsMount>> {
    let mounts = std::fs::read_to_string(MOUNTS)?;
    Ok(parse_mounts(&mounts, default_page_size))
}

fn parse_mounts(mounts: &str, default_page_size: u64) -> Vec<HugetlbfsMount> {
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_source, target, fstype, options) = (
                fields.next()?,
                fields.next()?,
                fields.next()?,
                fields.next()?,
            );
            if fstype != "hugetlbfs" {
                return None;
            }
            let page_size = options
                .split(',')
                .find_map(|opt| opt.strip_prefix("pagesize="))
                .and_then(parse_size)
                .unwrap_or(default_page_size);
            Some(HugetlbfsMount {
                path: PathBuf::from(unescape_mount_path(target)),
                page_size,
            })
        })
        .collect()
}

/// Sizes as the kernel prints them in mount options: "2M", "1G", "2048k".
fn parse_size(text: &str) -> Option<u64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().ok()?;
    let scale = match unit.to_ascii_uppercase().as_str() {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(scale)
}

/// /proc/mounts escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let octal: String = chars.clone().take(3).collect();
            if octal.len() == 3
                && let Ok(byte) = u8::from_str_radix(&octal, 8)
            {
                out.push(byte as char);
                for _ in 0..3 {
                    chars.next();
                }
                continue;
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_page_size() {
        let meminfo = "MemTotal: 1 kB\nHugePages_Total:       0\nHugepagesize:       2048 kB\n";
        assert_eq!(parse_meminfo_hugepagesize(meminfo), Some(2 << 20));
        assert_eq!(parse_meminfo_hugepagesize("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn mounts_with_and_without_pagesize() {
        let mounts = "proc /proc proc rw 0 0\n\
                      none /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n\
                      none /mnt/huge\\0401g hugetlbfs rw,pagesize=1024M 0 0\n\
                      hugetlbfs /run/hp hugetlbfs rw 0 0\n";
        let found = parse_mounts(mounts, 2 << 20);
        assert_eq!(
            found,
            vec![
                HugetlbfsMount {
                    path: "/dev/hugepages".into(),
                    page_size: 2 << 20
                },
                HugetlbfsMount {
                    path: "/mnt/huge 1g".into(),
                    page_size: 1 << 30
                },
                HugetlbfsMount {
                    path: "/run/hp".into(),
                    page_size: 2 << 20
                },
            ]
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("2048k"), Some(2 << 20));
        assert_eq!(parse_size("2X"), None);
    }
}

//! Identify data structures (NVMe Base 1.4, 5.15) and log pages, built
//! from the controller, its subsystem and the target's configuration.

use super::controller::{AER_LIMIT, Controller, KAS_100MS, VERSION};
use super::subsystem::{DISCOVERY_NQN, ListenAddress, Namespace, Referral, Target};

pub const IDENTIFY_LEN: usize = 4096;

/// PCI vendor ID reported: none (0), as for a software target.
const VENDOR_ID: u16 = 0;
/// Firmware revision (8 ASCII bytes): this crate's version.
fn firmware_revision() -> [u8; 8] {
    let mut fr = [b' '; 8];
    let version = env!("CARGO_PKG_VERSION").as_bytes();
    let len = version.len().min(8);
    fr[..len].copy_from_slice(&version[..len]);
    fr
}

/// Copies `text` into `field`, padded with spaces (Identify strings).
fn put_padded(field: &mut [u8], text: &str) {
    field.fill(b' ');
    let bytes = text.as_bytes();
    let len = bytes.len().min(field.len());
    field[..len].copy_from_slice(&bytes[..len]);
}

/// Copies `text` into `field`, padded with NULs (NQNs, addresses).
fn put_nul_padded(field: &mut [u8], text: &str) {
    field.fill(0);
    let bytes = text.as_bytes();
    let len = bytes.len().min(field.len() - 1);
    field[..len].copy_from_slice(&bytes[..len]);
}

fn put_u16(data: &mut [u8], offset: usize, value: u16) {
    data[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
}

fn put_u32(data: &mut [u8], offset: usize, value: u32) {
    data[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(data: &mut [u8], offset: usize, value: u64) {
    data[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}

/// Identify Controller (CNS 01h).
pub fn controller(controller: &Controller) -> Vec<u8> {
    let subsystem = &controller.subsystem;
    let options = &controller.options;
    let mut data = vec![0u8; IDENTIFY_LEN];
    put_u16(&mut data, 0, VENDOR_ID);
    put_u16(&mut data, 2, VENDOR_ID);
    put_padded(&mut data[4..24], &subsystem.serial_number);
    put_padded(&mut data[24..64], &subsystem.model_number);
    data[64..72].copy_from_slice(&firmware_revision());
    data[72] = 6; // RAB: 64 commands
    if !subsystem.discovery {
        // CMIC: the subsystem may have more than one port and more than
        // one controller: the same namespace on every cluster's portal.
        data[76] = 0b11;
        data[77] = options.mdts();
    }
    put_u16(&mut data, 78, controller.cntlid);
    put_u32(&mut data, 80, VERSION);
    // OAES: namespace attribute notices; discovery log change notices.
    let oaes: u32 = if subsystem.discovery { 1 << 31 } else { 1 << 8 };
    put_u32(&mut data, 92, oaes);
    // CNTRLTYPE: 1 = I/O controller, 2 = discovery controller.
    data[111] = if subsystem.discovery { 2 } else { 1 };
    // ACL (0's based) and AERL (0's based).
    data[258] = 3;
    data[259] = (AER_LIMIT - 1) as u8;
    // FRMW: one slot, slot 1 read-only.
    data[260] = 0b11;
    // LPA: extended data for Get Log Page (NUMDU, offsets).
    data[261] = 1 << 2;
    // ELPE: error log entries (0's based).
    data[262] = 0;
    put_u16(&mut data, 320, KAS_100MS);
    if !subsystem.discovery {
        data[512] = 0x66; // SQES
        data[513] = 0x44; // CQES
        put_u16(&mut data, 514, options.max_queue_depth);
        let nn = subsystem.max_namespaces;
        put_u32(&mut data, 516, nn);
        // ONCS: Dataset Management and Write Zeroes.
        put_u16(&mut data, 520, (1 << 2) | (1 << 3));
        // VWC: a volatile write cache that Flush makes durable.
        data[525] = 1;
        // SGLS: SGLs supported without alignment; offset addressing for
        // in-capsule data.
        put_u32(&mut data, 536, 1 | (1 << 20));
    } else {
        put_u16(&mut data, 514, options.max_aq_depth);
        put_u32(&mut data, 536, 1 | (1 << 20));
    }
    put_nul_padded(&mut data[768..1024], &subsystem.nqn);
    // Fabrics: IOCCSZ and IORCSZ in 16-byte units, ICDOFF 0, dynamic
    // controller model, one SGL data block descriptor.
    let ioccsz = (64 + options.in_capsule_data_size) / 16;
    put_u32(&mut data, 1792, ioccsz);
    put_u32(&mut data, 1796, 1);
    put_u16(&mut data, 1800, 0);
    data[1802] = 0;
    data[1803] = 1;
    data
}

/// Identify Namespace (CNS 00h) for an active namespace.
pub fn namespace(namespace: &Namespace) -> Vec<u8> {
    let mut data = vec![0u8; IDENTIFY_LEN];
    let blocks = namespace.bdev.num_blocks();
    put_u64(&mut data, 0, blocks);
    put_u64(&mut data, 8, blocks);
    put_u64(&mut data, 16, blocks);
    // NSFEAT: thin provisioning (deallocate may free space).
    data[24] = 1;
    data[25] = 0; // NLBAF: one format
    data[26] = 0; // FLBAS: format 0
    // NMIC: may be attached to more than one controller (multipath).
    data[30] = 1;
    // DLFEAT: deallocated blocks read as zeroes; Write Zeroes may
    // deallocate.
    data[33] = 0x01 | (1 << 3);
    data[104..120].copy_from_slice(&namespace.nguid);
    if let Some(eui64) = namespace.eui64 {
        data[120..128].copy_from_slice(&eui64);
    }
    // LBAF0: LBADS = log2(block size).
    let lbads = namespace.bdev.block_size().trailing_zeros();
    put_u32(&mut data, 128, lbads << 16);
    data
}

/// Active Namespace ID list (CNS 02h): IDs above `after`, ascending.
pub fn active_namespaces(ids: impl Iterator<Item = u32>, after: u32) -> Vec<u8> {
    let mut data = vec![0u8; IDENTIFY_LEN];
    for (slot, nsid) in ids
        .filter(|&nsid| nsid > after)
        .take(IDENTIFY_LEN / 4)
        .enumerate()
    {
        put_u32(&mut data, slot * 4, nsid);
    }
    data
}

/// Namespace Identification Descriptor list (CNS 03h): EUI-64, NGUID,
/// UUID and the command set (NVM).
pub fn namespace_descriptors(namespace: &Namespace) -> Vec<u8> {
    let mut data = vec![0u8; IDENTIFY_LEN];
    let mut at = 0;
    let mut push = |kind: u8, id: &[u8]| {
        data[at] = kind;
        data[at + 1] = id.len() as u8;
        data[at + 4..at + 4 + id.len()].copy_from_slice(id);
        at += 4 + id.len();
    };
    if let Some(eui64) = namespace.eui64 {
        push(1, &eui64);
    }
    push(2, &namespace.nguid);
    push(3, namespace.uuid.as_bytes());
    push(4, &[0]);
    data
}

/// Discovery log page (70h): one entry per (subsystem the host may use,
/// listener), then the referrals.
/// A wildcard listener (0.0.0.0 or ::) is reported with `local`, the
/// address the host reached the discovery controller on.
pub fn discovery_log(
    target: &Target,
    hostnqn: &str,
    admin_queue_depth: u16,
    local: std::net::IpAddr,
) -> Vec<u8> {
    let mut entries: Vec<(u8, String, ListenAddress)> = Vec::new();
    for subsystem in target.subsystems() {
        if !subsystem.host_allowed(hostnqn) {
            continue;
        }
        for listener in &subsystem.read().listeners {
            entries.push((2, subsystem.nqn.clone(), listener.clone()));
        }
    }
    for Referral { address, subnqn } in target.referrals() {
        let is_discovery = subnqn == DISCOVERY_NQN;
        // A referral to another cluster's portal of a subsystem follows
        // the local subsystem's host list when there is one.
        if !is_discovery
            && target
                .subsystem(&subnqn)
                .is_some_and(|s| !s.host_allowed(hostnqn))
        {
            continue;
        }
        entries.push((if is_discovery { 1 } else { 2 }, subnqn, address));
    }
    let mut data = vec![0u8; 1024 * (entries.len() + 1)];
    put_u64(&mut data, 0, target.discovery_generation());
    put_u64(&mut data, 8, entries.len() as u64);
    put_u16(&mut data, 16, 0);
    for (index, (subtype, subnqn, address)) in entries.iter().enumerate() {
        let entry = &mut data[1024 * (index + 1)..1024 * (index + 2)];
        entry[0] = 3; // TRTYPE: TCP
        let address = address.as_seen_from(local);
        entry[1] = if address.ipv6() { 2 } else { 1 }; // ADRFAM
        entry[2] = *subtype;
        // TREQ: secure channel not required; SQ flow control may be
        // disabled.
        entry[3] = 1 << 2;
        put_u16(entry, 4, address.port().unwrap_or(0)); // PORTID
        put_u16(entry, 6, 0xffff); // CNTLID: dynamic
        put_u16(entry, 8, admin_queue_depth);
        put_nul_padded(&mut entry[32..64], &address.trsvcid);
        put_nul_padded(&mut entry[256..512], subnqn);
        put_nul_padded(&mut entry[512..768], &address.traddr);
        entry[768] = 0; // TSAS SECTYPE: none
    }
    data
}

/// SMART / Health Information (02h), from the namespaces' I/O counters.
pub fn smart_log(
    bytes_read: u64,
    bytes_written: u64,
    reads: u64,
    writes: u64,
    power_on_hours: u64,
) -> Vec<u8> {
    let mut data = vec![0u8; 512];
    // Composite temperature: 300 K; available spare 100 %, threshold 10 %.
    put_u16(&mut data, 1, 300);
    data[3] = 100;
    data[4] = 10;
    // Data units are thousands of 512-byte units, rounded up.
    let units = |bytes: u64| bytes.div_ceil(512 * 1000);
    put_u64(&mut data, 32, units(bytes_read));
    put_u64(&mut data, 48, units(bytes_written));
    put_u64(&mut data, 64, reads);
    put_u64(&mut data, 80, writes);
    put_u64(&mut data, 128, power_on_hours);
    data
}

/// Firmware Slot Information (03h): slot 1 active.
pub fn firmware_slot_log() -> Vec<u8> {
    let mut data = vec![0u8; 512];
    data[0] = 1;
    data[8..16].copy_from_slice(&firmware_revision());
    data
}

/// Changed Namespace List (04h).
pub fn changed_namespace_log(ids: &[u32], overflow: bool) -> Vec<u8> {
    let mut data = vec![0u8; 4096];
    if overflow {
        put_u32(&mut data, 0, 0xffff_ffff);
    } else {
        for (slot, nsid) in ids.iter().take(1024).enumerate() {
            put_u32(&mut data, slot * 4, *nsid);
        }
    }
    data
}

//! The NVMe/TCP target of a running appliance, driven by the test
//! initiator over loopback: Connect and the controller state machine,
//! admin commands, I/O with in-capsule and R2T data, digests, discovery,
//! keep-alive, host access control, and malformed input that must end
//! only the offending connection (or only the offending command).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_appliance::jsonrpc::CallError;
use shoal_tests::Appliance;
use shoal_tests::nvme_initiator::{self, Data, Initiator, Sqe};

const SUBNQN: &str = "nqn.2026-11.io.shoal:test-volume";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:6c2e5d1a-0f4b-4f7e-9a51-3c1d2b7e8f90";
const OTHER_HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-1111-2222-3333-444444444444";
const BLOCK: usize = 512;
const BLOCKS: u64 = 131_072; // 64 MiB

fn rpc(appliance: &Appliance, method: &str, params: Value) -> Value {
    appliance
        .dataplane_rpc(0, method, Some(params))
        .unwrap_or_else(|e| panic!("{method} failed: {e}"))
}

/// One data cluster with a malloc namespace exported to `HOST` on its portal.
fn target() -> Appliance {
    let appliance = Appliance::start_ready(1);
    rpc(
        &appliance,
        "nvmf_create_transport",
        json!({"trtype": "TCP"}),
    );
    rpc(
        &appliance,
        "bdev_malloc_create",
        json!({"name": "m0", "num_blocks": BLOCKS, "block_size": BLOCK}),
    );
    rpc(
        &appliance,
        "nvmf_create_subsystem",
        json!({"nqn": SUBNQN, "serial_number": "SHOAL0001", "model_number": "Shoal test"}),
    );
    rpc(
        &appliance,
        "nvmf_subsystem_add_host",
        json!({"nqn": SUBNQN, "host": HOST}),
    );
    let nsid = rpc(
        &appliance,
        "nvmf_subsystem_add_ns",
        json!({"nqn": SUBNQN, "namespace": {"bdev_name": "m0", "nguid": "00112233445566778899AABBCCDDEEFF"}}),
    );
    assert_eq!(nsid, json!(1));
    let portal = appliance.nvmf_address(0);
    rpc(
        &appliance,
        "nvmf_subsystem_add_listener",
        json!({"nqn": SUBNQN, "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": portal.port().to_string()}}),
    );
    appliance
}

fn admin(appliance: &Appliance) -> (Initiator, u16) {
    let mut host = Initiator::connect(appliance.nvmf_address(0), false, false).unwrap();
    let cntlid = host.start_admin(SUBNQN, HOST, 0).unwrap();
    (host, cntlid)
}

fn io_queue(appliance: &Appliance, cntlid: u16, qid: u16, digests: bool) -> Initiator {
    let mut host = Initiator::connect(appliance.nvmf_address(0), digests, digests).unwrap();
    let cqe = host
        .fabric_connect(qid, 127, cntlid, SUBNQN, HOST, 0)
        .unwrap();
    assert!(cqe.ok(), "I/O queue Connect: {cqe:?}");
    host
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn ascii(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches([' ', '\0'])
        .to_string()
}

#[test]
fn the_controller_comes_up_and_identifies_itself() {
    let appliance = target();
    let mut host = Initiator::connect(appliance.nvmf_address(0), false, false).unwrap();
    let connect = host.fabric_connect(0, 31, 0xffff, SUBNQN, HOST, 0).unwrap();
    assert!(connect.ok(), "{connect:?}");
    let cntlid = connect.dw0 as u16;
    assert!((1..=0xffef).contains(&cntlid));

    // Before CC.EN the controller is not ready and refuses admin commands.
    let (_, csts) = host.property_get(0x1c, false).unwrap();
    assert_eq!(csts & 1, 0);
    let (cqe, _) = host.identify(1, 0).unwrap();
    assert_eq!(
        cqe.status(),
        (0, 0x0c),
        "command sequence error before enable"
    );

    let (cqe, cap) = host.property_get(0x00, true).unwrap();
    assert!(cqe.ok());
    assert_eq!(cap & 0xffff, 127, "MQES");
    assert_eq!((cap >> 37) & 1, 1, "NVM command set");
    let (_, vs) = host.property_get(0x08, false).unwrap();
    assert_eq!(vs, 0x0001_0400);
    // A property that does not exist, and a write to a read-only one.
    assert_eq!(
        host.property_get(0x30, false).unwrap().0.status(),
        (0, 0x02)
    );
    assert_eq!(host.property_set(0x1c, 1).unwrap().status(), (0, 0x02));

    assert!(
        host.property_set(0x14, 1 | (6 << 16) | (4 << 20))
            .unwrap()
            .ok()
    );
    let (_, csts) = host.property_get(0x1c, false).unwrap();
    assert_eq!(csts & 1, 1, "CSTS.RDY after CC.EN");

    let (cqe, id) = host.identify(1, 0).unwrap();
    assert!(cqe.ok());
    assert_eq!(ascii(&id[4..24]), "SHOAL0001");
    assert_eq!(ascii(&id[24..64]), "Shoal test");
    assert_eq!(u16::from_le_bytes([id[78], id[79]]), cntlid);
    assert_eq!(id[76] & 0b11, 0b11, "CMIC: multiple ports and controllers");
    assert_eq!(id[77], 5, "MDTS: 128 KiB");
    assert_eq!(id[111], 1, "I/O controller");
    assert_eq!(ascii(&id[768..1024]), SUBNQN);
    assert_eq!(
        u32::from_le_bytes(id[516..520].try_into().unwrap()),
        32,
        "NN"
    );

    let (cqe, ns) = host.identify(0, 1).unwrap();
    assert!(cqe.ok());
    assert_eq!(u64::from_le_bytes(ns[0..8].try_into().unwrap()), BLOCKS);
    assert_eq!(ns[30] & 1, 1, "NMIC: shared namespace");
    assert_eq!(
        &ns[104..120],
        &[
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff
        ]
    );
    assert_eq!(
        (u32::from_le_bytes(ns[128..132].try_into().unwrap()) >> 16) & 0xff,
        9,
        "LBADS 512"
    );

    let (cqe, list) = host.identify(2, 0).unwrap();
    assert!(cqe.ok());
    assert_eq!(u32::from_le_bytes(list[0..4].try_into().unwrap()), 1);
    assert_eq!(u32::from_le_bytes(list[4..8].try_into().unwrap()), 0);

    let (cqe, descriptors) = host.identify(3, 1).unwrap();
    assert!(cqe.ok());
    assert_eq!(
        (descriptors[0], descriptors[1]),
        (2, 16),
        "NGUID descriptor first"
    );
    assert_eq!(descriptors[20], 3, "then the UUID");

    // Unknown namespace, unknown CNS.
    assert_eq!(host.identify(0, 0xffff_fff0).unwrap().0.status(), (0, 0x0b));
    assert_eq!(host.identify(0x55, 0).unwrap().0.status(), (0, 0x02));

    // Number of queues: asks for 8, gets 8 (0's based 7).
    let (cqe, _) = host
        .command(
            Sqe::new(0x09).cdw(10, 0x07).cdw(11, 7 | (7 << 16)),
            Data::None,
        )
        .unwrap();
    assert_eq!(cqe.dw0, 7 | (7 << 16));
    // Keep alive timer round trip.
    assert!(
        host.command(Sqe::new(0x09).cdw(10, 0x0f).cdw(11, 30_000), Data::None)
            .unwrap()
            .0
            .ok()
    );
    let (cqe, _) = host
        .command(Sqe::new(0x0a).cdw(10, 0x0f), Data::None)
        .unwrap();
    assert_eq!(cqe.dw0, 30_000);
    assert!(
        host.command(Sqe::new(0x18), Data::None).unwrap().0.ok(),
        "Keep Alive"
    );

    // Log pages: SMART, firmware slot, error; an unknown one.
    let (cqe, smart) = host.get_log_page(0x02, 512, 0).unwrap();
    assert!(cqe.ok());
    assert_eq!(u16::from_le_bytes([smart[1], smart[2]]), 300);
    let (cqe, fw) = host.get_log_page(0x03, 512, 0).unwrap();
    assert!(cqe.ok());
    assert_eq!(fw[0], 1);
    assert_eq!(
        host.get_log_page(0x42, 512, 0).unwrap().0.status(),
        (1, 0x09)
    );

    // Unknown admin opcode: an error for that command only.
    assert_eq!(
        host.command(Sqe::new(0xc5), Data::None).unwrap().0.status(),
        (0, 0x01)
    );
    assert!(host.command(Sqe::new(0x18), Data::None).unwrap().0.ok());

    // Shutdown notification completes.
    assert!(
        host.property_set(0x14, 1 | (6 << 16) | (4 << 20) | (1 << 14))
            .unwrap()
            .ok()
    );
    let (_, csts) = host.property_get(0x1c, false).unwrap();
    assert_eq!((csts >> 2) & 0x3, 2, "shutdown complete");
}

#[test]
fn reads_and_writes_reach_the_bdev() {
    let appliance = target();
    let (_admin, cntlid) = admin(&appliance);
    let mut host = io_queue(&appliance, cntlid, 1, false);

    // In-capsule write of 4 KiB, then read back.
    let small = pattern(4096, 1);
    assert!(host.write(1, 8, &small, BLOCK, true).unwrap().ok());
    let (cqe, data) = host.read(1, 8, 8, BLOCK).unwrap();
    assert!(cqe.ok(), "{cqe:?}");
    assert!(data == small, "read back differs");

    // 128 KiB (MDTS) through R2T and H2CData, then read back.
    let large = pattern(131_072, 7);
    assert!(host.write(1, 1000, &large, BLOCK, false).unwrap().ok());
    let (cqe, data) = host.read(1, 1000, 256, BLOCK).unwrap();
    assert!(cqe.ok());
    assert!(data == large, "read back differs");

    // Write Zeroes, Flush, Dataset Management (deallocate).
    let zeroes = Sqe::new(0x08).nsid(1).u64_at(40, 1000).cdw(12, 7);
    assert!(host.command(zeroes, Data::None).unwrap().0.ok());
    let (_, data) = host.read(1, 1000, 8, BLOCK).unwrap();
    assert!(data.iter().all(|b| *b == 0));
    assert!(
        host.command(Sqe::new(0x00).nsid(1), Data::None)
            .unwrap()
            .0
            .ok()
    );
    let mut range = [0u8; 16];
    range[4..8].copy_from_slice(&8u32.to_le_bytes());
    range[8..16].copy_from_slice(&2000u64.to_le_bytes());
    let dsm = Sqe::new(0x09).nsid(1).cdw(10, 0).cdw(11, 1 << 2);
    assert!(host.command(dsm, Data::InCapsule(&range)).unwrap().0.ok());

    // The bdev saw the writes: its counters moved.
    let stats = rpc(&appliance, "bdev_get_iostat", json!({"name": "m0"}));
    let bdev = &stats["bdevs"][0];
    assert!(
        bdev["bytes_written"].as_u64().unwrap() >= (4096 + 131_072) as u64,
        "{stats}"
    );

    // I/O beyond the namespace, beyond MDTS, to a missing namespace.
    let (cqe, _) = host.read(1, BLOCKS - 4, 8, BLOCK).unwrap();
    assert_eq!(cqe.status(), (0, 0x80), "LBA out of range");
    let too_big = Sqe::new(0x02).nsid(1).u64_at(40, 0).cdw(12, 511);
    assert_eq!(
        host.command(too_big, Data::Read(262_144))
            .unwrap()
            .0
            .status(),
        (0, 0x0f)
    );
    let (cqe, _) = host.read(7, 0, 1, BLOCK).unwrap();
    assert_eq!(cqe.status(), (0, 0x0b), "invalid namespace");
    // Unknown I/O opcode.
    assert_eq!(
        host.command(Sqe::new(0x7e).nsid(1), Data::None)
            .unwrap()
            .0
            .status(),
        (0, 0x01)
    );
    // The queue still works after all of that.
    let (cqe, data) = host.read(1, 8, 8, BLOCK).unwrap();
    assert!(cqe.ok());
    assert!(data == small, "read back differs");
}

#[test]
fn digests_are_negotiated_and_checked() {
    let appliance = target();
    let (_admin, cntlid) = admin(&appliance);
    let mut host = io_queue(&appliance, cntlid, 1, true);
    let data = pattern(65_536, 3);
    assert!(host.write(1, 0, &data, BLOCK, false).unwrap().ok());
    let (cqe, read) = host.read(1, 0, 128, BLOCK).unwrap();
    assert!(cqe.ok());
    assert!(read == data, "read back differs");

    // A capsule whose header digest is wrong ends the connection with a
    // header digest error.
    let mut capsule = nvme_initiator::build_pdu(
        nvme_initiator::CAPSULE_CMD,
        0,
        &Sqe::new(0x00).nsid(1).0,
        &[],
        true,
        true,
    );
    let last = capsule.len() - 1;
    capsule[last] ^= 0xff;
    host.stream().write_all(&capsule).unwrap();
    let pdu = host.recv().unwrap();
    assert_eq!(pdu.pdu_type, nvme_initiator::C2H_TERM_REQ);
    assert_eq!(u16::from_le_bytes([pdu.specific[0], pdu.specific[1]]), 0x03);
    let mut rest = Vec::new();
    assert_eq!(
        host.stream().read_to_end(&mut rest).unwrap(),
        0,
        "connection closed"
    );
}

#[test]
fn hosts_and_subsystems_are_checked_at_connect() {
    let appliance = target();
    let portal = appliance.nvmf_address(0);

    let mut stranger = Initiator::connect(portal, false, false).unwrap();
    let cqe = stranger
        .fabric_connect(0, 31, 0xffff, SUBNQN, OTHER_HOST, 0)
        .unwrap();
    assert_eq!(cqe.status(), (1, 0x84), "Connect Invalid Host");

    let mut lost = Initiator::connect(portal, false, false).unwrap();
    let cqe = lost
        .fabric_connect(0, 31, 0xffff, "nqn.2026-11.io.shoal:nothing", HOST, 0)
        .unwrap();
    assert_eq!(cqe.status(), (1, 0x82), "Connect Invalid Parameters");
    assert_eq!(cqe.dw0, 256 | (1 << 16), "IATTR data, IPO 256 (SUBNQN)");

    // An I/O queue for a controller that does not exist.
    let mut orphan = Initiator::connect(portal, false, false).unwrap();
    let cqe = orphan
        .fabric_connect(1, 31, 0x1234, SUBNQN, HOST, 0)
        .unwrap();
    assert_eq!(cqe.status(), (1, 0x82));

    // A command before Connect ends the connection (PDU sequence error).
    let mut early = Initiator::connect(portal, false, false).unwrap();
    let error = early.identify(1, 0).unwrap_err();
    assert!(error.to_string().contains("FES 0x2"), "{error}");

    // Allowing the host lets it in; removing it drops its controller.
    rpc(
        &appliance,
        "nvmf_subsystem_add_host",
        json!({"nqn": SUBNQN, "host": OTHER_HOST}),
    );
    let mut welcome = Initiator::connect(portal, false, false).unwrap();
    welcome.start_admin(SUBNQN, OTHER_HOST, 0).unwrap();
    rpc(
        &appliance,
        "nvmf_subsystem_remove_host",
        json!({"nqn": SUBNQN, "host": OTHER_HOST}),
    );
    welcome.set_read_timeout(Duration::from_secs(5));
    let mut rest = Vec::new();
    let closed = welcome.stream().read_to_end(&mut rest).is_ok();
    assert!(closed, "the removed host's admin queue is closed");
}

#[test]
fn malformed_pdus_end_only_their_connection() {
    let appliance = target();
    let portal = appliance.nvmf_address(0);
    let (mut healthy_admin, cntlid) = admin(&appliance);
    let mut healthy = io_queue(&appliance, cntlid, 1, false);

    // A first PDU that is not ICReq.
    let mut stream = Initiator::raw(portal).unwrap();
    stream
        .write_all(&nvme_initiator::build_pdu(
            nvme_initiator::CAPSULE_CMD,
            0,
            &[0u8; 64],
            &[],
            false,
            false,
        ))
        .unwrap();
    let pdu = nvme_initiator::read_pdu(&mut stream, false, false).unwrap();
    assert_eq!(pdu.pdu_type, nvme_initiator::C2H_TERM_REQ);
    assert_eq!(
        u16::from_le_bytes([pdu.specific[0], pdu.specific[1]]),
        0x02,
        "PDU sequence error"
    );

    // PLEN shorter than the header.
    let mut host = Initiator::connect(portal, false, false).unwrap();
    let mut bad = nvme_initiator::build_pdu(
        nvme_initiator::CAPSULE_CMD,
        0,
        &[0u8; 64],
        &[],
        false,
        false,
    );
    bad[4..8].copy_from_slice(&16u32.to_le_bytes());
    host.stream().write_all(&bad).unwrap();
    let pdu = host.recv().unwrap();
    assert_eq!(pdu.pdu_type, nvme_initiator::C2H_TERM_REQ);
    assert_eq!(
        u16::from_le_bytes([pdu.specific[0], pdu.specific[1]]),
        0x01,
        "invalid header field"
    );
    assert_eq!(
        u32::from_le_bytes(pdu.specific[2..6].try_into().unwrap()),
        4,
        "FEI names PLEN"
    );

    // A PDU type hosts never send.
    let mut host = Initiator::connect(portal, false, false).unwrap();
    host.send(nvme_initiator::R2T, 0, &[0u8; 16], &[]).unwrap();
    assert_eq!(host.recv().unwrap().pdu_type, nvme_initiator::C2H_TERM_REQ);

    // In-capsule data beyond what the transport allows (4 KiB).
    let mut host = Initiator::connect(portal, false, false).unwrap();
    let oversized = vec![0u8; 8192];
    host.send(
        nvme_initiator::CAPSULE_CMD,
        0,
        &Sqe::new(0x01).nsid(1).0,
        &oversized,
    )
    .unwrap();
    let pdu = host.recv().unwrap();
    assert_eq!(pdu.pdu_type, nvme_initiator::C2H_TERM_REQ);
    assert_eq!(u16::from_le_bytes([pdu.specific[0], pdu.specific[1]]), 0x05);

    // H2CData for a transfer that was never requested.
    let mut specific = [0u8; 16];
    specific[2..4].copy_from_slice(&77u16.to_le_bytes());
    specific[8..12].copy_from_slice(&512u32.to_le_bytes());
    let mut host = Initiator::connect(portal, false, false).unwrap();
    host.send(nvme_initiator::H2C_DATA, 0x04, &specific, &[0u8; 512])
        .unwrap();
    assert_eq!(host.recv().unwrap().pdu_type, nvme_initiator::C2H_TERM_REQ);

    // Garbage then hang-up; a half PDU then hang-up.
    let mut stream = Initiator::raw(portal).unwrap();
    stream.write_all(&[0xffu8; 300]).unwrap();
    drop(stream);
    let mut stream = Initiator::raw(portal).unwrap();
    stream.write_all(&[0x00, 0x00, 128, 0]).unwrap();
    drop(stream);

    // The well-behaved host never noticed.
    let data = pattern(4096, 9);
    assert!(healthy.write(1, 64, &data, BLOCK, true).unwrap().ok());
    assert!(
        healthy.read(1, 64, 8, BLOCK).unwrap().1 == data,
        "read back differs"
    );
    assert!(
        healthy_admin
            .command(Sqe::new(0x18), Data::None)
            .unwrap()
            .0
            .ok()
    );
    assert_eq!(appliance.status()["clusters"][0]["state"], "running");
}

#[test]
fn namespace_changes_raise_an_asynchronous_event() {
    let appliance = target();
    let (mut host, _) = admin(&appliance);
    // Enable namespace attribute notices, then park an AER.
    assert!(
        host.command(Sqe::new(0x09).cdw(10, 0x0b).cdw(11, 1 << 8), Data::None)
            .unwrap()
            .0
            .ok()
    );
    let mut aer = Sqe::new(0x0c);
    aer.0[2..4].copy_from_slice(&0x4242u16.to_le_bytes());
    let capsule = nvme_initiator::build_pdu(
        nvme_initiator::CAPSULE_CMD,
        0,
        &{
            let mut sqe = aer.0;
            sqe[39] = 0x5a;
            sqe
        },
        &[],
        false,
        false,
    );
    host.stream().write_all(&capsule).unwrap();

    rpc(
        &appliance,
        "bdev_malloc_create",
        json!({"name": "m1", "num_blocks": 2048, "block_size": BLOCK}),
    );
    let nsid = rpc(
        &appliance,
        "nvmf_subsystem_add_ns",
        json!({"nqn": SUBNQN, "namespace": {"bdev_name": "m1"}}),
    );
    assert_eq!(nsid, json!(2));

    let pdu = host.recv().unwrap();
    assert_eq!(pdu.pdu_type, nvme_initiator::CAPSULE_RESP);
    let dw0 = u32::from_le_bytes(pdu.specific[0..4].try_into().unwrap());
    assert_eq!(
        u16::from_le_bytes([pdu.specific[12], pdu.specific[13]]),
        0x4242
    );
    assert_eq!(dw0 & 0x7, 2, "notice");
    assert_eq!((dw0 >> 16) & 0xff, 0x04, "changed namespace list");
    let (cqe, log) = host.get_log_page(0x04, 4096, 0).unwrap();
    assert!(cqe.ok());
    assert_eq!(u32::from_le_bytes(log[0..4].try_into().unwrap()), 2);
    let (_, list) = host.identify(2, 0).unwrap();
    assert_eq!(u32::from_le_bytes(list[4..8].try_into().unwrap()), 2);
}

/// The active NSIDs a controller reports (Identify CNS 02h).
fn active_namespaces(host: &mut Initiator) -> Vec<u32> {
    let (cqe, list) = host.identify(2, 0).unwrap();
    assert!(cqe.ok(), "{cqe:?}");
    list.chunks(4)
        .map(|id| u32::from_le_bytes(id.try_into().unwrap()))
        .take_while(|id| *id != 0)
        .collect()
}

#[test]
fn a_namespace_can_be_shown_to_chosen_hosts_only() {
    let appliance = target();
    rpc(
        &appliance,
        "nvmf_subsystem_add_host",
        json!({"nqn": SUBNQN, "host": OTHER_HOST}),
    );
    rpc(
        &appliance,
        "bdev_malloc_create",
        json!({"name": "private", "num_blocks": 2048, "block_size": BLOCK}),
    );
    let nsid = rpc(
        &appliance,
        "nvmf_subsystem_add_ns",
        json!({"nqn": SUBNQN, "namespace": {"bdev_name": "private", "no_auto_visible": true}}),
    );
    assert_eq!(nsid, json!(2));
    rpc(
        &appliance,
        "nvmf_ns_add_host",
        json!({"nqn": SUBNQN, "nsid": 2, "host": OTHER_HOST}),
    );

    // HOST sees only the auto-visible namespace; namespace 2 is inactive
    // for it, and its I/O there is refused.
    let (mut host, cntlid) = admin(&appliance);
    assert_eq!(active_namespaces(&mut host), vec![1]);
    let (cqe, data) = host.identify(0, 2).unwrap();
    assert!(cqe.ok() && data.iter().all(|b| *b == 0), "inactive NSID");
    let mut io = io_queue(&appliance, cntlid, 1, false);
    assert_eq!(io.read(2, 0, 1, BLOCK).unwrap().0.status(), (0, 0x0b));

    // OTHER_HOST sees both and can write namespace 2.
    let mut other = Initiator::connect(appliance.nvmf_address(0), false, false).unwrap();
    let other_cntlid = other.start_admin(SUBNQN, OTHER_HOST, 0).unwrap();
    assert_eq!(active_namespaces(&mut other), vec![1, 2]);
    let mut other_io = Initiator::connect(appliance.nvmf_address(0), false, false).unwrap();
    let cqe = other_io
        .fabric_connect(1, 127, other_cntlid, SUBNQN, OTHER_HOST, 0)
        .unwrap();
    assert!(cqe.ok(), "{cqe:?}");
    assert!(
        other_io
            .write(2, 0, &pattern(512, 3), BLOCK, true)
            .unwrap()
            .ok()
    );

    // Taking the host away hides the namespace from it at once.
    rpc(
        &appliance,
        "nvmf_ns_remove_host",
        json!({"nqn": SUBNQN, "nsid": 2, "host": OTHER_HOST}),
    );
    assert_eq!(other_io.read(2, 0, 1, BLOCK).unwrap().0.status(), (0, 0x0b));
    assert_eq!(active_namespaces(&mut other), vec![1]);

    // Auto-visible namespaces have no host list to change; bad NSIDs and
    // hosts are named.
    for (params, code) in [
        (json!({"nqn": SUBNQN, "nsid": 1, "host": HOST}), -32602),
        (json!({"nqn": SUBNQN, "nsid": 9, "host": HOST}), -19),
        (
            json!({"nqn": SUBNQN, "nsid": 2, "host": "not-an-nqn"}),
            -32602,
        ),
    ] {
        match appliance.dataplane_rpc(0, "nvmf_ns_add_host", Some(params.clone())) {
            Err(CallError::Rpc(e)) => assert_eq!(e.code, code, "{params}: {e:?}"),
            other => panic!("{params}: {other:?}"),
        }
    }
    let described = rpc(&appliance, "nvmf_get_subsystems", json!({"nqn": SUBNQN}));
    let namespaces = &described[0]["namespaces"];
    assert_eq!(namespaces[1]["no_auto_visible"], true);
    assert_eq!(namespaces[1]["hosts"], json!([]));
}

#[test]
fn keep_alive_timeout_ends_the_controller() {
    let appliance = target();
    let mut host = Initiator::connect(appliance.nvmf_address(0), false, false).unwrap();
    let cntlid = host.start_admin(SUBNQN, HOST, 500).unwrap();
    let mut io = io_queue(&appliance, cntlid, 1, false);
    let started = Instant::now();
    host.set_read_timeout(Duration::from_secs(10));
    let mut rest = Vec::new();
    let _ = host.stream().read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(450),
        "closed after {waited:?}, before KATO"
    );
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    // Its I/O queue went with it.
    io.set_read_timeout(Duration::from_secs(5));
    let mut rest = Vec::new();
    let _ = io.stream().read_to_end(&mut rest);
    assert!(io.read(1, 0, 1, BLOCK).is_err());
}

#[test]
fn discovery_lists_portals_and_referrals() {
    let appliance = target();
    let portal = appliance.nvmf_address(0);
    rpc(
        &appliance,
        "nvmf_discovery_add_referral",
        json!({"address": {"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": "4999"}, "subnqn": SUBNQN}),
    );
    let mut host = Initiator::connect(appliance.discovery_address(), false, false).unwrap();
    host.start_admin("nqn.2014-08.org.nvmexpress.discovery", HOST, 0)
        .unwrap();
    let (cqe, id) = host.identify(1, 0).unwrap();
    assert!(cqe.ok());
    assert_eq!(id[111], 2, "discovery controller");
    let (cqe, header) = host.get_log_page(0x70, 1024, 0).unwrap();
    assert!(cqe.ok());
    let records = u64::from_le_bytes(header[8..16].try_into().unwrap()) as usize;
    assert_eq!(records, 2, "the local portal and the referral");
    let (cqe, log) = host.get_log_page(0x70, 1024 * (records + 1), 0).unwrap();
    assert!(cqe.ok());
    let entries: Vec<(String, String, String)> = (1..=records)
        .map(|i| {
            let e = &log[1024 * i..1024 * (i + 1)];
            assert_eq!(e[0], 3, "TCP");
            assert_eq!(e[2], 2, "NVM subsystem");
            (ascii(&e[256..512]), ascii(&e[512..768]), ascii(&e[32..64]))
        })
        .collect();
    assert!(
        entries.contains(&(SUBNQN.into(), "127.0.0.1".into(), portal.port().to_string())),
        "{entries:?}"
    );
    assert!(
        entries.contains(&(SUBNQN.into(), "127.0.0.1".into(), "4999".into())),
        "{entries:?}"
    );

    // A host the subsystem does not allow sees none of it.
    let mut stranger = Initiator::connect(appliance.discovery_address(), false, false).unwrap();
    stranger
        .start_admin("nqn.2014-08.org.nvmexpress.discovery", OTHER_HOST, 0)
        .unwrap();
    let (_, header) = stranger.get_log_page(0x70, 1024, 0).unwrap();
    assert_eq!(u64::from_le_bytes(header[8..16].try_into().unwrap()), 0);
    // Discovery controllers have no I/O queues.
    let mut io = Initiator::connect(appliance.discovery_address(), false, false).unwrap();
    let cntlid = 1;
    let cqe = io
        .fabric_connect(
            1,
            31,
            cntlid,
            "nqn.2014-08.org.nvmexpress.discovery",
            HOST,
            0,
        )
        .unwrap();
    assert!(!cqe.ok());
}

#[test]
fn rpcs_reject_bad_configuration() {
    let appliance = target();
    let error = |method: &str, params: Value| match appliance.dataplane_rpc(0, method, Some(params))
    {
        Err(CallError::Rpc(error)) => error.message,
        other => panic!("{method} should fail: {other:?}"),
    };
    assert!(error("nvmf_create_transport", json!({"trtype": "TCP"})).contains("already exists"));
    assert!(error("nvmf_create_subsystem", json!({"nqn": "not-an-nqn"})).contains("is not an NQN"));
    assert!(error("nvmf_create_subsystem", json!({"nqn": SUBNQN})).contains("already exists"));
    assert!(
        error(
            "nvmf_subsystem_add_ns",
            json!({"nqn": SUBNQN, "namespace": {"bdev_name": "absent"}})
        )
        .contains("absent")
    );
    assert!(
        error(
            "nvmf_subsystem_add_ns",
            json!({"nqn": SUBNQN, "namespace": {"bdev_name": "m0", "nsid": 1}})
        )
        .contains("already in use")
    );
    assert!(error(
        "nvmf_subsystem_add_listener",
        json!({"nqn": SUBNQN, "listen_address": {"trtype": "RDMA", "traddr": "127.0.0.1", "trsvcid": "4420"}})
    )
    .contains("only TCP"));
    assert!(
        error(
            "nvmf_delete_subsystem",
            json!({"nqn": "nqn.2026-11.io.shoal:absent"})
        )
        .contains("not found")
    );
    // The namespace's bdev cannot be deleted while it is exported.
    let err = appliance
        .dataplane_rpc(0, "bdev_malloc_delete", Some(json!({"name": "m0"})))
        .expect_err("an exported bdev stays");
    assert!(err.to_string().contains("nvmf"), "{err}");

    let subsystems = rpc(&appliance, "nvmf_get_subsystems", json!({}));
    let ours = subsystems
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["nqn"] == SUBNQN)
        .unwrap();
    assert_eq!(ours["namespaces"][0]["bdev_name"], "m0");
    assert_eq!(ours["hosts"][0]["nqn"], HOST);
    rpc(&appliance, "nvmf_delete_subsystem", json!({"nqn": SUBNQN}));
    rpc(&appliance, "bdev_malloc_delete", json!({"name": "m0"}));
}

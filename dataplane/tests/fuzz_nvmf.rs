//! Bounded fuzzing (proptest, run by `cargo test`) of everything an
//! NVMe/TCP host controls: the PDU parser fed arbitrary headers, and whole
//! connections fed arbitrary bytes, arbitrary PDUs, and well-framed
//! capsules carrying arbitrary commands after a valid Connect. The target
//! must answer, terminate or hang up; never panic or hang.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::{drive, on_reactor};
use proptest::prelude::*;
use shoal_dataplane::bdev::malloc::create_malloc;
use shoal_dataplane::bdev::{BdevRegistry, BdevSpec};
use shoal_dataplane::nvmf::connection::serve;
use shoal_dataplane::nvmf::pdu::{self, CommonHeader, Digests};
use shoal_dataplane::nvmf::subsystem::{
    ListenAddress, Namespace, Subsystem, Target, TransportOptions,
};
use tokio_util::sync::CancellationToken;

const NQN: &str = "nqn.2026-11.io.shoal:fuzz";
const HOST: &str = "nqn.2026-11.io.shoal:fuzz-host";

fn local() -> SocketAddr {
    "127.0.0.1:4420".parse().unwrap()
}

fn target() -> Arc<Target> {
    let registry = BdevRegistry::new();
    let spec = BdevSpec {
        name: "m0".into(),
        uuid: None,
        block_size: 512,
        num_blocks: 256,
    };
    let bdev = create_malloc(&registry, spec).unwrap();
    let target = Arc::new(Target::new());
    target.set_transport(TransportOptions::default()).unwrap();
    let subsystem = Subsystem::new(NQN, "FUZZ", "fuzz", 4, false, (1, 100));
    {
        let mut state = subsystem.write();
        state.allow_any_host = true;
        state.listeners.push(ListenAddress {
            traddr: "127.0.0.1".into(),
            trsvcid: "4420".into(),
        });
        state.namespaces.insert(
            1,
            Namespace {
                nsid: 1,
                uuid: bdev.uuid(),
                nguid: *bdev.uuid().as_bytes(),
                bdev,
                eui64: None,
                visible_to: None,
            },
        );
    }
    target.add_subsystem(subsystem).unwrap();
    target
}

/// Runs one connection on `input`; returns what the target sent.
fn converse(input: Vec<u8>) -> Vec<u8> {
    on_reactor(drive(input, |target_end| {
        serve(
            target_end,
            target(),
            local(),
            "127.0.0.1:50000".parse().unwrap(),
            CancellationToken::new(),
        )
    }))
}

fn build(pdu_type: u8, flags: u8, specific: &[u8], data: &[u8]) -> Vec<u8> {
    let hlen = 8 + specific.len();
    let mut out = vec![
        pdu_type,
        flags,
        hlen as u8,
        if data.is_empty() { 0 } else { hlen as u8 },
    ];
    out.extend_from_slice(&((hlen + data.len()) as u32).to_le_bytes());
    out.extend_from_slice(specific);
    out.extend_from_slice(data);
    out
}

fn ic_req() -> Vec<u8> {
    let mut ic = vec![0u8; 128];
    ic[2] = 128;
    ic[4..8].copy_from_slice(&128u32.to_le_bytes());
    ic
}

fn sqe(opcode: u8, cid: u16, nsid: u32, sgl: u8, sgl_len: u32, cdws: [u32; 6]) -> [u8; 64] {
    let mut sqe = [0u8; 64];
    sqe[0] = opcode;
    sqe[1] = 1 << 6;
    sqe[2..4].copy_from_slice(&cid.to_le_bytes());
    sqe[4..8].copy_from_slice(&nsid.to_le_bytes());
    sqe[32..36].copy_from_slice(&sgl_len.to_le_bytes());
    sqe[39] = sgl;
    for (i, cdw) in cdws.iter().enumerate() {
        sqe[40 + i * 4..44 + i * 4].copy_from_slice(&cdw.to_le_bytes());
    }
    sqe
}

/// ICReq, admin Connect and CC.EN: what every structured case starts with.
fn connected_admin_queue() -> Vec<u8> {
    let mut input = ic_req();
    let mut data = vec![0u8; 1024];
    data[16..18].copy_from_slice(&0xffffu16.to_le_bytes());
    data[256..256 + NQN.len()].copy_from_slice(NQN.as_bytes());
    data[512..512 + HOST.len()].copy_from_slice(HOST.as_bytes());
    let mut connect = sqe(0x7f, 1, 0, 0x01, 1024, [0, 31, 0, 0, 0, 0]);
    connect[1] = 0;
    connect[4] = 0x01;
    input.extend(build(pdu::CAPSULE_CMD, 0, &connect, &data));
    let mut enable = sqe(
        0x7f,
        2,
        0,
        0x5a,
        0,
        [0, 0x14, 1 | (6 << 16) | (4 << 20), 0, 0, 0],
    );
    enable[1] = 0;
    enable[4] = 0x00;
    input.extend(build(pdu::CAPSULE_CMD, 0, &enable, &[]));
    input
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_header_parser_never_panics(
        bytes in proptest::array::uniform8(any::<u8>()),
        header_digest in any::<bool>(),
        data_digest in any::<bool>(),
        max_data in 0usize..200_000,
        rest in proptest::collection::vec(any::<u8>(), 0..160),
    ) {
        let header = CommonHeader::parse(&bytes);
        if let Ok(layout) = pdu::layout(header, Digests { header: header_digest, data: data_digest }, max_data) {
            prop_assert!(layout.data_len <= max_data);
            prop_assert!(layout.specific_len + 8 <= pdu::MAX_HLEN);
        }
        let _ = pdu::IcReq::parse(&rest);
        let _ = pdu::DataHeader::parse(&rest);
    }

    #[test]
    fn connections_survive_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        converse(bytes);
    }

    #[test]
    fn connections_survive_arbitrary_pdus(
        pdus in proptest::collection::vec(
            (0u8..12, any::<u8>(), proptest::collection::vec(any::<u8>(), 0..80), proptest::collection::vec(any::<u8>(), 0..300)),
            0..6,
        ),
    ) {
        let mut input = ic_req();
        for (pdu_type, flags, specific, data) in pdus {
            input.extend(build(pdu_type, flags, &specific, &data));
        }
        converse(input);
    }

    #[test]
    fn queues_survive_arbitrary_commands(
        commands in proptest::collection::vec(
            (
                prop_oneof![Just(0x00u8), Just(0x01), Just(0x02), Just(0x06), Just(0x08), Just(0x09), Just(0x0a), Just(0x0c), Just(0x18), Just(0x7f), any::<u8>()],
                0u32..4,
                prop_oneof![Just(0x01u8), Just(0x5a), any::<u8>()],
                0u32..70_000,
                proptest::array::uniform6(any::<u32>()),
                0usize..5000,
            ),
            0..10,
        ),
    ) {
        let mut input = connected_admin_queue();
        for (i, (opcode, nsid, sgl, sgl_len, cdws, in_capsule)) in commands.into_iter().enumerate() {
            let command = sqe(opcode, 10 + i as u16, nsid, sgl, sgl_len, cdws);
            input.extend(build(pdu::CAPSULE_CMD, 0, &command, &vec![0x5a; in_capsule]));
        }
        converse(input);
    }
}

/// The structured cases really reach the command sets: the prefix they
/// share gets a controller and enables it.
#[test]
fn the_shared_prefix_connects_and_enables() {
    let output = converse(connected_admin_queue());
    // ICResp, then two response capsules with success status.
    assert_eq!(output[0], pdu::IC_RESP);
    let responses = &output[128..];
    assert_eq!(responses.len(), 2 * pdu::CAPSULE_RESP_HLEN);
    for response in responses.chunks(pdu::CAPSULE_RESP_HLEN) {
        assert_eq!(response[0], pdu::CAPSULE_RESP);
        assert_eq!(
            u16::from_le_bytes([response[22], response[23]]) >> 1,
            0,
            "success"
        );
    }
}

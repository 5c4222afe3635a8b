//! Bounded fuzzing (proptest, run by `cargo test`) of everything an NBD
//! client controls: the negotiation and the transmission phase, fed
//! arbitrary bytes and arbitrary well-framed messages over in-memory pipes.
//! The server must answer or hang up, never panic or hang.

mod common;

use std::sync::Arc;

use common::{drive, on_reactor};
use proptest::prelude::*;
use shoal_dataplane::bdev::malloc::create_malloc;
use shoal_dataplane::bdev::{BdevRegistry, BdevSpec};
use shoal_dataplane::nbd::exports::{Export, Exports, Peer};
use shoal_dataplane::nbd::handshake::{Session, greet, negotiate};
use shoal_dataplane::nbd::proto::{IHAVEOPT, REQUEST_MAGIC};
use shoal_dataplane::nbd::transmission::transmit_on;

fn exports() -> (Arc<Exports>, Arc<Export>) {
    let registry = BdevRegistry::new();
    let spec = BdevSpec {
        name: "m0".into(),
        uuid: None,
        block_size: 512,
        num_blocks: 64,
    };
    let bdev = create_malloc(&registry, spec).unwrap();
    let exports = Arc::new(Exports::new());
    let export = exports.start("m0", bdev, false, &[]).unwrap();
    (exports, export)
}

fn option(kind: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = IHAVEOPT.to_be_bytes().to_vec();
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn request(flags: u16, command: u16, offset: u64, length: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = REQUEST_MAGIC.to_be_bytes().to_vec();
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&command.to_be_bytes());
    out.extend_from_slice(&7u64.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn negotiation_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (exports, _) = exports();
        let _ = on_reactor(drive(bytes, move |mut s| async move {
            let session = Session { peer: Peer { loopback_listener: true, identity: None }, ..Session::default() };
            if let Ok(Some(no_zeroes)) = greet(&mut s).await {
                let _ = negotiate(&mut s, &exports, &session, no_zeroes).await;
            }
        }));
    }

    #[test]
    fn negotiation_survives_arbitrary_options(
        flags in 0u32..4,
        options in proptest::collection::vec((0u32..12, proptest::collection::vec(any::<u8>(), 0..64)), 0..6),
        loopback_listener in any::<bool>(),
        identity in proptest::option::of("[a-c]"),
    ) {
        let (exports, _) = exports();
        let mut input = flags.to_be_bytes().to_vec();
        for (kind, payload) in &options {
            input.extend(option(*kind, payload));
        }
        let _ = on_reactor(drive(input, move |mut s| async move {
            // Any listener policy, in or out of TLS (STARTTLS itself ends
            // negotiate(); the server then runs the TLS handshake).
            let session = Session {
                peer: Peer { loopback_listener, identity },
                tls_required: !loopback_listener,
                tls_offered: true,
            };
            if let Ok(Some(no_zeroes)) = greet(&mut s).await {
                let _ = negotiate(&mut s, &exports, &session, no_zeroes).await;
            }
        }));
    }

    #[test]
    fn transmission_survives_arbitrary_requests(
        requests in proptest::collection::vec(
            (any::<u16>(), 0u16..10, 0u64..40_000, 0u32..8192, any::<bool>()),
            0..12,
        ),
        structured in any::<bool>(),
    ) {
        let (_exports, export) = exports();
        let mut input = Vec::new();
        for (flags, command, offset, length, garble) in requests {
            let payload = if command == 1 { vec![0xa5; length as usize] } else { Vec::new() };
            let mut bytes = request(flags, command, offset, length, &payload);
            if garble {
                bytes[0] ^= 0xff;
            }
            input.extend(bytes);
        }
        let _ = on_reactor(drive(input, move |s| async move {
            let (read, write) = tokio::io::split(s);
            let _ = transmit_on(read, write, export, structured, tokio_util::sync::CancellationToken::new()).await;
        }));
    }
}

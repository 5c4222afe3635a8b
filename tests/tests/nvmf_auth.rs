//! NVMe in-band authentication (DH-HMAC-CHAP) of the NVMe/TCP target,
//! against a running appliance with the test initiator's own host
//! implementation: keys loaded with `keyring_file_add_key`, host entries
//! with `dhchap_key` / `dhchap_ctrlr_key`, admin and I/O queues that must
//! authenticate before anything else runs.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use shoal_tests::Appliance;
use shoal_tests::dhchap_host::{
    AuthOutcome, FFDHE2048, HostAuth, NULL_GROUP, SHA256, SHA512, secret_text,
};
use shoal_tests::nvme_initiator::{Data, Initiator, Sqe};

const SUBNQN: &str = "nqn.2026-11.io.shoal:auth-volume";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:6c2e5d1a-0f4b-4f7e-9a51-3c1d2b7e8f90";
const OTHER_HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-1111-2222-3333-444444444444";
const BLOCK: usize = 512;
/// Status "Authentication Required" (command specific 0x91).
const AUTH_REQUIRED: (u8, u8) = (1, 0x91);
/// Connect response DW0 bit 17: AUTHREQ.ATR.
const ATR: u32 = 1 << 17;

fn host_secret() -> String {
    secret_text(&[0x5a; 32], 1)
}

fn controller_secret() -> String {
    secret_text(&[0xc3; 48], 0)
}

fn write_key(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

/// A subsystem with a malloc namespace; `HOST` must authenticate with
/// key0 (and the controller with key1 when `controller_key`).
fn target(keys: &tempfile::TempDir, controller_key: bool) -> Appliance {
    let appliance = Appliance::start_ready(1);
    appliance.dataplane_call(0, "nvmf_create_transport", json!({"trtype": "TCP"}));
    appliance.dataplane_call(
        0,
        "bdev_malloc_create",
        json!({"name": "m0", "num_blocks": 8192, "block_size": BLOCK}),
    );
    appliance.dataplane_call(
        0,
        "nvmf_create_subsystem",
        json!({"nqn": SUBNQN, "serial_number": "SHOAL0002", "model_number": "Shoal auth"}),
    );
    let path = write_key(keys.path(), "key0", &host_secret());
    appliance.dataplane_call(
        0,
        "keyring_file_add_key",
        json!({"name": "key0", "path": path}),
    );
    let mut host = json!({"nqn": SUBNQN, "host": HOST, "dhchap_key": "key0"});
    if controller_key {
        let path = write_key(keys.path(), "key1", &controller_secret());
        appliance.dataplane_call(
            0,
            "keyring_file_add_key",
            json!({"name": "key1", "path": path}),
        );
        host["dhchap_ctrlr_key"] = json!("key1");
    }
    appliance.dataplane_call(0, "nvmf_subsystem_add_host", host);
    appliance.dataplane_call(
        0,
        "nvmf_subsystem_add_ns",
        json!({"nqn": SUBNQN, "namespace": {"bdev_name": "m0"}}),
    );
    let portal = appliance.nvmf_address(0);
    appliance.dataplane_call(0, "nvmf_subsystem_add_listener",
        json!({"nqn": SUBNQN, "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": portal.port().to_string()}}),
    );
    appliance
}

fn auth(hashes: &[u8], groups: &[u8], bidirectional: bool) -> HostAuth {
    HostAuth {
        hostnqn: HOST.into(),
        subnqn: SUBNQN.into(),
        secret: host_secret(),
        controller_secret: bidirectional.then(controller_secret),
        hashes: hashes.to_vec(),
        dh_groups: groups.to_vec(),
        t_id: 1,
    }
}

/// Connects the admin queue (expecting ATR): returns the controller ID.
fn connect_admin(host: &mut Initiator) -> u16 {
    let cqe = host.fabric_connect(0, 31, 0xffff, SUBNQN, HOST, 0).unwrap();
    assert!(cqe.ok(), "{cqe:?}");
    assert_eq!(cqe.dw0 & ATR, ATR, "Connect asks for authentication");
    cqe.dw0 as u16
}

fn enable(host: &mut Initiator) {
    let cqe = host.property_set(0x14, 1 | (6 << 16) | (4 << 20)).unwrap();
    assert!(cqe.ok(), "enable: {cqe:?}");
}

/// Every kind of command a host could try on an unauthenticated queue.
fn assert_everything_refused(host: &mut Initiator) {
    assert_eq!(
        host.property_get(0x00, true).unwrap().0.status(),
        AUTH_REQUIRED
    );
    assert_eq!(host.property_set(0x14, 1).unwrap().status(), AUTH_REQUIRED);
    assert_eq!(host.identify(1, 0).unwrap().0.status(), AUTH_REQUIRED);
    let (keep_alive, _) = host.command(Sqe::new(0x18), Data::None).unwrap();
    assert_eq!(keep_alive.status(), AUTH_REQUIRED);
    assert_eq!(host.read(1, 0, 1, BLOCK).unwrap().0.status(), AUTH_REQUIRED);
    let write = host.write(1, 0, &[0xee; BLOCK], BLOCK, true).unwrap();
    assert_eq!(write.status(), AUTH_REQUIRED);
}

fn wait_closed(host: &mut Initiator, within: Duration) -> Duration {
    let start = Instant::now();
    host.set_read_timeout(within);
    let mut byte = [0u8; 1];
    loop {
        match host.stream().read(&mut byte) {
            Ok(0) => return start.elapsed(),
            Ok(_) => continue,
            Err(e) => {
                if start.elapsed() >= within {
                    panic!("connection still open after {within:?}: {e}");
                }
                return start.elapsed();
            }
        }
    }
}

#[test]
fn sha256_and_the_null_group_open_admin_and_io_queues() {
    let keys = tempfile::tempdir().unwrap();
    let appliance = target(&keys, false);
    let mut admin = Initiator::connect(appliance.nvmf_address(0), false, false).unwrap();
    let cntlid = connect_admin(&mut admin);
    assert_everything_refused(&mut admin);
    let outcome = admin
        .authenticate(&auth(&[SHA256], &[NULL_GROUP], false))
        .unwrap();
    assert_eq!(
        outcome,
        AuthOutcome::Authenticated {
            hash_id: SHA256,
            dh_group_id: NULL_GROUP
        }
    );
    enable(&mut admin);
    assert!(admin.identify(1, 0).unwrap().0.ok());

    // The I/O queue authenticates on its own.
    let mut io = Initiator::connect(appliance.nvmf_address(0), false, false).unwrap();
    let cqe = io.fabric_connect(1, 31, cntlid, SUBNQN, HOST, 0).unwrap();
    assert!(cqe.ok(), "{cqe:?}");
    assert_eq!(cqe.dw0 & ATR, ATR);
    assert_eq!(io.read(1, 0, 1, BLOCK).unwrap().0.status(), AUTH_REQUIRED);
    let write = io.write(1, 0, &[0xab; BLOCK], BLOCK, false).unwrap();
    assert_eq!(write.status(), AUTH_REQUIRED, "R2T data path refused too");
    let outcome = io
        .authenticate(&auth(&[SHA256], &[NULL_GROUP], false))
        .unwrap();
    assert!(
        matches!(outcome, AuthOutcome::Authenticated { .. }),
        "{outcome:?}"
    );
    assert!(io.write(1, 0, &[0xab; BLOCK], BLOCK, true).unwrap().ok());
    let (cqe, data) = io.read(1, 0, 1, BLOCK).unwrap();
    assert!(cqe.ok());
    assert_eq!(data, vec![0xab; BLOCK]);

    // The configuration names keys, never shows them.
    let subsystems = appliance
        .dataplane_call(0, "nvmf_get_subsystems", json!({}))
        .to_string();
    assert!(
        subsystems.contains("\"dhchap_key\":\"key0\""),
        "{subsystems}"
    );
    let keys_listed = appliance
        .dataplane_call(0, "keyring_get_keys", json!({}))
        .to_string();
    assert!(keys_listed.contains("key0"));
    let secret = host_secret();
    let encoded = secret.split(':').nth(2).unwrap();
    for shown in [&subsystems, &keys_listed, &appliance.log()] {
        assert!(!shown.contains(encoded), "a secret was shown");
    }
}

#[test]
fn sha512_and_ffdhe2048_authenticate_both_ways() {
    let keys = tempfile::tempdir().unwrap();
    let appliance = target(&keys, true);
    let mut admin = Initiator::connect(appliance.nvmf_address(0), false, false).unwrap();
    let cntlid = connect_admin(&mut admin);
    let outcome = admin
        .authenticate(&auth(&[SHA512], &[FFDHE2048], true))
        .unwrap();
    assert_eq!(
        outcome,
        AuthOutcome::Authenticated {
            hash_id: SHA512,
            dh_group_id: FFDHE2048
        }
    );
    enable(&mut admin);
    assert!(admin.identify(1, 0).unwrap().0.ok());
    let mut io = Initiator::connect(appliance.nvmf_address(0), true, true).unwrap();
    assert!(
        io.fabric_connect(1, 31, cntlid, SUBNQN, HOST, 0)
            .unwrap()
            .ok()
    );
    let outcome = io
        .authenticate(&auth(&[SHA512], &[FFDHE2048], true))
        .unwrap();
    assert!(
        matches!(outcome, AuthOutcome::Authenticated { .. }),
        "{outcome:?}"
    );
    assert!(io.write(1, 8, &[0x11; BLOCK], BLOCK, false).unwrap().ok());
    // A host that offers everything gets the strongest hash and the
    // cheapest real DH exchange.
    let mut other = Initiator::connect(appliance.nvmf_address(0), false, false).unwrap();
    connect_admin(&mut other);
    let outcome = other
        .authenticate(&auth(&[1, 2, 3], &[0, 1, 2, 3, 4, 5], false))
        .unwrap();
    assert_eq!(
        outcome,
        AuthOutcome::Authenticated {
            hash_id: SHA512,
            dh_group_id: FFDHE2048
        }
    );
    // nvmf_set_config limits what later queues may use.
    let bad = appliance.dataplane_rpc(
        0,
        "nvmf_set_config",
        Some(json!({"dhchap_dhgroups": ["ffdhe1024"]})),
    );
    assert!(bad.is_err());
    appliance.dataplane_call(
        0,
        "nvmf_set_config",
        json!({"dhchap_digests": ["sha256"], "dhchap_dhgroups": ["null"]}),
    );
    let mut limited = Initiator::connect(appliance.nvmf_address(0), false, false).unwrap();
    connect_admin(&mut limited);
    let outcome = limited
        .authenticate(&auth(&[1, 2, 3], &[0, 1, 2, 3, 4, 5], false))
        .unwrap();
    assert_eq!(
        outcome,
        AuthOutcome::Authenticated {
            hash_id: SHA256,
            dh_group_id: NULL_GROUP
        }
    );
    let mut refused = Initiator::connect(appliance.nvmf_address(0), false, false).unwrap();
    connect_admin(&mut refused);
    // Reason code explanation 04h: hash function not usable.
    let outcome = refused
        .authenticate(&auth(&[SHA512], &[FFDHE2048], false))
        .unwrap();
    assert_eq!(outcome, AuthOutcome::Failure1(0x04));
}

#[test]
fn a_wrong_key_is_refused_and_repeated_failures_close_the_queue() {
    let keys = tempfile::tempdir().unwrap();
    let appliance = target(&keys, false);
    let mut host = Initiator::connect(appliance.nvmf_address(0), false, false).unwrap();
    connect_admin(&mut host);
    let mut wrong = auth(&[SHA256], &[NULL_GROUP], false);
    wrong.secret = secret_text(&[0x5b; 32], 1);
    // Reason code explanation 01h: authentication failed.
    assert_eq!(
        host.authenticate(&wrong).unwrap(),
        AuthOutcome::Failure1(0x01)
    );
    assert_everything_refused(&mut host);
    assert_eq!(
        host.authenticate(&wrong).unwrap(),
        AuthOutcome::Failure1(0x01)
    );
    assert_eq!(
        host.authenticate(&wrong).unwrap(),
        AuthOutcome::Failure1(0x01)
    );
    // Three failed transactions: the controller closes the connection.
    wait_closed(&mut host, Duration::from_secs(5));

    // A host NQN without an entry is refused at Connect as before.
    let mut stranger = Initiator::connect(appliance.nvmf_address(0), false, false).unwrap();
    let cqe = stranger
        .fabric_connect(0, 31, 0xffff, SUBNQN, OTHER_HOST, 0)
        .unwrap();
    assert_eq!(cqe.status(), (1, 0x84), "Connect Invalid Host");
}

#[test]
fn a_queue_that_never_authenticates_runs_nothing_and_is_closed() {
    let keys = tempfile::tempdir().unwrap();
    let appliance = target(&keys, false);
    let mut host = Initiator::connect(appliance.nvmf_address(0), false, false).unwrap();
    let cqe = host
        .fabric_connect(0, 31, 0xffff, SUBNQN, HOST, 1000)
        .unwrap();
    assert!(cqe.ok() && cqe.dw0 & ATR == ATR, "{cqe:?}");
    assert_everything_refused(&mut host);
    // Out-of-order messages get AUTH_Failure1, not a queue.
    let (cqe, failure) = host.auth_receive(4096).unwrap();
    assert!(cqe.ok());
    assert_eq!(&failure[..2], &[0x00, 0xf1]);
    assert_everything_refused(&mut host);
    // The authentication deadline (30 s) closes it; the keep-alive
    // timeout (1 s here) does not end the controller before that.
    let waited = wait_closed(&mut host, Duration::from_secs(45));
    assert!(waited > Duration::from_secs(25), "{waited:?}");
}

/// Found with the Linux initiator in a TCG guest: its first ffdhe8192
/// exchange took longer than KATO, and the controller ended before the
/// Reply came. The host sends no Keep Alive before it has authenticated.
#[test]
fn a_slow_host_may_authenticate_after_its_keep_alive_timeout() {
    let keys = tempfile::tempdir().unwrap();
    let appliance = target(&keys, false);
    let mut host = Initiator::connect(appliance.nvmf_address(0), false, false).unwrap();
    let cqe = host
        .fabric_connect(0, 31, 0xffff, SUBNQN, HOST, 1000)
        .unwrap();
    assert!(cqe.ok() && cqe.dw0 & ATR == ATR, "{cqe:?}");
    std::thread::sleep(Duration::from_secs(3));
    let outcome = host
        .authenticate(&auth(&[SHA256], &[NULL_GROUP], false))
        .unwrap();
    assert!(
        matches!(outcome, AuthOutcome::Authenticated { .. }),
        "{outcome:?}"
    );
    enable(&mut host);
    // Authenticated, the keep-alive timeout applies again.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        host.identify(1, 0).is_err(),
        "the controller ended after KATO"
    );
}

#[test]
fn a_controller_key_mismatch_fails_at_the_host() {
    let keys = tempfile::tempdir().unwrap();
    let appliance = target(&keys, true);
    let mut host = Initiator::connect(appliance.nvmf_address(0), false, false).unwrap();
    connect_admin(&mut host);
    let mut expecting_other = auth(&[SHA256], &[FFDHE2048], true);
    expecting_other.controller_secret = Some(secret_text(&[0xc4; 48], 0));
    assert_eq!(
        host.authenticate(&expecting_other).unwrap(),
        AuthOutcome::ControllerRejected
    );
    // The host's Failure2 leaves the queue unauthenticated.
    assert_everything_refused(&mut host);
}

#[test]
fn keys_are_checked_when_configured_and_at_connect() {
    let keys = tempfile::tempdir().unwrap();
    let appliance = target(&keys, false);
    // A key file others can read is refused; so is a corrupted secret.
    let open = keys.path().join("open");
    std::fs::write(&open, host_secret()).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = appliance.dataplane_rpc(
        0,
        "keyring_file_add_key",
        Some(json!({"name": "open", "path": open.display().to_string()})),
    );
    assert!(refused.is_err());
    let mut corrupted = host_secret();
    corrupted.replace_range(12..13, if &corrupted[12..13] == "A" { "B" } else { "A" });
    let path = write_key(keys.path(), "corrupted", &corrupted);
    let refused = appliance.dataplane_rpc(
        0,
        "keyring_file_add_key",
        Some(json!({"name": "corrupted", "path": path})),
    );
    assert!(refused.is_err());
    // A host entry naming an unknown key is refused.
    let refused = appliance.dataplane_rpc(
        0,
        "nvmf_subsystem_add_host",
        Some(json!({"nqn": SUBNQN, "host": OTHER_HOST, "dhchap_key": "nope"})),
    );
    assert!(refused.is_err());
    // A key removed after configuration: the host is refused, never let in
    // without authentication.
    appliance.dataplane_call(0, "keyring_file_remove_key", json!({"name": "key0"}));
    let mut host = Initiator::connect(appliance.nvmf_address(0), false, false).unwrap();
    let cqe = host.fabric_connect(0, 31, 0xffff, SUBNQN, HOST, 0).unwrap();
    assert_eq!(cqe.status(), (1, 0x84));
    // A host without keys on the same subsystem keeps the NQN check only.
    appliance.dataplane_call(
        0,
        "nvmf_subsystem_add_host",
        json!({"nqn": SUBNQN, "host": OTHER_HOST}),
    );
    let mut plain = Initiator::connect(appliance.nvmf_address(0), false, false).unwrap();
    let cqe = plain
        .fabric_connect(0, 31, 0xffff, SUBNQN, OTHER_HOST, 0)
        .unwrap();
    assert!(cqe.ok());
    assert_eq!(cqe.dw0 & ATR, 0, "no authentication asked");
    assert!(plain.property_get(0x00, true).unwrap().0.ok());
}

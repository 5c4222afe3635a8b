//! Who reaches an NBD export: TLS-PSK (NBD_OPT_STARTTLS) with per-export
//! host lists, against raw NBD frames and real clients (nbdinfo, nbdcopy,
//! qemu-img, all GnuTLS underneath).
//!
//! The non-loopback case binds the dataplane's NBD to 0.0.0.0 (what the
//! image does) and connects through 127.0.0.1: the listener's bound
//! address sets the policy, so that connection must get nothing but TLS.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::{Appliance, STARTUP_TIMEOUT, have_tool, run};

const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const OPT_LIST: u32 = 3;
const OPT_STARTTLS: u32 = 5;
const OPT_GO: u32 = 7;
const REP_ACK: u32 = 1;
const REP_SERVER: u32 = 2;
const REP_ERR_TLS_REQD: u32 = 0x8000_0005;
const REP_ERR_UNKNOWN: u32 = 0x8000_0006;

/// An appliance whose NBD listener is bound to 0.0.0.0 (not loopback).
fn appliance_on_all_addresses() -> Appliance {
    let appliance = Appliance::builder(1)
        .set("dataplane.listen_address", "0.0.0.0")
        .set("dataplane.nbd_listen_address", "0.0.0.0")
        .start();
    appliance.wait_for("all children running", STARTUP_TIMEOUT, |s| {
        s["state"] == "running"
    });
    appliance
}

/// Writes a psktool-format key file (`identity:hexkey`) with mode 0600 in
/// its own directory (qemu's tls-creds-psk reads `<dir>/keys.psk`).
fn key_file(dir: &Path, name: &str, identity: &str, key_byte: u8) -> PathBuf {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keys.psk");
    let hex: String = (0..32)
        .map(|i| format!("{:02x}", key_byte.wrapping_add(i)))
        .collect();
    std::fs::write(&path, format!("{identity}:{hex}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Two malloc exports, one per host, and one without a host list.
fn exports_for_two_hosts(appliance: &Appliance) -> (PathBuf, PathBuf) {
    let dir = appliance.dir.path();
    let key_a = key_file(dir, "a", "host-a", 0x10);
    let key_b = key_file(dir, "b", "host-b", 0x80);
    appliance.dataplane_call(
        0,
        "nbd_add_psk",
        json!({"identity": "host-a", "key_path": key_a}),
    );
    appliance.dataplane_call(
        0,
        "nbd_add_psk",
        json!({"identity": "host-b", "key_path": key_b}),
    );
    for (bdev, export, hosts) in [
        ("m0", "vol-a", json!(["host-a"])),
        ("m1", "vol-b", json!(["host-b"])),
        ("m2", "unlisted", json!([])),
    ] {
        appliance.dataplane_call(
            0,
            "bdev_malloc_create",
            json!({"name": bdev, "num_blocks": 8192, "block_size": 512}),
        );
        appliance.dataplane_call(
            0,
            "nbd_start_disk",
            json!({"bdev_name": bdev, "nbd_device": export, "hosts": hosts}),
        );
    }
    (key_a, key_b)
}

fn option(s: &mut TcpStream, kind: u32, data: &[u8]) {
    let mut message = IHAVEOPT.to_be_bytes().to_vec();
    message.extend_from_slice(&kind.to_be_bytes());
    message.extend_from_slice(&(data.len() as u32).to_be_bytes());
    message.extend_from_slice(data);
    s.write_all(&message).unwrap();
}

/// Reads option replies up to a final one; returns every (type, data).
fn replies(s: &mut TcpStream) -> Vec<(u32, Vec<u8>)> {
    let mut all = Vec::new();
    loop {
        let mut header = [0u8; 20];
        s.read_exact(&mut header).unwrap();
        let kind = u32::from_be_bytes(header[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(header[16..20].try_into().unwrap()) as usize;
        let mut data = vec![0u8; len];
        s.read_exact(&mut data).unwrap();
        all.push((kind, data));
        if kind != REP_SERVER && kind != 3 {
            return all;
        }
    }
}

fn negotiating(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut greeting = [0u8; 18];
    s.read_exact(&mut greeting).unwrap();
    s.write_all(&3u32.to_be_bytes()).unwrap();
    s
}

fn go_payload(export: &str) -> Vec<u8> {
    let mut data = (export.len() as u32).to_be_bytes().to_vec();
    data.extend_from_slice(export.as_bytes());
    data.extend_from_slice(&0u16.to_be_bytes());
    data
}

/// Export names in a LIST answer.
fn listed(replies: &[(u32, Vec<u8>)]) -> Vec<String> {
    replies
        .iter()
        .filter(|(kind, _)| *kind == REP_SERVER)
        .map(|(_, data)| String::from_utf8_lossy(&data[4..]).into_owned())
        .collect()
}

#[test]
fn a_non_loopback_listener_serves_nothing_before_starttls() {
    let appliance = appliance_on_all_addresses();
    exports_for_two_hosts(&appliance);
    let port = appliance.nbd_port(0);

    let mut s = negotiating(port);
    option(&mut s, OPT_LIST, &[]);
    let answer = replies(&mut s);
    assert_eq!(answer.len(), 1, "nothing listed: {answer:?}");
    assert_eq!(answer[0].0, REP_ERR_TLS_REQD);
    for export in ["vol-a", "unlisted", ""] {
        option(&mut s, OPT_GO, &go_payload(export));
        assert_eq!(replies(&mut s)[0].0, REP_ERR_TLS_REQD, "GO {export:?}");
    }
    // NBD_OPT_EXPORT_NAME has no error reply: the server hangs up.
    option(&mut s, 1, b"vol-a");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");

    // STARTTLS is accepted, and is all that is.
    let mut s = negotiating(port);
    option(&mut s, OPT_STARTTLS, &[]);
    assert_eq!(replies(&mut s)[0].0, REP_ACK);
}

#[test]
fn a_loopback_listener_serves_only_unlisted_exports_in_plaintext() {
    let appliance = Appliance::start_ready(1);
    exports_for_two_hosts(&appliance);
    let mut s = negotiating(appliance.nbd_port(0));
    option(&mut s, OPT_LIST, &[]);
    assert_eq!(listed(&replies(&mut s)), ["unlisted"]);
    option(&mut s, OPT_GO, &go_payload("vol-a"));
    assert_eq!(replies(&mut s)[0].0, REP_ERR_UNKNOWN);
    let disks = appliance.dataplane_call(0, "nbd_get_disks", json!({"nbd_device": "vol-a"}));
    assert_eq!(disks[0]["hosts"], json!(["host-a"]));
    // Keys are never returned; identities are.
    let psks = appliance.dataplane_call(0, "nbd_get_psks", json!({}));
    assert_eq!(
        psks,
        json!([{"identity": "host-a"}, {"identity": "host-b"}])
    );
    assert!(!appliance.log().contains("101112131415"));
}

fn nbds_uri(port: u16, identity: &str, export: &str, key: &Path) -> String {
    format!(
        "nbds://{identity}@127.0.0.1:{port}/{export}?tls-psk-file={}",
        key.display()
    )
}

/// Runs a program expected to fail; returns its output.
fn run_failing(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !output.status.success(),
        "{program} {args:?} succeeded: {text}"
    );
    text
}

#[test]
fn libnbd_clients_reach_only_their_own_export_over_tls_psk() {
    if !(have_tool("nbdinfo", "libnbd-bin") && have_tool("nbdcopy", "libnbd-bin")) {
        return;
    }
    let appliance = appliance_on_all_addresses();
    let (key_a, key_b) = exports_for_two_hosts(&appliance);
    let port = appliance.nbd_port(0);
    let dir = appliance.dir.path();

    // The right identity and key: the export is listed, read and written.
    let list = run(
        "nbdinfo",
        &[
            "--list",
            &format!(
                "nbds://host-a@127.0.0.1:{port}?tls-psk-file={}",
                key_a.display()
            ),
        ],
    );
    assert!(list.contains("export=\"vol-a\""), "{list}");
    assert!(
        !list.contains("vol-b") && !list.contains("unlisted"),
        "{list}"
    );
    let uri_a = nbds_uri(port, "host-a", "vol-a", &key_a);
    let size = run("nbdinfo", &["--size", &uri_a]);
    assert_eq!(size.trim(), (8192 * 512).to_string());
    let data = dir.join("data");
    std::fs::write(&data, vec![0xc3u8; 8192 * 512]).unwrap();
    run("nbdcopy", &[data.to_str().unwrap(), &uri_a]);
    let back = dir.join("back");
    run("nbdcopy", &[&uri_a, back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&data).unwrap());

    // Another host's identity does not see or open it.
    let list_b = run(
        "nbdinfo",
        &[
            "--list",
            &format!(
                "nbds://host-b@127.0.0.1:{port}?tls-psk-file={}",
                key_b.display()
            ),
        ],
    );
    assert!(!list_b.contains("vol-a"), "{list_b}");
    run_failing("nbdinfo", &[&nbds_uri(port, "host-b", "vol-a", &key_b)]);

    // The right identity with a wrong key: the TLS handshake fails.
    let wrong = key_file(dir, "wrong", "host-a", 0x55);
    run_failing("nbdinfo", &[&nbds_uri(port, "host-a", "vol-a", &wrong)]);

    // Without TLS: nothing listed, nothing opened.
    let plain = run_failing("nbdinfo", &["--list", &format!("nbd://127.0.0.1:{port}")]);
    assert!(!plain.contains("vol-"), "{plain}");
    let plain = run_failing("nbdinfo", &[&format!("nbd://127.0.0.1:{port}/vol-a")]);
    assert!(plain.to_lowercase().contains("tls"), "{plain}");

    // Taking host-a off the list closes its way in.
    appliance.dataplane_call(
        0,
        "nbd_disk_remove_host",
        json!({"nbd_device": "vol-a", "host": "host-a"}),
    );
    run_failing("nbdinfo", &[&uri_a]);
}

#[test]
fn qemu_reaches_its_export_over_tls_psk() {
    if !have_tool("qemu-img", "qemu-utils") {
        return;
    }
    let appliance = appliance_on_all_addresses();
    let (key_a, _) = exports_for_two_hosts(&appliance);
    let port = appliance.nbd_port(0);
    let creds = |key: &Path, user: &str| {
        format!(
            "tls-creds-psk,id=tls0,endpoint=client,dir={},username={user}",
            key.parent().unwrap().display()
        )
    };
    let image = |export: &str| {
        format!(
            "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={port},\
             export={export},tls-creds=tls0"
        )
    };
    let info = run(
        "qemu-img",
        &[
            "info",
            "--output=json",
            "--object",
            &creds(&key_a, "host-a"),
            "--image-opts",
            &image("vol-a"),
        ],
    );
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["virtual-size"], 8192 * 512);

    let wrong = key_file(appliance.dir.path(), "wrong", "host-a", 0x55);
    run_failing(
        "qemu-img",
        &[
            "info",
            "--object",
            &creds(&wrong, "host-a"),
            "--image-opts",
            &image("vol-a"),
        ],
    );
    run_failing(
        "qemu-img",
        &["info", &format!("nbd://127.0.0.1:{port}/vol-a")],
    );
}

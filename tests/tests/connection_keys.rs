//! Host credentials through Redfish, end to end: a Connection with
//! DH-HMAC-CHAP keys makes its hosts authenticate on every data cluster's
//! portal (and the controller, with a Peer key), survives a cluster's
//! kill -9, rotates on PATCH and goes on DELETE; the same credential,
//! derived as the README documents, opens the volume's TLS-PSK NBD export.
//! The secrets are never shown: not in responses, logs or the state
//! directory's files.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use shoal_tests::dhchap_host::{AuthOutcome, HostAuth, NULL_GROUP, SHA256, secret_text};
use shoal_tests::nvme_initiator::Initiator;
use shoal_tests::redfish_client::{RedfishClient, message_key};
use shoal_tests::{Appliance, STARTUP_TIMEOUT, have_tool, run};

const VOLUMES: &str = "/redfish/v1/Storage/appliance/Volumes";
const ENDPOINTS: &str = "/redfish/v1/Fabrics/NVMeoF/Endpoints";
const CONNECTIONS: &str = "/redfish/v1/Fabrics/NVMeoF/Connections";
const MIB: u64 = 1 << 20;
const BLOCK: usize = 512;
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:6c2e5d1a-0f4b-4f7e-9a51-3c1d2b7e8f90";
const OTHER_HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-1111-2222-3333-444444444444";
/// Connect response DW0 bit 17: AUTHREQ.ATR.
const ATR: u32 = 1 << 17;
/// Connect status "Invalid Host".
const INVALID_HOST: (u8, u8) = (1, 0x84);

fn host_secret() -> String {
    secret_text(&[0x5a; 32], 1)
}

fn rotated_secret() -> String {
    secret_text(&[0x3c; 32], 1)
}

fn controller_secret() -> String {
    secret_text(&[0xc3; 48], 0)
}

fn keys(local: &str, peer: Option<&str>) -> Value {
    let mut dhchap = json!({"LocalDHCHAPAuthSecret": local});
    if let Some(peer) = peer {
        dhchap["PeerDHCHAPAuthSecret"] = json!(peer);
    }
    json!({"DHCHAP": dhchap})
}

/// Connects the admin queue on `cluster`'s portal and authenticates with
/// `secret` (and checks the controller against `controller`): whether
/// the queue then works.
fn admin_authenticates(
    appliance: &Appliance,
    cluster: u32,
    nqn: &str,
    secret: &str,
    controller: Option<&str>,
) -> bool {
    let mut admin = Initiator::connect(appliance.nvmf_address(cluster), false, false).unwrap();
    let cqe = admin.fabric_connect(0, 31, 0xffff, nqn, HOST, 0).unwrap();
    assert!(cqe.ok(), "{cqe:?}");
    assert_eq!(cqe.dw0 & ATR, ATR, "the controller asks for authentication");
    let auth = HostAuth {
        hostnqn: HOST.into(),
        subnqn: nqn.into(),
        secret: secret.into(),
        controller_secret: controller.map(str::to_string),
        hashes: vec![SHA256],
        dh_groups: vec![NULL_GROUP],
        t_id: 1,
    };
    match admin.authenticate(&auth) {
        Ok(AuthOutcome::Authenticated { .. }) => {}
        _ => return false,
    }
    admin
        .property_set(0x14, 1 | (6 << 16) | (4 << 20))
        .is_ok_and(|c| c.ok())
        && admin.identify(1, 0).is_ok_and(|(c, _)| c.ok())
}

/// Authenticates admin and I/O queues on `cluster`; writes `data` at
/// block 8 if given, and returns what block 8.. then holds.
fn io_through(
    appliance: &Appliance,
    cluster: u32,
    nqn: &str,
    secret: &str,
    write: Option<&[u8]>,
) -> Vec<u8> {
    let auth = HostAuth {
        hostnqn: HOST.into(),
        subnqn: nqn.into(),
        secret: secret.into(),
        controller_secret: None,
        hashes: vec![SHA256],
        dh_groups: vec![NULL_GROUP],
        t_id: 1,
    };
    let portal = appliance.nvmf_address(cluster);
    let mut admin = Initiator::connect(portal, false, false).unwrap();
    let cqe = admin.fabric_connect(0, 31, 0xffff, nqn, HOST, 0).unwrap();
    assert!(cqe.ok(), "{cqe:?}");
    let cntlid = cqe.dw0 as u16;
    assert!(matches!(
        admin.authenticate(&auth).unwrap(),
        AuthOutcome::Authenticated { .. }
    ));
    assert!(
        admin
            .property_set(0x14, 1 | (6 << 16) | (4 << 20))
            .unwrap()
            .ok()
    );
    let mut io = Initiator::connect(portal, false, false).unwrap();
    assert!(io.fabric_connect(1, 31, cntlid, nqn, HOST, 0).unwrap().ok());
    assert!(matches!(
        io.authenticate(&auth).unwrap(),
        AuthOutcome::Authenticated { .. }
    ));
    if let Some(data) = write {
        assert!(io.write(1, 8, data, BLOCK, false).unwrap().ok());
    }
    let (cqe, back) = io.read(1, 8, 8, BLOCK).unwrap();
    assert!(cqe.ok(), "{cqe:?}");
    back
}

/// Waits until `done` holds for cluster `cluster`.
fn wait_cluster(
    appliance: &Appliance,
    cluster: u32,
    what: &str,
    done: impl Fn(&Appliance) -> bool,
) {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while !done(appliance) {
        assert!(
            Instant::now() < deadline,
            "cluster {cluster}: timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether cluster `cluster` has `HOST` with a DH-HMAC-CHAP key.
fn host_keyed(appliance: &Appliance, cluster: u32) -> bool {
    let Ok(subsystems) = appliance.dataplane_rpc(cluster, "nvmf_get_subsystems", None) else {
        return false;
    };
    subsystems
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["hosts"].as_array().cloned().unwrap_or_default())
        .any(|h| h["nqn"] == HOST && h["dhchap_key"].is_string())
}

/// The NBD PSK file, made with the README's command lines from the
/// Connection's secret. (`od -v`: without it od writes `*` for repeated
/// lines, as a key of 32 equal bytes has.)
fn psk_file(dir: &Path, file: &str, identity: &str, secret: &str) -> std::path::PathBuf {
    let path = dir.join(file);
    let script = r#"key_hex=$(printf '%s' "$secret" | cut -d: -f3 | base64 -d | head -c -4 | od -An -v -tx1 | tr -d ' \n')
psk=$(printf 'Shoal NBD PSK %s' "$id" | openssl dgst -sha256 -mac HMAC -macopt hexkey:$key_hex -r | cut -d' ' -f1)
echo "$id:$psk" > "$out""#;
    let output = Command::new("sh")
        .args(["-c", script])
        .env("secret", secret)
        .env("id", identity)
        .env("out", &path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Every file under `dir`.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            out.extend(files_under(&path));
        } else if path.is_file() {
            out.push(path);
        }
    }
    out
}

#[test]
fn keyed_connections_authenticate_rotate_and_survive_a_cluster_restart() {
    let appliance = Appliance::builder(2)
        .set("memory.region_mib", 64)
        .set("dataplane.drive_size_mib", 128)
        .set("dataplane.listen_address", "0.0.0.0")
        .set("dataplane.nbd_listen_address", "0.0.0.0")
        .start();
    appliance.wait_for("all children running", STARTUP_TIMEOUT, |s| {
        s["state"] == "running"
    });
    let r = RedfishClient::new(&appliance);
    let storage = r.get_ok("/redfish/v1/Storage/appliance");
    let nqn = storage["Identifiers"][0]["DurableName"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, volume) = r.post(
        VOLUMES,
        &json!({"Name": "keyed", "CapacityBytes": 64 * MIB}),
    );
    assert_eq!(status, StatusCode::CREATED, "{volume}");
    let volume_uri = volume["@odata.id"].as_str().unwrap().to_string();
    let export = format!("volume{}", volume["Id"].as_str().unwrap());
    let mut endpoint_uris = Vec::new();
    for host in [HOST, OTHER_HOST] {
        let (status, endpoint) = r.post(
            ENDPOINTS,
            &json!({"Identifiers": [{"DurableNameFormat": "NQN", "DurableName": host}]}),
        );
        assert_eq!(status, StatusCode::CREATED, "{endpoint}");
        endpoint_uris.push(endpoint["@odata.id"].as_str().unwrap().to_string());
    }
    let identity = endpoint_uris[0].rsplit('/').next().unwrap().to_string();
    let volume_info =
        json!([{"Volume": {"@odata.id": volume_uri}, "AccessCapabilities": ["Read", "Write"]}]);
    let links = |uri: &str| json!({"InitiatorEndpoints": [{"@odata.id": uri}]});

    // Malformed keys are refused without the value being echoed.
    let mut flipped = host_secret();
    flipped.replace_range(12..13, if &flipped[12..13] == "A" { "B" } else { "A" });
    for (keys, key) in [
        (keys(&flipped, None), "PropertyValueFormatError"),
        (
            keys("DHHC-1:01:c2hvcnQ=:", None),
            "PropertyValueFormatError",
        ),
        (
            json!({"DHCHAP": {"PeerDHCHAPAuthSecret": controller_secret()}}),
            "PropertyValueConflict",
        ),
    ] {
        let (status, body) = r.post(
            CONNECTIONS,
            &json!({"VolumeInfo": volume_info, "Links": links(&endpoint_uris[0]), "ConnectionKeys": keys}),
        );
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(message_key(&body), key, "{body}");
        let shown = body.to_string();
        assert!(!shown.contains(&flipped[10..40]) && !shown.contains("c2hvcnQ"));
    }

    // A keyed connection with a Peer key: the secrets read back as null.
    let (status, connection) = r.post(
        CONNECTIONS,
        &json!({"VolumeInfo": volume_info, "Links": links(&endpoint_uris[0]),
                "ConnectionKeys": keys(&host_secret(), Some(&controller_secret()))}),
    );
    assert_eq!(status, StatusCode::CREATED, "{connection}");
    let connection_uri = connection["@odata.id"].as_str().unwrap().to_string();
    let nulls = json!({"DHCHAP": {"LocalDHCHAPAuthSecret": null, "PeerDHCHAPAuthSecret": null}});
    assert_eq!(connection["ConnectionKeys"], nulls);
    let read = r.get_ok(&connection_uri);
    assert_eq!(read["ConnectionKeys"], nulls);
    assert_eq!(read["Status"]["Health"], "OK");

    // An unkeyed connection is flagged.
    let (status, unkeyed) = r.post(
        CONNECTIONS,
        &json!({"VolumeInfo": volume_info, "Links": links(&endpoint_uris[1])}),
    );
    assert_eq!(status, StatusCode::CREATED, "{unkeyed}");
    assert!(unkeyed.get("ConnectionKeys").is_none());
    assert_eq!(unkeyed["Status"]["Health"], "Warning");
    assert!(unkeyed["Status"]["Conditions"][0]["MessageId"].is_string());

    // Keys belong to the host: another connection may not give it others.
    let (status, body) = r.post(
        CONNECTIONS,
        &json!({"VolumeInfo": volume_info, "Links": links(&endpoint_uris[0]),
                "ConnectionKeys": keys(&rotated_secret(), None)}),
    );
    assert_eq!(
        (status, message_key(&body).as_str()),
        (StatusCode::CONFLICT, "PropertyValueResourceConflict"),
        "{body}"
    );

    // The host authenticates both ways on both portals; a wrong key, a
    // wrong controller key, or none, does not get in.
    for cluster in 0..2 {
        assert!(admin_authenticates(
            &appliance,
            cluster,
            &nqn,
            &host_secret(),
            Some(&controller_secret())
        ));
        assert!(!admin_authenticates(
            &appliance,
            cluster,
            &nqn,
            &rotated_secret(),
            None
        ));
        assert!(!admin_authenticates(
            &appliance,
            cluster,
            &nqn,
            &host_secret(),
            Some(&rotated_secret())
        ));
    }
    let mut unauthenticated = Initiator::connect(appliance.nvmf_address(0), false, false).unwrap();
    assert!(
        unauthenticated
            .fabric_connect(0, 31, 0xffff, &nqn, HOST, 0)
            .unwrap()
            .ok()
    );
    assert_eq!(
        unauthenticated.identify(1, 0).unwrap().0.status(),
        (1, 0x91),
        "Authentication Required"
    );
    let data: Vec<u8> = (0..8 * BLOCK).map(|i| (i * 7) as u8).collect();
    assert_eq!(
        io_through(&appliance, 0, &nqn, &host_secret(), Some(&data)),
        data
    );

    // NBD: the PSK derived with the documented recipe opens the export
    // over TLS; without TLS nothing is listed.
    let nbd_ok = have_tool("nbdinfo", "libnbd-bin") && have_tool("openssl", "openssl");
    let client_dir = tempfile::tempdir().unwrap();
    let port = appliance.nbd_port(0);
    if nbd_ok {
        let psk = psk_file(client_dir.path(), "first.psk", &identity, &host_secret());
        let uri = format!(
            "nbds://{identity}@127.0.0.1:{port}/{export}?tls-psk-file={}",
            psk.display()
        );
        assert_eq!(
            run("nbdinfo", &["--size", &uri]).trim(),
            (64 * MIB).to_string()
        );
        let plain = Command::new("nbdinfo")
            .args(["--list", &format!("nbd://127.0.0.1:{port}")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&plain.stdout);
        assert!(!text.contains(&export), "{text}");
    }

    // kill -9 of cluster 1: it comes back with the keys.
    let victim = appliance.cluster(1);
    let restarts = victim["restarts"].as_u64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim["pid"].as_i64().unwrap() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    appliance.wait_for("cluster 1 restarted", STARTUP_TIMEOUT, |s| {
        s["clusters"][1]["state"] == "running"
            && s["clusters"][1]["restarts"].as_u64() > Some(restarts)
    });
    wait_cluster(&appliance, 1, "its keyed host back", |a| host_keyed(a, 1));
    wait_cluster(&appliance, 1, "the volume back", |a| {
        a.dataplane_rpc(1, "nvmf_get_subsystems", None)
            .is_ok_and(|s| s.to_string().contains("\"nsid\":1"))
    });
    assert!(admin_authenticates(
        &appliance,
        1,
        &nqn,
        &host_secret(),
        Some(&controller_secret())
    ));
    assert_eq!(io_through(&appliance, 1, &nqn, &host_secret(), None), data);

    // PATCH rotates: the old key is refused, the new one works.
    let (status, patched) = r.patch(
        &connection_uri,
        &json!({"ConnectionKeys": keys(&rotated_secret(), None)}),
    );
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        patched["ConnectionKeys"]["DHCHAP"]["LocalDHCHAPAuthSecret"],
        Value::Null
    );
    for cluster in 0..2 {
        assert!(!admin_authenticates(
            &appliance,
            cluster,
            &nqn,
            &host_secret(),
            None
        ));
        assert_eq!(
            io_through(&appliance, cluster, &nqn, &rotated_secret(), None),
            data
        );
    }
    // Only the rotated key is left in each cluster's keyring.
    for cluster in 0..2 {
        let keyring = appliance.dataplane_call(cluster, "keyring_get_keys", json!({}));
        assert_eq!(keyring.as_array().unwrap().len(), 1, "{keyring}");
    }
    if nbd_ok {
        let old = client_dir.path().join("first.psk");
        let new = psk_file(
            client_dir.path(),
            "rotated.psk",
            &identity,
            &rotated_secret(),
        );
        let uri = |file: &Path| {
            format!(
                "nbds://{identity}@127.0.0.1:{port}/{export}?tls-psk-file={}",
                file.display()
            )
        };
        run("nbdinfo", &["--size", &uri(&new)]);
        let refused = Command::new("nbdinfo")
            .args(["--size", &uri(&old)])
            .output()
            .unwrap();
        assert!(!refused.status.success(), "the old PSK still works");
    }

    // The secrets are nowhere: not in the logs, not in the state files,
    // and no staged key file is left.
    let secrets = [host_secret(), rotated_secret(), controller_secret()];
    let needles: Vec<String> = secrets
        .iter()
        .map(|s| s.split(':').nth(2).unwrap()[..24].to_string())
        .collect();
    let log = appliance.log();
    for needle in &needles {
        assert!(!log.contains(needle.as_str()), "a secret is in the log");
    }
    let files = files_under(appliance.dir.path());
    assert!(files.iter().any(|f| f.to_string_lossy().contains("db")));
    for file in &files {
        let bytes = std::fs::read(file).unwrap_or_default();
        for needle in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds a secret",
                file.display()
            );
        }
        assert!(
            !file.parent().is_some_and(|p| p.ends_with("run-keys")),
            "a staged key file was left: {}",
            file.display()
        );
    }

    // DELETE: the host is refused, its keys go.
    assert_eq!(
        r.delete(unkeyed["@odata.id"].as_str().unwrap()).0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(r.delete(&connection_uri).0, StatusCode::NO_CONTENT);
    let mut refused = Initiator::connect(appliance.nvmf_address(0), false, false).unwrap();
    assert_eq!(
        refused
            .fabric_connect(0, 31, 0xffff, &nqn, HOST, 0)
            .unwrap()
            .status(),
        INVALID_HOST
    );
    for cluster in 0..2 {
        let keyring = appliance.dataplane_call(cluster, "keyring_get_keys", json!({}));
        assert_eq!(keyring, json!([]), "cluster {cluster}");
        let psks = appliance.dataplane_call(cluster, "nbd_get_psks", json!({}));
        assert_eq!(psks, json!([]), "cluster {cluster}");
    }
}

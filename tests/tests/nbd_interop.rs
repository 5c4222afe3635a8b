//! The dataplane's NBD exports against real clients: qemu-img, qemu-io,
//! nbdinfo and nbdcopy, over malloc, raid0-of-uring and raid1-of-uring
//! bdevs; and against clients that misbehave.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_appliance::jsonrpc::CallError;
use shoal_tests::nbd_client::{connect, request, simple_reply};
use shoal_tests::{Appliance, have_tool, run};

fn rpc(appliance: &Appliance, method: &str, params: Value) -> Value {
    appliance
        .dataplane_rpc(0, method, Some(params))
        .unwrap_or_else(|e| panic!("{method} failed: {e}"))
}

fn rpc_error(
    appliance: &Appliance,
    method: &str,
    params: Value,
) -> shoal_appliance::jsonrpc::RpcError {
    match appliance.dataplane_rpc(0, method, Some(params)) {
        Err(CallError::Rpc(error)) => error,
        other => panic!("{method} should fail, got {other:?}"),
    }
}

fn sha256(path: &Path) -> String {
    run("sha256sum", &[path.to_str().unwrap()])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn random_file(path: &Path, bytes: usize) {
    let mut data = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    std::fs::write(path, data).unwrap();
}

fn sparse_file(path: &Path, bytes: u64) {
    std::fs::File::create(path).unwrap().set_len(bytes).unwrap();
}

#[test]
fn qemu_and_libnbd_clients_read_and_write_a_malloc_export() {
    if !(have_tool("qemu-io", "qemu-utils")
        && have_tool("nbdinfo", "libnbd-bin")
        && have_tool("nbdcopy", "libnbd-bin"))
    {
        return;
    }
    let appliance = Appliance::start_ready(2);
    rpc(
        &appliance,
        "bdev_malloc_create",
        json!({"name": "m0", "num_blocks": 131072, "block_size": 512}),
    );
    assert_eq!(
        rpc(
            &appliance,
            "nbd_start_disk",
            json!({"bdev_name": "m0", "nbd_device": "vol0"})
        ),
        "vol0"
    );
    let uri = appliance.nbd_uri(0, "vol0");

    let info = run("qemu-img", &["info", "--output=json", &uri]);
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["virtual-size"], 64 << 20);

    let io = run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -P 0xab 0 1M",
            "-c",
            "read -P 0xab 0 1M",
            &uri,
        ],
    );
    assert!(io.contains("read 1048576/1048576"), "{io}");
    // FUA and flush travel too.
    run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -f -P 0x11 1M 64k",
            "-c",
            "flush",
            "-c",
            "read -P 0x11 1M 64k",
            &uri,
        ],
    );

    let list = run(
        "nbdinfo",
        &[
            "--list",
            &format!("nbd://127.0.0.1:{}", appliance.nbd_port(0)),
        ],
    );
    assert!(list.contains("export=\"vol0\""), "{list}");
    assert!(list.contains("block_size_minimum: 512"), "{list}");

    let dir = appliance.dir.path();
    random_file(&dir.join("in.img"), 64 << 20);
    run("nbdcopy", &[dir.join("in.img").to_str().unwrap(), &uri]);
    run("nbdcopy", &[&uri, dir.join("out.img").to_str().unwrap()]);
    assert_eq!(sha256(&dir.join("in.img")), sha256(&dir.join("out.img")));

    let stats = rpc(&appliance, "bdev_get_iostat", json!({"name": "m0"}));
    assert!(
        stats["bdevs"][0]["bytes_written"].as_u64().unwrap() >= 64 << 20,
        "{stats}"
    );
    let disks = rpc(&appliance, "nbd_get_disks", json!({}));
    assert_eq!(disks[0]["bdev_name"], "m0");
}

#[test]
fn raid0_of_two_files_stripes_data_and_round_trips() {
    if !have_tool("nbdcopy", "libnbd-bin") {
        return;
    }
    let appliance = Appliance::start_ready(1);
    let dir = appliance.dir.path();
    for leg in ["a", "b"] {
        sparse_file(&dir.join(format!("{leg}.img")), 32 << 20);
        let filename = dir.join(format!("{leg}.img"));
        rpc(
            &appliance,
            "bdev_uring_create",
            json!({"name": leg, "filename": filename, "block_size": 4096}),
        );
    }
    rpc(
        &appliance,
        "bdev_raid_create",
        json!({"name": "r0", "raid_level": "raid0", "strip_size_kb": 64, "base_bdevs": ["a", "b"]}),
    );
    rpc(&appliance, "nbd_start_disk", json!({"bdev_name": "r0"}));
    let uri = appliance.nbd_uri(0, "r0");
    random_file(&dir.join("in.img"), 64 << 20);
    run("nbdcopy", &[dir.join("in.img").to_str().unwrap(), &uri]);
    run("nbdcopy", &[&uri, dir.join("out.img").to_str().unwrap()]);
    assert_eq!(sha256(&dir.join("in.img")), sha256(&dir.join("out.img")));

    // Strip n of the volume is strip n/2 of leg n%2.
    let input = std::fs::read(dir.join("in.img")).unwrap();
    let legs = [
        std::fs::read(dir.join("a.img")).unwrap(),
        std::fs::read(dir.join("b.img")).unwrap(),
    ];
    let strip = 64 * 1024;
    for n in [0usize, 1, 2, 7, 511] {
        let leg = &legs[n % 2];
        let at = (n / 2) * strip;
        assert_eq!(
            &leg[at..at + strip],
            &input[n * strip..(n + 1) * strip],
            "strip {n}"
        );
    }

    // Claimed and exported bdevs cannot be deleted.
    assert_eq!(
        rpc_error(&appliance, "bdev_uring_delete", json!({"name": "a"})).code,
        -16
    );
    assert_eq!(
        rpc_error(&appliance, "bdev_raid_delete", json!({"name": "r0"})).code,
        -16
    );
    rpc(&appliance, "nbd_stop_disk", json!({"nbd_device": "r0"}));
    rpc(&appliance, "bdev_raid_delete", json!({"name": "r0"}));
    rpc(&appliance, "bdev_uring_delete", json!({"name": "a"}));
}

#[test]
fn raid1_keeps_serving_when_a_leg_file_is_truncated() {
    if !have_tool("nbdcopy", "libnbd-bin") {
        return;
    }
    let appliance = Appliance::start_ready(1);
    let dir = appliance.dir.path();
    for leg in ["a", "b"] {
        let filename = dir.join(format!("{leg}.img"));
        sparse_file(&filename, 16 << 20);
        rpc(
            &appliance,
            "bdev_uring_create",
            json!({"name": leg, "filename": filename, "block_size": 4096}),
        );
    }
    rpc(
        &appliance,
        "bdev_raid_create",
        json!({"name": "m", "raid_level": "raid1", "base_bdevs": "a b"}),
    );
    rpc(&appliance, "nbd_start_disk", json!({"bdev_name": "m"}));
    let uri = appliance.nbd_uri(0, "m");
    random_file(&dir.join("in.img"), 16 << 20);
    run("nbdcopy", &[dir.join("in.img").to_str().unwrap(), &uri]);
    assert_eq!(sha256(&dir.join("in.img")), sha256(&dir.join("a.img")));
    assert_eq!(sha256(&dir.join("in.img")), sha256(&dir.join("b.img")));

    // Leg a loses all its data: reads fail there and are served from b.
    std::fs::File::options()
        .write(true)
        .open(dir.join("a.img"))
        .unwrap()
        .set_len(0)
        .unwrap();
    run("nbdcopy", &[&uri, dir.join("out.img").to_str().unwrap()]);
    assert_eq!(sha256(&dir.join("in.img")), sha256(&dir.join("out.img")));
    let raid = rpc(
        &appliance,
        "bdev_raid_get_bdevs",
        json!({"category": "all"}),
    );
    assert_eq!(raid[0]["num_base_bdevs_operational"], 1, "{raid}");
    assert_eq!(raid[0]["state"], "online");
    assert!(appliance.log().contains("base bdev failed an I/O"));
}

/// A minimal NBD client for protocol abuse: negotiates with NBD_OPT_GO.
#[test]
fn misbehaving_clients_get_errors_and_disturb_nobody() {
    let appliance = Appliance::start_ready(1);
    rpc(
        &appliance,
        "bdev_malloc_create",
        json!({"name": "m0", "num_blocks": 2048, "block_size": 512}),
    );
    rpc(&appliance, "nbd_start_disk", json!({"bdev_name": "m0"}));
    let port = appliance.nbd_port(0);

    let mut good = connect(port, "m0");

    // Garbage instead of a handshake: that connection is closed.
    let mut junk = TcpStream::connect(("127.0.0.1", port)).unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut greeting = [0u8; 18];
    junk.read_exact(&mut greeting).unwrap();
    junk.write_all(&[0xff; 64]).unwrap();
    let mut rest = Vec::new();
    let _ = junk.read_to_end(&mut rest);

    // Unknown export: NBD_REP_ERR_UNKNOWN, connection still negotiating.
    let mut unknown = TcpStream::connect(("127.0.0.1", port)).unwrap();
    unknown
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    unknown.read_exact(&mut greeting).unwrap();
    unknown.write_all(&3u32.to_be_bytes()).unwrap();
    let mut option = 0x4948_4156_454f_5054u64.to_be_bytes().to_vec();
    option.extend_from_slice(&7u32.to_be_bytes());
    option.extend_from_slice(&8u32.to_be_bytes());
    option.extend_from_slice(&2u32.to_be_bytes());
    option.extend_from_slice(b"no");
    option.extend_from_slice(&0u16.to_be_bytes());
    unknown.write_all(&option).unwrap();
    let mut header = [0u8; 20];
    unknown.read_exact(&mut header).unwrap();
    assert_eq!(
        u32::from_be_bytes(header[12..16].try_into().unwrap()),
        0x8000_0006
    );

    // Out of range, misaligned, zero-length and unknown commands: errors.
    let mut bad = connect(port, "m0");
    bad.write_all(&request(0, 1, 2048 * 512, 512)).unwrap();
    assert_eq!(simple_reply(&mut bad), (22, 1)); // EINVAL
    bad.write_all(&request(0, 2, 100, 512)).unwrap();
    assert_eq!(simple_reply(&mut bad), (22, 2));
    bad.write_all(&request(0, 3, 0, 0)).unwrap();
    assert_eq!(simple_reply(&mut bad), (22, 3));
    bad.write_all(&request(99, 4, 0, 512)).unwrap();
    assert_eq!(simple_reply(&mut bad), (22, 4));
    let mut write = request(1, 5, 2047 * 512, 1024);
    write.extend_from_slice(&[0u8; 1024]);
    bad.write_all(&write).unwrap();
    assert_eq!(simple_reply(&mut bad), (28, 5)); // ENOSPC
    // Disconnect in the middle of a write payload.
    let mut partial = request(1, 6, 0, 4096);
    partial.extend_from_slice(&[0u8; 100]);
    bad.write_all(&partial).unwrap();
    drop(bad);

    // The well-behaved client never noticed.
    let mut write = request(1, 7, 4096, 512);
    write.extend_from_slice(&[0x5a; 512]);
    good.write_all(&write).unwrap();
    assert_eq!(simple_reply(&mut good), (0, 7));
    good.write_all(&request(0, 8, 4096, 512)).unwrap();
    assert_eq!(simple_reply(&mut good), (0, 8));
    let mut data = [0u8; 512];
    good.read_exact(&mut data).unwrap();
    assert!(data.iter().all(|&b| b == 0x5a));
    assert_eq!(appliance.cluster(0)["restarts"], 0);
}

#[test]
fn rpc_errors_follow_spdk_conventions() {
    let appliance = Appliance::start_ready(1);
    rpc(
        &appliance,
        "bdev_malloc_create",
        json!({"name": "m0", "num_blocks": 64, "block_size": 512}),
    );
    let cases = [
        (
            "bdev_malloc_create",
            json!({"name": "m0", "num_blocks": 64, "block_size": 512}),
            -17,
        ),
        (
            "bdev_malloc_create",
            json!({"name": "m1", "num_blocks": 64, "block_size": 500}),
            -22,
        ),
        (
            "bdev_malloc_create",
            json!({"name": "m1", "num_blocks": 0, "block_size": 512}),
            -22,
        ),
        (
            "bdev_malloc_create",
            json!({"name": "m1", "num_blocks": "many", "block_size": 512}),
            -32602,
        ),
        (
            "bdev_malloc_create",
            json!({"name": "m1", "num_blocks": 8, "block_size": 512, "colour": 1}),
            -32602,
        ),
        ("bdev_malloc_delete", json!({"name": "nope"}), -19),
        ("bdev_null_delete", json!({"name": "m0"}), -19),
        ("bdev_get_bdevs", json!({"name": "nope"}), -19),
        (
            "bdev_raid_create",
            json!({"name": "r", "raid_level": "raid5", "base_bdevs": ["m0"]}),
            -32602,
        ),
        (
            "bdev_raid_create",
            json!({"name": "r", "raid_level": "raid0", "base_bdevs": ["m0"]}),
            -32602,
        ),
        (
            "bdev_uring_create",
            json!({"name": "u", "filename": "/nonexistent/disk"}),
            -2,
        ),
        ("nbd_start_disk", json!({"bdev_name": "nope"}), -19),
        ("nbd_stop_disk", json!({"nbd_device": "nope"}), -19),
        (
            "bdev_malloc_create",
            json!({"name": "m1", "num_blocks": 8, "block_size": 512, "uuid": "xyz"}),
            -32602,
        ),
    ];
    for (method, params, code) in cases {
        let error = rpc_error(&appliance, method, params.clone());
        assert_eq!(error.code, code, "{method} {params}: {}", error.message);
    }
    // The cluster's drive, and the one malloc bdev the failed calls left.
    let bdevs = rpc(&appliance, "bdev_get_bdevs", json!({}));
    let names: Vec<&str> = bdevs
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"drive0"), "{names:?}");
    let malloc: Vec<_> = bdevs
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["product_name"] == "Malloc disk")
        .collect();
    assert_eq!(malloc.len(), 1);
    let methods = rpc(&appliance, "rpc_get_methods", json!({}));
    for name in [
        "bdev_raid_create",
        "nbd_start_disk",
        "framework_get_reactors",
        "bdev_get_iostat",
    ] {
        assert!(methods.as_array().unwrap().contains(&json!(name)), "{name}");
    }
    let reactors = rpc(&appliance, "framework_get_reactors", json!({}));
    assert_eq!(reactors["reactors"].as_array().unwrap().len(), 1);
}

#[test]
fn startup_config_defines_bdevs_and_exports_before_serving() {
    let builder = Appliance::builder(2);
    let dir = builder.dir().join("startup");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("dataplane-1.json"),
        json!({"subsystems": [
            {"subsystem": "bdev", "config": [
                {"method": "bdev_malloc_create", "params": {"name": "boot", "num_blocks": 256, "block_size": 512}}
            ]},
            {"subsystem": "nbd", "config": [
                {"method": "nbd_start_disk", "params": {"bdev_name": "boot"}}
            ]}
        ]})
        .to_string(),
    )
    .unwrap();
    let appliance = builder
        .set("dataplane.startup_config_dir", dir.display().to_string())
        .start();
    appliance.wait_for("running", shoal_tests::STARTUP_TIMEOUT, |s| {
        s["state"] == "running"
    });
    let disks = appliance.dataplane_rpc(1, "nbd_get_disks", None).unwrap();
    assert_eq!(disks[0]["bdev_name"], "boot");
    // Cluster 0 had no startup file: it has only its drive.
    let bdevs = appliance.dataplane_rpc(0, "bdev_get_bdevs", None).unwrap();
    let names: Vec<&str> = bdevs
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["drive0"]);
}

//! The Swordfish storage model end to end: volumes created through Redfish
//! are striped over the data clusters' drives, served over NBD and
//! NVMe/TCP by every cluster, rebuilt after a cluster or the whole
//! appliance restarts with their data and representation unchanged, and
//! deleted with their capacity returned. Hosts reach a volume over NVMe/TCP
//! only through a Connection. Bad requests are refused with Base registry
//! messages and change nothing.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use shoal_tests::nbd_client;
use shoal_tests::nvme_initiator::Initiator;
use shoal_tests::redfish_client::{RedfishClient, message_key};
use shoal_tests::{Appliance, STARTUP_TIMEOUT};

const VOLUMES: &str = "/redfish/v1/Storage/appliance/Volumes";
const POOL: &str = "/redfish/v1/Storage/appliance/StoragePools/default";
const ENDPOINTS: &str = "/redfish/v1/Fabrics/NVMeoF/Endpoints";
const CONNECTIONS: &str = "/redfish/v1/Fabrics/NVMeoF/Connections";
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:6c2e5d1a-0f4b-4f7e-9a51-3c1d2b7e8f90";
const OTHER_HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-1111-2222-3333-444444444444";

/// An appliance of `clusters` data clusters with `drive_mib` drives.
fn start(clusters: u32, drive_mib: i64) -> Appliance {
    let appliance = Appliance::builder(clusters)
        .set("memory.region_mib", 64)
        .set("dataplane.drive_size_mib", drive_mib)
        .start();
    appliance.wait_for("all children running", STARTUP_TIMEOUT, |s| {
        s["state"] == "running"
    });
    appliance
}

fn rpc(appliance: &Appliance, cluster: u32, method: &str, params: Value) -> Value {
    appliance
        .dataplane_rpc(cluster, method, Some(params))
        .unwrap_or_else(|e| panic!("{method} on cluster {cluster}: {e}"))
}

/// The service's bdev names on `cluster`.
fn volume_bdevs(appliance: &Appliance, cluster: u32) -> BTreeSet<String> {
    rpc(appliance, cluster, "bdev_get_bdevs", json!({}))
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["name"].as_str())
        .filter(|n| n.starts_with("volume"))
        .map(str::to_string)
        .collect()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed))
        .collect()
}

/// Waits until GET `path` satisfies `done`.
fn wait_for_resource(
    r: &RedfishClient,
    path: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let (status, body) = r.get(path);
        if status == StatusCode::OK && done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A volume's body without what changes on its own (ETag, health).
fn stable(mut volume: Value) -> Value {
    let map = volume.as_object_mut().unwrap();
    map.remove("@odata.etag");
    map.remove("Status");
    volume
}

#[test]
fn a_striped_volume_is_served_everywhere_and_survives_restarts() {
    let mut appliance = start(4, 300);
    let r = RedfishClient::new(&appliance);

    // The pool spans the four drives: 299 usable MiB each.
    let pool = r.get_ok(POOL);
    assert_eq!(pool["Capacity"]["Data"]["AllocatedBytes"], 4 * 299 * MIB);
    assert_eq!(pool["Capacity"]["Data"]["ConsumedBytes"], 0);

    let (status, created) = r.post(
        VOLUMES,
        &json!({"Name": "vol-a", "CapacityBytes": GIB, "RAIDType": "RAID0"}),
    );
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let uri = created["@odata.id"].as_str().unwrap().to_string();
    assert_eq!(created["CapacityBytes"], GIB);
    assert_eq!(created["Links"]["Drives"].as_array().unwrap().len(), 4);
    let nsid = u32::from_str_radix(
        created["NVMeNamespaceProperties"]["NamespaceId"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap();
    let id = created["Id"].as_str().unwrap().to_string();
    let bdev = format!("volume{id}");

    // Striped over all four clusters: every cluster has the same raid0 of
    // four legs, its own leg a part of its drive.
    for cluster in 0..4 {
        let raids = rpc(
            &appliance,
            cluster,
            "bdev_raid_get_bdevs",
            json!({"category": "online"}),
        );
        let raid = raids
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == bdev.as_str())
            .unwrap_or_else(|| panic!("no {bdev} on cluster {cluster}: {raids}"));
        assert_eq!(raid["raid_level"], "raid0");
        let legs: Vec<&str> = raid["base_bdevs_list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            legs,
            (0..4).map(|k| format!("{bdev}-leg{k}")).collect::<Vec<_>>()
        );
        let own = rpc(
            &appliance,
            cluster,
            "bdev_get_bdevs",
            json!({"name": format!("{bdev}-leg{cluster}")}),
        );
        assert_eq!(
            own[0]["driver_specific"]["part"]["base_bdev"],
            format!("drive{cluster}")
        );
        assert_eq!(own[0]["num_blocks"], 256 * MIB / 512);
        let top = rpc(&appliance, cluster, "bdev_get_bdevs", json!({"name": bdev}));
        assert_eq!(top[0]["num_blocks"], GIB / 512);
    }
    let pool = r.get_ok(POOL);
    assert_eq!(pool["Capacity"]["Data"]["ConsumedBytes"], GIB);

    // Written through cluster 0's NBD export, read through cluster 3's.
    let near = pattern(MIB as usize, 1);
    let far = pattern(4 * MIB as usize, 2);
    let mut writer = nbd_client::connect(appliance.nbd_port(0), &bdev);
    assert_eq!(nbd_client::write(&mut writer, 1, 0, &near), 0);
    assert_eq!(nbd_client::write(&mut writer, 2, 700 * MIB, &far), 0);
    let mut reader = nbd_client::connect(appliance.nbd_port(3), &bdev);
    assert!(nbd_client::read(&mut reader, 3, 0, MIB as u32).unwrap() == near);
    assert!(nbd_client::read(&mut reader, 4, 700 * MIB, 4 * MIB as u32).unwrap() == far);
    // A freshly created volume reads zeroes where nothing was written.
    assert!(
        nbd_client::read(&mut reader, 5, 100 * MIB, 64 * 1024)
            .unwrap()
            .iter()
            .all(|b| *b == 0)
    );
    drop((writer, reader));

    let volume = wait_for_resource(&r, &uri, "the volume served everywhere", |v| {
        v["Status"]["Health"] == "OK"
    });
    let before = stable(volume);

    // A data cluster dies: the reconciler rebuilds its share, and the
    // volume reads back through it.
    let victim = appliance.cluster(2);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim["pid"].as_i64().unwrap() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let restarts = victim["restarts"].as_u64().unwrap();
    appliance.wait_for("cluster 2 restarted", STARTUP_TIMEOUT, |s| {
        s["clusters"][2]["state"] == "running"
            && s["clusters"][2]["restarts"].as_u64() > Some(restarts)
    });
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while !volume_bdevs(&appliance, 2).contains(&bdev)
        || rpc(&appliance, 2, "nbd_get_disks", json!({}))
            .as_array()
            .unwrap()
            .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "cluster 2 did not get {bdev} back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut reader = nbd_client::connect(appliance.nbd_port(2), &bdev);
    assert!(nbd_client::read(&mut reader, 6, 700 * MIB, 4 * MIB as u32).unwrap() == far);
    drop(reader);

    // The whole appliance restarts: same volume, same data, same blocks.
    appliance.restart();
    let after = wait_for_resource(&r, &uri, "the volume after the restart", |v| {
        v["Status"]["Health"] == "OK"
    });
    assert_eq!(stable(after), before);
    let mut reader = nbd_client::connect(appliance.nbd_port(1), &bdev);
    assert!(nbd_client::read(&mut reader, 7, 0, MIB as u32).unwrap() == near);
    assert!(nbd_client::read(&mut reader, 8, 700 * MIB, 4 * MIB as u32).unwrap() == far);
    drop(reader);
    let _ = nsid;

    // Deleted: nothing of it stays on any cluster, the pool has it back.
    let (status, body) = r.delete(&uri);
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(r.get(&uri).0, StatusCode::NOT_FOUND);
    for cluster in 0..4 {
        assert!(
            volume_bdevs(&appliance, cluster).is_empty(),
            "cluster {cluster}"
        );
        assert!(
            rpc(&appliance, cluster, "nbd_get_disks", json!({}))
                .as_array()
                .unwrap()
                .is_empty()
        );
    }
    let pool = r.get_ok(POOL);
    assert_eq!(pool["Capacity"]["Data"]["ConsumedBytes"], 0);
}

#[test]
fn bad_volume_requests_are_refused_and_change_nothing() {
    let appliance = start(2, 300);
    let r = RedfishClient::new(&appliance);
    let (status, first) = r.post(
        VOLUMES,
        &json!({"Name": "taken", "CapacityBytes": 64 * MIB}),
    );
    assert_eq!(status, StatusCode::CREATED, "{first}");

    let cases = [
        (
            json!({"CapacityBytes": 0}),
            StatusCode::BAD_REQUEST,
            "PropertyValueOutOfRange",
        ),
        (
            json!({"CapacityBytes": 10 * GIB}),
            StatusCode::BAD_REQUEST,
            "InsufficientStorage",
        ),
        (
            json!({"CapacityBytes": "1GiB"}),
            StatusCode::BAD_REQUEST,
            "PropertyValueTypeError",
        ),
        (
            json!({"Name": "x"}),
            StatusCode::BAD_REQUEST,
            "CreateFailedMissingReqProperties",
        ),
        (
            json!({"CapacityBytes": MIB, "RAIDType": "RAID50"}),
            StatusCode::BAD_REQUEST,
            "PropertyValueNotInList",
        ),
        // Supported, but two data clusters cannot hold a leg each of
        // RAID5 (3 to 33) or RAID6 (4 to 34).
        (
            json!({"CapacityBytes": MIB, "RAIDType": "RAID5"}),
            StatusCode::BAD_REQUEST,
            "PropertyValueIncorrect",
        ),
        (
            json!({"CapacityBytes": MIB, "RAIDType": "RAID6"}),
            StatusCode::BAD_REQUEST,
            "PropertyValueIncorrect",
        ),
        (
            json!({"CapacityBytes": MIB, "Name": "taken"}),
            StatusCode::CONFLICT,
            "ResourceAlreadyExists",
        ),
        (
            json!({"CapacityBytes": MIB, "Links": {"Drives": [{"@odata.id": "/redfish/v1/Systems/other/Storage/1/Drives/0"}]}}),
            StatusCode::BAD_REQUEST,
            "PropertyValueIncorrect",
        ),
        (
            json!({"CapacityBytes": MIB, "Links": {"Drives": [{"@odata.id": "/redfish/v1/Chassis/appliance/Drives/drive2"}]}}),
            StatusCode::BAD_REQUEST,
            "PropertyValueIncorrect",
        ),
        (
            json!({"CapacityBytes": MIB, "StripSizeBytes": 3000}),
            StatusCode::BAD_REQUEST,
            "PropertyValueIncorrect",
        ),
    ];
    for (request, status, key) in cases {
        let (got, body) = r.post(VOLUMES, &request);
        assert_eq!(
            (got, message_key(&body).as_str()),
            (status, key),
            "{request}: {body}"
        );
    }
    let (status, body) = r
        .client
        .post(r.url(VOLUMES))
        .basic_auth("admin", Some(&r.password))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .map(|resp| (resp.status(), resp.json::<Value>().unwrap()))
        .unwrap();
    assert_eq!(
        (status, message_key(&body).as_str()),
        (StatusCode::BAD_REQUEST, "MalformedJSON")
    );
    let collection = r.get_ok(VOLUMES);
    assert_eq!(
        collection["Members@odata.count"], 1,
        "only the first volume exists"
    );

    // Links.Drives picks the drives: one leg, on drive1 only.
    let (status, single) = r.post(
        VOLUMES,
        &json!({"CapacityBytes": 8 * MIB, "Links": {"Drives": [{"@odata.id": "/redfish/v1/Chassis/appliance/Drives/drive1"}]}}),
    );
    assert_eq!(status, StatusCode::CREATED, "{single}");
    assert_eq!(single["MediaSpanCount"], 1);
    assert_eq!(
        single["Links"]["Drives"],
        json!([{"@odata.id": "/redfish/v1/Chassis/appliance/Drives/drive1"}])
    );
    let (status, _) = r.delete(single["@odata.id"].as_str().unwrap());
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Renaming: to a free name works, to a taken one does not.
    let uri = first["@odata.id"].as_str().unwrap();
    let (status, renamed) = r.patch(
        uri,
        &json!({"Name": "renamed", "DisplayName": "Renamed volume"}),
    );
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(renamed["Name"], "renamed");
    let (_, other) = r.post(VOLUMES, &json!({"Name": "other", "CapacityBytes": MIB}));
    let (status, body) = r.patch(
        other["@odata.id"].as_str().unwrap(),
        &json!({"Name": "renamed"}),
    );
    assert_eq!(
        (status, message_key(&body).as_str()),
        (StatusCode::CONFLICT, "ResourceAlreadyExists")
    );
    let (status, body) = r.patch(uri, &json!({"Id": "7"}));
    assert_eq!(
        (status, message_key(&body).as_str()),
        (StatusCode::BAD_REQUEST, "PropertyNotWritable")
    );
    r.delete(other["@odata.id"].as_str().unwrap());
    r.delete(uri);

    // Concurrent creates of 128 MiB volumes (64 MiB per drive): each
    // 300 MiB drive holds four, so exactly four of eight succeed.
    let results: Vec<StatusCode> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let r = &r;
                scope.spawn(move || {
                    r.post(
                        VOLUMES,
                        &json!({"Name": format!("c{i}"), "CapacityBytes": 128 * MIB}),
                    )
                    .0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created = results
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let refused = results
        .iter()
        .filter(|s| **s == StatusCode::BAD_REQUEST)
        .count();
    assert_eq!((created, refused), (4, 4), "{results:?}");
    let pool = r.get_ok(POOL);
    assert_eq!(pool["Capacity"]["Data"]["ConsumedBytes"], 4 * 128 * MIB);
    // Every leg lies on its own blocks.
    for cluster in 0..2 {
        let mut ranges: Vec<(u64, u64)> = rpc(&appliance, cluster, "bdev_get_bdevs", json!({}))
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| {
                let part = &b["driver_specific"]["part"];
                Some((
                    part["offset_blocks"].as_u64()?,
                    part["num_blocks"].as_u64()?,
                ))
            })
            .collect();
        ranges.sort_unstable();
        assert_eq!(ranges.len(), 4);
        for pair in ranges.windows(2) {
            assert!(pair[0].0 + pair[0].1 <= pair[1].0, "{ranges:?}");
        }
    }
}

/// The storage's subsystem NQN, as Redfish reports it.
fn subsystem_nqn(r: &RedfishClient) -> String {
    let storage = r.get_ok("/redfish/v1/Storage/appliance");
    storage["Identifiers"][0]["DurableName"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn hosts_reach_volumes_over_nvme_only_through_connections() {
    let appliance = start(2, 128);
    let r = RedfishClient::new(&appliance);
    let nqn = subsystem_nqn(&r);
    let (status, volume) = r.post(
        VOLUMES,
        &json!({"Name": "shared", "CapacityBytes": 64 * MIB}),
    );
    assert_eq!(status, StatusCode::CREATED, "{volume}");
    let volume_uri = volume["@odata.id"].as_str().unwrap().to_string();
    let nsid = 1;

    // Nobody is allowed yet.
    let mut host = Initiator::connect(appliance.nvmf_address(0), false, false).unwrap();
    let cqe = host.fabric_connect(0, 31, 0xffff, &nqn, HOST, 0).unwrap();
    assert_eq!(cqe.status(), (1, 0x84), "Connect Invalid Host");

    // Bad endpoints.
    for (request, status, key) in [
        (
            json!({"Identifiers": [{"DurableNameFormat": "NQN", "DurableName": "host-7"}]}),
            StatusCode::BAD_REQUEST,
            "PropertyValueIncorrect",
        ),
        (
            json!({"Identifiers": [{"DurableNameFormat": "iQN", "DurableName": HOST}]}),
            StatusCode::BAD_REQUEST,
            "PropertyValueNotInList",
        ),
        (
            json!({"Name": "no identifiers"}),
            StatusCode::BAD_REQUEST,
            "CreateFailedMissingReqProperties",
        ),
        (
            json!({"Identifiers": [{"DurableNameFormat": "NQN", "DurableName": nqn}]}),
            StatusCode::BAD_REQUEST,
            "PropertyValueIncorrect",
        ),
    ] {
        let (got, body) = r.post(ENDPOINTS, &request);
        assert_eq!(
            (got, message_key(&body).as_str()),
            (status, key),
            "{request}: {body}"
        );
    }
    let (status, endpoint) = r.post(
        ENDPOINTS,
        &json!({"Name": "host one", "Identifiers": [{"DurableNameFormat": "NQN", "DurableName": HOST}]}),
    );
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    let endpoint_uri = endpoint["@odata.id"].as_str().unwrap().to_string();
    let (status, body) = r.post(
        ENDPOINTS,
        &json!({"Identifiers": [{"DurableNameFormat": "NQN", "DurableName": HOST}]}),
    );
    assert_eq!(
        (status, message_key(&body).as_str()),
        (StatusCode::CONFLICT, "ResourceAlreadyExists")
    );

    // Bad connections.
    let volume_info =
        json!([{"Volume": {"@odata.id": volume_uri}, "AccessCapabilities": ["Read", "Write"]}]);
    let initiators = json!({"InitiatorEndpoints": [{"@odata.id": endpoint_uri}]});
    for (request, key) in [
        (
            json!({"VolumeInfo": [{"Volume": {"@odata.id": format!("{VOLUMES}/99")}}], "Links": initiators}),
            "ResourceNotFound",
        ),
        (
            json!({"VolumeInfo": [{"Volume": {"@odata.id": volume_uri}, "AccessCapabilities": ["Read"]}], "Links": initiators}),
            "PropertyValueNotInList",
        ),
        (
            json!({"VolumeInfo": volume_info, "Links": {"InitiatorEndpoints": [{"@odata.id": format!("{ENDPOINTS}/target0")}]}}),
            "PropertyValueIncorrect",
        ),
        (
            json!({"VolumeInfo": volume_info, "Links": {"InitiatorEndpoints": [{"@odata.id": endpoint_uri}], "TargetEndpoints": [{"@odata.id": format!("{ENDPOINTS}/target0")}]}}),
            "PropertyValueIncorrect",
        ),
        (
            json!({"VolumeInfo": volume_info}),
            "CreateFailedMissingReqProperties",
        ),
        (
            json!({"VolumeInfo": [], "Links": initiators}),
            "ArraySizeTooShort",
        ),
    ] {
        let (got, body) = r.post(CONNECTIONS, &request);
        assert!(got.is_client_error(), "{request}: {got} {body}");
        assert_eq!(message_key(&body), key, "{request}: {body}");
    }

    let (status, connection) = r.post(
        CONNECTIONS,
        &json!({"Name": "host one to shared", "VolumeInfo": volume_info, "Links": initiators}),
    );
    assert_eq!(status, StatusCode::CREATED, "{connection}");
    let connection_uri = connection["@odata.id"].as_str().unwrap().to_string();

    // The allowed host sees the namespace through both portals, writes
    // through one, and the other cluster's NBD export reads it back.
    let data = pattern(64 * 1024, 9);
    for cluster in 0..2 {
        let portal = appliance.nvmf_address(cluster);
        let mut admin = Initiator::connect(portal, false, false).unwrap();
        let cntlid = admin.start_admin(&nqn, HOST, 0).unwrap();
        let (cqe, list) = admin.identify(2, 0).unwrap();
        assert!(cqe.ok());
        assert_eq!(u32::from_le_bytes(list[0..4].try_into().unwrap()), nsid);
        assert_eq!(u32::from_le_bytes(list[4..8].try_into().unwrap()), 0);
        let mut io = Initiator::connect(portal, false, false).unwrap();
        assert!(
            io.fabric_connect(1, 31, cntlid, &nqn, HOST, 0)
                .unwrap()
                .ok()
        );
        if cluster == 0 {
            assert!(io.write(nsid, 2048, &data, 512, false).unwrap().ok());
        } else {
            let (cqe, read) = io.read(nsid, 2048, 128, 512).unwrap();
            assert!(cqe.ok() && read == data, "read through cluster 1");
        }
    }
    let mut nbd = nbd_client::connect(appliance.nbd_port(1), "volume1");
    assert!(nbd_client::read(&mut nbd, 1, 2048 * 512, 64 * 1024).unwrap() == data);
    drop(nbd);

    // Another host is still refused.
    let mut stranger = Initiator::connect(appliance.nvmf_address(1), false, false).unwrap();
    assert_eq!(
        stranger
            .fabric_connect(0, 31, 0xffff, &nqn, OTHER_HOST, 0)
            .unwrap()
            .status(),
        (1, 0x84)
    );

    // Redfish shows who reaches what.
    let volume = r.get_ok(&volume_uri);
    assert_eq!(
        volume["Links"]["ClientEndpoints"],
        json!([{"@odata.id": endpoint_uri}])
    );
    assert_eq!(
        volume["Links"]["ServerEndpoints"].as_array().unwrap().len(),
        2
    );
    let target = r.get_ok(&format!("{ENDPOINTS}/target1"));
    assert_eq!(
        target["IPTransportDetails"][0]["Port"],
        appliance.nvmf_address(1).port()
    );
    assert_eq!(target["Identifiers"][0]["DurableName"], nqn.as_str());

    // In use: neither the volume nor the endpoint can go.
    let (status, body) = r.delete(&volume_uri);
    assert_eq!(
        (status, message_key(&body).as_str()),
        (StatusCode::CONFLICT, "ResourceInUse")
    );
    let (status, body) = r.delete(&endpoint_uri);
    assert_eq!(
        (status, message_key(&body).as_str()),
        (StatusCode::CONFLICT, "ResourceInUse")
    );

    // Revoked: the host is refused again.
    let (status, _) = r.delete(&connection_uri);
    assert_eq!(status, StatusCode::NO_CONTENT);
    let mut again = Initiator::connect(appliance.nvmf_address(0), false, false).unwrap();
    assert_eq!(
        again
            .fabric_connect(0, 31, 0xffff, &nqn, HOST, 0)
            .unwrap()
            .status(),
        (1, 0x84)
    );
    assert_eq!(r.delete(&endpoint_uri).0, StatusCode::NO_CONTENT);
    assert_eq!(r.delete(&volume_uri).0, StatusCode::NO_CONTENT);
}

/// Follows a task monitor until the task ends; returns the final status,
/// `Location` and body.
fn wait_for_task(r: &RedfishClient, monitor: &str) -> (StatusCode, Option<String>, Value) {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let response = r
            .client
            .get(r.url(monitor))
            .basic_auth("admin", Some(&r.password))
            .send()
            .unwrap();
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        let body: Value = response.json().unwrap();
        if status != StatusCode::ACCEPTED {
            return (status, location, body);
        }
        assert_eq!(
            location.as_deref(),
            Some(monitor),
            "a running task points at its monitor"
        );
        assert_eq!(body["TaskState"], "Running", "{body}");
        assert!(Instant::now() < deadline, "the task did not end: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// POST answered with 202: the task monitor from `Location`.
fn accepted(r: &RedfishClient, path: &str, body: &Value) -> String {
    let response = r
        .client
        .post(r.url(path))
        .basic_auth("admin", Some(&r.password))
        .json(body)
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let monitor = response.headers()["location"].to_str().unwrap().to_string();
    let task: Value = response.json().unwrap();
    assert_eq!(task["TaskMonitor"], monitor.as_str());
    assert!(
        task["@odata.id"]
            .as_str()
            .unwrap()
            .starts_with("/redfish/v1/TaskService/Tasks/")
    );
    monitor
}

#[test]
fn initialisation_runs_as_a_task_and_zeroes_the_volume() {
    let appliance = start(2, 300);
    let r = RedfishClient::new(&appliance);

    // A creation that asks for foreground initialisation is a task whose
    // monitor ends with the creation's 201.
    let monitor = accepted(
        &r,
        VOLUMES,
        &json!({"Name": "tasked", "CapacityBytes": 256 * MIB, "InitializeMethod": "Foreground"}),
    );
    let (status, location, volume) = wait_for_task(&r, &monitor);
    assert_eq!(status, StatusCode::CREATED, "{volume}");
    let uri = volume["@odata.id"].as_str().unwrap().to_string();
    assert_eq!(location.as_deref(), Some(uri.as_str()));
    assert_eq!(r.get_ok(&uri)["Name"], "tasked");
    let (status, body) = r.post(
        VOLUMES,
        &json!({"CapacityBytes": MIB, "InitializeMethod": "Skip"}),
    );
    assert_eq!(
        (status, message_key(&body).as_str()),
        (StatusCode::BAD_REQUEST, "PropertyValueNotInList")
    );

    // Data written, then Volume.Initialize: zeroes everywhere.
    let bdev = format!("volume{}", volume["Id"].as_str().unwrap());
    let mut nbd = nbd_client::connect(appliance.nbd_port(0), &bdev);
    let data = pattern(MIB as usize, 4);
    for offset in [0, 100 * MIB, 255 * MIB] {
        assert_eq!(nbd_client::write(&mut nbd, offset, offset, &data), 0);
    }
    let action = format!("{uri}/Actions/Volume.Initialize");
    let (status, body) = r.post(&action, &json!({"InitializeType": "Instant"}));
    assert_eq!(
        (status, message_key(&body).as_str()),
        (StatusCode::BAD_REQUEST, "ActionParameterValueNotInList")
    );
    let (status, body) = r.post(&action, &json!({"Colour": "red"}));
    assert_eq!(
        (status, message_key(&body).as_str()),
        (StatusCode::BAD_REQUEST, "ActionParameterUnknown")
    );
    let monitor = accepted(&r, &action, &json!({"InitializeType": "Slow"}));
    let (status, _, after) = wait_for_task(&r, &monitor);
    assert_eq!(status, StatusCode::OK, "{after}");
    for offset in [0, 100 * MIB, 255 * MIB] {
        let read = nbd_client::read(&mut nbd, 1, offset, MIB as u32).unwrap();
        assert!(read.iter().all(|b| *b == 0), "not zero at {offset}");
    }
    drop(nbd);

    // The tasks are listed, finished, with their messages.
    let tasks = r.get_ok("/redfish/v1/TaskService/Tasks");
    assert_eq!(tasks["Members@odata.count"], 2);
    let task = r.get_ok(tasks["Members"][1]["@odata.id"].as_str().unwrap());
    assert_eq!(task["TaskState"], "Completed");
    assert_eq!(task["PercentComplete"], 100);
    let ids: Vec<&str> = task["Messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["MessageId"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["TaskEvent.1.0.TaskStarted", "TaskEvent.1.0.TaskCompletedOK"]
    );
    assert_eq!(task["Payload"]["TargetUri"], action.as_str());
    let service = r.get_ok("/redfish/v1/TaskService");
    assert_eq!(
        service["Tasks"]["@odata.id"],
        "/redfish/v1/TaskService/Tasks"
    );
}

/// Identify Namespace's NSZE (blocks) for `nsid`, as the host reads it.
fn namespace_size(admin: &mut Initiator, nsid: u32) -> u64 {
    let (cqe, data) = admin.identify(0, nsid).unwrap();
    assert!(cqe.ok(), "{cqe:?}");
    u64::from_le_bytes(data[0..8].try_into().unwrap())
}

#[test]
fn a_volume_grows_online_into_the_space_after_its_legs() {
    let appliance = start(2, 300);
    let r = RedfishClient::new(&appliance);
    let nqn = subsystem_nqn(&r);
    let (_, a) = r.post(
        VOLUMES,
        &json!({"Name": "grows", "CapacityBytes": 64 * MIB}),
    );
    let (_, b) = r.post(
        VOLUMES,
        &json!({"Name": "neighbour", "CapacityBytes": 64 * MIB}),
    );
    let a_uri = a["@odata.id"].as_str().unwrap().to_string();
    let (_, endpoint) = r.post(
        ENDPOINTS,
        &json!({"Identifiers": [{"DurableNameFormat": "NQN", "DurableName": HOST}]}),
    );
    let (status, _) = r.post(
        CONNECTIONS,
        &json!({"VolumeInfo": [{"Volume": {"@odata.id": a_uri}}],
                "Links": {"InitiatorEndpoints": [{"@odata.id": endpoint["@odata.id"]}]}}),
    );
    assert_eq!(status, StatusCode::CREATED);

    // A host is connected and has written data when the volume grows.
    let mut admin = Initiator::connect(appliance.nvmf_address(1), false, false).unwrap();
    let cntlid = admin.start_admin(&nqn, HOST, 0).unwrap();
    assert_eq!(namespace_size(&mut admin, 1), 64 * MIB / 512);
    let mut io = Initiator::connect(appliance.nvmf_address(1), false, false).unwrap();
    assert!(
        io.fabric_connect(1, 31, cntlid, &nqn, HOST, 0)
            .unwrap()
            .ok()
    );
    let data = pattern(64 * 1024, 5);
    assert!(io.write(1, 1000, &data, 512, false).unwrap().ok());

    // Its neighbour takes the blocks right after it: no room to grow.
    let (status, body) = r.patch(&a_uri, &json!({"CapacityBytes": 128 * MIB}));
    assert_eq!(
        (status, message_key(&body).as_str()),
        (StatusCode::BAD_REQUEST, "InsufficientStorage"),
        "{body}"
    );
    let (status, body) = r.patch(&a_uri, &json!({"CapacityBytes": 32 * MIB}));
    assert_eq!(
        (status, message_key(&body).as_str()),
        (StatusCode::BAD_REQUEST, "PropertyValueIncorrect"),
        "{body}"
    );
    assert_eq!(
        r.get_ok(&a_uri)["CapacityBytes"],
        64 * MIB,
        "refusals change nothing"
    );

    // With the neighbour gone it grows, while the host stays connected.
    assert_eq!(
        r.delete(b["@odata.id"].as_str().unwrap()).0,
        StatusCode::NO_CONTENT
    );
    let (status, grown) = r.patch(&a_uri, &json!({"CapacityBytes": 128 * MIB}));
    assert_eq!(status, StatusCode::OK, "{grown}");
    assert_eq!(grown["CapacityBytes"], 128 * MIB);
    for cluster in 0..2 {
        let top = rpc(
            &appliance,
            cluster,
            "bdev_get_bdevs",
            json!({"name": "volume1"}),
        );
        assert_eq!(top[0]["num_blocks"], 128 * MIB / 512, "cluster {cluster}");
    }
    assert_eq!(
        namespace_size(&mut admin, 1),
        128 * MIB / 512,
        "the host sees the new size"
    );
    let (cqe, read) = io.read(1, 1000, 128, 512).unwrap();
    assert!(cqe.ok() && read == data, "data written before the growth");
    let beyond = 100 * MIB / 512;
    let (cqe, read) = io.read(1, beyond, 128, 512).unwrap();
    assert!(
        cqe.ok() && read.iter().all(|b| *b == 0),
        "the new blocks read zeroes"
    );
    assert!(io.write(1, beyond, &data, 512, false).unwrap().ok());
    // NBD clients that connect now see the new size.
    let mut nbd = nbd_client::connect(appliance.nbd_port(0), "volume1");
    assert!(nbd_client::read(&mut nbd, 1, beyond * 512, 64 * 1024).unwrap() == data);
    let pool = r.get_ok(POOL);
    assert_eq!(pool["Capacity"]["Data"]["ConsumedBytes"], 128 * MIB);
}

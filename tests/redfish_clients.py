#!/usr/bin/env python3
"""Real Redfish clients against a running appliance: redfishtool (raw GET,
POST and DELETE), the DMTF python `redfish` library (session login, create
and delete a volume) and OpenStack's `sushy` (Storage and Volumes from the
system, VolumeCollection.create, Volume.delete). Prints one line per check
and `N passed, N failed`; exits non-zero on any failure.

    tests/redfish_clients.py https://127.0.0.1:8443 admin PASSWORD
"""

import json
import subprocess
import sys
import traceback
import warnings

import redfish
import sushy
from sushy import auth as sushy_auth

BASE, USER, PASSWORD = sys.argv[1], sys.argv[2], sys.argv[3]
HOSTPORT = BASE.split("://", 1)[1]
STORAGE = "/redfish/v1/Storage/appliance"
VOLUMES = STORAGE + "/Volumes"
MIB = 1 << 20

warnings.filterwarnings("ignore")
results = []


def check(name, function):
    try:
        detail = function()
        results.append(True)
        print(f"PASS {name}: {detail}")
    except Exception:  # a failed check, reported with its traceback
        results.append(False)
        print(f"FAIL {name}")
        traceback.print_exc(file=sys.stdout)


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def redfishtool(*args, data=None):
    command = ["redfishtool", "-r", HOSTPORT, "-u", USER, "-p", PASSWORD, "-S", "Always", *args]
    if data is not None:
        command += ["-d", json.dumps(data)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    expect(done.returncode == 0, f"{' '.join(args)}: rc {done.returncode}: {done.stderr.strip()}")
    return json.loads(done.stdout) if done.stdout.strip() else None


def redfishtool_checks():
    storage = redfishtool("raw", "GET", STORAGE)
    expect(storage["Identifiers"][0]["DurableNameFormat"] == "NQN", storage)
    created = redfishtool("raw", "POST", VOLUMES, data={"Name": "by-redfishtool", "CapacityBytes": 8 * MIB})
    expect(created["Name"] == "by-redfishtool" and created["CapacityBytes"] >= 8 * MIB, created)
    fetched = redfishtool("-A", "Session", "raw", "GET", created["@odata.id"])
    expect(fetched["Id"] == created["Id"], fetched)
    redfishtool("raw", "DELETE", created["@odata.id"])
    gone = subprocess.run(["redfishtool", "-r", HOSTPORT, "-u", USER, "-p", PASSWORD, "-S", "Always",
                           "raw", "GET", created["@odata.id"]], capture_output=True, text=True, timeout=60)
    expect(gone.returncode == 5, f"GET of a deleted volume: rc {gone.returncode}")
    return f"raw GET/POST/DELETE of {created['@odata.id']}"


def python_redfish_checks():
    client = redfish.redfish_client(base_url=BASE, username=USER, password=PASSWORD)
    client.login(auth="session")
    try:
        response = client.post(VOLUMES, body={"Name": "by-python-redfish", "CapacityBytes": 16 * MIB,
                                              "RAIDType": "RAID0"})
        expect(response.status == 201, f"POST: {response.status} {response.text}")
        location = response.getheader("Location")
        volume = client.get(location)
        expect(volume.status == 200 and volume.dict["RAIDType"] == "RAID0", volume.text)
        bad = client.post(VOLUMES, body={"CapacityBytes": 0})
        expect(bad.status == 400, f"capacity 0: {bad.status}")
        key = bad.dict["error"]["@Message.ExtendedInfo"][0]["MessageId"]
        expect(key.endswith("PropertyValueOutOfRange"), key)
        deleted = client.delete(location)
        expect(deleted.status == 204, f"DELETE: {deleted.status}")
        expect(client.get(location).status == 404, "still there")
    finally:
        client.logout()
    return f"session login, create {location} (201), refuse capacity 0 (400), delete (204)"


def sushy_checks():
    root = sushy.Sushy(BASE + "/redfish/v1", verify=False,
                       auth=sushy_auth.SessionAuth(username=USER, password=PASSWORD))
    system = root.get_system("/redfish/v1/Systems/appliance")
    storages = system.storage.get_members()
    expect(len(storages) == 1, f"{len(storages)} storages")
    storage = storages[0]
    expect(storage.identity == "appliance", storage.identity)
    expect(len(storage.drives) >= 1, "no drives")
    controllers = storage.controllers.get_members()
    expect(len(controllers) >= 1 and controllers[0].name, "no controllers")
    volumes = storage.volumes
    # get_members() is cached by sushy; the identities follow refresh().
    before = len(volumes.members_identities)
    volume = volumes.create({"Name": "by-sushy", "CapacityBytes": 32 * MIB})
    expect(volume is not None and volume.capacity_bytes >= 32 * MIB, f"created {volume}")
    expect(volume.raid_type == sushy.RAIDType.RAID0, volume.raid_type)
    volumes.refresh()
    expect(len(volumes.members_identities) == before + 1, "not listed")
    volume.delete()
    volumes.refresh()
    expect(len(volumes.members_identities) == before, "not deleted")
    return f"{storage.identity}: {len(storage.drives)} drives, {len(controllers)} controllers; created and deleted {volume.identity}"


check("redfishtool", redfishtool_checks)
check("python redfish", python_redfish_checks)
check("sushy", sushy_checks)
passed = sum(results)
print(f"{passed} passed, {len(results) - passed} failed")
sys.exit(0 if all(results) else 1)

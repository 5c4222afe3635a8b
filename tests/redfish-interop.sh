#!/usr/bin/env bash
# Redfish interoperability against a running appliance, inside a private
# network namespace (the protocol validator sends SSDP multicast, which
# must never reach a real network):
#   - the DMTF Redfish Service Validator and Protocol Validator, with the
#     storage tree populated (a volume, an initiator endpoint, a connection);
#   - real clients: redfishtool, the DMTF python `redfish` library and
#     OpenStack's `sushy` (tests/redfish_clients.py).
# Fails unless both validators report 0 failures and every client check
# passes.
#
#   tests/redfish-interop.sh          (.ci/run calls it)
#
# Needs python3 with venv, iproute2 and unshare; installs the validators
# and clients (pinned) into target/redfish-interop-venv; uses the debug
# binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if [ "${1:-}" = "--inside" ]; then
    work=$2
    ip link set lo up
    SHOAL_ADMIN_PASSWORD=validator-pass-1 RUST_LOG=warn \
        "$root/target/debug/shoald" --config "$work/appliance.toml" 2>"$work/shoald.log" &
    shoald=$!
    trap 'kill $shoald 2>/dev/null; wait $shoald 2>/dev/null || true' EXIT
    cert="$work/state/management/tls/cert.pem"
    for _ in $(seq 300); do
        [ -s "$cert" ] && python3 - <<'PY' 2>/dev/null && break
import socket; socket.create_connection(("127.0.0.1", 8443), 1)
PY
        sleep 0.1
    done
    # Populate the storage tree so the validator checks every kind of
    # storage resource: volumes, a thin pool, replicas, an initiator
    # endpoint, a connection.
    python3 - <<'PY' || { tail -50 "$work/shoald.log"; exit 1; }
import base64, json, ssl, time, urllib.error, urllib.request
context = ssl._create_unverified_context()
auth = base64.b64encode(b"admin:validator-pass-1").decode()
def post(path, body):
    # The service answers before every data cluster runs; a storage change
    # then gets 503 (ServiceTemporarilyUnavailable): try again, as a
    # client should, for up to 60 s.
    deadline = time.monotonic() + 60
    while True:
        request = urllib.request.Request("https://127.0.0.1:8443" + path, json.dumps(body).encode(),
            {"Content-Type": "application/json", "Authorization": "Basic " + auth})
        try:
            with urllib.request.urlopen(request, context=context) as response:
                assert response.status == 201, response.status
                return json.load(response)["@odata.id"]
        except urllib.error.HTTPError as error:
            if error.code != 503 or time.monotonic() > deadline:
                raise
            retry_after = error.headers.get("Retry-After", "")
            time.sleep(min(int(retry_after), 5) if retry_after.isdigit() else 0.5)
volume = post("/redfish/v1/Storage/appliance/Volumes", {"Name": "validator", "CapacityBytes": 64 << 20})
host = post("/redfish/v1/Fabrics/NVMeoF/Endpoints", {"Name": "validator host", "Identifiers": [
    {"DurableNameFormat": "NQN", "DurableName": "nqn.2014-08.org.nvmexpress:uuid:0b7a6f2e-7a0c-4d35-9b77-3f3c1f0e9d21"}]})
post("/redfish/v1/Fabrics/NVMeoF/Connections", {"VolumeInfo": [{"Volume": {"@odata.id": volume}}],
    "Links": {"InitiatorEndpoints": [{"@odata.id": host}]}})
# A thin pool on a RAID1 volume, a thin volume in it, a snapshot of that
# and a clone of the snapshot: the pool and replica resources.
mirror = post("/redfish/v1/Storage/appliance/Volumes", {"Name": "pool volume", "CapacityBytes": 64 << 20,
    "RAIDType": "RAID1"})
pool = post("/redfish/v1/Storage/appliance/StoragePools", {"Name": "thin",
    "CapacitySources": [{"ProvidingVolumes": [{"@odata.id": mirror}]}]})
thin = post("/redfish/v1/Storage/appliance/Volumes", {"Name": "thin", "CapacityBytes": 1 << 30,
    "CapacitySources": [{"ProvidingPools": [{"@odata.id": pool}]}]})
replica = {"ReplicaUpdateMode": "Asynchronous", "TargetStoragePool": pool}
snapshot = post(thin + "/Actions/Volume.CreateReplicaTarget", dict(replica, ReplicaType="Snapshot"))
post(snapshot + "/Actions/Volume.CreateReplicaTarget", dict(replica, ReplicaType="Clone"))
print("storage tree populated:", volume, host, pool, thin, snapshot)
PY
    venv="$root/target/redfish-interop-venv/bin"
    status=0
    echo "== Redfish Service Validator"
    (cd "$work" && "$venv/rf_service_validator" -r https://127.0.0.1:8443 \
        -u admin -p validator-pass-1 --authtype Session \
        --schema_directory "$root/management/redfish/csdl" --logdir "$work/service" \
        > "$work/service.out" 2>&1) || status=1
    sed -n '/PASS.*WARN.*FAIL/,+2p' "$work/service.out"
    fails=$(sed -n '/PASS.*WARN.*FAIL/{n;n;p}' "$work/service.out" | awk -F'|' '{gsub(/ /,"",$4); print $4}')
    if [ "${fails:-x}" != "0" ]; then
        grep -B2 "Fail: [1-9]" "$work/service.out" || tail -40 "$work/service.out"
        status=1
    fi
    echo "== Redfish Protocol Validator"
    (cd "$work" && REQUESTS_CA_BUNDLE="$cert" "$venv/rf_protocol_validator" \
        -r https://127.0.0.1:8443 -u admin -p validator-pass-1 --ca-bundle "$cert" \
        --report-dir "$work/protocol" --report-type tsv > "$work/protocol.out" 2>&1) || status=1
    grep "^Summary" "$work/protocol.out" || { tail -20 "$work/protocol.out"; status=1; }
    awk -F'\t' '$5=="FAIL"' "$work"/protocol/*.tsv | cut -f1,2,4,6
    awk -F'\t' '$5=="NOT_TESTED" {print "  not tested: " $1}' "$work"/protocol/*.tsv
    echo "== Redfish clients (redfishtool, python redfish, sushy)"
    PATH="$venv:$PATH" "$venv/python" "$root/tests/redfish_clients.py" \
        https://127.0.0.1:8443 admin validator-pass-1 || status=1
    exit $status
fi

venv=target/redfish-interop-venv
if [ ! -x "$venv/bin/redfishtool" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q redfish-service-validator==3.1.8 redfish-protocol-validator==1.3.2 \
        redfish==3.4.2 sushy==5.14.0 redfishtool==1.1.8
fi
cargo build -q --workspace --bins

work=$(mktemp -d)
# SHOAL_KEEP_VALIDATOR_LOGS=1 keeps the reports (the path is printed).
if [ -n "${SHOAL_KEEP_VALIDATOR_LOGS:-}" ]; then
    echo "validator reports in $work"
else
    trap 'rm -rf "$work"' EXIT
fi
# Fixed ports are fine: the namespace has its own loopback.
cat > "$work/appliance.toml" <<TOML
state_dir = "$work/state"
[topology]
data_clusters = 2
[memory]
hugepages = "off"
region_mib = 16
shm_dir = "$work"
[management]
https_listen = "127.0.0.1:8443"
http_redirect_listen = "127.0.0.1:8080"
TOML
unshare -rn "$0" --inside "$work"

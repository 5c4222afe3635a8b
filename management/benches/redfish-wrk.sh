#!/usr/bin/env bash
# wrk against the Redfish service: GET /redfish/v1/Systems/appliance with a
# session token over HTTPS, 64 connections, 2 wrk threads, on the same
# machine as the appliance. Prints requests/s, latency percentiles and the
# management process's RSS (current and peak) under the load.
#
#   management/benches/redfish-wrk.sh            # 15 s
#   DURATION=30 management/benches/redfish-wrk.sh
#
# Needs: wrk (Debian package), curl; builds the release binaries.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-15}
CONNECTIONS=${CONNECTIONS:-64}

for tool in wrk curl; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
cargo build --release --workspace --bins -q

work=$(mktemp -d)
cleanup() {
    [ -n "${shoald_pid:-}" ] && kill "$shoald_pid" 2>/dev/null && wait "$shoald_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
https_port=$(free_port)
cat > "$work/appliance.toml" <<TOML
state_dir = "$work/state"
[topology]
data_clusters = 1
[memory]
hugepages = "off"
region_mib = 16
shm_dir = "$work"
[management]
https_listen = "127.0.0.1:$https_port"
http_redirect = false
[dataplane]
nbd_base_port = $(free_port)
nvmf_base_port = $(free_port)
discovery_port = $(free_port)
TOML
SHOAL_ADMIN_PASSWORD=bench-password-1 RUST_LOG=warn \
    target/release/shoald --config "$work/appliance.toml" 2>"$work/shoald.log" &
shoald_pid=$!
base="https://127.0.0.1:$https_port"
for _ in $(seq 100); do curl -skf "$base/redfish/v1" >/dev/null 2>&1 && break; sleep 0.1; done
token=$(curl -sk -D - -o /dev/null -H 'Content-Type: application/json' \
    -d '{"UserName":"admin","Password":"bench-password-1"}' "$base/redfish/v1/SessionService/Sessions" |
    tr -d '\r' | awk -F': ' 'tolower($1)=="x-auth-token" {print $2}')
mgmt=$(pgrep -f "shoal-management.*$https_port" | head -1)

rss() { awk '/^VmRSS/ {print $2}' "/proc/$mgmt/status"; }
echo "management RSS idle: $(rss) KiB"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$mgmt/stat"; }
ticks_before=$(cpu_ticks)
(
    TIMEFORMAT='%U %S'
    time wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "X-Auth-Token: $token" \
        "$base/redfish/v1/Systems/appliance" > "$work/wrk.out"
) 2> "$work/wrk.time" &
wrk_pid=$!
peak=0
while kill -0 "$wrk_pid" 2>/dev/null; do
    now=$(rss); [ "$now" -gt "$peak" ] && peak=$now
    sleep 0.5
done
wait "$wrk_pid"
ticks=$(( $(cpu_ticks) - ticks_before ))
cat "$work/wrk.out"
hz=$(getconf CLK_TCK)
echo "CPU over the run: management $(awk -v t="$ticks" -v hz="$hz" -v d="$DURATION" 'BEGIN {printf "%.0f", 100 * t / hz / d}')% of one core," \
    "wrk $(awk -v d="$DURATION" '{printf "%.0f", 100 * ($1 + $2) / d}' "$work/wrk.time")% (2 cores = 200%)"
echo "management RSS under load: peak sampled $peak KiB; VmHWM $(awk '/^VmHWM/ {print $2}' "/proc/$mgmt/status") KiB"

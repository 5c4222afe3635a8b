#!/usr/bin/env bash
# fio through NBD: Shoal's export of a malloc bdev against `nbdkit memory`,
# same machine, same run, same job. Prints IOPS, p99 latency and the
# Shoal/nbdkit ratio for 4 KiB random read and random write, iodepth 32,
# 2 jobs (fio's libnbd engine).
#
#   dataplane/benches/nbd-fio.sh            # 10 s per job
#   RUNTIME=30 CORES=2 dataplane/benches/nbd-fio.sh
#
# Needs: fio (with the nbd engine), nbdkit, jq; builds the release binaries.
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNTIME=${RUNTIME:-10}
CORES=${CORES:-1}          # reactors of the serving data cluster
SIZE_MIB=${SIZE_MIB:-256}

for tool in fio nbdkit jq; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
cargo build --release --workspace --bins -q

work=$(mktemp -d)
cleanup() {
    [ -n "${shoald_pid:-}" ] && kill "$shoald_pid" 2>/dev/null && wait "$shoald_pid" 2>/dev/null
    [ -n "${nbdkit_pid:-}" ] && kill "$nbdkit_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
shoal_port=$(free_port)
nbdkit_port=$(free_port)

cat > "$work/appliance.toml" <<TOML
state_dir = "$work/state"
[topology]
data_clusters = 1
cores_per_cluster = $CORES
[memory]
hugepages = "off"
[management]
enabled = false
[dataplane]
nbd_base_port = $shoal_port
nvmf_base_port = $(free_port)
discovery_port = $(free_port)
TOML
RUST_LOG=warn target/release/shoald --config "$work/appliance.toml" 2>"$work/shoald.log" &
shoald_pid=$!
for _ in $(seq 100); do [ -S "$work/state/dataplane-0.sock" ] && break; sleep 0.1; done
rpc() { target/release/shoal-rpc -s "$work/state/dataplane-0.sock" "$@" >/dev/null; }
rpc bdev_malloc_create "{\"name\":\"m0\",\"num_blocks\":$((SIZE_MIB * 2048)),\"block_size\":512}"
rpc nbd_start_disk '{"bdev_name":"m0"}'

# --exit-with-parent keeps nbdkit in the foreground: background it here.
nbdkit --exit-with-parent --port "$nbdkit_port" memory "${SIZE_MIB}M" &
nbdkit_pid=$!
sleep 0.5

run_fio() { # uri rw
    fio --name=job --ioengine=nbd --uri="$1" --rw="$2" --bs=4k --iodepth=32 --numjobs=2 \
        --time_based=1 --runtime="$RUNTIME" --size="${SIZE_MIB}m" --group_reporting=1 \
        --output-format=json 2>/dev/null | sed -n '/^{/,$p'   # the nbd engine prints lines before the JSON
}
summary() { # json rw -> "iops p99_us"
    local key=$([ "$2" = randread ] && echo read || echo write)
    jq -r ".jobs[0].$key | \"\(.iops|floor) \(.clat_ns.percentile[\"99.000000\"] / 1000 | floor)\"" <<<"$1"
}

printf '%-10s %14s %10s %14s %10s %8s\n' job shoal_iops shoal_p99 nbdkit_iops nbdkit_p99 ratio
for rw in randread randwrite; do
    read -r s_iops s_p99 < <(summary "$(run_fio "nbd://127.0.0.1:$shoal_port/m0" "$rw")" "$rw")
    read -r k_iops k_p99 < <(summary "$(run_fio "nbd://127.0.0.1:$nbdkit_port/" "$rw")" "$rw")
    ratio=$(python3 -c "print(f'{$s_iops/$k_iops:.2f}')")
    printf '%-10s %14s %8sus %14s %8sus %8s\n' "$rw" "$s_iops" "$s_p99" "$k_iops" "$k_p99" "$ratio"
done

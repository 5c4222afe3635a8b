#!/usr/bin/env bash
# fio through NBD on a distributed volume against a local volume of the same
# size, same appliance, same run, same job. Both are a raid0 of four 64 KiB
# strips-wide malloc legs exported by data cluster 0: the local volume's
# legs all live on cluster 0; the distributed volume's legs live one per
# cluster, three of them reached through remote bdevs over the
# inter-cluster rings. The ratio is the cost of crossing clusters; the copy
# counter shows that no payload byte was copied doing it.
#
#   dataplane/benches/distributed-fio.sh            # 10 s per job
#   RUNTIME=30 dataplane/benches/distributed-fio.sh
#
# Needs: fio (with the nbd engine), jq; builds the release binaries.
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNTIME=${RUNTIME:-10}
LEG_MIB=${LEG_MIB:-64}
CLUSTERS=4

for tool in fio jq; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
cargo build --release --workspace --bins -q

work=$(mktemp -d)
cleanup() {
    [ -n "${shoald_pid:-}" ] && kill "$shoald_pid" 2>/dev/null && wait "$shoald_pid" 2>/dev/null
    [ -n "${KEEP:-}" ] && { cat "$work/shoald.log" >&2; }
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nbd_base=$(free_port)

cat > "$work/appliance.toml" <<TOML
state_dir = "$work/state"
[topology]
data_clusters = $CLUSTERS
[memory]
hugepages = "off"
[management]
enabled = false
[dataplane]
nbd_base_port = $nbd_base
nvmf_base_port = $(free_port)
discovery_port = $(free_port)
TOML
RUST_LOG=warn target/release/shoald --config "$work/appliance.toml" 2>"$work/shoald.log" &
shoald_pid=$!
for k in $(seq 0 $((CLUSTERS - 1))); do
    for _ in $(seq 100); do [ -S "$work/state/dataplane-$k.sock" ] && break; sleep 0.1; done
done
sleep 0.5
rpc() { local k=$1; shift; target/release/shoal-rpc -s "$work/state/dataplane-$k.sock" "$@"; }
blocks=$((LEG_MIB * 256))
for k in $(seq 0 $((CLUSTERS - 1))); do
    rpc "$k" bdev_malloc_create "{\"name\":\"leg$k\",\"num_blocks\":$blocks,\"block_size\":4096}" >/dev/null
    rpc 0 bdev_malloc_create "{\"name\":\"local$k\",\"num_blocks\":$blocks,\"block_size\":4096}" >/dev/null
done
for k in $(seq 1 $((CLUSTERS - 1))); do
    rpc 0 bdev_remote_create "{\"name\":\"remote$k\",\"cluster\":$k,\"remote_bdev\":\"leg$k\"}" >/dev/null
done
rpc 0 bdev_raid_create '{"name":"dvol","raid_level":"raid0","strip_size_kb":64,"base_bdevs":["leg0","remote1","remote2","remote3"]}' >/dev/null
rpc 0 bdev_raid_create '{"name":"lvol","raid_level":"raid0","strip_size_kb":64,"base_bdevs":["local0","local1","local2","local3"]}' >/dev/null
rpc 0 nbd_start_disk '{"bdev_name":"dvol"}' >/dev/null
rpc 0 nbd_start_disk '{"bdev_name":"lvol"}' >/dev/null

run_fio() { # uri rw bs
    fio --name=job --ioengine=nbd --uri="$1" --rw="$2" --bs="$3" --iodepth=32 --numjobs=2 \
        --time_based=1 --runtime="$RUNTIME" --size="$((LEG_MIB * CLUSTERS))m" --group_reporting=1 \
        --output-format=json 2>/dev/null | sed -n '/^{/,$p'
}
summary() { # json rw -> "iops p99_us"
    local key=$([ "$2" = randread ] && echo read || echo write)
    jq -r ".jobs[0].$key | \"\(.iops|floor) \(.clat_ns.percentile[\"99.000000\"] / 1000 | floor)\"" <<<"$1"
}

printf '%-10s %6s %14s %10s %14s %10s %8s\n' job bs dist_iops dist_p99 local_iops local_p99 ratio
for bs in 4k 64k; do
    for rw in randread randwrite; do
        read -r d_iops d_p99 < <(summary "$(run_fio "nbd://127.0.0.1:$nbd_base/dvol" "$rw" "$bs")" "$rw")
        read -r l_iops l_p99 < <(summary "$(run_fio "nbd://127.0.0.1:$nbd_base/lvol" "$rw" "$bs")" "$rw")
        ratio=$(python3 -c "print(f'{$d_iops/$l_iops:.2f}')")
        printf '%-10s %6s %14s %8sus %14s %8sus %8s\n' "$rw" "$bs" "$d_iops" "$d_p99" "$l_iops" "$l_p99" "$ratio"
    done
done
echo
echo "inter_cluster_bytes_copied on cluster 0: $(rpc 0 bdev_get_iostat '{}' | jq .inter_cluster_bytes_copied)"
rpc 0 interconnect_get_stats '{}' | jq -c '.peers[] | {cluster, submitted: .outbound.submitted, errors: .outbound.errors}'
rpc 0 interconnect_get_stats '{}' | jq -c '{pool_allocations: .pool.allocations, heap_fallbacks: .pool.heap_fallbacks}'

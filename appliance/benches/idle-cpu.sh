#!/usr/bin/env bash
# CPU used by a whole idle appliance (shoald, 4 dataplanes, management),
# as a percentage of one core, measured from /proc over a window.
#
#   appliance/benches/idle-cpu.sh          # 20 s window
#   WINDOW=60 appliance/benches/idle-cpu.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
WINDOW=${WINDOW:-20}
cargo build --release --workspace --bins -q

work=$(mktemp -d)
trap '[ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cat > "$work/appliance.toml" <<TOML
state_dir = "$work/state"
[memory]
hugepages = "off"
[management]
https_listen = "127.0.0.1:$(free_port)"
http_redirect_listen = "127.0.0.1:$(free_port)"
[dataplane]
nbd_base_port = $(free_port)
nvmf_base_port = $(free_port)
discovery_port = $(free_port)
TOML
RUST_LOG=warn target/release/shoald --config "$work/appliance.toml" 2>"$work/log" &
pid=$!
sleep 3
pids() { echo "$pid"; pgrep -P "$pid"; }
ticks() { for p in $(pids); do awk '{print $14 + $15}' "/proc/$p/stat"; done | paste -sd+ | bc; }
hz=$(getconf CLK_TCK)
before=$(ticks)
sleep "$WINDOW"
after=$(ticks)
echo "processes: $(pids | wc -l)"
python3 -c "print(f'idle appliance CPU: {($after - $before) / $hz / $WINDOW * 100:.2f}% of one core over $WINDOW s')"

#!/usr/bin/env bash
# Restart rows of tools/benchmark-all, alone: a mesh (router + feed, 2 durable bid nodes) in a temp
# dir, optionally aged with AGE_ITEMS items, then `bidmesh-bench restart` light and --worst-tail.
# usage: bench/restart-mesh.sh   knobs: BIN (default build/bin), RESTARTS (10), AGE_ITEMS (0: items opened
#        and bid on for 3 s first, to age the store), WORK (a dir to keep and reuse: ports, data, logs).
# A benchmark-all run ages bid-1 to ~500k items before its restart rows; AGE_ITEMS=300000 comes near.
# Every process started here is stopped on exit; WORK is left for the logs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN=${BIN:-${BIDMESH_BUILD_DIR:-$ROOT/build}/bin}
RESTARTS=${RESTARTS:-10}
AGE_ITEMS=${AGE_ITEMS:-0}
WORK=${WORK:-$(mktemp -d /tmp/bidmesh-restart.XXXXXX)}
mkdir -p "$WORK/logs"
declare -A PIDS=()
cleanup() {
  for n in "${!PIDS[@]}"; do kill -TERM "${PIDS[$n]}" 2>/dev/null || true; done
  for n in "${!PIDS[@]}"; do wait "${PIDS[$n]}" 2>/dev/null || true; done
}
trap cleanup EXIT
port_free() { ! (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }
rand_port() { echo $((20000 + (RANDOM * 32768 + RANDOM) % 12000)); }
free_ports() { local n=$1 got=() p; while ((${#got[@]} < n)); do p=$(rand_port); if port_free "$p" && [[ ! " ${got[*]} " == *" $p "* ]]; then got+=("$p"); fi; done; echo "${got[@]}"; }
if [[ ! -f $WORK/ports ]]; then free_ports 7 >"$WORK/ports"; fi
read -r P_REQ P_PUB P_COL P_B1 P_B2 P_D1 P_D2 <"$WORK/ports"
EP="tcp://127.0.0.1:$P_REQ"; FEED="tcp://127.0.0.1:$P_PUB"
CONF="$WORK/mesh.toml"
{ [[ -z ${CONFIG_LINES:-} ]] || printf '%s\n' "$CONFIG_LINES"; cat <<EOT
data_dir = "$WORK/data"
request_timeout_ms = 1000
map_size_mb = 4096
[feed]
publish = "$FEED"
collect = "tcp://127.0.0.1:$P_COL"
[[node]]
name = "router"
kind = "router"
listen = "$EP"
feed = true
[[node]]
name = "bid-1"
kind = "bid"
listen = "tcp://127.0.0.1:$P_B1"
client_listen = "tcp://127.0.0.1:$P_D1"
slots = ["0-8191"]
durability = "fsync"
[[node]]
name = "bid-2"
kind = "bid"
listen = "tcp://127.0.0.1:$P_B2"
client_listen = "tcp://127.0.0.1:$P_D2"
slots = ["8192-16383"]
durability = "fsync"
EOT
} >"$CONF"
start() { if [[ $1 == router ]]; then "$BIN/bidmesh-router" --config "$CONF" --name router >>"$WORK/logs/router.log" 2>&1 &
  else "$BIN/bidmesh-bid-node" --config "$CONF" --name "$1" >>"$WORK/logs/$1.log" 2>&1 & fi; PIDS[$1]=$!; }
stop() { kill -TERM "${PIDS[$1]}" 2>/dev/null || true; wait "${PIDS[$1]}" 2>/dev/null || true; unset "PIDS[$1]"; }
wait_ready() { for i in $(seq 1 40); do "$BIN/bidmesh-bench" --endpoint "$EP" --clients 1 --items 2 --seconds 0.1 --warmup 0 --timeout 200 --json >/dev/null 2>&1 && return 0; sleep 0.5; done; echo "mesh not ready" >&2; exit 111; }
if ((AGE_ITEMS > 0)) && [[ ! -f $WORK/aged ]]; then
  start bid-1; start bid-2; start router; wait_ready
  timeout 900 "$BIN/bidmesh-bench" --endpoint "$EP" --json --items "$AGE_ITEMS" --clients 50 --threads 1 --seconds 3 --warmup 0 >"$WORK/age.json" 2>&1 || true
  stop router; stop bid-1; stop bid-2; touch "$WORK/aged"
fi
echo "load $(cut -d' ' -f1-3 /proc/loadavg) work $WORK" >&2
start bid-2; start router
"$BIN/bidmesh-bench" --endpoint "$EP" --json restart --config "$CONF" --node bid-1 --times "$RESTARTS" --log "$WORK/logs/bid-1.log" | tee "$WORK/restart.json"
{ echo "checkpoint_interval_ms = 600000"; cat "$CONF"; } >"$WORK/mesh-worst-tail.toml"
"$BIN/bidmesh-bench" --endpoint "$EP" --json restart --worst-tail --config "$WORK/mesh-worst-tail.toml" --node bid-1 --times "$RESTARTS" --log "$WORK/logs/bid-1.log" | tee "$WORK/restart_worst.json"
grep -o "log replayed [0-9]* batches ([0-9]* writes, [0-9]* bytes) in [0-9]* ms" "$WORK/logs/bid-1.log" | tail -"$RESTARTS" | sort | uniq -c | sort -rn | head -5
echo "load after $(cut -d' ' -f1-3 /proc/loadavg)" >&2

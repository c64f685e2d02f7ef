#!/usr/bin/env bash
# Runs COMMAND while the floor of bidmesh's shape with a store serves on loopback
# (bench/store_floor.cpp: ../shared/peers/mesh_floor.cpp's proxy and 2 nodes, each node applying
# every request to LMDB as a bid node must, with bidmesh's checkpoint defaults). Point a load
# client at $STORE_FLOOR_ENDPOINT. The same command lines as against bidmesh and mesh_floor.sh,
# in the same run, say what bidmesh adds beyond one B-tree update per bid (docs/benchmarks.md).
#   bash bench/store-floor.sh [--nosync] [--direct] -- COMMAND ARGS...
#     --nosync  no fdatasync of the log (LMDB's checkpoints stay synced, as in bidmesh)
#     --direct  no proxy: COMMAND talks to one node
# Knobs: STORE_FLOOR_PORT (first of three ports, default 27655), STORE_FLOOR_DIR (data; default a
# temp dir under /var/tmp, on the work disk). Needs g++ libzmq3-dev cppzmq-dev libmsgpack-cxx-dev
# liblmdb-dev (tools/setup installs them). Exit: COMMAND's, or 111 if the floor did not start.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sync=""; direct=0
while [[ $# -gt 0 && $1 != "--" ]]; do
  case $1 in --nosync) sync=nosync ;; --direct) direct=1 ;; *) echo "store-floor.sh: unknown option $1" >&2; exit 100 ;; esac
  shift
done
[[ ${1:-} == "--" ]] && shift
[[ $# -gt 0 ]] || { echo "usage: store-floor.sh [--nosync] [--direct] -- COMMAND ARGS..." >&2; exit 100; }
port=${STORE_FLOOR_PORT:-27655}
dir=${STORE_FLOOR_DIR:-$(mktemp -d /var/tmp/store-floor.XXXXXX)}
bin=$dir/store_floor
g++ -O2 -std=c++17 -pthread -o "$bin" "$HERE/store_floor.cpp" -lzmq -llmdb
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
nodes=(1)
((direct)) || nodes=(1 2)
for n in "${nodes[@]}"; do
  mkdir -p "$dir/n$n"
  "$bin" node "tcp://127.0.0.1:$((port + 5 + n))" "$dir/n$n" $sync 2>"$dir/n$n.log" &
  pids+=($!)
done
if ((direct)); then
  export STORE_FLOOR_ENDPOINT="tcp://127.0.0.1:$((port + 6))"
else
  "$bin" proxy "tcp://127.0.0.1:$port" "tcp://127.0.0.1:$((port + 6))" "tcp://127.0.0.1:$((port + 7))" &
  pids+=($!)
  export STORE_FLOOR_ENDPOINT="tcp://127.0.0.1:$port"
fi
# Each node pre-writes its 256 MiB log file before it binds and says so: wait for that, bounded.
for _ in $(seq 1 300); do
  ready=1
  for n in "${nodes[@]}"; do grep -q "store floor node on" "$dir/n$n.log" 2>/dev/null || ready=0; done
  ((ready)) && break
  sleep 0.1
done
((ready)) || { echo "store-floor.sh: the nodes did not start within 30 s: $(cat "$dir"/n*.log)" >&2; exit 111; }
"$@"

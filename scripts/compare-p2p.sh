#!/usr/bin/env bash
# Side-by-side P2P run of ringmq, Mosquitto and rumqttd on this machine: each broker pinned to
# core 0, ringmq-bench pinned to core 1, loopback only, same load, one broker at a time.
# A stop-gap for the issue-5 comparison runner; prints one table per broker.
#
# Usage: scripts/compare-p2p.sh [ringmq-bench p2p flags...]   e.g. --qos 1 --pairs 100 --rate 300
# Needs: mosquitto (apt), rumqttd (cargo install rumqttd); a missing broker is skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ringmq -p ringmq-tools
bench=target/release/ringmq-bench
args=("$@")
out=${COMPARE_OUT:-target/compare}
mkdir -p "$out"

run() { # name port pid
  echo "== $1"
  taskset -c 1 "$bench" p2p --addr "127.0.0.1:$2" --broker-pid "$3" --client-prefix "cmp-$1" \
    --json "$out/$1.json" "${args[@]}"
}

start() { # name port command...
  local name=$1 port=$2; shift 2
  taskset -c 0 "$@" > "$out/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  run "$name" "$port" "$pid"
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
}

start ringmq 18830 target/release/ringmq --listen 127.0.0.1:18830 --shards 1 --log warn
if command -v mosquitto >/dev/null; then
  start mosquitto 18831 mosquitto -p 18831
else
  echo "== mosquitto: not installed (apt-get install mosquitto), skipped"
fi
if command -v rumqttd >/dev/null; then
  cat > "$out/rumqttd.toml" <<'TOML'
id = 0
[router]
id = 0
max_connections = 10010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:18832"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 100
    dynamic_filters = true
TOML
  start rumqttd 18832 rumqttd -q -c "$out/rumqttd.toml"
else
  echo "== rumqttd: not installed (cargo install rumqttd), skipped"
fi

#!/usr/bin/env bash
# Recovery time of 1,000,000 queued messages (BENCHMARKS.md, "Durable at memory speed"):
# 100 offline persistent sessions get 10,000 QoS 1 messages of 64 B each under `sync`, the
# broker is killed with SIGKILL, and the restart is timed until it accepts connections.
# Usage: cargo build --release -p ringmq -p ringmq-tools && scripts/recovery-1m.sh [DATA_DIR]
# (BIN=path runs another broker binary.)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-target/release/ringmq}
bench=target/release/ringmq-bench
dir=${1:-target/recovery-1m}
port=$((20000 + RANDOM % 1000))
args=(--listen "127.0.0.1:$port" --shards 1 --durability sync --data-dir "$dir" --session-queue-count-max 10000)
rm -rf "$dir"
taskset -c 0 "$bin" "${args[@]}" --log warn & broker=$!
sleep 0.7
taskset -c 1 "$bench" p2p --pairs 100 --qos 1 --payload 64 --persistent --offline 120 \
  --warmup 1 --duration 6 --addr "127.0.0.1:$port" >/dev/null 2>&1 & load=$!
sleep 9
kill "$load" 2>/dev/null || true
sleep 0.5
kill -9 "$broker"; wait "$broker" 2>/dev/null || true
du -sh "$dir"
log=$(mktemp)
start=$(date +%s.%N)
taskset -c 0 "$bin" "${args[@]}" --log info >"$log" 2>&1 & broker=$!
# Wait for the line the broker logs once every shard has restored its state and listens (a
# connect used to succeed at once: it reached the broker's start-up port probe, which
# listened for an instant; the probe no longer listens).
until grep -q "ringmq listening" "$log"; do sleep 0.01; done
end=$(date +%s.%N)
echo "restart to accepting connections: $(echo "$end - $start" | bc) s"
sleep 0.3
grep -E "log replayed|recovered from the store" "$log" || true
grep VmHWM "/proc/$broker/status"
kill "$broker"; wait "$broker" 2>/dev/null || true
rm -f "$log"

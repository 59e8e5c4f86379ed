#!/bin/bash
# One run of BENCHMARKS.md "Durable at memory speed", the 5,000-pair shape: 5,000 persistent
# P2P pairs, QoS 1, 64 B, RATE messages per second per publisher, against a broker on core 0
# (one shard, a fresh data directory), the generator on core 1. Prints the generator's summary,
# then, over 4 s of the measured window, each broker thread's CPU and run-queue wait
# (/proc/PID/task/*/schedstat, ms) and the store counters' deltas.
#   RATE=10|20 benches/durable/run-5k.sh BROKER sync|batch|memory   (from the repository root)
# env: BENCH (default target/release/ringmq-bench), PAIRS (5000), RATE (10), EXTRA (more broker
# flags, e.g. `--segment-bytes 8388608` so that segments are recycled within the run)
set -u
broker=$1
mode=$2
bench=${BENCH:-target/release/ringmq-bench}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
mport=$(free_port)
data=$(mktemp -d /tmp/ringmq-durable.XXXX)
snaps=$(mktemp -d /tmp/ringmq-5k.XXXX)
ulimit -n 20000
# shellcheck disable=SC2086
taskset -c 0 "$broker" --shards 1 --durability "$mode" --listen "127.0.0.1:$port" \
  --metrics-listen "127.0.0.1:$mport" --data-dir "$data" --log warn ${EXTRA:-} \
  >/tmp/ringmq-durable-broker.log 2>&1 &
pid=$!
sleep 0.5
snap() {
  for t in /proc/$pid/task/*; do echo "$(cat "$t/comm") $(cat "$t/schedstat")"; done
  curl -s "127.0.0.1:$mport/metrics" | grep -E "^ringmq_store_(commits|acks_released|written)"
}
# Warm-up 5 s, then 10 s measured: the snapshots 10 s and 14 s after the start.
(sleep 10; snap >"$snaps/0"; sleep 4; snap >"$snaps/1") &
snapper=$!
taskset -c 1 "$bench" p2p --addr "127.0.0.1:$port" --pairs "${PAIRS:-5000}" --qos 1 --payload 64 \
  --persistent --rate "${RATE:-10}" --warmup 5 --duration 10 --broker-pid "$pid" 2>&1 |
  grep -E "delivered msg|lost|ack rtt|^latency|broker cpu"
wait "$snapper"
echo "over 4 s: thread run_ms wait_ms slices; store counter deltas"
paste "$snaps/0" "$snaps/1" | awk 'NF==8 {printf "  %s %.0f %.0f %d\n", $1, ($6-$2)/1e6, ($7-$3)/1e6, $8-$4}
  NF==4 {print "  " $1, $4-$2}'
kill "$pid"
wait "$pid" 2>/dev/null
rm -rf "$data" "$snaps"

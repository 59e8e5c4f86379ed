#!/bin/bash
# One run of BENCHMARKS.md "Durable at memory speed": 100 persistent P2P pairs, QoS 1, 64 B,
# max rate, against a broker on core 0 (one shard, a fresh data directory), the generator on
# core 1; prints the generator's summary and the broker's CPU ticks per thread (user, system).
#   benches/durable/run.sh BROKER sync|batch|memory   (run from the repository root)
# env: BENCH (default target/release/ringmq-bench), PAIRS (100), EXTRA (more broker flags)
set -u
broker=$1
mode=$2
bench=${BENCH:-target/release/ringmq-bench}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
data=$(mktemp -d /tmp/ringmq-durable.XXXX)
# shellcheck disable=SC2086
taskset -c 0 "$broker" --shards 1 --durability "$mode" --listen "127.0.0.1:$port" \
  --data-dir "$data" --log warn ${EXTRA:-} >/tmp/ringmq-durable-broker.log 2>&1 &
pid=$!
sleep 0.5
ticks() { for t in /proc/$pid/task/*; do echo "$(cat "$t/comm") $(awk '{print $14, $15}' "$t/stat")"; done; }
ticks >/tmp/ringmq-durable.t0
taskset -c 1 "$bench" p2p --addr "127.0.0.1:$port" --pairs "${PAIRS:-100}" --qos 1 --payload 64 \
  --persistent --warmup 2 --duration 6 --broker-pid "$pid" 2>&1 |
  grep -E "delivered msg|sent /|lost|ack rtt|broker cpu"
ticks >/tmp/ringmq-durable.t1
echo "broker threads (ticks since start: user system):"
sort /tmp/ringmq-durable.t1 | awk '{print "  " $0}'
kill "$pid"
wait "$pid" 2>/dev/null
rm -rf "$data"

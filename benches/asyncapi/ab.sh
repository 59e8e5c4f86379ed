#!/bin/bash
# A/B of AsyncAPI validation's cost (BENCHMARKS.md "AsyncAPI validation"): per round, each
# LABEL:BROKER:DOC (DOC yes = with benches/asyncapi/p2p.yaml) on a fresh broker pinned to core
# 0 (`--shards 1 --durability memory`), the P2P load (100 pairs, QoS 1, 200 B JSON) on core 1;
# prints delivered msg/s and broker CPU per message.
#   benches/asyncapi/ab.sh ROUNDS LABEL:BROKER:DOC... (run from the repository root; DURATION=S
#   measures S seconds per run, default 6)
set -u
rounds=$1
shift
doc=$(pwd)/benches/asyncapi/p2p.yaml
bench=${BENCH:-target/release/ringmq-bench}
port=${PORT:-18840}
for r in $(seq 1 "$rounds"); do
  for spec in "$@"; do
    IFS=: read -r label broker with <<<"$spec"
    args=()
    [ "$with" = yes ] && args=(--asyncapi "$doc")
    port=$((port + 1))
    taskset -c 0 "$broker" --shards 1 --durability memory --listen "127.0.0.1:$port" "${args[@]}" \
      >/tmp/ab-broker.log 2>&1 &
    pid=$!
    sleep 1
    out=$(taskset -c 1 "$bench" p2p --addr "127.0.0.1:$port" --pairs 100 --qos 1 --payload 200 \
      --json-payload --warmup 2 --duration "${DURATION:-6}" --broker-pid "$pid" 2>&1)
    kill "$pid"
    wait "$pid" 2>/dev/null
    rate=$(awk '/^delivered msg/ {print $3}' <<<"$out")
    us=$(awk '/^broker cpu/ {print $5}' <<<"$out")
    lost=$(awk '/^lost/ {print $6}' <<<"$out")
    echo "round $r $label: $rate msg/s, $us us/msg, lost $lost"
  done
done

#!/bin/bash
# Instructions per message of AsyncAPI validation (BENCHMARKS.md "AsyncAPI validation"): the
# broker under callgrind with benches/asyncapi/p2p.yaml, 10 P2P pairs at 300 msg/s each for
# 5 s (200 B JSON, QoS 1); prints `Api::check_publish` inclusive instructions per message.
#   benches/asyncapi/callgrind.sh BROKER OUT (run from the repository root)
set -u
broker=$1
out=$2
bench=${BENCH:-target/release/ringmq-bench}
port=$((19000 + RANDOM % 1000))
valgrind --tool=callgrind --callgrind-out-file="$out" "$broker" --shards 1 --durability memory \
  --listen "127.0.0.1:$port" --asyncapi benches/asyncapi/p2p.yaml >/tmp/cg-broker.log 2>&1 &
pid=$!
sleep 4
report=$("$bench" p2p --addr "127.0.0.1:$port" --pairs 10 --qos 1 --payload 200 --json-payload \
  --rate 300 --warmup 1 --duration 5 2>&1)
kill -INT "$pid"
wait "$pid"
messages=$(awk '/^sent \/ acked/ {print $10}' <<<"$report")
callgrind_annotate --inclusive=yes "$out" 2>/dev/null |
  awk -v n="$messages" '/Api::check_publish \[/ {gsub(",", "", $1); printf "%d messages, check_publish %.1f instructions each\n", n, $1 / n; exit}'

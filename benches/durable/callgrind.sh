#!/bin/bash
# Instructions per delivered message of the durable path (BENCHMARKS.md "Durable at memory
# speed"): the broker under callgrind, 100 persistent P2P pairs at max rate (QoS 1, 64 B) for
# 1 + 5 s; prints the program's total instructions over the messages measured (warm-up and
# start-up included in the total, the same for every binary compared).
#   benches/durable/callgrind.sh BROKER sync|memory OUT   (run from the repository root)
set -u
broker=$1
mode=$2
out=$3
bench=${BENCH:-target/release/ringmq-bench}
port=$((19000 + RANDOM % 1000))
data=$(mktemp -d /tmp/ringmq-cg.XXXX)
valgrind --tool=callgrind --callgrind-out-file="$out" "$broker" --shards 1 --durability "$mode" \
  --listen "127.0.0.1:$port" --data-dir "$data" --log warn >/tmp/ringmq-cg-broker.log 2>&1 &
pid=$!
sleep 4
report=$("$bench" p2p --addr "127.0.0.1:$port" --pairs "${PAIRS:-100}" --qos 1 --payload 64 \
  --persistent --rate "${RATE:-0}" --warmup 1 --duration 5 2>&1)
kill -INT "$pid"
wait "$pid"
rm -rf "$data"
grep -E "delivered msg|lost" <<<"$report"
messages=$(awk '/^sent \/ acked/ {print $10}' <<<"$report")
total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$messages messages, $((total / messages)) instructions each"

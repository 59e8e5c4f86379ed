#!/bin/bash
# One run of BENCHMARKS.md "The Redis store": 100 persistent P2P pairs, QoS 1, 64 B, max rate,
# against a broker on core 0 (one shard, `--store redis`) with a fresh redis-server on core 1
# beside the generator; prints the generator's summary (broker CPU per message, and Redis's
# as the "other" process).
#   benches/redis/run.sh BROKER [always|everysec]   (run from the repository root)
# env: BENCH (default target/release/ringmq-bench), EXTRA (more broker flags, e.g.
#   "--redis-shared true --redis-broker-id x")
set -u
broker=$1
fsync=${2:-always}
bench=${BENCH:-target/release/ringmq-bench}
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free)
rport=$(free)
rdir=$(mktemp -d /tmp/ringmq-redis.XXXX)
data=$(mktemp -d /tmp/ringmq-redis-data.XXXX)
taskset -c 1 redis-server --port "$rport" --bind 127.0.0.1 --dir "$rdir" --save "" \
  --appendonly yes --appendfsync "$fsync" >/dev/null 2>&1 &
rpid=$!
sleep 0.3
# shellcheck disable=SC2086
taskset -c 0 "$broker" --shards 1 --durability sync --listen "127.0.0.1:$port" \
  --data-dir "$data" --store redis --redis-url "redis://127.0.0.1:$rport" --log warn \
  ${EXTRA:-} >/tmp/ringmq-redis-broker.log 2>&1 &
pid=$!
sleep 0.5
taskset -c 1 "$bench" p2p --addr "127.0.0.1:$port" --pairs 100 --qos 1 --payload 64 \
  --persistent --warmup 2 --duration 6 --broker-pid "$pid" --other-pid "$rpid" 2>&1 |
  grep -E "delivered msg|lost|ack rtt|cpu"
kill "$pid"
wait "$pid" 2>/dev/null
kill "$rpid"
wait "$rpid" 2>/dev/null
rm -rf "$data" "$rdir"

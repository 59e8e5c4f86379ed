#!/bin/bash
# Two ringmq nodes clustered over a fresh tansu, sessions in one fresh redis-server shared by
# both (`store = "redis"`, `redis_shared = true`): persistent P2P (100 pairs, QoS 1, 64 B, max
# rate), publishers on node a, subscribers on node b, so every message crosses Kafka. Both
# nodes on core 0 (one shard each), tansu, redis-server and the generator on core 1. Prints
# the generator's summary: CPU per delivered message of node b (the broker), then node a,
# tansu and redis-server ("other" processes, in that order).
#   benches/cluster/redis_p2p.sh RINGMQ [always|everysec]   (from the repository root)
# env: BENCH (default target/release/ringmq-bench), DURATION (6), FENCED (true: the nodes'
#   `redis_fenced`), LOG (the nodes' --log, warn), KEEP (set: keep the directory and logs)
set -u
ringmq=$1
fsync=${2:-everysec}
bench=${BENCH:-target/release/ringmq-bench}
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
dir=$(mktemp -d /tmp/ringmq-cluster-redis.XXXX)
kp=$(free); rp=$(free); pa=$(free); pb=$(free)
(cd "$dir" && exec taskset -c 1 tansu broker --listener-url "tcp://127.0.0.1:$kp" \
  --advertised-listener-url "tcp://127.0.0.1:$kp" --storage-engine memory://tansu/ \
  >"$dir/tansu.log" 2>&1) &
tpid=$!
mkdir -p "$dir/redis"
taskset -c 1 redis-server --port "$rp" --bind 127.0.0.1 --dir "$dir/redis" --save "" \
  --appendonly yes --appendfsync "$fsync" >/dev/null 2>&1 &
rpid=$!
sleep 1
start() {
  local node=$1 port=$2
  printf 'store = "redis"\nredis_url = "redis://127.0.0.1:%s"\nredis_shared = true\nredis_fenced = %s\n[kafka]\nbrokers = "127.0.0.1:%s"\npartitions = 4\nlinger_ms = 1\n[cluster]\nnode_id = "%s"\n' \
    "$rp" "${FENCED:-true}" "$kp" "$node" >"$dir/$node.toml"
  taskset -c 0 "$ringmq" --config "$dir/$node.toml" --listen "127.0.0.1:$port" --shards 1 \
    --durability sync --log "${LOG:-warn}" --session-queue-count-max 100000 --data-dir "$dir/$node" \
    >"$dir/$node.log" 2>&1 &
}
start a "$pa"; apid=$!
start b "$pb"; bpid=$!
for p in $pa $pb; do
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done
taskset -c 1 "$bench" p2p --addr "127.0.0.1:$pb" --pub-addr "127.0.0.1:$pa" --pairs 100 \
  --qos 1 --payload 64 --persistent --warmup 3 --duration "${DURATION:-6}" \
  --broker-pid "$bpid" --other-pid "$apid" --other-pid "$tpid" --other-pid "$rpid" 2>&1 |
  grep -E "delivered msg|lost|ack rtt|cpu|latency"
kill "$apid" "$bpid"; wait "$apid" "$bpid" 2>/dev/null
kill "$tpid" "$rpid"; wait "$tpid" "$rpid" 2>/dev/null
[ -n "${KEEP:-}" ] && echo "kept $dir" || rm -rf "$dir"

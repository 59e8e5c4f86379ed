#!/bin/bash
# NODES (1, 2 or 3; default 2) ringmq nodes clustered over a fresh tansu, sessions in one
# fresh redis-server shared by all (`store = "redis"`, `redis_shared = true`): persistent P2P
# (100 pairs, QoS 1, 64 B, max rate or RATE msg/s per publisher). One node: both sides on it
# (nothing crosses). Two: publishers on node a, subscribers on node b. Three: publisher i on
# node i mod 3, its subscriber on the next node. So with 2 and 3 every message crosses Kafka.
# The nodes on core 0 (one shard each), tansu, redis-server and the generator on core 1.
# Prints the generator's summary: CPU per delivered message of node b (node a with one node),
# then the other nodes, tansu and redis-server ("other" processes, in that order).
#   [NODES=1|2|3] benches/cluster/redis_p2p.sh RINGMQ [always|everysec]   (from the repository root)
# env: NODES (2), RATE (0: max), BENCH (default target/release/ringmq-bench), DURATION (6),
#   FENCED (true: the nodes'
#   `redis_fenced`), LOG (the nodes' --log, warn), KEEP (set: keep the directory and logs)
set -u
ringmq=$1
fsync=${2:-everysec}
bench=${BENCH:-target/release/ringmq-bench}
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
dir=$(mktemp -d /tmp/ringmq-cluster-redis.XXXX)
nodes=${NODES:-2}
kp=$(free); rp=$(free); pa=$(free); pb=$(free); pc=$(free)
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
ports=$pa; pids=$apid
if [ "$nodes" -ge 2 ]; then start b "$pb"; bpid=$!; ports="$ports $pb"; pids="$pids $bpid"; fi
if [ "$nodes" -ge 3 ]; then start c "$pc"; cpid=$!; ports="$ports $pc"; pids="$pids $cpid"; fi
for p in $ports; do
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done
case $nodes in
  1) where=(--addr "127.0.0.1:$pa" --broker-pid "$apid") ;;
  2) where=(--addr "127.0.0.1:$pb" --pub-addr "127.0.0.1:$pa" --broker-pid "$bpid" --other-pid "$apid") ;;
  *) where=(--addr "127.0.0.1:$pa" --node "127.0.0.1:$pa" --node "127.0.0.1:$pb" --node "127.0.0.1:$pc"
       --broker-pid "$bpid" --other-pid "$apid" --other-pid "$cpid") ;;
esac
taskset -c 1 "$bench" p2p "${where[@]}" --pairs 100 --rate "${RATE:-0}" \
  --qos 1 --payload 64 --persistent --warmup 3 --duration "${DURATION:-6}" \
  --other-pid "$tpid" --other-pid "$rpid" 2>&1 |
  grep -E "delivered msg|lost|ack rtt|cpu|latency"
kill $pids; wait $pids 2>/dev/null
kill "$tpid" "$rpid"; wait "$tpid" "$rpid" 2>/dev/null
[ -n "${KEEP:-}" ] && echo "kept $dir" || rm -rf "$dir"

#!/bin/bash
# The Redis store beside the embedded log and aedes (BENCHMARKS.md "The Redis store"):
# embedded `sync`, Redis `appendfsync always` / `everysec`, aedes + aedes-persistence-redis.
# Needs: cargo build --release -p ringmq -p ringmq-tools; redis-server; for aedes, npm ci in
# tools/peers/aedes. Usage: ROUNDS=3 DUR=6 MODES="sync redis-always redis-everysec aedes" SCEN="p2p ..." scripts/bench-redis.sh
# Broker on core 0; redis-server and the generator on core 1. MODES, SCEN, ROUNDS, DUR.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/ringmq}; BENCH=$ROOT/target/release/ringmq-bench
SCEN=${SCEN:-"p2p --pairs 100 --qos 1 --payload 64 --persistent"}
MODES=${MODES:-"sync redis-always redis-everysec"}
rinfo() { redis-cli -p $RP info $1 | tr -d '\r'; }
for r in $(seq 1 ${ROUNDS:-3}); do
  for m in $MODES; do
    PORT=$((19000 + RANDOM % 1000)); MP=$((PORT+1000)); rm -rf /tmp/d13data /tmp/r13; mkdir -p /tmp/r13
    EXTRA2=""
    if [[ $m == redis-* ]]; then
      RP=$((26000 + RANDOM % 1000))
      taskset -c 1 redis-server --port $RP --bind 127.0.0.1 --save "" --appendonly yes --appendfsync ${m#redis-} --dir /tmp/r13 >/dev/null & RPID=$!
      sleep 0.5
      EXTRA2="--store redis --redis-url redis://127.0.0.1:$RP"
    fi
    if [[ $m == aedes ]]; then
      RP=$((26000 + RANDOM % 1000))
      taskset -c 1 redis-server --port $RP --bind 127.0.0.1 --save "" --appendonly yes --appendfsync always --dir /tmp/r13 >/dev/null & RPID=$!
      sleep 0.5
      taskset -c 0 node $ROOT/tools/peers/aedes/server.js $PORT $RP >/dev/null & BP=$!
      sleep 1.5
      H0=0; T0=$(rinfo stats | awk -F: '/total_commands_processed/ {print $2}'); U0=$(rinfo cpu | awk -F: '/used_cpu_(sys|user):/ {s+=$2} END {print s}')
      OUT=$(taskset -c 1 $BENCH $SCEN --addr 127.0.0.1:$PORT --warmup ${WARM:-2} --duration ${DUR:-6} --broker-pid $BP 2>&1)
      T1=$(rinfo stats | awk -F: '/total_commands_processed/ {print $2}'); U1=$(rinfo cpu | awk -F: '/used_cpu_(sys|user):/ {s+=$2} END {print s}')
      N=$(echo "$OUT" | awk -F'[ /]+' '/^sent/ {print $NF}')
      echo "round $r aedes: $(echo "$OUT" | grep -iE "delivered msg|broker cpu|ack rtt|latency" | tr '\n' ' ' | tr -s ' ') | redis: $(python3 -c "n=$N; print('msgs (measured window) %d, commands/msg %.3f, redis cpu/msg %.2f us (whole run over the window)' % (n, ($T1-$T0)/max(n,1), ($U1-$U0)*1e6/max(n,1)))")"
      kill $BP $RPID; wait $BP $RPID 2>/dev/null
      continue
    fi
    taskset -c 0 $BIN --listen 127.0.0.1:$PORT --shards 1 --durability sync --log warn --data-dir /tmp/d13data --metrics-listen 127.0.0.1:$MP $EXTRA2 $EXTRA & BP=$!
    sleep 0.7
    C0=$(curl -s 127.0.0.1:$MP/metrics | grep -E "^ringmq_store_commits_total" | awk '{s+=$2} END {print s}')
    S0=$(curl -s 127.0.0.1:$MP/metrics | grep -E "^ringmq_messages_sent_total" | awk '{s+=$2} END {print s}')
    if [[ $m == redis-* ]]; then
      H0=$(rinfo commandstats | grep cmdstat_hset: | sed "s/^[^=]*=\([0-9]*\).*/\1/"); T0=$(rinfo stats | awk -F: '/total_commands_processed/ {print $2}'); U0=$(rinfo cpu | awk -F: '/used_cpu_(sys|user):/ {s+=$2} END {print s}')
    fi
    OUT=$(taskset -c 1 $BENCH $SCEN --addr 127.0.0.1:$PORT --warmup ${WARM:-2} --duration ${DUR:-6} --broker-pid $BP 2>&1)
    C1=$(curl -s 127.0.0.1:$MP/metrics | grep -E "^ringmq_store_commits_total" | awk '{s+=$2} END {print s}')
    S1=$(curl -s 127.0.0.1:$MP/metrics | grep -E "^ringmq_messages_sent_total" | awk '{s+=$2} END {print s}')
    LINE="round $r $m: $(echo "$OUT" | grep -iE "delivered msg|broker cpu|ack rtt|latency" | tr '\n' ' ' | tr -s ' ')"
    if [[ $m == redis-* ]]; then
      H1=$(rinfo commandstats | grep cmdstat_hset: | sed "s/^[^=]*=\([0-9]*\).*/\1/"); T1=$(rinfo stats | awk -F: '/total_commands_processed/ {print $2}'); U1=$(rinfo cpu | awk -F: '/used_cpu_(sys|user):/ {s+=$2} END {print s}')
      LINE="$LINE | redis: $(python3 -c "n=$S1-$S0; h=${H1:-0}-${H0:-0}; print('msgs sent %d, HSET/msg %.3f, commands/msg %.3f, round trips/msg %.5f, redis cpu/msg %.2f us' % (n, h/max(n,1), ($T1-$T0)/max(n,1), ($C1-$C0)/max(n,1), ($U1-$U0)*1e6/max(n,1)))")"
      kill $RPID; wait $RPID 2>/dev/null
    fi
    echo "$LINE"
    kill $BP; wait $BP 2>/dev/null
  done
done

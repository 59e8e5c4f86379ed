#!/bin/bash
# Redis memory per persistent session as a cluster node keeps it (`store = "redis"`,
# `redis_shared = true`): a fresh redis-server and one ringmq node (no Kafka needed for the
# store), SESSIONS (default 5000) MQTT 5 clients, each with a session expiry of a day,
# subscribing to its own `dev/<i>/cmd` at QoS 1 and disconnecting; then Redis's used_memory
# before and after, per session, and MEMORY USAGE of one session's keys.
#   benches/cluster/redis_session_memory.sh RINGMQ   (from the repository root; paho-mqtt)
set -u
ringmq=$1
n=${SESSIONS:-5000}
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
dir=$(mktemp -d /tmp/ringmq-session-memory.XXXX)
rp=$(free); mp=$(free)
redis-server --port "$rp" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no >/dev/null 2>&1 &
rpid=$!
sleep 0.5
"$ringmq" --listen "127.0.0.1:$mp" --shards 1 --store redis --redis-url "redis://127.0.0.1:$rp" \
  --redis-shared true --redis-broker-id a --data-dir "$dir/node" --log warn >"$dir/node.log" 2>&1 &
bpid=$!
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$mp) 2>/dev/null && break; sleep 0.1; done
before=$(redis-cli -p "$rp" info memory | awk -F: '/^used_memory:/ {print $2+0}')
python3 - "$mp" "$n" <<'PY'
import sys, threading
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
port, n = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"device-{i:07d}", protocol=mqtt.MQTTv5)
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    p = Properties(PacketTypes.CONNECT)
    p.SessionExpiryInterval = 86400
    c.connect("127.0.0.1", port, clean_start=False, properties=p)
    c.loop_start()
    c.subscribe(f"dev/{i}/cmd", qos=1)
    if not done.wait(5):
        sys.exit(f"no SUBACK for device {i}")
    c.disconnect()
    c.loop_stop()
PY
sleep 1
after=$(redis-cli -p "$rp" info memory | awk -F: '/^used_memory:/ {print $2+0}')
keys=$(redis-cli -p "$rp" dbsize)
one=0
for k in $(redis-cli -p "$rp" --scan --pattern 'ringmq:{device-0000001}*'); do
  one=$((one + $(redis-cli -p "$rp" memory usage "$k" samples 0)))
done
echo "sessions $n, keys $keys, used_memory $before -> $after bytes: $(( (after - before) / n )) bytes per session; MEMORY USAGE of one session's keys: $one bytes"
kill "$bpid"; wait "$bpid" 2>/dev/null
kill "$rpid"; wait "$rpid" 2>/dev/null
rm -rf "$dir"

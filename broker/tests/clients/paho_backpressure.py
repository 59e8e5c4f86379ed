"""Backpressure as a new user meets it, with paho-mqtt 2.x (MQTT 3.1.1): ten publishers send
QoS 1 as fast as paho lets them to one topic; one subscriber reads slower than they publish for
its first seconds (it sleeps in its message callback), then at full speed. Every PUBACKed
message must reach it, in order per publisher, and it must never be disconnected.

Usage: paho_backpressure.py PORT SUBSCRIBER_ID PUBLISHER_ID...   (exit 0 on success)
"""
import sys
import threading
import time

import paho.mqtt.client as mqtt

PORT = int(sys.argv[1])
SUB_ID = sys.argv[2]
PUB_IDS = sys.argv[3:]
PER_PUBLISHER = 2000
SLOW_SECONDS = 3.0


def fail(why):
    print(f"FAIL backpressure: {why}", file=sys.stderr)
    sys.exit(1)


def client(cid):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311)
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(0)
    return c


received = {}
disconnects = []
lock = threading.Lock()
started = [None]
sub_ready = threading.Event()


def on_message(c, u, m):
    pub, seq = m.payload.decode().split(":")
    seq = int(seq)
    with lock:
        want = received.get(pub, 0)
        if seq != want:
            disconnects.append(f"publisher {pub}: got {seq}, expected {want}")
        received[pub] = seq + 1
    if started[0] and time.time() - started[0] < SLOW_SECONDS:
        time.sleep(0.002)


sub = client(SUB_ID)
sub.on_message = on_message
sub.on_subscribe = lambda c, u, mid, rcs, p: sub_ready.set()
sub.on_disconnect = lambda c, u, flags, rc, p: disconnects.append(f"subscriber disconnected: {rc}")
sub.connect("127.0.0.1", PORT, keepalive=60)
sub.loop_start()
sub.subscribe("bp/paho", qos=1)
if not sub_ready.wait(10):
    fail("no SUBACK")
time.sleep(0.2)

acked = [0]


def on_publish(c, u, mid, rc, p):
    with lock:
        acked[0] += 1


pubs = []
for i, cid in enumerate(PUB_IDS):
    p = client(cid)
    p.on_publish = on_publish
    p.connect("127.0.0.1", PORT, keepalive=60)
    p.loop_start()
    pubs.append((i, p))

started[0] = time.time()


def flood(i, p):
    for seq in range(PER_PUBLISHER):
        info = p.publish("bp/paho", f"{i}:{seq}", qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            disconnects.append(f"publisher {i}: publish rc {info.rc}")
            return


threads = [threading.Thread(target=flood, args=pp) for pp in pubs]
for t in threads:
    t.start()
for t in threads:
    t.join()

total = PER_PUBLISHER * len(pubs)
deadline = time.time() + 120
while time.time() < deadline:
    with lock:
        done = acked[0] >= total and sum(received.values()) >= total
    if done or disconnects:
        break
    time.sleep(0.05)

with lock:
    got = sum(received.values())
    print(f"acked {acked[0]} of {total}, delivered {got} in {time.time() - started[0]:.1f} s")
    if disconnects:
        fail("; ".join(disconnects[:5]))
    if acked[0] != total:
        fail(f"only {acked[0]} of {total} acknowledged")
    if got != total or any(received.get(str(i), 0) != PER_PUBLISHER for i, _ in pubs):
        fail(f"acknowledged {total}, delivered {got}: {received}")
for _, p in pubs:
    p.disconnect()
sub.disconnect()

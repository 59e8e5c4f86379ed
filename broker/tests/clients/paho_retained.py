"""A new paho-mqtt subscriber takes every retained message a filter matches.

Usage: paho_retained.py PORT CLIENT_ID FILTER QOS COUNT
Prints "COUNT SECONDS" (distinct topics received, time to the last one); exit status 0 when
exactly COUNT distinct topics arrived, each with RETAIN set, none twice without DUP.
"""
import sys
import threading
import time

import paho.mqtt.client as mqtt

PORT, CID, FILTER, QOS, COUNT = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
topics = set()
problems = []
done = threading.Event()
last = [0.0]


def on_message(c, u, m):
    if not m.retain:
        problems.append(f"{m.topic} without RETAIN")
    if m.topic in topics and not m.dup:
        problems.append(f"{m.topic} twice")
    topics.add(m.topic)
    last[0] = time.monotonic()
    if len(topics) >= COUNT:
        done.set()


c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=CID, protocol=mqtt.MQTTv311)
c.max_inflight_messages_set(100)
c.on_message = on_message
c.on_connect = lambda c, u, f, rc, p: c.subscribe(FILTER, qos=QOS)
start = time.monotonic()
c.connect("127.0.0.1", int(PORT), keepalive=60)
c.loop_start()
done.wait(120)
# Anything beyond COUNT would be a message the filter does not match or a repeat.
time.sleep(0.5)
c.loop_stop()
print(len(topics), round(last[0] - start, 3))
if problems:
    print("problems:", problems[:5], file=sys.stderr)
    sys.exit(1)
sys.exit(0 if len(topics) == COUNT else 1)

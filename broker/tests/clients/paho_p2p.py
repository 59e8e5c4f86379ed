"""paho-mqtt publisher and subscriber on different shards (or, with PUB_PORT, the publisher on
another node of a cluster): QoS 0, 1 and 2 arrive, in order.

Usage: paho_p2p.py PORT v311|v5 SUB_ID PUB_ID [PUB_PORT]   (exit status 0 on success)
"""
import sys
import threading
import time

import paho.mqtt.client as mqtt

port, version, sub_id, pub_id = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
pub_port = int(sys.argv[5]) if len(sys.argv) > 5 else port
protocol = mqtt.MQTTv5 if version == "v5" else mqtt.MQTTv311
N = 30

received = []
done = threading.Event()
subscribed = threading.Event()


probed = threading.Event()


def on_message(client, userdata, msg):
    if msg.topic == "paho/probe":
        probed.set()
        return
    received.append((msg.topic, msg.payload, msg.qos))
    if len(received) == N:
        done.set()


sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=sub_id, protocol=protocol)
sub.on_message = on_message
sub.on_subscribe = lambda *a: subscribed.set()
sub.connect("127.0.0.1", port)
sub.loop_start()
sub.subscribe([("paho/p2p/#", 2), ("paho/probe", 0)])
if not subscribed.wait(10):
    sys.exit("no SUBACK")

pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=pub_id, protocol=protocol)
pub.connect("127.0.0.1", pub_port)
pub.loop_start()
# Another node routes to the subscriber once it has read the subscription's route record.
deadline = time.monotonic() + 20
while pub_port != port and not probed.is_set():
    if time.monotonic() > deadline:
        sys.exit("no route to the subscriber's node within 20 s")
    pub.publish("paho/probe", b"probe", qos=0)
    probed.wait(0.05)
for i in range(N):
    pub.publish(f"paho/p2p/{i % 3}", f"{i}".encode(), qos=i % 3).wait_for_publish(10)

if not done.wait(10):
    sys.exit(f"received {len(received)} of {N}")
# Every message exactly once, at its QoS, in publish order per topic (MQTT orders per topic;
# paho hands QoS 2 messages over at PUBREL, so across topics the order may differ).
if sorted(int(p) for _, p, _ in received) != list(range(N)):
    sys.exit(f"lost or duplicated: {received}")
for topic in {t for t, _, _ in received}:
    seq = [int(p) for t, p, _ in received if t == topic]
    if seq != sorted(seq):
        sys.exit(f"out of order on {topic}: {seq}")
if any(q != int(p) % 3 for _, p, q in received):
    sys.exit("wrong QoS")
pub.disconnect()
sub.disconnect()
print(f"paho {version}: {N} messages in order")

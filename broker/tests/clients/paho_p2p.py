"""paho-mqtt publisher and subscriber on different shards: QoS 0, 1 and 2 arrive, in order.

Usage: paho_p2p.py PORT v311|v5 SUB_ID PUB_ID   (exit status 0 on success)
"""
import sys
import threading

import paho.mqtt.client as mqtt

port, version, sub_id, pub_id = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
protocol = mqtt.MQTTv5 if version == "v5" else mqtt.MQTTv311
N = 30

received = []
done = threading.Event()
subscribed = threading.Event()


def on_message(client, userdata, msg):
    received.append((msg.topic, msg.payload, msg.qos))
    if len(received) == N:
        done.set()


sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=sub_id, protocol=protocol)
sub.on_message = on_message
sub.on_subscribe = lambda *a: subscribed.set()
sub.connect("127.0.0.1", port)
sub.loop_start()
sub.subscribe("paho/p2p/#", qos=2)
if not subscribed.wait(10):
    sys.exit("no SUBACK")

pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=pub_id, protocol=protocol)
pub.connect("127.0.0.1", port)
pub.loop_start()
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

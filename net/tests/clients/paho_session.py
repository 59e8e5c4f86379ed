"""One scripted paho-mqtt session against the capture server of independent_clients.rs.

Usage: paho_session.py PORT v311|v5
Connects with a will and credentials, subscribes (with MQTT 5 options), publishes QoS 0, 1
and 2 (MQTT 5: with properties), unsubscribes and disconnects, waiting for each ack.
"""
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

port = int(sys.argv[1])
v5 = sys.argv[2] == "v5"
protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-fixture", protocol=protocol)
client.username_pw_set("alice", "secret")
client.will_set("clients/paho/status", b"offline", qos=1, retain=True)

acked = threading.Event()
client.on_subscribe = lambda *args: acked.set()
client.on_unsubscribe = lambda *args: acked.set()

if v5:
    connect_props = Properties(PacketTypes.CONNECT)
    connect_props.SessionExpiryInterval = 120
    client.connect("127.0.0.1", port, keepalive=30, clean_start=True, properties=connect_props)
else:
    client.connect("127.0.0.1", port, keepalive=30)
client.loop_start()

def wait_ack():
    if not acked.wait(10):
        sys.exit("no ack from the capture server")
    acked.clear()

if v5:
    client.subscribe([("paho/+/in", SubscribeOptions(qos=2, noLocal=True, retainAsPublished=True, retainHandling=1))])
else:
    client.subscribe([("paho/+/in", 2), ("paho/#", 1)])
wait_ack()

for qos in (0, 1, 2):
    props = None
    if v5:
        props = Properties(PacketTypes.PUBLISH)
        props.MessageExpiryInterval = 60
        props.ContentType = "text/plain"
        props.ResponseTopic = "paho/reply"
        props.CorrelationData = b"\x01\x02"
        props.UserProperty = [("k", "v")]
    info = client.publish(f"paho/qos{qos}", f"payload {qos}".encode(), qos=qos, properties=props)
    info.wait_for_publish(10)

client.unsubscribe("paho/+/in")
wait_ack()
client.disconnect()
client.loop_stop()

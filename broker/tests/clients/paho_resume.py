"""paho-mqtt persistent session: subscribe and leave, or come back and take what was queued.

Usage: paho_resume.py PORT v311|v5 CLIENT_ID subscribe|drain N
  subscribe: connects with a persistent session (v5: expiry 3600 s), subscribes to resume/#
             at QoS 1, disconnects.
  drain N:   reconnects to the session and expects exactly the N queued messages 0..N-1, in
             order (exit status 0 on success).
"""
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

port, version, client_id, phase = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
v5 = version == "v5"
protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311

kwargs = {} if v5 else {"clean_session": False}
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **kwargs)
received = []
connected = threading.Event()
present = []


def on_connect(c, userdata, flags, reason, properties):
    present.append(flags.session_present)
    connected.set()


client.on_connect = on_connect
client.on_message = lambda c, u, m: received.append(int(m.payload))
props = None
if v5:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
else:
    client.connect("127.0.0.1", port)
client.loop_start()
if not connected.wait(10):
    sys.exit("no CONNACK")

if phase == "subscribe":
    subscribed = threading.Event()
    client.on_subscribe = lambda *a: subscribed.set()
    client.subscribe("resume/#", qos=1)
    if not subscribed.wait(10):
        sys.exit("no SUBACK")
    client.disconnect()
    client.loop_stop()
    sys.exit(0)

n = int(sys.argv[5])
if not present or not present[0]:
    sys.exit("the session was not present")
deadline = time.time() + 20
while len(received) < n and time.time() < deadline:
    time.sleep(0.05)
time.sleep(0.3)
client.disconnect()
client.loop_stop()
if received != list(range(n)):
    sys.exit(f"expected 0..{n}, got {len(received)}: {received[:10]}...")

"""paho-mqtt over WebSocket (ws or wss) against ringmq, run by broker/tests/tls_ws.rs.

Usage: paho_ws.py PORT ws|wss PATH CA_FILE TCP_PORT

A subscriber over WebSocket and a mosquitto_sub-free TCP subscriber (paho over TCP) both get
a QoS 1 message of 70,000 bytes (several WebSocket frames' worth of TCP segments) and a
small QoS 0 one published over WebSocket; clients land on both shards (ids vary).
"""
import ssl
import sys
import threading
import time

import paho.mqtt.client as mqtt

port, scheme, path, ca, tcp_port = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
port = int(port)


def client(cid, websocket):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid,
                    transport="websockets" if websocket else "tcp")
    if websocket:
        c.ws_set_options(path=path)
        if scheme == "wss":
            c.tls_set(ca_certs=ca)
    got, ready = [], threading.Event()
    c.on_message = lambda c_, u, m: got.append((m.topic, len(m.payload)))
    c.on_subscribe = lambda *a: ready.set()
    c.connect("127.0.0.1", port if websocket else tcp_port)
    c.loop_start()
    return c, got, ready


subs = []
for n in range(2):
    c, got, ready = client(f"{scheme}-sub-{n}", True)
    c.subscribe("pw/#", qos=1)
    subs.append((c, got, ready))
t, tgot, tready = client(f"{scheme}-tcp-sub", False)
t.subscribe("pw/#", qos=1)
subs.append((t, tgot, tready))
for _, _, ready in subs:
    assert ready.wait(5), "SUBACK"
for n in range(2):
    p, _, _ = client(f"{scheme}-pub-{n}", True)
    info = p.publish(f"pw/{n}", b"x" * 70000, qos=1)
    info.wait_for_publish(5)
    assert info.is_published(), "PUBACK"
    p.publish(f"pw/small/{n}", b"y", qos=0)
    time.sleep(0.1)
    p.disconnect()
    p.loop_stop()
deadline = time.time() + 5
want = sorted([("pw/0", 70000), ("pw/1", 70000), ("pw/small/0", 1), ("pw/small/1", 1)])
while time.time() < deadline and any(sorted(got) != want for _, got, _ in subs):
    time.sleep(0.05)
for c, got, _ in subs:
    assert sorted(got) == want, f"{c._client_id}: {sorted(got)}"
    c.disconnect()
    c.loop_stop()
print("OK")

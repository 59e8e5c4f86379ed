"""AsyncAPI enforcement seen by paho-mqtt 2.x (MQTT 5), run by broker/tests/asyncapi.rs against a
broker started with broker/tests/asyncapi/fleet-3.0.yaml (cases lenient, strict) or
broker/tests/asyncapi/avro-2.6.yaml (case avro).

Usage: paho_asyncapi.py PORT CASE   (CASE: lenient | strict | avro; exit 0 on success)
"""
import queue
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

PORT, CASE = int(sys.argv[1]), sys.argv[2]


def fail(why):
    print(f"FAIL {CASE}: {why}", file=sys.stderr)
    sys.exit(1)


class Client:
    def __init__(self, cid):
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
        self.msgs, self.acks, self.subacks, self.gone = queue.Queue(), {}, queue.Queue(), queue.Queue()
        self.c.on_message = lambda c, u, m: self.msgs.put(m)
        self.c.on_publish = lambda c, u, mid, rc, p: self.acks.__setitem__(mid, (rc, p))
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        self.c.on_disconnect = lambda c, u, flags, rc, p: self.gone.put(rc)
        props = Properties(PacketTypes.CONNECT)
        props.RequestProblemInformation = 1
        self.c.connect("127.0.0.1", PORT, keepalive=60, clean_start=True, properties=props)
        self.c.loop_start()
        time.sleep(0.2)

    def pub(self, topic, payload, qos=1, content_type=None):
        p = Properties(PacketTypes.PUBLISH)
        if content_type:
            p.ContentType = content_type
        info = self.c.publish(topic, payload, qos=qos, properties=p)
        if qos == 0:
            return None
        deadline = time.time() + 5
        while info.mid not in self.acks:
            if time.time() > deadline:
                fail(f"no PUBACK for {topic}")
            time.sleep(0.01)
        rc, props = self.acks[info.mid]
        reason = getattr(props, "ReasonString", "") if props else ""
        return rc.value, reason

    def drain(self):
        """The payloads delivered until none came for a second."""
        got = []
        try:
            while True:
                got.append(self.msgs.get(timeout=1).payload)
        except queue.Empty:
            return got

    def sub(self, topic):
        self.c.subscribe(topic, qos=1)
        return [rc.value for rc in self.subacks.get(timeout=5)]


def lenient():
    sub = Client("aa-sub")
    if sub.sub("devices/+/uplink") != [0x87]:
        fail("subscribing to uplink (clients only publish there) must be 0x87")
    if sub.sub("#") != [0x87]:
        fail("# can match uplink: 0x87")
    if sub.sub("devices/+/telemetry") != [1] or sub.sub("other/#") != [1]:
        fail("telemetry and a topic of no channel: granted")
    p = Client("aa-pub")
    ok = p.pub("devices/d1/telemetry", b'{"t": 21.5, "unit": "C"}')
    if ok != (0, ""):
        fail(f"valid reading: {ok}")
    rc, why = p.pub("devices/d1/telemetry", b'{"t": "hot", "unit": "C"}')
    if rc != 0x99 or "/t" not in why:
        fail(f"invalid reading: {rc:#x} {why!r}")
    rc, why = p.pub("devices/d1/telemetry", b"not json")
    if rc != 0x99 or "not JSON" not in why:
        fail(f"non-JSON: {rc:#x} {why!r}")
    rc, why = p.pub("devices/zz/telemetry", b'{"t": 1, "unit": "C"}')
    if rc != 0x90 or "deviceId" not in why:
        fail(f"bad parameter: {rc:#x} {why!r}")
    rc, why = p.pub("devices/d1/commands", b'{"op": "reboot"}')
    if rc != 0x87:
        fail(f"publishing where clients only subscribe: {rc:#x} {why!r}")
    rc, why = p.pub("devices/d1/telemetry", b'{"t": 1, "unit": "C"}', content_type="text/plain")
    if rc != 0x99 or "content type" not in why:
        fail(f"content type: {rc:#x} {why!r}")
    if p.pub("other/topic", b"anything") != (0, ""):
        fail("not strict: a topic of no channel passes")
    # Only the valid messages were delivered.
    got = sub.drain()
    if got != [b'{"t": 21.5, "unit": "C"}', b"anything"]:
        fail(f"delivered: {got}")
    # QoS 0 invalid: DISCONNECT 0x99 (asyncapi_invalid_qos0 = disconnect).
    q0 = Client("aa-q0")
    q0.pub("devices/d2/telemetry", b'{"t": 500, "unit": "C"}', qos=0)
    rc = q0.gone.get(timeout=5)
    if rc.value != 0x99:
        fail(f"QoS 0 invalid: disconnected with {rc}")
    print("lenient ok")


def strict():
    c = Client("as-c")
    rc, why = c.pub("other/topic", b"x")
    if rc != 0x90:
        fail(f"strict, no channel: {rc:#x} {why!r}")
    if c.sub("other/#") != [0x8F]:
        fail("strict: a filter matching no channel is 0x8F")
    if c.pub("fleet/status", b"all good", content_type="text/plain") != (0, ""):
        fail("a text status is valid")
    print("strict ok")


def avro():
    """Against broker/tests/asyncapi/avro-2.6.yaml: Avro binary datums, written here by hand."""

    def long(n):
        z, out = (n << 1) ^ (n >> 63), bytearray()
        while True:
            byte, z = z & 0x7F, z >> 7
            if not z:
                return bytes(out + bytes([byte]))
            out.append(byte | 0x80)

    def string(s):
        return long(len(s.encode())) + s.encode()

    import struct

    good = string("m-1") + struct.pack("<d", 12.5) + long(2) + long(1) + string("ok")
    sub = Client("av-sub")
    if sub.sub("meters/+/reading") != [1]:
        fail("subscribing to readings")
    pub = Client("av-pub")
    if pub.pub("meters/m-1/reading", good) != (0, ""):
        fail("a valid datum is accepted")
    rc, why = pub.pub("meters/m-1/reading", good[:-1])
    if rc != 0x99 or "not an Avro datum" not in why:
        fail(f"a truncated datum: {rc:#x} {why!r}")
    rc, why = pub.pub("meters/m-1/reading", good[:-5] + long(3) + long(0))
    if rc != 0x99 or "enum index 3" not in why:
        fail(f"an enum index out of range: {rc:#x} {why!r}")
    got = sub.drain()
    if got != [good]:
        fail(f"delivered: {got}")
    print("avro ok")


{"lenient": lenient, "strict": strict, "avro": avro}[CASE]()

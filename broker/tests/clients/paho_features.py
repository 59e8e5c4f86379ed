"""MQTT feature checks with paho-mqtt 2.x (MQTT 5 unless noted), run by broker/tests/features.rs
against the real broker with 2 shards. Client ids come from the Rust side so that each role
is homed on a known shard: A and C on shard 0, B and D on shard 1.

Usage: paho_features.py PORT CASE A B C D   (exit status 0 on success; the reason otherwise)
"""
import queue
import socket
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

PORT = int(sys.argv[1])
CASE = sys.argv[2]
A, B, C, D = sys.argv[3:7]


def fail(why):
    print(f"FAIL {CASE}: {why}", file=sys.stderr)
    sys.exit(1)


def check(cond, why):
    if not cond:
        fail(why)


def props(kind, **kw):
    p = Properties(kind)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


class Client:
    def __init__(self, cid, v5=True, clean=True, connect_props=None, will=None, user=None,
                 password=None, expect=0):
        proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        kw = {} if v5 else {"clean_session": clean}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=proto, **kw)
        self.msgs = queue.Queue()
        self.connacks = queue.Queue()
        self.subacks = queue.Queue()
        self.acks = {}
        self.c.on_connect = lambda c, u, flags, rc, p: self.connacks.put((rc, flags, p))
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        self.c.on_message = lambda c, u, m: self.msgs.put(m)
        self.c.on_publish = lambda c, u, mid, rc, p: self.acks.__setitem__(mid, rc)
        if will:
            self.c.will_set(**will)
        if user is not None:
            self.c.username_pw_set(user, password)
        ckw = {"clean_start": clean, "properties": connect_props} if v5 else {}
        self.c.connect("127.0.0.1", PORT, keepalive=60, **ckw)
        self.c.loop_start()
        try:
            rc, flags, p = self.connacks.get(timeout=10)
        except queue.Empty:
            fail(f"{cid}: no CONNACK")
        self.rc, self.session_present, self.connack_props = rc, flags.session_present, p
        code = rc.value if hasattr(rc, "value") else int(rc)
        if code != expect:
            fail(f"{cid}: CONNACK {code}, expected {expect}")

    def sub(self, topic, qos=1, no_local=False, rap=False, rh=0, sub_id=None):
        opts = SubscribeOptions(qos=qos, noLocal=no_local, retainAsPublished=rap, retainHandling=rh)
        p = props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=sub_id) if sub_id else None
        if self.c.protocol == mqtt.MQTTv5:
            self.c.subscribe(topic, options=opts, properties=p)
        else:
            self.c.subscribe(topic, qos)
        try:
            return [r.value for r in self.subacks.get(timeout=10)]
        except queue.Empty:
            fail(f"no SUBACK for {topic}")

    def pub(self, topic, payload, qos=1, retain=False, p=None):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=p)
        info.wait_for_publish(10)
        rc = self.acks.get(info.mid)
        return rc.value if hasattr(rc, "value") else rc

    def get(self, timeout=5):
        try:
            return self.msgs.get(timeout=timeout)
        except queue.Empty:
            fail("expected a message, got none")

    def none(self, wait=1.0):
        time.sleep(wait)
        if not self.msgs.empty():
            m = self.msgs.get()
            fail(f"unexpected message on {m.topic!r}: {m.payload!r}")

    def drop(self):
        """Closes the socket without DISCONNECT (an abnormal disconnect)."""
        self.c.loop_stop()
        self.c.socket().shutdown(socket.SHUT_RDWR)
        self.c.socket().close()

    def bye(self, reason=None, p=None):
        rc = ReasonCode(PacketTypes.DISCONNECT, identifier=reason) if reason is not None else None
        self.c.disconnect(reasoncode=rc, properties=p)
        time.sleep(0.1)
        self.c.loop_stop()


def case_retained():
    pub = Client(A)
    check(pub.connack_props.RetainAvailable == 1, "RetainAvailable")
    pub.pub("ret/1", b"one", retain=True)
    pub.pub("ret/2", b"two", retain=True)
    pub.pub("ret/3", b"three", retain=True)
    pub.pub("ret/3", b"", retain=True)  # clears
    sub = Client(B)
    sub.sub("ret/+", rh=0)
    got = sorted((m.topic, m.payload, m.retain) for m in (sub.get(), sub.get()))
    check(got == [("ret/1", b"one", True), ("ret/2", b"two", True)], f"retained on subscribe: {got}")
    sub.none(0.5)
    sub.sub("ret/+", rh=1)  # exists already: nothing
    sub.none(0.5)
    sub.sub("ret/#", rh=2)  # never
    sub.none(0.5)
    sub.sub("ret/1", rh=1)  # new: sent
    m = sub.get()
    check((m.topic, m.payload, m.retain) == ("ret/1", b"one", True), "retain handling 1 on a new subscription")
    # Live retained publish: RETAIN cleared unless retain as published.
    rap = Client(C)
    rap.sub("live/#", rap=True, rh=2)
    sub.sub("live/#", rap=False, rh=2)
    pub.pub("live/x", b"L", retain=True)
    check(rap.get().retain, "retain as published keeps RETAIN")
    check(not sub.get().retain, "RETAIN cleared on normal forwarding")
    # A replacement is what new subscribers get, on either shard.
    pub.pub("ret/1", b"uno", retain=True)
    for cid in (C, D):
        late = Client(cid)
        late.sub("ret/1")
        check(late.get().payload == b"uno", f"replaced retained message on {cid}")
        late.bye()
    print("retained: stored, cleared, wildcards, retain handling 0/1/2, retain as published")


def case_will():
    sub = Client(B)
    sub.sub("will/#", qos=1)
    wp = props(PacketTypes.WILLMESSAGE, ContentType="text/plain", UserProperty=[("k", "v")])
    w = Client(A, will={"topic": "will/a", "payload": b"gone", "qos": 1, "properties": wp})
    w.drop()
    m = sub.get()
    check((m.topic, m.payload) == ("will/a", b"gone"), f"will on abnormal close: {m.topic}")
    check(m.properties.ContentType == "text/plain", "will content type")
    check(("k", "v") in m.properties.UserProperty, "will user property")
    # Will Delay Interval present and 0: published at once, user properties in order.
    w0 = props(PacketTypes.WILLMESSAGE, WillDelayInterval=0, UserProperty=[("a", "1"), ("b", "2")])
    w = Client(A, will={"topic": "will/zero", "payload": b"now", "qos": 1, "properties": w0})
    w.drop()
    m = sub.get()
    check(m.topic == "will/zero", f"will with delay 0: {m.topic}")
    check(m.properties.UserProperty == [("a", "1"), ("b", "2")], f"will user properties in order: {m.properties.UserProperty}")
    # A normal DISCONNECT discards the will.
    w = Client(A, will={"topic": "will/b", "payload": b"x", "qos": 1})
    w.bye()
    sub.none(1.0)
    # DISCONNECT with reason 0x04 publishes it.
    w = Client(A, will={"topic": "will/c", "payload": b"asked", "qos": 1})
    w.bye(reason=4)
    check(sub.get().topic == "will/c", "will on DISCONNECT 0x04")
    # Will delay: the session resumes before the delay ends -> no will.
    cp = props(PacketTypes.CONNECT, SessionExpiryInterval=60)
    wd = props(PacketTypes.WILLMESSAGE, WillDelayInterval=2)
    w = Client(C, clean=False, connect_props=cp, will={"topic": "will/d", "payload": b"late", "qos": 1, "properties": wd})
    w.drop()
    time.sleep(0.5)
    w = Client(C, clean=False, connect_props=cp)
    sub.none(2.5)
    w.bye()
    # Will delay elapses -> will, not before the delay.
    wd = props(PacketTypes.WILLMESSAGE, WillDelayInterval=1)
    w = Client(D, clean=False, connect_props=cp, will={"topic": "will/e", "payload": b"delayed", "qos": 1, "properties": wd})
    start = time.monotonic()
    w.drop()
    m = sub.get(timeout=5)
    took = time.monotonic() - start
    check(m.topic == "will/e" and took >= 0.9, f"delayed will after {took:.2f}s")
    print(f"will: abnormal close, properties, DISCONNECT 0x00/0x04, delay cancelled, delay {took:.2f}s")


def case_properties():
    sub = Client(B)
    sub.sub("prop/#", qos=1)
    p = props(PacketTypes.PUBLISH, UserProperty=[("a", "1"), ("b", "2")], PayloadFormatIndicator=1,
              ContentType="application/json", ResponseTopic="resp/x", CorrelationData=b"\x01\x02",
              MessageExpiryInterval=100)
    pub = Client(A)
    pub.pub("prop/t", b"{}", p=p)
    m = sub.get()
    mp = m.properties
    check(mp.UserProperty == [("a", "1"), ("b", "2")], f"user properties {mp.UserProperty}")
    check(mp.PayloadFormatIndicator == 1, "payload format indicator")
    check(mp.ContentType == "application/json", "content type")
    check(mp.ResponseTopic == "resp/x" and mp.CorrelationData == b"\x01\x02", "response topic / correlation data")
    check(0 < mp.MessageExpiryInterval <= 100, f"expiry {mp.MessageExpiryInterval}")
    # Request / response across shards.
    responder = Client(C)
    responder.sub("req/#")
    requester = Client(D)
    requester.sub("resp/me")

    def answer(c, u, msg):
        rp = props(PacketTypes.PUBLISH, CorrelationData=msg.properties.CorrelationData)
        c.publish(msg.properties.ResponseTopic, b"pong:" + msg.payload, qos=1, properties=rp)

    responder.c.on_message = answer
    requester.pub("req/ping", b"42", p=props(PacketTypes.PUBLISH, ResponseTopic="resp/me", CorrelationData=b"id-7"))
    r = requester.get()
    check(r.payload == b"pong:42" and r.properties.CorrelationData == b"id-7", "request/response")
    print("properties: user properties, format, content type, response topic, correlation data, request/response")


def case_subscription_options():
    sub = Client(B)
    sub.sub("sid/#", sub_id=7)
    sub.sub("sid/x", sub_id=9)
    pub = Client(A)
    pub.pub("sid/x", b"1")
    m = sub.get()
    # One copy carrying every matching identifier (MQTT 5 3.3.4), not one copy each.
    check(sorted(m.properties.SubscriptionIdentifier) == [7, 9],
          f"subscription identifiers {m.properties.SubscriptionIdentifier}")
    sub.none(0.5)
    pub.pub("sid/y", b"2")
    m = sub.get()
    check(m.properties.SubscriptionIdentifier == [7], "one matching subscription, one identifier")
    sub.none(0.5)
    # No local: the publisher's own subscription does not get its messages; others do.
    me = Client(C)
    me.sub("nl/t", no_local=True)
    other = Client(D)
    other.sub("nl/t")
    me.pub("nl/t", b"mine")
    check(other.get().payload == b"mine", "other subscriber gets it")
    me.none(0.8)
    # Overlapping subscriptions of one client, one no local: its own message comes back
    # once, with the identifier of the subscription that wants it.
    me.sub("nlm/#", no_local=True, sub_id=3)
    me.sub("nlm/t", sub_id=4)
    me.pub("nlm/t", b"own")
    m = me.get()
    check(m.properties.SubscriptionIdentifier == [4], f"no local mixed {m.properties.SubscriptionIdentifier}")
    me.none(0.5)
    # Retain as published differs on a retained message: two copies, one per RETAIN flag.
    ra = Client("ra-sub")
    ra.sub("ra/#", rap=True, sub_id=1)
    ra.sub("ra/x", rap=False, sub_id=2)
    pub.pub("ra/x", b"r", retain=True)
    got = sorted((m.retain, tuple(m.properties.SubscriptionIdentifier)) for m in (ra.get(), ra.get()))
    check(got == [(False, (2,)), (True, (1,))], f"retain as published copies {got}")
    ra.none(0.5)
    pub.pub("ra/x", b"", retain=True)
    print("subscription identifiers and no local")


def case_session():
    # Assigned client identifier and the CONNACK capabilities.
    anon = Client("")
    p = anon.connack_props
    check(getattr(p, "AssignedClientIdentifier", ""), "assigned client identifier")
    check(p.SharedSubscriptionAvailable == 1 and p.SubscriptionIdentifierAvailable == 1
          and p.WildcardSubscriptionAvailable == 1 and p.RetainAvailable == 1, "capabilities")
    check(p.TopicAliasMaximum == 64 and p.ReceiveMaximum > 0 and p.MaximumPacketSize > 0, "limits announced")
    check(not hasattr(p, "MaximumQoS"), "maximum QoS absent when 2")
    check(not hasattr(p, "ServerReference"), "no server reference")
    anon.bye()
    # Session expiry set to 0 at DISCONNECT ends the session.
    cp = props(PacketTypes.CONNECT, SessionExpiryInterval=60)
    s = Client(B, clean=False, connect_props=cp)
    s.sub("sess/t")
    s.bye(p=props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))
    s = Client(B, clean=False, connect_props=cp)
    check(not s.session_present, "session ended by DISCONNECT expiry 0")
    s.sub("sess/t")
    s.bye()
    s = Client(B, clean=False, connect_props=cp)
    check(s.session_present, "session kept for its expiry")
    s.bye()
    # Message expiry: expired messages are not delivered; the rest carry what is left.
    s = Client(D, clean=False, connect_props=cp)
    s.sub("exp/#")
    s.bye()
    pub = Client(A)
    pub.pub("exp/short", b"s", p=props(PacketTypes.PUBLISH, MessageExpiryInterval=1))
    pub.pub("exp/long", b"l", p=props(PacketTypes.PUBLISH, MessageExpiryInterval=60))
    time.sleep(2.2)
    s = Client(D, clean=False, connect_props=cp)
    m = s.get()
    check(m.topic == "exp/long", f"expired message delivered: {m.topic}")
    check(m.properties.MessageExpiryInterval <= 58, f"remaining expiry {m.properties.MessageExpiryInterval}")
    s.none(0.5)
    # Maximum packet size: larger messages are not sent to this client.
    small = Client(C, connect_props=props(PacketTypes.CONNECT, MaximumPacketSize=200))
    small.sub("mps/t")
    pub.pub("mps/t", b"x" * 500)
    pub.pub("mps/t", b"ok")
    check(small.get().payload == b"ok", "small message delivered, large one dropped")
    small.none(0.3)
    # Topic aliases towards the client: the first PUBLISH sets one, the next uses it.
    al = Client(C, connect_props=props(PacketTypes.CONNECT, TopicAliasMaximum=4))
    al.sub("alias/t")
    pub.pub("alias/t", b"1")
    pub.pub("alias/t", b"2")
    m1, m2 = al.get(), al.get()
    check(m1.topic == "alias/t" and m1.properties.TopicAlias == 1, "alias set")
    check(m2.topic == "" and m2.properties.TopicAlias == 1, f"alias used: {m2.topic!r}")
    # Topic aliases from the client: set with the topic, then used with an empty topic.
    sub = Client(B)
    sub.sub("inalias/t")
    pub.pub("inalias/t", b"1", p=props(PacketTypes.PUBLISH, TopicAlias=3))
    pub.pub("", b"2", p=props(PacketTypes.PUBLISH, TopicAlias=3))
    got = [(m.topic, m.payload) for m in (sub.get(), sub.get())]
    check(got == [("inalias/t", b"1"), ("inalias/t", b"2")], f"inbound alias: {got}")
    print("session: assigned id, capabilities, expiry at DISCONNECT, message expiry, maximum packet size, topic aliases both ways")


def case_shared():
    m1, m2 = Client(A), Client(B)
    check(m1.sub("$share/g/sh/t") == [1] and m2.sub("$share/g/sh/t") == [1], "shared SUBACK")
    plain = Client(D)
    plain.sub("sh/t")
    pub = Client(C)
    n = 60
    for i in range(n):
        pub.pub("sh/t", str(i).encode())
    got1, got2 = [], []
    deadline = time.monotonic() + 10
    while len(got1) + len(got2) < n and time.monotonic() < deadline:
        for src, dst in ((m1, got1), (m2, got2)):
            try:
                dst.append(int(src.msgs.get(timeout=0.05).payload))
            except queue.Empty:
                pass
    check(sorted(got1 + got2) == list(range(n)), f"each message once to the group: {len(got1)}+{len(got2)}")
    check(len(got1) >= n // 4 and len(got2) >= n // 4, f"spread across shards: {len(got1)}/{len(got2)}")
    plain_got = [int(plain.get().payload) for _ in range(n)]
    check(plain_got == list(range(n)), "a normal subscriber still gets everything")
    # A no-local shared subscription is a protocol error: the broker disconnects.
    print(f"shared: {len(got1)} on shard 0, {len(got2)} on shard 1, none lost or duplicated")


def case_auth():
    user, password = sys.argv[7], sys.argv[8]
    Client(A, user=user, password="wrong", expect=134)
    Client(A, user="nobody", password="x", expect=134)
    Client(A, expect=135)  # anonymous refused
    ok = Client(A, user=user, password=password)
    check(ok.pub("public/x", b"1") == 0, "allowed publish")
    check(ok.pub("secret/x", b"1") == 135, "denied publish gets PUBACK 0x87")
    check(ok.sub("secret/#") == [135], "denied subscribe gets SUBACK 0x87")
    check(ok.sub("devices/" + A + "/#") == [1], "%c pattern allows the client's own tree")
    check(ok.sub("devices/+/#") == [135], "pattern does not cover other clients")
    other = Client(B, user=user, password=password)
    other.pub("devices/" + A + "/t", b"x")  # not B's tree: denied, not delivered
    other.pub("users/" + user + "/t", b"y")  # %u: allowed, but A subscribed to its own tree only
    ok.none(0.5)
    mine = Client(C, user=user, password=password)
    mine.pub("devices/" + A + "/t", b"z")  # C is not A either
    ok.none(0.3)
    print("auth: bad password 0x86, anonymous 0x87, PUBACK/SUBACK 0x87, %c/%u patterns")


CASES = {
    "retained": case_retained,
    "will": case_will,
    "properties": case_properties,
    "subscription_options": case_subscription_options,
    "session": case_session,
    "shared": case_shared,
    "auth": case_auth,
}

CASES[CASE]()

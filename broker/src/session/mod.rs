//! A client session, sans-IO: its subscriptions, the packet ids and inflight window of
//! outbound QoS 1/2 messages, the queue of messages waiting for the window or for the client
//! to come back, and the inbound QoS 2 packet ids awaiting PUBREL. Methods write the packets
//! they produce into the caller's output buffer and never touch sockets or clocks.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use net::codec::{
    BoxedProperties, Packet, PacketId, ProtocolVersion, PubResp, PubRespKind, Publish, QoS,
    SubscriptionOptions,
};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::ids::ConnId;

/// An application message as it travels through the broker (payload shared, never copied).
#[derive(Clone, Debug)]
pub struct Message {
    /// Topic name.
    pub topic: ByteString,
    /// Payload.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// RETAIN flag as published.
    pub retain: bool,
    /// MQTT 5 properties passed through to subscribers (topic alias and subscription
    /// identifiers removed).
    pub properties: BoxedProperties,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Awaiting {
    /// QoS 1 sent, waiting for PUBACK.
    Ack,
    /// QoS 2 sent, waiting for PUBREC.
    Rec,
    /// PUBREL sent, waiting for PUBCOMP.
    Comp,
}

#[derive(Debug)]
struct Inflight {
    packet_id: PacketId,
    stage: Awaiting,
    message: Message,
    qos: QoS,
    retain: bool,
}

/// What happened to a message offered to a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Encoded into the output buffer.
    Sent,
    /// Queued (window full or client offline).
    Queued,
    /// QoS 0 with nowhere to go: dropped.
    Dropped,
    /// Queued after dropping the oldest queued message (offline session at its bound).
    QueuedDroppedOldest,
    /// A connected client's queue is at its bound: it is not keeping up and must be
    /// disconnected. The message was not queued.
    Overflow,
}

/// The limits a session works within (from the config and the client's CONNECT).
#[derive(Clone, Copy, Debug)]
pub struct SessionLimits {
    /// Outbound QoS 1/2 messages in flight: the client's receive maximum, else the config's.
    pub window: usize,
    /// Queued messages.
    pub queue_max: usize,
    /// Queued topic and payload bytes.
    pub queue_bytes_max: usize,
}

/// One client's session on its home shard.
#[derive(Debug)]
pub struct Session {
    /// The client identifier.
    pub client_id: ByteString,
    /// Protocol version of the current (or last) connection.
    pub version: ProtocolVersion,
    /// The connection, while the client is connected.
    pub conn: Option<ConnId>,
    /// Seconds the session outlives its connection (0: removed at disconnect; u32::MAX: never
    /// expires, as for MQTT 3 clean session = 0).
    pub expiry_interval: u32,
    /// When a disconnected session expires.
    pub expires_at: Option<Instant>,
    /// Subscriptions by filter.
    pub subscriptions: FxHashMap<ByteString, SubscriptionOptions>,
    /// Messages dropped for this session (QoS 0 with a full outbox, oldest queued ones).
    pub dropped: u64,
    limits: SessionLimits,
    next_packet_id: u16,
    inflight: VecDeque<Inflight>,
    queue: VecDeque<(Message, QoS, bool)>,
    /// Topic and payload bytes in `queue`.
    queued_bytes: usize,
    inbound_qos2: FxHashSet<u16>,
}

/// Bytes a queued message holds on to (its topic and payload).
fn weight(message: &Message) -> usize {
    message.topic.len() + message.payload.len()
}

/// Appends `packet` to an output buffer. Packets the broker builds are always encodable
/// (their fields came from decoded packets, which respect the wire limits); should one not be,
/// only that packet is dropped, with a log line. The one place outbound packets are encoded.
pub(crate) fn encode(version: ProtocolVersion, packet: &Packet, out: &mut BytesMut) {
    if let Err(e) = packet.encode(version, out) {
        tracing::warn!(error = %e, "dropping an outbound packet that cannot be encoded");
    }
}

impl Session {
    /// A new, empty session.
    pub fn new(client_id: ByteString, version: ProtocolVersion, limits: SessionLimits) -> Self {
        Self {
            client_id,
            version,
            conn: None,
            expiry_interval: 0,
            expires_at: None,
            subscriptions: FxHashMap::default(),
            dropped: 0,
            limits,
            next_packet_id: 1,
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            inbound_qos2: FxHashSet::default(),
        }
    }

    /// Sets the limits for a new connection (its receive maximum).
    pub fn set_limits(&mut self, limits: SessionLimits) {
        self.limits = limits;
    }

    /// Outbound messages in flight.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// Messages queued.
    pub fn queued_len(&self) -> usize {
        self.queue.len()
    }

    fn allocate_packet_id(&mut self) -> PacketId {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if let Some(pid) = PacketId::new(id) {
                if !self.inflight.iter().any(|f| f.packet_id == pid) {
                    return pid;
                }
            }
        }
    }

    fn write_publish(&self, f: &Inflight, dup: bool, out: &mut BytesMut) {
        let publish = Publish {
            dup,
            qos: f.qos,
            retain: f.retain,
            topic: f.message.topic.clone(),
            packet_id: Some(f.packet_id),
            properties: f.message.properties.clone(),
            payload: f.message.payload.clone(),
        };
        encode(self.version, &Packet::Publish(publish), out);
    }

    /// Offers a message at `qos` (already capped by the subscription). `out` is the
    /// connection's output buffer while connected and able to take more, `None` otherwise.
    pub fn deliver(
        &mut self,
        message: &Message,
        qos: QoS,
        retain: bool,
        out: Option<&mut BytesMut>,
    ) -> Delivery {
        if qos == QoS::AtMostOnce {
            return match out {
                Some(out) if self.conn.is_some() => {
                    let publish = Publish {
                        dup: false,
                        qos,
                        retain,
                        topic: message.topic.clone(),
                        packet_id: None,
                        properties: message.properties.clone(),
                        payload: message.payload.clone(),
                    };
                    encode(self.version, &Packet::Publish(publish), out);
                    Delivery::Sent
                }
                _ => {
                    self.dropped += 1;
                    Delivery::Dropped
                }
            };
        }
        if let Some(out) = out {
            if self.conn.is_some()
                && self.inflight.len() < self.limits.window
                && self.queue.is_empty()
            {
                self.send_new(message.clone(), qos, retain, out);
                return Delivery::Sent;
            }
        }
        let weight = weight(message);
        let full = |s: &Self| {
            !s.queue.is_empty()
                && (s.queue.len() >= s.limits.queue_max
                    || s.queued_bytes + weight > s.limits.queue_bytes_max)
        };
        if !full(self) {
            self.enqueue(message.clone(), qos, retain);
            return Delivery::Queued;
        }
        if self.conn.is_some() {
            return Delivery::Overflow;
        }
        while full(self) {
            self.dequeue();
            self.dropped += 1;
        }
        self.enqueue(message.clone(), qos, retain);
        Delivery::QueuedDroppedOldest
    }

    fn enqueue(&mut self, message: Message, qos: QoS, retain: bool) {
        self.queued_bytes += weight(&message);
        self.queue.push_back((message, qos, retain));
    }

    fn dequeue(&mut self) -> Option<(Message, QoS, bool)> {
        let entry = self.queue.pop_front()?;
        self.queued_bytes = self.queued_bytes.saturating_sub(weight(&entry.0));
        Some(entry)
    }

    fn send_new(&mut self, message: Message, qos: QoS, retain: bool, out: &mut BytesMut) {
        let packet_id = self.allocate_packet_id();
        let stage = if qos == QoS::ExactlyOnce {
            Awaiting::Rec
        } else {
            Awaiting::Ack
        };
        let f = Inflight {
            packet_id,
            stage,
            message,
            qos,
            retain,
        };
        self.write_publish(&f, false, out);
        self.inflight.push_back(f);
    }

    /// Moves queued messages into the window while it has room.
    pub fn fill_window(&mut self, out: &mut BytesMut) {
        while self.inflight.len() < self.limits.window {
            let Some((message, qos, retain)) = self.dequeue() else {
                break;
            };
            self.send_new(message, qos, retain, out);
        }
    }

    fn position(&self, packet_id: PacketId, stage: Awaiting) -> Option<usize> {
        self.inflight
            .iter()
            .position(|f| f.packet_id == packet_id && f.stage == stage)
    }

    /// PUBACK from the client. Returns false for an unknown packet id.
    pub fn on_puback(&mut self, packet_id: PacketId, out: &mut BytesMut) -> bool {
        let Some(i) = self.position(packet_id, Awaiting::Ack) else {
            return false;
        };
        self.inflight.remove(i);
        self.fill_window(out);
        true
    }

    /// PUBREC from the client: answer PUBREL (with 0x92 for an unknown id in MQTT 5).
    pub fn on_pubrec(&mut self, packet_id: PacketId, out: &mut BytesMut) -> bool {
        let known = match self.position(packet_id, Awaiting::Rec) {
            Some(i) => {
                if let Some(f) = self.inflight.get_mut(i) {
                    f.stage = Awaiting::Comp;
                }
                true
            }
            None => self.position(packet_id, Awaiting::Comp).is_some(),
        };
        let mut rel = PubResp::new(PubRespKind::PubRel, packet_id);
        if !known {
            rel.reason = net::codec::ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
        }
        encode(self.version, &Packet::PubResp(rel), out);
        known
    }

    /// PUBCOMP from the client. Returns false for an unknown packet id.
    pub fn on_pubcomp(&mut self, packet_id: PacketId, out: &mut BytesMut) -> bool {
        let Some(i) = self.position(packet_id, Awaiting::Comp) else {
            return false;
        };
        self.inflight.remove(i);
        self.fill_window(out);
        true
    }

    /// An inbound QoS 2 PUBLISH: true if it is new (deliver it), false if it is a
    /// retransmission of one still awaiting PUBREL (do not deliver again).
    pub fn inbound_qos2_begin(&mut self, packet_id: PacketId) -> bool {
        self.inbound_qos2.insert(packet_id.get())
    }

    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub fn inbound_qos2_len(&self) -> usize {
        self.inbound_qos2.len()
    }

    /// PUBREL from the client: forget the id; true if it was known.
    pub fn inbound_qos2_release(&mut self, packet_id: PacketId) -> bool {
        self.inbound_qos2.remove(&packet_id.get())
    }

    /// A client resumed this session: resend every unacknowledged message (PUBLISH with DUP,
    /// or PUBREL) in the original order, then fill the window from the queue.
    pub fn resume(&mut self, out: &mut BytesMut) {
        for f in &self.inflight {
            match f.stage {
                Awaiting::Ack | Awaiting::Rec => self.write_publish(f, true, out),
                Awaiting::Comp => encode(
                    self.version,
                    &Packet::PubResp(PubResp::new(PubRespKind::PubRel, f.packet_id)),
                    out,
                ),
            }
        }
        self.fill_window(out);
    }

    /// Clean start: forget everything but the identity.
    pub fn clear(&mut self) {
        self.subscriptions.clear();
        self.inflight.clear();
        self.queue.clear();
        self.queued_bytes = 0;
        self.inbound_qos2.clear();
        self.next_packet_id = 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use net::codec::Decoder;

    fn message(n: u8) -> Message {
        Message {
            topic: "t".into(),
            payload: Bytes::from(vec![n]),
            qos: QoS::ExactlyOnce,
            retain: false,
            properties: Default::default(),
        }
    }

    fn packets(out: &mut BytesMut) -> Vec<Packet> {
        let d = Decoder {
            version: ProtocolVersion::V311,
            packet_bytes_max: 1 << 20,
        };
        let mut v = Vec::new();
        while let Some(p) = d.decode(out).unwrap() {
            v.push(p);
        }
        v
    }

    fn session(window: usize, queue_max: usize) -> Session {
        let mut s = Session::new(
            "c".into(),
            ProtocolVersion::V311,
            SessionLimits {
                window,
                queue_max,
                queue_bytes_max: usize::MAX,
            },
        );
        s.conn = Some(ConnId {
            slot: 0,
            generation: 0,
        });
        s
    }

    #[test]
    fn window_queue_and_acks() {
        let mut s = session(2, 10);
        let mut out = BytesMut::new();
        for n in 0..4 {
            let d = s.deliver(&message(n), QoS::AtLeastOnce, false, Some(&mut out));
            assert_eq!(
                d,
                if n < 2 {
                    Delivery::Sent
                } else {
                    Delivery::Queued
                }
            );
        }
        let sent = packets(&mut out);
        assert_eq!(sent.len(), 2);
        let Packet::Publish(p) = &sent[0] else {
            panic!()
        };
        assert!(s.on_puback(p.packet_id.unwrap(), &mut out));
        assert!(
            !s.on_puback(p.packet_id.unwrap(), &mut out),
            "second ack is unknown"
        );
        let next = packets(&mut out);
        let Packet::Publish(p) = &next[0] else {
            panic!()
        };
        assert_eq!(&p.payload[..], &[2]);
        assert_eq!((s.inflight_len(), s.queued_len()), (2, 1));
    }

    #[test]
    fn qos2_outbound_flow_and_resume_with_dup() {
        let mut s = session(10, 10);
        let mut out = BytesMut::new();
        s.deliver(&message(1), QoS::ExactlyOnce, false, Some(&mut out));
        s.deliver(&message(2), QoS::ExactlyOnce, false, Some(&mut out));
        let sent = packets(&mut out);
        let Packet::Publish(first) = &sent[0] else {
            panic!()
        };
        assert!(s.on_pubrec(first.packet_id.unwrap(), &mut out));
        assert!(
            matches!(&packets(&mut out)[0], Packet::PubResp(r) if r.kind == PubRespKind::PubRel)
        );
        // The client goes away and comes back: PUBREL for the first, DUP PUBLISH for the second.
        s.resume(&mut out);
        let again = packets(&mut out);
        assert!(matches!(&again[0], Packet::PubResp(r) if r.kind == PubRespKind::PubRel));
        let Packet::Publish(p) = &again[1] else {
            panic!()
        };
        assert!(p.dup);
        assert_eq!(&p.payload[..], &[2]);
        assert!(s.on_pubcomp(first.packet_id.unwrap(), &mut out));
    }

    #[test]
    fn offline_queue_drops_oldest_online_overflows() {
        let mut s = session(1, 2);
        s.conn = None;
        for n in 0..3 {
            s.deliver(&message(n), QoS::AtLeastOnce, false, None);
        }
        assert_eq!((s.queued_len(), s.dropped), (2, 1));
        s.conn = Some(ConnId {
            slot: 0,
            generation: 0,
        });
        let mut out = BytesMut::new();
        s.resume(&mut out);
        let Packet::Publish(p) = &packets(&mut out)[0] else {
            panic!()
        };
        assert_eq!(&p.payload[..], &[1], "oldest was dropped");
        s.deliver(&message(9), QoS::AtLeastOnce, false, Some(&mut out));
        assert_eq!(
            s.deliver(&message(10), QoS::AtLeastOnce, false, Some(&mut out)),
            Delivery::Overflow
        );
    }

    #[test]
    fn queue_is_bounded_in_bytes_too() {
        let mut s = session(1, 1000);
        s.set_limits(SessionLimits {
            window: 1,
            queue_max: 1000,
            queue_bytes_max: 10,
        });
        s.conn = None;
        // Each message weighs 2 bytes (topic "t" + 1 byte payload): 5 fit in 10 bytes.
        for n in 0..8 {
            s.deliver(&message(n), QoS::AtLeastOnce, false, None);
        }
        assert_eq!((s.queued_len(), s.dropped), (5, 3));
        s.conn = Some(ConnId {
            slot: 0,
            generation: 0,
        });
        let mut out = BytesMut::new();
        s.resume(&mut out);
        assert_eq!(s.queued_len(), 4, "one moved into the window");
        assert_eq!(
            s.deliver(&message(9), QoS::AtLeastOnce, false, Some(&mut out)),
            Delivery::Queued
        );
        assert_eq!(
            s.deliver(&message(10), QoS::AtLeastOnce, false, Some(&mut out)),
            Delivery::Overflow
        );
    }

    #[test]
    fn qos2_inbound_dedup() {
        let mut s = session(1, 1);
        let id = PacketId::new(5).unwrap();
        assert!(s.inbound_qos2_begin(id));
        assert!(!s.inbound_qos2_begin(id));
        assert!(s.inbound_qos2_release(id));
        assert!(!s.inbound_qos2_release(id));
    }
}

//! A client session, sans-IO: its subscriptions, the packet ids and inflight window of
//! outbound QoS 1/2 messages, the queue of messages waiting for the window or for the client
//! to come back, the inbound QoS 2 packet ids awaiting PUBREL, and its will. Methods write the
//! packets they produce into the caller's output buffer and never touch sockets; the caller
//! passes the time (`now`) where message expiry matters.

use std::collections::VecDeque;
use std::num::NonZeroU16;
use std::time::Instant;

use bytes::BytesMut;
use bytestring::ByteString;
use net::codec::{
    BoxedProperties, Packet, PacketId, ProtocolVersion, PubResp, PubRespKind, PublishRef, QoS,
    SubscriptionOptions,
};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::ids::ConnId;
use storage::record::Record;

mod drops;
mod grant;
mod journal;
mod message;
pub use drops::{DropReason, Drops};
pub use grant::{Grant, SubIds};
pub use journal::Journal;
pub use message::{stored, unstored, Message};

use crate::config::QueueFullPolicy;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Awaiting {
    /// QoS 1 sent, waiting for PUBACK.
    Ack,
    /// QoS 2 sent, waiting for PUBREC.
    Rec,
    /// PUBREL sent, waiting for PUBCOMP.
    Comp,
}

/// A message held by the session (queued or in flight) with its grant.
#[derive(Debug, Clone)]
struct Outgoing {
    message: Message,
    grant: Grant,
    /// Sequence number in the session's durable record (0: not durable).
    seq: u64,
    /// Recovered from the log after a restart: may have been sent before (DUP).
    recovered: bool,
}

#[derive(Debug)]
struct Inflight {
    packet_id: PacketId,
    stage: Awaiting,
    out: Outgoing,
}

/// What happened to a message offered to a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Encoded into the output buffer.
    Sent,
    /// Queued (window full or client offline).
    Queued,
    /// Dropped (counted in [`Session::drops`] with its reason).
    Dropped,
    /// The queue is at its bound and the policy is `refuse`: nothing was queued or dropped;
    /// the caller refuses the publish (or drops it when the publisher cannot be told).
    Full,
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
    /// Topic aliases the client accepts (its topic alias maximum; 0: none).
    pub alias_max: u16,
    /// Largest packet the client accepts (its maximum packet size), if it set one.
    pub packet_bytes_max: Option<usize>,
    /// What a message meets when the queue is at its bound.
    pub full_policy: QueueFullPolicy,
}

impl SessionLimits {
    /// Limits with no alias and no client packet size limit.
    pub fn new(window: usize, queue_max: usize, queue_bytes_max: usize) -> Self {
        Self {
            window,
            queue_max,
            queue_bytes_max,
            alias_max: 0,
            packet_bytes_max: None,
            full_policy: QueueFullPolicy::DropOldest,
        }
    }
}

/// One client's session on its home shard.
#[derive(Debug)]
pub struct Session {
    /// The client identifier.
    pub client_id: ByteString,
    /// The user name the client authenticated with (ACL checks).
    pub user: Option<ByteString>,
    /// Protocol version of the current (or last) connection.
    pub version: ProtocolVersion,
    /// The connection, while the client is connected.
    pub conn: Option<ConnId>,
    /// Seconds the session outlives its connection (0: removed at disconnect; u32::MAX: never
    /// expires, as for MQTT 3 clean session = 0).
    pub expiry_interval: u32,
    /// When a disconnected session expires.
    pub expires_at: Option<Instant>,
    /// Subscriptions by filter, with their subscription identifier (0: none).
    pub subscriptions: FxHashMap<ByteString, (SubscriptionOptions, u32)>,
    /// The will of the current connection, or of the last one while its delay runs.
    pub will: Option<Message>,
    /// Will delay interval in seconds (MQTT 5).
    pub will_delay: u32,
    /// When a delayed will is due (set at an abnormal disconnect).
    pub will_due: Option<Instant>,
    /// Messages dropped for this session (QoS 0 with a full outbox, oldest queued, expired,
    /// too large for the client).
    pub dropped: u64,
    /// Drops not yet moved into the shard's counters (the core takes them).
    pub drops: Drops,
    /// A drop episode was logged; cleared when the queue empties.
    pub drop_logged: bool,
    limits: SessionLimits,
    next_packet_id: u16,
    inflight: VecDeque<Inflight>,
    queue: VecDeque<Outgoing>,
    /// Topic and payload bytes in `queue`.
    queued_bytes: usize,
    inbound_qos2: FxHashSet<u16>,
    /// Topic aliases given to the client on this connection (server to client).
    aliases: FxHashMap<ByteString, NonZeroU16>,
    /// The session is persistent and the broker keeps a log: its changes are journaled.
    pub durable: bool,
    /// Changes not yet handed to the shard's log.
    pub journal: Vec<Journal>,
    /// Sequence numbers of messages done (acknowledged, expired, dropped) not yet handed to
    /// the shard's log: one batched record per loop pass.
    pub acked: Vec<u64>,
    /// The core has this session on its list of sessions with `acked` to write.
    pub acked_listed: bool,
    /// The shard's id of the message being delivered: the sequence number a journaled message
    /// gets (set by the core before each delivery).
    pub log_id: u64,
    /// The window's ids are not all between its front's and its back's (ids recovered from the
    /// log, or an id given inside the span after a wrap): allocation scans.
    ids_unordered: bool,
    /// Sequence numbers of the messages this session had when it was loaded from another
    /// cluster node's store, until when they count: a copy that node forwards again is not
    /// delivered twice (`core/handover.rs`).
    pub imported: Option<Box<(FxHashSet<u64>, Instant)>>,
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
            user: None,
            version,
            conn: None,
            expiry_interval: 0,
            expires_at: None,
            subscriptions: FxHashMap::default(),
            will: None,
            will_delay: 0,
            will_due: None,
            dropped: 0,
            drops: Drops::default(),
            drop_logged: false,
            limits,
            next_packet_id: 1,
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            inbound_qos2: FxHashSet::default(),
            aliases: FxHashMap::default(),
            durable: false,
            journal: Vec::new(),
            acked: Vec::new(),
            acked_listed: false,
            log_id: 0,
            ids_unordered: false,
            imported: None,
        }
    }

    /// Puts back a message recovered from the log: in flight under its packet id if it had
    /// one (QoS 2 sent, or released), else queued; it goes out with DUP.
    pub fn restore(
        &mut self,
        seq: u64,
        message: Message,
        grant: Grant,
        packet_id: Option<u16>,
        released: bool,
    ) {
        let out = Outgoing {
            message,
            grant,
            seq,
            recovered: true,
        };
        match packet_id.and_then(PacketId::new) {
            Some(packet_id) => {
                self.ids_unordered = true;
                self.inflight.push_back(Inflight {
                    packet_id,
                    stage: if released {
                        Awaiting::Comp
                    } else {
                        Awaiting::Rec
                    },
                    out,
                });
            }
            None => self.enqueue(out),
        }
    }

    /// Puts back an inbound QoS 2 packet id recovered from the log.
    pub fn restore_inbound_qos2(&mut self, packet_id: u16) {
        self.inbound_qos2.insert(packet_id);
    }

    /// Sets the limits for a new connection (its receive maximum, topic alias maximum and
    /// maximum packet size); topic aliases start afresh.
    pub fn set_limits(&mut self, limits: SessionLimits) {
        self.limits = limits;
        self.aliases.clear();
    }

    /// Outbound messages in flight.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// A QoS 1/2 message given now would be sent at once (connected, nothing queued before
    /// it, room in the inflight window).
    pub fn window_open(&self) -> bool {
        self.conn.is_some() && self.queue.is_empty() && self.inflight.len() < self.limits.window
    }

    /// The messages not finished for the client (in flight before its PUBACK / PUBREC, then
    /// queued), in order, with their sequence numbers; QoS 1/2 only and none a shared group
    /// owns (another member gets those when the session ends).
    pub fn unfinished(&self) -> impl Iterator<Item = (&Message, u64)> {
        self.inflight
            .iter()
            .filter(|f| f.stage != Awaiting::Comp)
            .map(|f| &f.out)
            .chain(self.queue.iter())
            .filter(|o| o.grant.shared.is_none() && o.grant.qos != QoS::AtMostOnce)
            .map(|o| (&o.message, o.seq))
    }

    /// The durable sequence numbers of every message in flight or queued.
    pub fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        let inflight = self.inflight.iter().map(|f| f.out.seq);
        inflight
            .chain(self.queue.iter().map(|o| o.seq))
            .filter(|&s| s != 0)
    }

    /// Messages queued.
    pub fn queued_len(&self) -> usize {
        self.queue.len()
    }

    /// Topic and payload bytes queued.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    fn allocate_packet_id(&mut self) -> PacketId {
        if self.inflight.is_empty() {
            self.ids_unordered = false;
        }
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if let Some(pid) = PacketId::new(id) {
                if !self.may_be_in_flight(pid) {
                    return pid;
                }
                if !self.inflight.iter().any(|f| f.packet_id == pid) {
                    // Free, but inside the window's span: the window now spans more than one
                    // cycle of ids and the span no longer bounds them. Scan until it empties.
                    self.ids_unordered = true;
                    return pid;
                }
            }
        }
    }

    /// False when `pid` cannot be in flight, without a scan: ids are given in cyclic order and
    /// the window keeps that order (oldest first), so every id in flight lies between the
    /// front's and the back's. Ids recovered from the log may not: then always scan.
    fn may_be_in_flight(&self, pid: PacketId) -> bool {
        let (Some(front), Some(back)) = (self.inflight.front(), self.inflight.back()) else {
            return false;
        };
        if self.ids_unordered {
            return true;
        }
        // Cyclic distance over ids 1..=65535.
        let dist = |a: u16, b: u16| (i32::from(b) - i32::from(a)).rem_euclid(65_535);
        let f = front.packet_id.get();
        dist(f, pid.get()) <= dist(f, back.packet_id.get())
    }

    /// Encodes one PUBLISH of `o` for this client, with what MQTT 5 adds on the way out: the
    /// remaining message expiry interval, the subscription identifier, a topic alias when the
    /// client accepts them. Returns false, writing nothing, when the packet is larger than the
    /// client's maximum packet size [MQTT-3.1.2-25].
    fn write_publish(
        &mut self,
        message: &Message,
        grant: &Grant,
        packet_id: Option<PacketId>,
        dup: bool,
        now: Instant,
        out: &mut BytesMut,
    ) -> bool {
        let v5 = self.version.is_v5();
        // Properties are rewritten only when MQTT 5 asks for it; otherwise the message's own
        // are encoded as they are (no copy, no reference count taken).
        let rewrite = v5
            && (message.expires_at.is_some()
                || !grant.sub_ids.is_empty()
                || self.limits.alias_max > 0);
        let mut owned = BoxedProperties::default();
        if rewrite {
            owned = message.properties.clone();
            if let Some(at) = message.expires_at {
                let left = at.saturating_duration_since(now).as_millis().div_ceil(1000);
                owned.message_expiry_interval =
                    Some(u32::try_from(left).unwrap_or(u32::MAX).max(1));
            }
            if !grant.sub_ids.is_empty() {
                owned.subscription_identifiers = grant.sub_ids.as_slice().to_vec();
            }
        }
        let mut publish = PublishRef {
            dup,
            qos: grant.qos,
            retain: grant.retain,
            topic: &message.topic,
            packet_id,
            properties: if rewrite { &owned } else { &message.properties },
            payload: &message.payload,
        };
        if let Some(max) = self.limits.packet_bytes_max {
            // Checked with the full topic: an alias only makes the packet smaller.
            if publish.encoded_len(self.version) > max {
                self.drop(DropReason::TooLarge);
                return false;
            }
        }
        let mut alias = None;
        if rewrite && self.limits.alias_max > 0 {
            if let Some(&a) = self.aliases.get(&message.topic) {
                alias = Some(a);
                publish.topic = "";
            } else if self.aliases.len() < usize::from(self.limits.alias_max) {
                let next = u16::try_from(self.aliases.len() + 1).ok();
                if let Some(a) = next.and_then(NonZeroU16::new) {
                    self.aliases.insert(message.topic.clone(), a);
                    alias = Some(a);
                }
            }
        }
        let aliased;
        if let Some(a) = alias {
            let mut p = owned.clone();
            p.topic_alias = Some(a);
            aliased = p;
            publish.properties = &aliased;
        }
        if let Err(e) = publish.encode(self.version, out) {
            tracing::warn!(error = %e, "dropping an outbound PUBLISH that cannot be encoded");
        }
        true
    }

    /// Offers a message (QoS already capped by the subscription). `out` is the connection's
    /// output buffer while connected and able to take more, `None` otherwise. Expired
    /// messages and messages larger than the client accepts are dropped. With `may_exceed`
    /// (a connected session fed by a publisher the caller pauses) a QoS 1/2 message is
    /// queued even past the queue bound; otherwise the bound's policy applies.
    pub fn deliver(
        &mut self,
        message: &Message,
        grant: Grant,
        now: Instant,
        out: Option<&mut BytesMut>,
        may_exceed: bool,
    ) -> Delivery {
        if message.expired(now) {
            self.drop(DropReason::Expired);
            return Delivery::Dropped;
        }
        if grant.qos == QoS::AtMostOnce {
            return match out {
                Some(out) if self.conn.is_some() => {
                    if self.write_publish(message, &grant, None, false, now, out) {
                        Delivery::Sent
                    } else {
                        Delivery::Dropped
                    }
                }
                _ => {
                    self.drop(DropReason::Outbox);
                    Delivery::Dropped
                }
            };
        }
        if let Some(out) = out {
            if self.conn.is_some()
                && self.inflight.len() < self.limits.window
                && self.queue.is_empty()
            {
                let seq = self.journal_enqueue(message, &grant, now);
                let o = Outgoing {
                    message: message.clone(),
                    grant,
                    seq,
                    recovered: false,
                };
                return if self.send_new(o, now, out) {
                    Delivery::Sent
                } else {
                    self.journal_done(seq);
                    Delivery::Dropped
                };
            }
        }
        let weight = weight(message);
        let full = |s: &Self| {
            !s.queue.is_empty()
                && (s.queue.len() >= s.limits.queue_max
                    || s.queued_bytes + weight > s.limits.queue_bytes_max)
        };
        if may_exceed || !full(self) {
            let seq = self.journal_enqueue(message, &grant, now);
            self.enqueue(Outgoing {
                message: message.clone(),
                grant,
                seq,
                recovered: false,
            });
            return Delivery::Queued;
        }
        match self.limits.full_policy {
            QueueFullPolicy::Refuse => return Delivery::Full,
            QueueFullPolicy::DropNewest => {
                self.drop(DropReason::QueueFull);
                return Delivery::Dropped;
            }
            QueueFullPolicy::DropOldest => {}
        }
        while full(self) {
            if let Some(old) = self.dequeue() {
                self.journal_done(old.seq);
            }
            self.drop(DropReason::QueueFull);
        }
        let seq = self.journal_enqueue(message, &grant, now);
        self.enqueue(Outgoing {
            message: message.clone(),
            grant,
            seq,
            recovered: false,
        });
        Delivery::Queued
    }

    /// Counts a dropped message (also for drops the caller decides, as a refusal nobody can
    /// be told of).
    pub fn drop(&mut self, reason: DropReason) {
        self.dropped += 1;
        self.drops.count(reason);
    }

    fn enqueue(&mut self, o: Outgoing) {
        self.queued_bytes += weight(&o.message);
        self.queue.push_back(o);
    }

    fn dequeue(&mut self) -> Option<Outgoing> {
        let o = self.queue.pop_front()?;
        self.queued_bytes = self.queued_bytes.saturating_sub(weight(&o.message));
        Some(o)
    }

    /// Sends a QoS 1/2 message under a new packet id; false if it was too large to send.
    fn send_new(&mut self, o: Outgoing, now: Instant, out: &mut BytesMut) -> bool {
        let packet_id = self.allocate_packet_id();
        if !self.write_publish(&o.message, &o.grant, Some(packet_id), o.recovered, now, out) {
            return false;
        }
        if o.grant.qos == QoS::ExactlyOnce && o.seq != 0 {
            self.journal(Record::Sent {
                client: self.client_id.to_string(),
                seq: o.seq,
                packet_id: packet_id.get(),
            });
        }
        let stage = if o.grant.qos == QoS::ExactlyOnce {
            Awaiting::Rec
        } else {
            Awaiting::Ack
        };
        self.inflight.push_back(Inflight {
            packet_id,
            stage,
            out: o,
        });
        true
    }

    /// Moves queued messages into the window while it has room (expired ones are dropped).
    pub fn fill_window(&mut self, now: Instant, out: &mut BytesMut) {
        while self.inflight.len() < self.limits.window {
            let Some(o) = self.dequeue() else {
                break;
            };
            if o.message.expired(now) {
                self.drop(DropReason::Expired);
                self.journal_done(o.seq);
                continue;
            }
            let seq = o.seq;
            if !self.send_new(o, now, out) {
                self.journal_done(seq);
            }
        }
    }

    fn position(&self, packet_id: PacketId, stage: Awaiting) -> Option<usize> {
        self.inflight
            .iter()
            .position(|f| f.packet_id == packet_id && f.stage == stage)
    }

    /// The in-flight message at `i` is done: its sequence number is journaled.
    fn settle(&mut self, i: usize) {
        if let Some(f) = self.inflight.remove(i) {
            self.journal_done(f.out.seq);
        }
    }

    /// PUBACK from the client. Returns false for an unknown packet id.
    pub fn on_puback(&mut self, packet_id: PacketId, now: Instant, out: &mut BytesMut) -> bool {
        let Some(i) = self.position(packet_id, Awaiting::Ack) else {
            return false;
        };
        self.settle(i);
        self.fill_window(now, out);
        true
    }

    /// PUBREC from the client: answer PUBREL (with 0x92 for an unknown id in MQTT 5). A PUBREC
    /// with an error reason ends the flow [MQTT-4.3.3-9].
    pub fn on_pubrec(&mut self, r: &PubResp, now: Instant, out: &mut BytesMut) -> bool {
        let packet_id = r.packet_id;
        if r.reason.0 >= 0x80 {
            let Some(i) = self.position(packet_id, Awaiting::Rec) else {
                return false;
            };
            if let Some(f) = self.inflight.remove(i) {
                self.journal_done(f.out.seq);
            }
            self.fill_window(now, out);
            return true;
        }
        let known = match self.position(packet_id, Awaiting::Rec) {
            Some(i) => {
                let mut seq = 0;
                if let Some(f) = self.inflight.get_mut(i) {
                    f.stage = Awaiting::Comp;
                    seq = f.out.seq;
                }
                if seq != 0 {
                    self.journal(Record::Released {
                        client: self.client_id.to_string(),
                        seq,
                    });
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
    pub fn on_pubcomp(&mut self, packet_id: PacketId, now: Instant, out: &mut BytesMut) -> bool {
        let Some(i) = self.position(packet_id, Awaiting::Comp) else {
            return false;
        };
        self.settle(i);
        self.fill_window(now, out);
        true
    }

    /// An inbound QoS 2 PUBLISH: true if it is new (deliver it), false if it is a
    /// retransmission of one still awaiting PUBREL (do not deliver again).
    pub fn inbound_qos2_begin(&mut self, packet_id: PacketId) -> bool {
        let new = self.inbound_qos2.insert(packet_id.get());
        if new {
            self.journal(Record::Qos2Received {
                client: self.client_id.to_string(),
                packet_id: packet_id.get(),
            });
        }
        new
    }

    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub fn inbound_qos2_len(&self) -> usize {
        self.inbound_qos2.len()
    }

    /// PUBREL from the client: forget the id; true if it was known.
    pub fn inbound_qos2_release(&mut self, packet_id: PacketId) -> bool {
        let known = self.inbound_qos2.remove(&packet_id.get());
        if known {
            self.journal(Record::Qos2Released {
                client: self.client_id.to_string(),
                packet_id: packet_id.get(),
            });
        }
        known
    }

    /// A client resumed this session: resend every unacknowledged message (PUBLISH with DUP,
    /// or PUBREL) in the original order, then fill the window from the queue.
    pub fn resume(&mut self, now: Instant, out: &mut BytesMut) {
        let mut inflight = std::mem::take(&mut self.inflight);
        // A message now larger than the client accepts is dropped, not kept in the window.
        inflight.retain(|f| match f.stage {
            Awaiting::Ack | Awaiting::Rec => {
                let sent = self.write_publish(
                    &f.out.message,
                    &f.out.grant,
                    Some(f.packet_id),
                    true,
                    now,
                    out,
                );
                if !sent {
                    self.journal_done(f.out.seq);
                }
                sent
            }
            Awaiting::Comp => {
                encode(
                    self.version,
                    &Packet::PubResp(PubResp::new(PubRespKind::PubRel, f.packet_id)),
                    out,
                );
                true
            }
        });
        self.inflight = inflight;
        self.fill_window(now, out);
    }

    /// Takes the messages this session received through shared subscriptions and has not
    /// finished (in flight before PUBREL, or queued), so they can go to another member of
    /// their group when the session ends.
    pub fn take_shared_unfinished(&mut self) -> Vec<(ByteString, Message)> {
        let mut taken = Vec::new();
        let mut keep = VecDeque::with_capacity(self.inflight.len());
        for mut f in std::mem::take(&mut self.inflight) {
            match f.out.grant.shared.take() {
                Some(group) if f.stage != Awaiting::Comp => {
                    self.journal_done(f.out.seq);
                    taken.push((group, f.out.message));
                }
                group => {
                    f.out.grant.shared = group;
                    keep.push_back(f);
                }
            }
        }
        self.inflight = keep;
        let mut queue = VecDeque::with_capacity(self.queue.len());
        for mut o in std::mem::take(&mut self.queue) {
            match o.grant.shared.take() {
                Some(group) => {
                    self.journal_done(o.seq);
                    taken.push((group, o.message));
                }
                None => queue.push_back(o),
            }
        }
        self.queue = queue;
        self.queued_bytes = self.queue.iter().map(|o| weight(&o.message)).sum();
        taken
    }
}

#[cfg(test)]
mod tests;

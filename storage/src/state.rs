//! The durable state the log describes, rebuilt by replaying records: persistent sessions
//! (subscriptions, unacknowledged messages, inbound QoS 2 ids) and retained messages. Also
//! what compaction writes back: the records that recreate exactly this state. Message bodies
//! are kept in [`Bodies`] (shared chunks), once per message, referred to by each recipient
//! (once compaction rewrote them, once per message per compaction step, as on disk).

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap;

use crate::bodies::{Bodies, BodyRef, Moves};
use crate::compact;
use crate::queue::Queue;
use crate::record::{Record, StoredMessage, StoredSubscription};

/// An unacknowledged message of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageState {
    /// The message body in its state's [`Bodies`] (shared with the other sessions that got
    /// the same message): read it with [`State::body`]. Equal references mean the same body
    /// only within one state.
    pub body: BodyRef,
    /// QoS it goes out with.
    pub qos: u8,
    /// RETAIN flag on the way out.
    pub retain: bool,
    /// QoS 2: the packet id it went out under, if it did.
    pub packet_id: Option<u16>,
    /// QoS 2: PUBREC arrived (resend PUBREL, not the PUBLISH).
    pub released: bool,
}

/// One persistent session (its messages' bodies are in its state's [`Bodies`]).
#[derive(Clone, Debug, Default)]
pub struct SessionState {
    /// Session expiry interval, seconds.
    pub expiry: u32,
    /// Subscriptions by filter.
    pub subscriptions: BTreeMap<String, StoredSubscription>,
    /// Unacknowledged messages by sequence.
    pub messages: Queue,
    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub qos2_received: BTreeSet<u16>,
    /// The oldest log segment that may hold one of its records (segment ids start at 1; 0
    /// until the log notes one): what compaction rewrites first. Kept here rather than in a
    /// map of its own so a logged message costs one session lookup.
    pub segment: u64,
}

impl SessionState {
    /// Notes that segment `seg` holds one of its records, unless an older one is noted
    /// (0: nothing to note).
    pub fn note_segment(&mut self, seg: u64) {
        if self.segment == 0 {
            self.segment = seg;
        }
    }
}

/// Everything durable.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// Persistent sessions by client id.
    pub sessions: FxHashMap<String, SessionState>,
    /// Retained messages by topic, with their versions.
    pub retained: BTreeMap<String, (StoredMessage, u64)>,
    /// The bodies the sessions' messages refer to.
    pub bodies: Bodies,
    /// The body of the last [`Record::Message`], held once: what the [`Record::Ref`]s that
    /// follow it refer to (the broker writes a message's references right after its body).
    last_body: Option<(u64, BodyRef)>,
}

/// Equal when the sessions, their messages (bodies compared by their bytes) and the retained
/// messages are.
impl PartialEq for State {
    fn eq(&self, other: &Self) -> bool {
        self.retained == other.retained
            && self.sessions.len() == other.sessions.len()
            && self.sessions.iter().all(|(client, s)| {
                other
                    .sessions
                    .get(client)
                    .is_some_and(|o| self.same_session(s, other, o))
            })
    }
}

impl Eq for State {}

impl State {
    /// Applies one record. Records about an unknown session (one that ended) are ignored.
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Session { client, expiry } => {
                self.sessions.entry(client.clone()).or_default().expiry = *expiry;
            }
            Record::SessionEnd { client } => {
                if let Some(s) = self.sessions.remove(client) {
                    for (_, m) in s.messages {
                        self.bodies.release(m.body);
                    }
                }
            }
            Record::Subscribe { client, sub } => {
                if let Some(s) = self.sessions.get_mut(client) {
                    s.subscriptions.insert(sub.filter.clone(), sub.clone());
                }
            }
            Record::Unsubscribe { client, filter } => {
                if let Some(s) = self.sessions.get_mut(client) {
                    s.subscriptions.remove(filter);
                }
            }
            Record::Enqueue {
                client,
                seq,
                message,
            } => {
                let body = self.bodies.add(&compact::body_of(message));
                self.queue(client, *seq, body, message.qos, message.retain, 0);
                self.bodies.release(body);
            }
            Record::Message {
                client,
                id,
                qos,
                retain,
                body,
            } => {
                self.apply_message(client, *id, *qos, *retain, body, 0);
            }
            Record::Ref {
                client,
                id,
                qos,
                retain,
            } => self.apply_ref(client, *id, *qos, *retain),
            Record::Acked { client, seqs } => {
                self.apply_acked(client, seqs, 0);
            }
            Record::Sent {
                client,
                seq,
                packet_id,
            } => {
                if let Some(m) = self
                    .sessions
                    .get_mut(client)
                    .and_then(|s| s.messages.get_mut(*seq))
                {
                    m.packet_id = Some(*packet_id);
                }
            }
            Record::Released { client, seq } => {
                if let Some(m) = self
                    .sessions
                    .get_mut(client)
                    .and_then(|s| s.messages.get_mut(*seq))
                {
                    m.released = true;
                }
            }
            Record::Done { client, seq } => {
                self.apply_acked(client, std::slice::from_ref(seq), 0);
            }
            Record::Qos2Received { client, packet_id } => {
                if let Some(s) = self.sessions.get_mut(client) {
                    s.qos2_received.insert(*packet_id);
                }
            }
            Record::Qos2Released { client, packet_id } => {
                if let Some(s) = self.sessions.get_mut(client) {
                    s.qos2_received.remove(packet_id);
                }
            }
            Record::Retain { message, version } => {
                let newer = self
                    .retained
                    .get(&message.topic)
                    .is_none_or(|(_, v)| v < version);
                if newer {
                    self.retained
                        .insert(message.topic.clone(), (message.clone(), *version));
                }
            }
            Record::RetainClear { topic, version } => {
                if self.retained.get(topic).is_some_and(|(_, v)| v < version) {
                    self.retained.remove(topic);
                }
            }
        }
    }

    /// Applies a [`Record::Message`] given by parts (the hot path: no record is built); false
    /// if there is no such session.
    /// `seg` is the segment the record went to ([`SessionState::segment`]; 0 when none is
    /// to be noted).
    pub fn apply_message(
        &mut self,
        client: &str,
        id: u64,
        qos: u8,
        retain: bool,
        body: &[u8],
        seg: u64,
    ) -> bool {
        let body = self.bodies.add(body);
        if let Some((_, old)) = self.last_body.replace((id, body)) {
            self.bodies.release(old);
        }
        self.queue(client, id, body, qos, retain, seg)
    }

    /// Applies a [`Record::Ref`].
    pub fn apply_ref(&mut self, client: &str, id: u64, qos: u8, retain: bool) {
        if let Some((last, body)) = self.last_body {
            if last == id {
                self.queue(client, id, body, qos, retain, 0);
            }
        }
    }

    /// Queues message `id` with `body` (one more reference on it) for `client`'s session,
    /// noting `seg` as its oldest segment if none is; false if there is no such session.
    fn queue(
        &mut self,
        client: &str,
        id: u64,
        body: BodyRef,
        qos: u8,
        retain: bool,
        seg: u64,
    ) -> bool {
        let Some(s) = self.sessions.get_mut(client) else {
            return false;
        };
        s.note_segment(seg);
        let m = MessageState {
            body: self.bodies.share(body),
            qos,
            retain,
            packet_id: None,
            released: false,
        };
        if let Some(old) = s.messages.insert(id, m) {
            self.bodies.release(old.body);
        }
        true
    }

    /// Applies a [`Record::Acked`] (or a [`Record::Done`]) given by parts; false if there is
    /// no such session.
    pub fn apply_acked(&mut self, client: &str, seqs: &[u64], seg: u64) -> bool {
        let Some(s) = self.sessions.get_mut(client) else {
            return false;
        };
        s.note_segment(seg);
        for seq in seqs {
            if let Some(m) = s.messages.remove(*seq) {
                self.bodies.release(m.body);
            }
        }
        true
    }

    /// The body of one of this state's messages.
    pub fn body(&self, m: &MessageState) -> &[u8] {
        self.bodies.get(m.body)
    }

    /// One of this state's messages as stored (`None` if its body does not decode).
    pub fn message(&self, m: &MessageState) -> Option<StoredMessage> {
        compact::stored(self.body(m), m.qos, m.retain)
    }

    /// Moves the bodies of `client`'s messages to the chunk being filled (compaction, once it
    /// rewrote the session: see [`Bodies::rehome`]).
    pub fn rehome(&mut self, client: &str, moves: &mut Moves) {
        if let Some(s) = self.sessions.get_mut(client) {
            for (_, m) in s.messages.iter_mut() {
                m.body = self.bodies.rehome(m.body, moves);
            }
        }
    }

    fn same_session(&self, s: &SessionState, other: &State, o: &SessionState) -> bool {
        s.expiry == o.expiry
            && s.subscriptions == o.subscriptions
            && s.qos2_received == o.qos2_received
            && s.messages.len() == o.messages.len()
            && s.messages
                .iter()
                .zip(o.messages.iter())
                .all(|((a, m), (b, n))| {
                    a == b
                        && (m.qos, m.retain, m.packet_id, m.released)
                            == (n.qos, n.retain, n.packet_id, n.released)
                        && self.body(m) == other.body(n)
                })
    }

    /// The records that rebuild one session (nothing if there is no such session).
    pub fn session_records(&self, client: &str, out: &mut Vec<Record>) {
        let Some(s) = self.sessions.get(client) else {
            return;
        };
        let client = client.to_string();
        out.push(Record::Session {
            client: client.clone(),
            expiry: s.expiry,
        });
        for sub in s.subscriptions.values() {
            out.push(Record::Subscribe {
                client: client.clone(),
                sub: sub.clone(),
            });
        }
        for (seq, m) in s.messages.iter() {
            out.push(Record::Message {
                client: client.clone(),
                id: seq,
                qos: m.qos,
                retain: m.retain,
                body: self.body(m).to_vec(),
            });
            if let Some(packet_id) = m.packet_id {
                out.push(Record::Sent {
                    client: client.clone(),
                    seq,
                    packet_id,
                });
            }
            if m.released {
                out.push(Record::Released {
                    client: client.clone(),
                    seq,
                });
            }
        }
        for packet_id in &s.qos2_received {
            out.push(Record::Qos2Received {
                client: client.clone(),
                packet_id: *packet_id,
            });
        }
    }

    /// The record that rebuilds one retained message (nothing if there is none).
    pub fn retained_record(&self, topic: &str, out: &mut Vec<Record>) {
        if let Some((message, version)) = self.retained.get(topic) {
            out.push(Record::Retain {
                message: message.clone(),
                version: *version,
            });
        }
    }
}

//! The durable state the log describes, rebuilt by replaying records: persistent sessions
//! (subscriptions, unacknowledged messages, inbound QoS 2 ids) and retained messages. Also
//! what compaction writes back: the records that recreate exactly this state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::compact::{self, Body};
use crate::queue::Queue;
use crate::record::{Record, StoredMessage, StoredSubscription};

/// An unacknowledged message of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageState {
    /// The message body, shared with the other sessions that got the same message.
    pub body: Body,
    /// QoS it goes out with.
    pub qos: u8,
    /// RETAIN flag on the way out.
    pub retain: bool,
    /// QoS 2: the packet id it went out under, if it did.
    pub packet_id: Option<u16>,
    /// QoS 2: PUBREC arrived (resend PUBREL, not the PUBLISH).
    pub released: bool,
}

impl MessageState {
    /// The message as stored (`None` if its body does not decode).
    pub fn message(&self) -> Option<StoredMessage> {
        compact::stored(&self.body, self.qos, self.retain)
    }
}

/// One persistent session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionState {
    /// Session expiry interval, seconds.
    pub expiry: u32,
    /// Subscriptions by filter.
    pub subscriptions: BTreeMap<String, StoredSubscription>,
    /// Unacknowledged messages by sequence.
    pub messages: Queue,
    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub qos2_received: BTreeSet<u16>,
}

/// Everything durable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Persistent sessions by client id.
    pub sessions: FxHashMap<String, SessionState>,
    /// Retained messages by topic, with their versions.
    pub retained: BTreeMap<String, (StoredMessage, u64)>,
    /// The body of the last [`Record::Message`]: what the [`Record::Ref`]s that follow it
    /// refer to (the broker writes a message's references right after its body).
    pub last_body: LastBody,
}

/// The last message body written, by id; not part of the state's equality (it only
/// resolves the references that follow it).
#[derive(Clone, Debug, Default)]
pub struct LastBody(Option<(u64, Body)>);

impl PartialEq for LastBody {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for LastBody {}

impl State {
    /// Applies one record. Records about an unknown session (one that ended) are ignored.
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Session { client, expiry } => {
                self.sessions.entry(client.clone()).or_default().expiry = *expiry;
            }
            Record::SessionEnd { client } => {
                self.sessions.remove(client);
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
                if let Some(s) = self.sessions.get_mut(client) {
                    s.messages.insert(
                        *seq,
                        MessageState {
                            body: compact::body_of(message),
                            qos: message.qos,
                            retain: message.retain,
                            packet_id: None,
                            released: false,
                        },
                    );
                }
            }
            Record::Message {
                client,
                id,
                qos,
                retain,
                body,
            } => {
                self.apply_message(client, *id, *qos, *retain, body);
            }
            Record::Ref {
                client,
                id,
                qos,
                retain,
            } => self.apply_ref(client, *id, *qos, *retain),
            Record::Acked { client, seqs } => {
                self.apply_acked(client, seqs);
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
                self.apply_acked(client, std::slice::from_ref(seq));
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
    pub fn apply_message(
        &mut self,
        client: &str,
        id: u64,
        qos: u8,
        retain: bool,
        body: &[u8],
    ) -> bool {
        let body: Body = Arc::from(body);
        self.last_body = LastBody(Some((id, body.clone())));
        let Some(s) = self.sessions.get_mut(client) else {
            return false;
        };
        s.messages.insert(
            id,
            MessageState {
                body,
                qos,
                retain,
                packet_id: None,
                released: false,
            },
        );
        true
    }

    /// Applies a [`Record::Ref`].
    pub fn apply_ref(&mut self, client: &str, id: u64, qos: u8, retain: bool) {
        let body = match &self.last_body.0 {
            Some((last, body)) if *last == id => body,
            _ => return,
        };
        let Some(s) = self.sessions.get_mut(client) else {
            return;
        };
        s.messages.insert(
            id,
            MessageState {
                body: body.clone(),
                qos,
                retain,
                packet_id: None,
                released: false,
            },
        );
    }

    /// Applies a [`Record::Acked`] (or a [`Record::Done`]) given by parts; false if there is
    /// no such session.
    pub fn apply_acked(&mut self, client: &str, seqs: &[u64]) -> bool {
        let Some(s) = self.sessions.get_mut(client) else {
            return false;
        };
        for seq in seqs {
            s.messages.remove(*seq);
        }
        true
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
                body: m.body.to_vec(),
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

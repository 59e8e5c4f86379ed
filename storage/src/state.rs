//! The durable state the log describes, rebuilt by replaying records: persistent sessions
//! (subscriptions, unacknowledged messages, inbound QoS 2 ids) and retained messages. Also
//! what compaction writes back: the records that recreate exactly this state.

use std::collections::{BTreeMap, BTreeSet};

use crate::record::{Record, StoredMessage, StoredSubscription};

/// An unacknowledged message of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageState {
    /// The message.
    pub message: StoredMessage,
    /// QoS 2: the packet id it went out under, if it did.
    pub packet_id: Option<u16>,
    /// QoS 2: PUBREC arrived (resend PUBREL, not the PUBLISH).
    pub released: bool,
}

/// One persistent session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionState {
    /// Session expiry interval, seconds.
    pub expiry: u32,
    /// Subscriptions by filter.
    pub subscriptions: BTreeMap<String, StoredSubscription>,
    /// Unacknowledged messages by sequence.
    pub messages: BTreeMap<u64, MessageState>,
    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub qos2_received: BTreeSet<u16>,
}

/// Everything durable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Persistent sessions by client id.
    pub sessions: BTreeMap<String, SessionState>,
    /// Retained messages by topic, with their versions.
    pub retained: BTreeMap<String, (StoredMessage, u64)>,
}

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
                            message: message.clone(),
                            packet_id: None,
                            released: false,
                        },
                    );
                }
            }
            Record::Sent {
                client,
                seq,
                packet_id,
            } => {
                if let Some(m) = self
                    .sessions
                    .get_mut(client)
                    .and_then(|s| s.messages.get_mut(seq))
                {
                    m.packet_id = Some(*packet_id);
                }
            }
            Record::Released { client, seq } => {
                if let Some(m) = self
                    .sessions
                    .get_mut(client)
                    .and_then(|s| s.messages.get_mut(seq))
                {
                    m.released = true;
                }
            }
            Record::Done { client, seq } => {
                if let Some(s) = self.sessions.get_mut(client) {
                    s.messages.remove(seq);
                }
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
        for (seq, m) in &s.messages {
            out.push(Record::Enqueue {
                client: client.clone(),
                seq: *seq,
                message: m.message.clone(),
            });
            if let Some(packet_id) = m.packet_id {
                out.push(Record::Sent {
                    client: client.clone(),
                    seq: *seq,
                    packet_id,
                });
            }
            if m.released {
                out.push(Record::Released {
                    client: client.clone(),
                    seq: *seq,
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

//! The Redis key layout and what each record becomes there.
//!
//! Every key of a client is hash-tagged by its id, so one client's keys share a cluster slot:
//! - `ringmq:{cid}:s` hash: `e` → session expiry (u32 BE); `f<filter>` → a subscription
//!   (options byte, subscription identifier u32 BE).
//! - `ringmq:{cid}:q` hash: message sequence (u64 BE) → QoS byte, retain byte, then the
//!   message body as the log encodes it ([`crate::compact::put_body`]). A sequence is the
//!   shard's 64-bit message id: it never wraps, unlike a packet id.
//! - `ringmq:{cid}:p` hash: sequence → the QoS 2 packet id it went out under (u16 BE).
//! - `ringmq:{cid}:r` set: sequences whose PUBREC arrived (PUBREL is what to resend).
//! - `ringmq:{cid}:i` set: inbound QoS 2 packet ids awaiting PUBREL (u16 BE).
//! - `ringmq:retained` hash: topic → version (u64 BE), QoS, retain, body.
//!
//! Every command is idempotent (it sets state, never increments), so a batch may be sent
//! again after a lost connection. While a session is offline, each key written gets the
//! session's deadline again (`PEXPIREAT`): a hash emptied and recreated never lives without
//! its TTL.

use rustc_hash::{FxHashMap, FxHashSet};

use super::resp::{put_arg, put_arg_parts, put_arg_u64, put_command};
use crate::compact::{self, MessageRef};
use crate::record::{Record, StoredMessage, StoredSubscription};

/// Key prefix of every key.
pub const PREFIX: &[u8] = b"ringmq:{";
/// The retained messages' hash.
pub const RETAINED: &[u8] = b"ringmq:retained";
/// The per-client key suffixes.
pub const SESSION: &[u8] = b"}:s";
/// Queued messages.
pub const QUEUE: &[u8] = b"}:q";
/// Outbound QoS 2 packet ids.
pub const PACKET_IDS: &[u8] = b"}:p";
/// Outbound QoS 2 messages PUBREC'd.
pub const RELEASED: &[u8] = b"}:r";
/// Inbound QoS 2 ids.
pub const INBOUND: &[u8] = b"}:i";
/// Every per-client key suffix.
pub const ALL: [&[u8]; 5] = [SESSION, QUEUE, PACKET_IDS, RELEASED, INBOUND];

/// The client id of a session key (`ringmq:{cid}:s`), if it is one.
pub fn client_of_session_key(key: &[u8]) -> Option<&str> {
    let inner = key.strip_prefix(PREFIX)?.strip_suffix(SESSION)?;
    std::str::from_utf8(inner).ok()
}

/// A subscription as a field and value of the session hash.
pub fn subscription_value(sub: &StoredSubscription) -> [u8; 5] {
    let id = sub.sub_id.to_be_bytes();
    [sub.options, id[0], id[1], id[2], id[3]]
}

/// A subscription read back from its field (without the `f`) and value.
pub fn subscription_of(filter: &[u8], value: &[u8]) -> Option<StoredSubscription> {
    let [options, a, b, c, d] = <[u8; 5]>::try_from(value).ok()?;
    Some(StoredSubscription {
        filter: std::str::from_utf8(filter).ok()?.to_string(),
        options,
        sub_id: u32::from_be_bytes([a, b, c, d]),
    })
}

/// A queued message read back: (qos, retain, body).
pub fn queued_of(value: &[u8]) -> Option<(u8, bool, &[u8])> {
    entry_of(value).filter(|(qos, _, _)| *qos > 0)
}

/// QoS byte, retain byte, body: validated.
fn entry_of(value: &[u8]) -> Option<(u8, bool, &[u8])> {
    let (&qos, rest) = value.split_first()?;
    let (&retain, body) = rest.split_first()?;
    compact::parse_body(body)?;
    (qos <= 2 && retain <= 1).then_some((qos, retain == 1, body))
}

/// A retained message read back: (message, version).
pub fn retained_of(value: &[u8]) -> Option<(StoredMessage, u64)> {
    let version = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let (qos, retain, body) = entry_of(value.get(8..)?)?;
    Some((compact::stored(body, qos, retain)?, version))
}

/// A u64 field or member (big-endian) read back.
pub fn u64_of(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// A u16 value read back.
pub fn u16_of(bytes: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.try_into().ok()?))
}

/// Turns records into commands, appended to one pipeline buffer; counts the commands (each
/// gets one reply). Keeps what the records alone do not say: the body a [`Record::Ref`]
/// refers to, which sessions are offline (and their deadline), which have QoS 2 state.
#[derive(Debug, Default)]
pub struct Encoder {
    /// Commands encoded so far (since the last [`Encoder::take_count`]).
    commands: usize,
    /// The last message body written, by id (what the `Ref`s after it carry again: every
    /// client's queue is its own key).
    last_body: Option<(u64, Vec<u8>)>,
    /// Offline sessions and the Unix-epoch milliseconds their keys expire at.
    offline: FxHashMap<String, u64>,
    /// Sessions with outbound QoS 2 state (their acknowledgements clear it too).
    qos2_out: FxHashSet<String>,
}

impl Encoder {
    /// Commands encoded since the last call.
    pub fn take_count(&mut self) -> usize {
        std::mem::take(&mut self.commands)
    }

    fn command(&mut self, out: &mut Vec<u8>, args: usize) {
        self.commands += 1;
        put_command(out, args);
    }

    fn key(out: &mut Vec<u8>, client: &str, suffix: &[u8]) {
        put_arg_parts(out, &[PREFIX, client.as_bytes(), suffix]);
    }

    /// After writing `suffix` of an offline `client`: the key gets its deadline again.
    fn keep_deadline(&mut self, out: &mut Vec<u8>, client: &str, suffix: &[u8]) {
        if let Some(&at) = self.offline.get(client) {
            self.command(out, 3);
            put_arg(out, b"PEXPIREAT");
            Self::key(out, client, suffix);
            put_arg_u64(out, at);
        }
    }

    /// A loaded or disconnected session: its keys expire at `deadline_ms` (None: never).
    pub fn offline(&mut self, out: &mut Vec<u8>, client: &str, deadline_ms: Option<u64>) {
        match deadline_ms {
            Some(at) => {
                self.offline.insert(client.to_string(), at);
                for suffix in ALL {
                    self.keep_deadline(out, client, suffix);
                }
            }
            None => self.online(out, client),
        }
    }

    /// A connected session: its keys do not expire.
    pub fn online(&mut self, out: &mut Vec<u8>, client: &str) {
        self.offline.remove(client);
        for suffix in ALL {
            self.command(out, 2);
            put_arg(out, b"PERSIST");
            Self::key(out, client, suffix);
        }
    }

    /// Remembers that `client` has outbound QoS 2 state (a loaded session).
    pub fn has_qos2(&mut self, client: &str) {
        self.qos2_out.insert(client.to_string());
    }

    /// A queued message given by parts.
    pub fn message(
        &mut self,
        out: &mut Vec<u8>,
        client: &str,
        id: u64,
        qos: u8,
        retain: bool,
        message: &MessageRef<'_>,
    ) {
        let mut body = self.last_body.take().map(|(_, b)| b).unwrap_or_default();
        body.clear();
        compact::put_body(&mut body, message);
        self.queue_entry(out, client, id, qos, retain, &body);
        self.last_body = Some((id, body));
    }

    fn queue_entry(
        &mut self,
        out: &mut Vec<u8>,
        client: &str,
        id: u64,
        qos: u8,
        retain: bool,
        body: &[u8],
    ) {
        self.command(out, 4);
        put_arg(out, b"HSET");
        Self::key(out, client, QUEUE);
        put_arg(out, &id.to_be_bytes());
        put_arg_parts(out, &[&[qos, u8::from(retain)], body]);
        self.keep_deadline(out, client, QUEUE);
    }

    /// A batch of done sequence numbers.
    pub fn acked(&mut self, out: &mut Vec<u8>, client: &str, seqs: &[u64]) {
        if seqs.is_empty() {
            return;
        }
        let qos2 = self.qos2_out.contains(client);
        let suffixes: &[(&[u8], &[u8])] = if qos2 {
            &[(b"HDEL", QUEUE), (b"HDEL", PACKET_IDS), (b"SREM", RELEASED)]
        } else {
            &[(b"HDEL", QUEUE)]
        };
        for (verb, suffix) in suffixes {
            self.command(out, 2 + seqs.len());
            put_arg(out, verb);
            Self::key(out, client, suffix);
            for seq in seqs {
                put_arg(out, &seq.to_be_bytes());
            }
        }
    }

    /// Any record.
    pub fn record(&mut self, out: &mut Vec<u8>, record: &Record) {
        match record {
            Record::Session { client, expiry } => {
                self.command(out, 4);
                put_arg(out, b"HSET");
                Self::key(out, client, SESSION);
                put_arg(out, b"e");
                put_arg(out, &expiry.to_be_bytes());
                self.keep_deadline(out, client, SESSION);
            }
            Record::SessionEnd { client } => {
                self.offline.remove(client.as_str());
                self.qos2_out.remove(client.as_str());
                self.command(out, 1 + ALL.len());
                put_arg(out, b"DEL");
                for suffix in ALL {
                    Self::key(out, client, suffix);
                }
            }
            Record::Subscribe { client, sub } => {
                self.command(out, 4);
                put_arg(out, b"HSET");
                Self::key(out, client, SESSION);
                put_arg_parts(out, &[b"f", sub.filter.as_bytes()]);
                put_arg(out, &subscription_value(sub));
                self.keep_deadline(out, client, SESSION);
            }
            Record::Unsubscribe { client, filter } => {
                self.command(out, 3);
                put_arg(out, b"HDEL");
                Self::key(out, client, SESSION);
                put_arg_parts(out, &[b"f", filter.as_bytes()]);
            }
            Record::Enqueue {
                client,
                seq,
                message,
            } => {
                let body = compact::body_of(message);
                self.queue_entry(out, client, *seq, message.qos, message.retain, &body);
            }
            Record::Message {
                client,
                id,
                qos,
                retain,
                body,
            } => {
                self.queue_entry(out, client, *id, *qos, *retain, body);
                self.last_body = Some((*id, body.clone()));
            }
            Record::Ref {
                client,
                id,
                qos,
                retain,
            } => {
                let Some((last, body)) = self.last_body.take() else {
                    return;
                };
                if last == *id {
                    self.queue_entry(out, client, *id, *qos, *retain, &body);
                }
                self.last_body = Some((last, body));
            }
            Record::Sent {
                client,
                seq,
                packet_id,
            } => {
                self.qos2_out.insert(client.clone());
                self.command(out, 4);
                put_arg(out, b"HSET");
                Self::key(out, client, PACKET_IDS);
                put_arg(out, &seq.to_be_bytes());
                put_arg(out, &packet_id.to_be_bytes());
                self.keep_deadline(out, client, PACKET_IDS);
            }
            Record::Released { client, seq } => {
                self.qos2_out.insert(client.clone());
                self.command(out, 3);
                put_arg(out, b"SADD");
                Self::key(out, client, RELEASED);
                put_arg(out, &seq.to_be_bytes());
                self.keep_deadline(out, client, RELEASED);
            }
            Record::Done { client, seq } => self.acked(out, client, std::slice::from_ref(seq)),
            Record::Acked { client, seqs } => self.acked(out, client, seqs),
            Record::Qos2Received { client, packet_id } => {
                self.command(out, 3);
                put_arg(out, b"SADD");
                Self::key(out, client, INBOUND);
                put_arg(out, &packet_id.to_be_bytes());
                self.keep_deadline(out, client, INBOUND);
            }
            Record::Qos2Released { client, packet_id } => {
                self.command(out, 3);
                put_arg(out, b"SREM");
                Self::key(out, client, INBOUND);
                put_arg(out, &packet_id.to_be_bytes());
            }
            Record::Retain { message, version } => {
                let body = compact::body_of(message);
                self.command(out, 4);
                put_arg(out, b"HSET");
                put_arg(out, RETAINED);
                put_arg(out, message.topic.as_bytes());
                put_arg_parts(
                    out,
                    &[
                        &version.to_be_bytes(),
                        &[message.qos, u8::from(message.retain)],
                        &body,
                    ],
                );
            }
            Record::RetainClear { topic, .. } => {
                // The topic's owner shard writes its sets and clears in order: the last one
                // wins without comparing versions.
                self.command(out, 3);
                put_arg(out, b"HDEL");
                put_arg(out, RETAINED);
                put_arg(out, topic.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_and_reject_garbage() {
        let sub = StoredSubscription {
            filter: "a/+".into(),
            options: 0x2a,
            sub_id: 77_000,
        };
        assert_eq!(
            subscription_of(b"a/+", &subscription_value(&sub)),
            Some(sub)
        );
        assert_eq!(subscription_of(b"a", b"\x01"), None);
        let mut value = vec![1, 0];
        compact::put_body(
            &mut value,
            &MessageRef {
                topic: "t",
                properties: &[],
                expires_at_ms: 5,
                payload: b"p",
            },
        );
        let (qos, retain, body) = queued_of(&value).unwrap();
        assert_eq!((qos, retain), (1, false));
        assert_eq!(compact::parse_body(body).unwrap().payload, b"p");
        assert_eq!(queued_of(&[3, 0]), None);
        assert_eq!(queued_of(&[1, 0, 0xff]), None);
        assert_eq!(client_of_session_key(b"ringmq:{dev-1}:s"), Some("dev-1"));
        assert_eq!(client_of_session_key(b"ringmq:{dev-1}:q"), None);
    }

    #[test]
    fn offline_sessions_get_their_deadline_on_every_write() {
        let mut e = Encoder::default();
        let mut out = Vec::new();
        e.offline(&mut out, "c", Some(123));
        assert_eq!(e.take_count(), ALL.len());
        out.clear();
        e.record(
            &mut out,
            &Record::Qos2Received {
                client: "c".into(),
                packet_id: 1,
            },
        );
        assert_eq!(e.take_count(), 2);
        assert!(out.windows(9).any(|w| w == b"PEXPIREAT"));
        e.online(&mut out, "c");
        e.take_count();
        out.clear();
        e.record(
            &mut out,
            &Record::Qos2Received {
                client: "c".into(),
                packet_id: 1,
            },
        );
        assert_eq!(e.take_count(), 1);
    }
}

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
//! - `ringmq:{cid}:o` hash: the broker owning the client id, with several brokers on one
//!   database ([`super::owners`]).
//! - `ringmq:retained` hash: topic → version (u64 BE), QoS, retain, body.
//!
//! Every command is idempotent (it sets state, never increments), so a batch may be sent
//! again after a lost connection. While a session is offline, each key written gets the
//! session's deadline again (`PEXPIRE`): a hash emptied and recreated never lives without
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
/// The client id's owner (`redis_shared`: [`super::owners`]).
pub const OWNER: &[u8] = b"}:o";
/// A session's write from a broker sharing the database (`redis_shared`): KEYS[1] the
/// session's owner key; ARGV: this broker's id, the epoch it owns the session under, then
/// the command. Applied only while the owner key names that broker and that epoch is within
/// its unbroken hold (not before `s`, [`super::owners`]: a write made just before the same
/// broker claimed its own session again still counts), so a broker that lost the session
/// (paused, partitioned, not told yet; even one that has claimed it back since) changes
/// nothing; returns `-1` then. The command's keys are the session's (one hash tag: the
/// owner key's slot).
pub const GUARD: &[u8] = b"local o = redis.call('HMGET', KEYS[1], 'b', 's', 'e') \
local s = tonumber(o[2] or o[3] or '') \
if o[1] == ARGV[1] and s and s <= tonumber(ARGV[2]) then \
return redis.call(unpack(ARGV, 3)) end \
return -1";
/// The most sequence numbers one acknowledgement command carries (more take several).
pub const ACK_ARGS_MAX: usize = 1_000;
/// Every per-client key suffix of the session's state (the owner key lives apart).
pub const ALL: [&[u8]; 5] = [SESSION, QUEUE, PACKET_IDS, RELEASED, INBOUND];

/// A client id as it sits between the braces of its keys: `%`, `{` and `}` as `%25`, `%7B`,
/// `%7D` (so the hash tag is the whole id, and ids map to keys one to one), the empty id as
/// `%` (a hash tag must not be empty).
pub fn escaped(client: &str) -> std::borrow::Cow<'_, str> {
    if client.is_empty() {
        return "%".into();
    }
    if !client.contains(['%', '{', '}']) {
        return client.into();
    }
    client
        .replace('%', "%25")
        .replace('{', "%7B")
        .replace('}', "%7D")
        .into()
}

/// `client`'s key with `suffix` (`ringmq:{cid}` + one of the suffixes above).
pub fn client_key(client: &str, suffix: &[u8]) -> Vec<u8> {
    [PREFIX, escaped(client).as_bytes(), suffix].concat()
}

/// The client id of a session key (`ringmq:{cid}:s`), if it is one.
pub fn client_of_session_key(key: &[u8]) -> Option<String> {
    let inner = std::str::from_utf8(key.strip_prefix(PREFIX)?.strip_suffix(SESSION)?).ok()?;
    if inner == "%" {
        return Some(String::new());
    }
    Some(
        inner
            .replace("%7B", "{")
            .replace("%7D", "}")
            .replace("%25", "%"),
    )
}

/// Milliseconds of the Unix epoch now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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

/// A queued message's commands in the pending buffer (the `HSET`, and its `PEXPIRE` if
/// offline): dropped if the message is acknowledged before the buffer is sent.
#[derive(Debug)]
struct Written {
    start: usize,
    end: usize,
    /// Where the client id sits in its key.
    client_at: usize,
    client_len: usize,
    commands: usize,
    /// The next written entry of the same message id (further recipients), or `NONE`.
    next: u32,
    dead: bool,
}

const NONE: u32 = u32::MAX;

/// Turns records into commands, appended to one pipeline buffer; counts the commands (each
/// gets one reply). Keeps what the records alone do not say: the body a [`Record::Ref`]
/// refers to, which sessions are offline (and their deadline), which have QoS 2 state.
///
/// A message acknowledged while its `HSET` still waits in the buffer is *elided*: the `HSET`
/// is cut out when the buffer is taken ([`Encoder::take`]) and no `HDEL` is written for it.
/// Redis ends in the same state (set then deleted); a crash before the buffer lands loses
/// nothing acknowledged (its recipient has it), and what waits for the buffer's position still
/// waits for the buffer to land.
#[derive(Debug, Default)]
pub struct Encoder {
    /// Brokers share the database (`redis_shared`): the owner key expires and persists with
    /// the session, and outlives its end by [`super::owners::TRANSIENT_OWNER_MS`].
    shared: bool,
    /// Live commands in the buffer (since the last [`Encoder::take`]).
    commands: usize,
    /// Queued messages written into the buffer, in buffer order, and the first by id.
    written: Vec<Written>,
    written_by_id: FxHashMap<u64, u32>,
    /// Scratch: sequence numbers of an acknowledgement batch not elided.
    remaining: Vec<u64>,
    /// Commands cut out so far (a counter for the store's figures).
    elided: u64,
    /// The last message body written, by id (what the `Ref`s after it carry again: every
    /// client's queue is its own key).
    last_body: Option<(u64, Vec<u8>)>,
    /// Offline sessions and the Unix-epoch milliseconds their keys expire at.
    offline: FxHashMap<String, u64>,
    /// Sessions with outbound QoS 2 state (their acknowledgements clear it too).
    qos2_out: FxHashSet<String>,
    /// With `redis_shared`: this broker's id, and the epoch each session it owns is held
    /// under; such a session's commands go through [`GUARD`].
    broker: Option<Box<str>>,
    epochs: FxHashMap<String, u64>,
}

impl Encoder {
    /// An encoder; `shared`: brokers share the database (`redis_shared`).
    pub fn new(shared: bool) -> Self {
        Self {
            shared,
            ..Self::default()
        }
    }

    /// Live commands in the buffer.
    pub fn commands(&self) -> usize {
        self.commands
    }

    /// Messages elided so far.
    pub fn elided(&self) -> u64 {
        self.elided
    }

    /// The buffer `out` is about to be sent: cuts out the elided commands; how many commands
    /// it holds. The next records start a new buffer.
    pub fn take(&mut self, out: &mut Vec<u8>) -> usize {
        let mut kept = 0;
        let mut from = 0;
        for w in self.written.iter().filter(|w| w.dead) {
            out.copy_within(from..w.start, kept);
            kept += w.start - from;
            from = w.end;
        }
        if from > 0 {
            let len = out.len();
            out.copy_within(from..len, kept);
            out.truncate(kept + len - from);
        }
        self.written.clear();
        self.written_by_id.clear();
        std::mem::take(&mut self.commands)
    }

    /// Marks the live written entry of `id` for the client whose key holds `client` (its
    /// escaped id) dead; false if there is none.
    fn elide(&mut self, out: &[u8], client: &[u8], id: u64) -> bool {
        let mut at = self.written_by_id.get(&id).copied().unwrap_or(NONE);
        while let Some(w) = self.written.get_mut(at as usize) {
            let same = out.get(w.client_at..w.client_at + w.client_len) == Some(client);
            if same && !w.dead {
                w.dead = true;
                self.commands -= w.commands;
                self.elided += 1;
                return true;
            }
            at = w.next;
        }
        false
    }

    fn command(&mut self, out: &mut Vec<u8>, args: usize) {
        self.commands += 1;
        put_command(out, args);
    }

    /// A command of `args` arguments on `client`'s keys; guarded ([`GUARD`]) when this
    /// broker holds the session under an epoch.
    fn session_command(&mut self, out: &mut Vec<u8>, client: &str, args: usize) {
        let (Some(broker), Some(&epoch)) = (self.broker.as_deref(), self.epochs.get(client)) else {
            return self.command(out, args);
        };
        self.commands += 1;
        put_command(out, args + 6);
        put_arg(out, b"EVAL");
        put_arg(out, GUARD);
        put_arg(out, b"1");
        Self::key(out, client, OWNER);
        put_arg(out, broker.as_bytes());
        put_arg_u64(out, epoch);
    }

    fn key(out: &mut Vec<u8>, client: &str, suffix: &[u8]) {
        put_arg_parts(out, &[PREFIX, escaped(client).as_bytes(), suffix]);
    }

    /// After writing `suffix` of an offline `client`: the key gets its deadline again.
    fn keep_deadline(&mut self, out: &mut Vec<u8>, client: &str, suffix: &[u8]) {
        if let Some(&at) = self.offline.get(client) {
            // Relative to this broker's clock: Redis's may differ.
            let left = at.saturating_sub(now_ms()).max(1);
            self.session_command(out, client, 3);
            put_arg(out, b"PEXPIRE");
            Self::key(out, client, suffix);
            put_arg_u64(out, left);
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
                if self.shared {
                    self.keep_deadline(out, client, OWNER);
                }
            }
            None => self.online(out, client),
        }
    }

    /// Renews the lock `key` held with `value` (see [`super::lock`]).
    pub fn renew_lock(&mut self, out: &mut Vec<u8>, key: &[u8], value: &str) {
        self.command(out, 6);
        put_arg(out, b"EVAL");
        put_arg(out, super::lock::RENEW);
        put_arg(out, b"1");
        put_arg(out, key);
        put_arg(out, value.as_bytes());
        put_arg_u64(out, super::lock::TTL_MS);
    }

    /// A connected session: its keys do not expire.
    pub fn online(&mut self, out: &mut Vec<u8>, client: &str) {
        self.offline.remove(client);
        let owner = self.shared.then_some(OWNER);
        for suffix in ALL.into_iter().chain(owner) {
            self.session_command(out, client, 2);
            put_arg(out, b"PERSIST");
            Self::key(out, client, suffix);
        }
    }

    /// Forgets `client` (its session is another broker's now).
    pub fn forget(&mut self, client: &str) {
        self.offline.remove(client);
        self.qos2_out.remove(client);
        self.epochs.remove(client);
    }

    /// This broker (`broker`) owns `client`'s session under `epoch` (`redis_shared`): its
    /// writes are applied only while that holds ([`GUARD`]).
    pub fn owned(&mut self, client: &str, broker: &str, epoch: u64) {
        if self.broker.as_deref() != Some(broker) {
            self.broker = Some(broker.into());
        }
        self.epochs.insert(client.to_string(), epoch);
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
        let (start, commands) = (out.len(), self.commands);
        self.session_command(out, client, 4);
        put_arg(out, b"HSET");
        Self::key(out, client, QUEUE);
        let client_len = escaped(client).len();
        let client_at = out.len() - (client_len + QUEUE.len() + 2);
        put_arg(out, &id.to_be_bytes());
        put_arg_parts(out, &[&[qos, u8::from(retain)], body]);
        self.keep_deadline(out, client, QUEUE);
        let index = u32::try_from(self.written.len()).unwrap_or(NONE);
        let next = match self.written_by_id.insert(id, index) {
            Some(first) => {
                // Keep the first of the id at the head; chain this one after it.
                self.written_by_id.insert(id, first);
                let head = self.written.get_mut(first as usize).map(|w| &mut w.next);
                head.map_or(NONE, |n| std::mem::replace(n, index))
            }
            None => NONE,
        };
        self.written.push(Written {
            start,
            end: out.len(),
            client_at,
            client_len,
            commands: self.commands - commands,
            next,
            dead: false,
        });
    }

    /// A batch of done sequence numbers.
    pub fn acked(&mut self, out: &mut Vec<u8>, client: &str, seqs: &[u64]) {
        if seqs.is_empty() {
            return;
        }
        let qos2 = self.qos2_out.contains(client);
        let mut remaining = std::mem::take(&mut self.remaining);
        remaining.clear();
        if qos2 {
            remaining.extend_from_slice(seqs);
        } else {
            let key_id = escaped(client);
            for &seq in seqs {
                if !self.elide(out, key_id.as_bytes(), seq) {
                    remaining.push(seq);
                }
            }
        }
        let seqs = &remaining[..];
        let suffixes: &[(&[u8], &[u8])] = if seqs.is_empty() {
            &[]
        } else if qos2 {
            &[(b"HDEL", QUEUE), (b"HDEL", PACKET_IDS), (b"SREM", RELEASED)]
        } else {
            &[(b"HDEL", QUEUE)]
        };
        // At most ACK_ARGS_MAX sequence numbers a command (a guarded one's arguments go
        // through Lua's `unpack`, which takes about 8,000 at most).
        for (verb, suffix) in suffixes {
            for part in seqs.chunks(ACK_ARGS_MAX) {
                self.session_command(out, client, 2 + part.len());
                put_arg(out, verb);
                Self::key(out, client, suffix);
                for seq in part {
                    put_arg(out, &seq.to_be_bytes());
                }
            }
        }
        self.remaining = remaining;
    }

    /// Any record.
    pub fn record(&mut self, out: &mut Vec<u8>, record: &Record) {
        match record {
            Record::Session { client, expiry } => {
                self.session_command(out, client, 4);
                put_arg(out, b"HSET");
                Self::key(out, client, SESSION);
                put_arg(out, b"e");
                put_arg(out, &expiry.to_be_bytes());
                self.keep_deadline(out, client, SESSION);
            }
            Record::SessionEnd { client } => {
                self.offline.remove(client.as_str());
                self.qos2_out.remove(client.as_str());
                self.session_command(out, client, 1 + ALL.len());
                put_arg(out, b"DEL");
                // One hash tag: the five keys share a slot (a cluster takes the one DEL).
                for suffix in ALL {
                    Self::key(out, client, suffix);
                }
                if self.shared {
                    // The next claim still learns who had it (epochs stay unique anyway).
                    self.session_command(out, client, 3);
                    put_arg(out, b"PEXPIRE");
                    Self::key(out, client, OWNER);
                    put_arg_u64(out, super::owners::TRANSIENT_OWNER_MS);
                }
            }
            Record::Subscribe { client, sub } => {
                self.session_command(out, client, 4);
                put_arg(out, b"HSET");
                Self::key(out, client, SESSION);
                put_arg_parts(out, &[b"f", sub.filter.as_bytes()]);
                put_arg(out, &subscription_value(sub));
                self.keep_deadline(out, client, SESSION);
            }
            Record::Unsubscribe { client, filter } => {
                self.session_command(out, client, 3);
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
                self.session_command(out, client, 4);
                put_arg(out, b"HSET");
                Self::key(out, client, PACKET_IDS);
                put_arg(out, &seq.to_be_bytes());
                put_arg(out, &packet_id.to_be_bytes());
                self.keep_deadline(out, client, PACKET_IDS);
            }
            Record::Released { client, seq } => {
                self.qos2_out.insert(client.clone());
                self.session_command(out, client, 3);
                put_arg(out, b"SADD");
                Self::key(out, client, RELEASED);
                put_arg(out, &seq.to_be_bytes());
                self.keep_deadline(out, client, RELEASED);
            }
            Record::Done { client, seq } => self.acked(out, client, std::slice::from_ref(seq)),
            Record::Acked { client, seqs } => self.acked(out, client, seqs),
            Record::Qos2Received { client, packet_id } => {
                self.session_command(out, client, 3);
                put_arg(out, b"SADD");
                Self::key(out, client, INBOUND);
                put_arg(out, &packet_id.to_be_bytes());
                self.keep_deadline(out, client, INBOUND);
            }
            Record::Qos2Released { client, packet_id } => {
                self.session_command(out, client, 3);
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
        assert_eq!(
            client_of_session_key(b"ringmq:{dev-1}:s").as_deref(),
            Some("dev-1")
        );
        assert_eq!(client_of_session_key(b"ringmq:{dev-1}:q"), None);
        for id in ["", "%", "a}b{c", "%7B", "}"] {
            let key = [PREFIX, escaped(id).as_bytes(), SESSION].concat();
            assert_eq!(client_of_session_key(&key).as_deref(), Some(id), "{id:?}");
            assert!(!escaped(id).contains(['{', '}']) && !escaped(id).is_empty());
        }
    }

    #[test]
    fn offline_sessions_get_their_deadline_on_every_write() {
        let mut e = Encoder::default();
        let mut out = Vec::new();
        e.offline(&mut out, "c", Some(now_ms() + 60_000));
        assert_eq!(e.take(&mut out), ALL.len());
        out.clear();
        e.record(
            &mut out,
            &Record::Qos2Received {
                client: "c".into(),
                packet_id: 1,
            },
        );
        assert_eq!(e.take(&mut out), 2);
        assert!(out.windows(7).any(|w| w == b"PEXPIRE"));
        e.online(&mut out, "c");
        e.take(&mut out);
        out.clear();
        e.record(
            &mut out,
            &Record::Qos2Received {
                client: "c".into(),
                packet_id: 1,
            },
        );
        assert_eq!(e.take(&mut out), 1);
    }

    /// Parses a pipeline into its commands' arguments.
    fn commands(mut buf: &[u8]) -> Vec<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            // A command has the shape of an array reply of bulk strings.
            let (reply, used) = super::super::resp::parse(buf).unwrap().unwrap();
            let super::super::resp::Reply::Array(Some(items)) = reply else {
                panic!("not a command")
            };
            out.push(
                items
                    .into_iter()
                    .map(|i| match i {
                        super::super::resp::Reply::Bulk(Some(b)) => b,
                        other => panic!("{other:?}"),
                    })
                    .collect(),
            );
            buf = &buf[used..];
        }
        out
    }

    #[test]
    fn messages_acknowledged_before_the_buffer_is_sent_are_cut_out() {
        let mut e = Encoder::default();
        let mut out = Vec::new();
        let m = MessageRef {
            topic: "t",
            properties: &[],
            expires_at_ms: 0,
            payload: b"p",
        };
        e.message(&mut out, "a", 1, 1, false, &m);
        e.record(
            &mut out,
            &Record::Ref {
                client: "b".into(),
                id: 1,
                qos: 1,
                retain: false,
            },
        );
        e.offline(&mut out, "c", Some(now_ms() + 9_000));
        e.record(
            &mut out,
            &Record::Ref {
                client: "c".into(),
                id: 1,
                qos: 1,
                retain: false,
            },
        );
        e.message(&mut out, "a", 2, 1, false, &m);
        // b and c acknowledge 1 (c's HSET and PEXPIRE go), a acknowledges 2 and 7 (7 was
        // written by an earlier buffer: an HDEL for it alone).
        e.acked(&mut out, "b", &[1]);
        e.acked(&mut out, "c", &[1]);
        e.acked(&mut out, "a", &[2, 7]);
        let n = e.take(&mut out);
        let cmds = commands(&out);
        assert_eq!(n, cmds.len());
        let summary: Vec<(String, String)> = cmds
            .iter()
            .map(|c| {
                (
                    String::from_utf8_lossy(&c[0]).into_owned(),
                    String::from_utf8_lossy(&c[1]).into_owned(),
                )
            })
            .filter(|(verb, _)| verb != "PEXPIRE")
            .collect();
        let expect = [("HSET", "ringmq:{a}:q"), ("HDEL", "ringmq:{a}:q")];
        assert_eq!(
            summary,
            expect.map(|(v, k)| (v.to_string(), k.to_string())).to_vec()
        );
        assert_eq!(cmds.last().unwrap()[2], 7u64.to_be_bytes());
        assert_eq!(e.elided(), 3);
        // The next buffer starts clean: nothing of the last one can be elided any more.
        out.clear();
        e.acked(&mut out, "a", &[1]);
        assert_eq!(e.take(&mut out), 1);
    }

    #[test]
    fn a_session_owned_here_is_written_through_the_guard() {
        let mut e = Encoder::new(true);
        let mut out = Vec::new();
        let m = MessageRef {
            topic: "t",
            properties: &[],
            expires_at_ms: 0,
            payload: b"p",
        };
        e.owned("a", "n1", 42);
        e.message(&mut out, "a", 1, 1, false, &m);
        e.message(&mut out, "b", 2, 1, false, &m);
        // Elided as a whole, guard included.
        e.acked(&mut out, "a", &[1]);
        e.message(&mut out, "a", 3, 1, false, &m);
        assert_eq!(e.take(&mut out), 2);
        let cmds = commands(&out);
        let text = |c: &[Vec<u8>]| -> Vec<String> {
            c.iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        };
        let guarded = text(&cmds[1]);
        assert_eq!(guarded[0], "EVAL");
        assert_eq!(guarded[1].as_bytes(), GUARD);
        assert_eq!(
            guarded[2..8],
            ["1", "ringmq:{a}:o", "n1", "42", "HSET", "ringmq:{a}:q"]
        );
        assert_eq!(cmds[1][8], 3u64.to_be_bytes());
        // Not owned here under an epoch: as it is.
        assert_eq!(text(&cmds[0])[..2], ["HSET", "ringmq:{b}:q"]);
        // Forgotten: no guard any more (nothing is written for it by the broker then).
        out.clear();
        e.forget("a");
        e.acked(&mut out, "a", &[3]);
        assert_eq!(text(&commands(&out)[0])[..2], ["HDEL", "ringmq:{a}:q"]);
        // A long acknowledgement batch goes in commands of at most ACK_ARGS_MAX numbers.
        out.clear();
        e.owned("a", "n1", 42);
        let seqs: Vec<u64> = (100..100 + 2 * ACK_ARGS_MAX as u64 + 5).collect();
        e.acked(&mut out, "a", &seqs);
        let cmds = commands(&out);
        let counts: Vec<usize> = cmds.iter().map(|c| c.len() - 8).collect();
        assert_eq!(counts, [ACK_ARGS_MAX, ACK_ARGS_MAX, 5]);
    }
}

//! The start-up load: every session and retained message in Redis, read with a blocking
//! connection in bounded batches (`SCAN` of session keys, `COUNT` per step; one pipeline of
//! reads per step), validated, and turned into the records that rebuild them.

use std::io::{Read, Write};

use super::cluster::Topology;
use super::layout::{self, INBOUND, PACKET_IDS, PREFIX, QUEUE, RELEASED, RETAINED, SESSION};
use super::resp::{self, Reply};
use super::RedisConfig;
use crate::record::{Record, StoredMessage};

/// Keys asked for per `SCAN` / `HSCAN` step.
const SCAN_COUNT: &[u8] = b"1000";

/// What the load found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Per session: its client id, expiry, whether it has outbound QoS 2 state, and the
    /// records that rebuild it (in an order [`crate::state::State::apply`] takes).
    pub sessions: Vec<LoadedSession>,
    /// Retained messages with their versions.
    pub retained: Vec<(StoredMessage, u64)>,
    /// Values that did not validate (skipped, logged).
    pub skipped: usize,
}

/// One session read back.
#[derive(Debug)]
pub struct LoadedSession {
    /// Client id.
    pub client: String,
    /// Expiry interval, seconds.
    pub expiry: u32,
    /// It has outbound QoS 2 state.
    pub qos2: bool,
    /// The records that rebuild it.
    pub records: Vec<Record>,
    /// The epoch this broker owns it under (`redis_shared`; 0 otherwise).
    pub epoch: u64,
}

/// A blocking connection (the load, the lock, claims).
#[derive(Debug)]
pub struct Client {
    stream: super::tls::Stream,
    rx: Vec<u8>,
    /// The read timeout set (None: reads wait as long as it takes).
    timeout: Option<std::time::Duration>,
}

/// How long a read waits for more of a large reply before the reply is parsed anyway.
const IDLE: std::time::Duration = std::time::Duration::from_millis(20);

/// Pending bytes of an incomplete reply from which its next parse waits for them to double.
const DEFER_MIN: usize = 64 << 10;

impl Client {
    /// Connected to `addr`, authenticated, on the database.
    pub fn connect_to(config: &RedisConfig, addr: &str) -> std::io::Result<Self> {
        Ok(Self {
            stream: config.connect_to(addr)?,
            rx: Vec::new(),
            timeout: None,
        })
    }

    /// Reads and writes give up after `timeout` (a Redis that stops answering).
    pub fn set_timeout(&mut self, timeout: std::time::Duration) -> std::io::Result<()> {
        self.timeout = Some(timeout);
        self.stream.set_read_timeout(Some(timeout))?;
        self.stream.set_write_timeout(Some(timeout))
    }

    /// Sends `commands` as one pipeline; their replies, in order.
    ///
    /// A reply still incomplete is parsed again only once its bytes doubled, or once no more
    /// arrived for [`IDLE`]: reading a reply of many megabytes (a large queue's `HGETALL`) in
    /// small reads (16 KiB TLS records) costs linear time, not quadratic.
    pub fn pipeline(&mut self, commands: &[Vec<u8>]) -> std::io::Result<Vec<Reply>> {
        let out: Vec<u8> = commands.concat();
        self.stream.write_all(&out)?;
        let mut replies = Vec::with_capacity(commands.len());
        let mut buf = vec![0u8; 256 << 10];
        let mut at = 0;
        // The pending bytes at the last parse that found the reply incomplete (0: none).
        let mut tried = 0usize;
        // Parse on the next pass whatever the doubling says (no more came for `IDLE`).
        let mut force = false;
        // A forced parse found it incomplete: the next read waits as long as it takes.
        let mut stalled = false;
        while replies.len() < commands.len() {
            let pending = self.rx.len().saturating_sub(at);
            if tried < DEFER_MIN || force || pending >= 2 * tried {
                let forced = std::mem::take(&mut force);
                match resp::parse(self.rx.get(at..).unwrap_or_default())
                    .map_err(std::io::Error::other)?
                {
                    Some((reply, used)) => {
                        at += used;
                        replies.push(reply);
                        tried = 0;
                        continue;
                    }
                    None => {
                        tried = pending.max(1);
                        stalled = forced;
                    }
                }
            }
            let deferring = !stalled && tried >= DEFER_MIN;
            self.stream
                .set_read_timeout(if deferring { Some(IDLE) } else { self.timeout })?;
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.rx.extend_from_slice(buf.get(..n).unwrap_or_default());
                    stalled = false;
                }
                Err(e)
                    if deferring
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                {
                    force = true;
                }
                // A signal (SIGSTOP / SIGCONT of the process): read again.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.stream.set_read_timeout(self.timeout)?;
        self.rx.drain(..at);
        Ok(replies)
    }
}

fn bulk(reply: Reply) -> Option<Vec<u8>> {
    match reply {
        Reply::Bulk(b) => b,
        _ => None,
    }
}

fn items(reply: Reply) -> std::io::Result<Vec<Reply>> {
    match reply {
        Reply::Array(Some(items)) => Ok(items),
        Reply::Error(e) => Err(std::io::Error::other(format!("Redis: {e}"))),
        _ => Ok(Vec::new()),
    }
}

/// Pairs of a `HGETALL` / `HSCAN` page.
fn pairs(reply: Reply) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut it = items(reply)?.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        if let (Some(k), Some(v)) = (bulk(k), bulk(v)) {
            out.push((k, v));
        }
    }
    Ok(out)
}

/// A `SCAN`-like reply: the next cursor and the page.
fn page(reply: Reply) -> std::io::Result<(Vec<u8>, Reply)> {
    let mut it = items(reply)?.into_iter();
    match (it.next().and_then(bulk), it.next()) {
        (Some(cursor), Some(page)) => Ok((cursor, page)),
        _ => Err(std::io::Error::other("Redis: malformed SCAN reply")),
    }
}

/// Replies per session of [`session_reads`].
pub(super) const SESSION_READS: usize = 5;

/// The reads of `client`'s five keys, in the order [`session`] takes their replies.
pub(super) fn session_reads(client: &str, out: &mut Vec<Vec<u8>>) {
    let key = |suffix| layout::client_key(client, suffix);
    out.push(resp::command(&[b"HGETALL", &key(SESSION)]));
    out.push(resp::command(&[b"HGETALL", &key(QUEUE)]));
    out.push(resp::command(&[b"HGETALL", &key(PACKET_IDS)]));
    out.push(resp::command(&[b"SMEMBERS", &key(RELEASED)]));
    out.push(resp::command(&[b"SMEMBERS", &key(INBOUND)]));
}

/// Where Redis is: one Redis, or the masters of a Redis Cluster (`CLUSTER SLOTS`).
pub fn topology(config: &RedisConfig) -> std::io::Result<Topology> {
    if config.cluster {
        Topology::discover(config, &[])
    } else {
        Ok(Topology::single(&config.addr))
    }
}

/// Takes the database's lock for this broker (`value`, see [`super::lock`]): `Ok(None)` when
/// taken, `Ok(Some(holder))` while another broker holds it.
pub fn lock(
    config: &RedisConfig,
    topology: &Topology,
    value: &str,
) -> std::io::Result<Option<String>> {
    let addr = node_addr(topology, &config.lock_key);
    super::lock::acquire(
        &mut Client::connect_to(config, addr)?,
        &config.lock_key,
        value,
    )
}

fn node_addr<'a>(topology: &'a Topology, key: &[u8]) -> &'a str {
    topology
        .nodes
        .get(topology.node_of(key))
        .map_or("", String::as_str)
}

/// Reads every session (from every master; with `owner`, only the ones that broker owns) and
/// retained message from Redis.
pub fn load(
    config: &RedisConfig,
    topology: &Topology,
    owner: Option<&str>,
) -> std::io::Result<Loaded> {
    let mut loaded = Loaded::default();
    for addr in &topology.nodes {
        load_sessions(&mut Client::connect_to(config, addr)?, owner, &mut loaded)?;
    }
    let mut client = Client::connect_to(config, node_addr(topology, RETAINED))?;
    load_retained(&mut client, &mut loaded)?;
    Ok(loaded)
}

/// The sessions stored on one node (with `owner`, the ones that broker owns).
fn load_sessions(
    client: &mut Client,
    owner: Option<&str>,
    loaded: &mut Loaded,
) -> std::io::Result<()> {
    let pattern = [PREFIX, b"*", SESSION].concat();
    let mut cursor = b"0".to_vec();
    loop {
        let reply = client.pipeline(&[resp::command(&[
            b"SCAN", &cursor, b"MATCH", &pattern, b"COUNT", SCAN_COUNT,
        ])])?;
        let (next, keys) = page(reply.into_iter().next().unwrap_or(Reply::Array(None)))?;
        let mut clients: Vec<String> = items(keys)?
            .into_iter()
            .filter_map(bulk)
            .filter_map(|k| layout::client_of_session_key(&k))
            .collect();
        let mut epochs = vec![0; clients.len()];
        if let Some(me) = owner {
            let owners = super::owners::owners(client, &clients)?;
            let mine: Vec<(String, u64)> = clients
                .drain(..)
                .zip(owners)
                .filter_map(|(c, o)| o.filter(|(b, _)| b == me).map(|(_, e)| (c, e)))
                .collect();
            (clients, epochs) = mine.into_iter().unzip();
        }
        let mut commands = Vec::with_capacity(clients.len() * SESSION_READS);
        for c in &clients {
            session_reads(c, &mut commands);
        }
        let mut replies = client.pipeline(&commands)?.into_iter();
        for (c, epoch) in clients.into_iter().zip(epochs) {
            let mut next_reply = || replies.next().unwrap_or(Reply::Array(None));
            let (s, q, p, r, i) = (
                next_reply(),
                next_reply(),
                next_reply(),
                next_reply(),
                next_reply(),
            );
            if let Some(mut session) = session(c, s, q, p, r, i, &mut loaded.skipped)? {
                session.epoch = epoch;
                loaded.sessions.push(session);
            }
        }
        if next == b"0" {
            return Ok(());
        }
        cursor = next;
    }
}

/// The retained messages.
fn load_retained(client: &mut Client, loaded: &mut Loaded) -> std::io::Result<()> {
    let mut cursor = b"0".to_vec();
    loop {
        let reply = client.pipeline(&[resp::command(&[
            b"HSCAN", RETAINED, &cursor, b"COUNT", SCAN_COUNT,
        ])])?;
        let (next, entries) = page(reply.into_iter().next().unwrap_or(Reply::Array(None)))?;
        for (topic, value) in pairs(entries)? {
            match layout::retained_of(&value) {
                Some((m, v)) if m.topic.as_bytes() == topic.as_slice() => {
                    loaded.retained.push((m, v));
                }
                _ => {
                    tracing::error!(topic = %String::from_utf8_lossy(&topic), "a retained message in Redis does not decode: skipped");
                    loaded.skipped += 1;
                }
            }
        }
        if next == b"0" {
            return Ok(());
        }
        cursor = next;
    }
}

/// One session from its five keys' replies (None: its session hash vanished meanwhile).
pub(super) fn session(
    client: String,
    s: Reply,
    q: Reply,
    p: Reply,
    r: Reply,
    i: Reply,
    skipped: &mut usize,
) -> std::io::Result<Option<LoadedSession>> {
    let mut bad = |what: &str| {
        tracing::error!(client = %client, "a {what} in Redis does not decode: skipped");
        *skipped += 1;
    };
    let fields = pairs(s)?;
    let Some(expiry) = fields
        .iter()
        .find(|(k, _)| k == b"e")
        .and_then(|(_, v)| <[u8; 4]>::try_from(v.as_slice()).ok())
        .map(u32::from_be_bytes)
    else {
        return Ok(None);
    };
    let mut records = vec![Record::Session {
        client: client.clone(),
        expiry,
    }];
    for (field, value) in &fields {
        let Some(filter) = field.strip_prefix(b"f") else {
            continue;
        };
        match layout::subscription_of(filter, value) {
            Some(sub) => records.push(Record::Subscribe {
                client: client.clone(),
                sub,
            }),
            None => bad("subscription"),
        }
    }
    let mut queued: Vec<(u64, Vec<u8>)> = Vec::new();
    for (field, value) in pairs(q)? {
        match layout::u64_of(&field) {
            Some(seq) if layout::queued_of(&value).is_some() => queued.push((seq, value)),
            _ => bad("queued message"),
        }
    }
    queued.sort_unstable_by_key(|(seq, _)| *seq);
    let ids: Vec<(u64, u16)> = pairs(p)?
        .into_iter()
        .filter_map(|(f, v)| Some((layout::u64_of(&f)?, layout::u16_of(&v)?)))
        .collect();
    let released: Vec<u64> = items(r)?
        .into_iter()
        .filter_map(bulk)
        .filter_map(|m| layout::u64_of(&m))
        .collect();
    let qos2 = !ids.is_empty() || !released.is_empty();
    for (seq, value) in queued {
        let Some((qos, retain, body)) = layout::queued_of(&value) else {
            continue;
        };
        records.push(Record::Message {
            client: client.clone(),
            id: seq,
            qos,
            retain,
            body: body.to_vec(),
        });
    }
    for (seq, packet_id) in ids {
        records.push(Record::Sent {
            client: client.clone(),
            seq,
            packet_id,
        });
    }
    for seq in released {
        records.push(Record::Released {
            client: client.clone(),
            seq,
        });
    }
    for member in items(i)?.into_iter().filter_map(bulk) {
        match layout::u16_of(&member) {
            Some(packet_id) => records.push(Record::Qos2Received {
                client: client.clone(),
                packet_id,
            }),
            None => bad("inbound QoS 2 id"),
        }
    }
    Ok(Some(LoadedSession {
        client,
        expiry,
        qos2,
        records,
        epoch: 0,
    }))
}

//! The Redis store: persistent sessions, their queued messages, QoS 2 state and retained
//! messages kept in Redis instead of the embedded log, written in batches across clients.
//!
//! Sans-IO like every [`Store`]: records become commands ([`layout::Encoder`]) appended to one
//! pipeline buffer; once per loop pass (when the previous batch answered) the whole buffer
//! goes out as one send per Redis connection on the shard's own io_uring
//! ([`IoRequest::Send`]; with a Redis Cluster, split by each key's master) and the replies come
//! back through [`IoRequest::Recv`]. When every command of a batch answered without an error
//! its records are durable (as durable as Redis's `appendonly` / `appendfsync` make them).
//!
//! A lost connection (or an error reply: OOM, READONLY, ...) keeps the batch: every command
//! is idempotent, so it is sent again, whole, once a connection is back (reconnecting with
//! backoff). Meanwhile acknowledgements stay held (publishers slow down); after
//! `redis_hold_ms` the held ones are refused and so are new durable publishes
//! ([`Store::failing`]) until a batch lands again.
//!
//! # Layout
//! - `mod.rs`: [`RedisStore`] (batches, outages, the hold, fencing).
//! - `node.rs`: one connection (per master) and its part of the batch.
//! - [`cluster`]: slots, the slot map, splitting a pipeline by master.
//! - [`config`]: where Redis is; connection set-up.
//! - [`resp`]: the protocol.
//! - [`tls`]: TLS (`rediss://`).
//! - [`layout`]: keys, values, records as commands.
//! - [`load`]: the blocking start-up load of every session and retained message.
//! - [`lock`]: one broker per Redis database (unless `redis_shared`).
//! - [`owners`]: several brokers on one database: who owns a client id, claims, notices.

pub mod cluster;
pub mod config;
pub mod layout;
pub mod load;
pub mod lock;
mod node;
pub mod owners;
pub mod resp;
pub mod tls;

pub use config::RedisConfig;

use std::time::{Duration, Instant};

use cluster::Topology;
use node::{Node, Part, BACKOFF_MAX, BACKOFF_MIN, OP_WAKE};

use crate::compact::MessageRef;
use crate::record::Record;
use crate::store::{IoDone, IoRequest, Landed, Store};
use crate::Error;

/// The shortest wait for a batch's replies (the wait is `redis_hold_ms`, at least this).
const REPLY_TIMEOUT_MIN: Duration = Duration::from_secs(1);

/// A shard's store in Redis: one connection per master (one for a single Redis).
#[derive(Debug)]
pub struct RedisStore {
    config: RedisConfig,
    encoder: layout::Encoder,
    topology: Topology,
    nodes: Vec<Node>,
    /// Commands not sent yet (the encoder counts them).
    pending: Vec<u8>,
    /// Emptied part buffers, reused.
    spare: Vec<Vec<u8>>,
    /// Records whose commands were all elided, landed without I/O (reported by a wake).
    landed_empty: Option<u64>,
    appended: u64,
    durable: u64,
    /// The batch out: every record up to here is durable once each part answered; since when.
    batch_end: Option<u64>,
    batch_since: Instant,
    /// When the batch out last made progress (bytes sent, replies read).
    progress_at: Instant,
    /// With a cluster: the batch out, whole (sent again, re-split, if it does not land).
    batch_whole: Option<Vec<u8>>,
    /// A batch that did not land: its commands, their count, its end.
    retry: Option<(Vec<u8>, usize, u64)>,
    next_retry: Instant,
    backoff: Duration,
    /// A redirection or a lost node: read the slot map again before the next batch.
    topology_stale: bool,
    /// Since when batches do not land (connection lost, error replies).
    down_since: Option<Instant>,
    /// The hold ran out: held acks were refused, durable publishes are.
    refused: bool,
    /// Records appended up to the last refusal (later ones wait for the next).
    refused_upto: u64,
    wake_out: bool,
    last_error: String,
    /// This broker's value of the database's lock (empty: none, `redis_shared`), and when
    /// this store last renewed it.
    lock: String,
    renewed: Instant,
    /// Another broker took the lock: nothing is written any more.
    fenced: bool,
}

impl RedisStore {
    /// A store writing to the masters of `topology` (connected at its first batch).
    pub fn new(config: RedisConfig, topology: Topology, lock: String, now: Instant) -> Self {
        let nodes = topology
            .nodes
            .iter()
            .enumerate()
            .map(|(i, addr)| Node::new(addr.clone(), i, None, now))
            .collect();
        let shared = config.shared;
        Self {
            config,
            encoder: layout::Encoder::new(shared),
            topology,
            nodes,
            pending: Vec::new(),
            spare: Vec::new(),
            landed_empty: None,
            appended: 0,
            durable: 0,
            batch_end: None,
            batch_since: now,
            progress_at: now,
            batch_whole: None,
            retry: None,
            next_retry: now,
            backoff: BACKOFF_MIN,
            topology_stale: false,
            down_since: None,
            refused: false,
            refused_upto: 0,
            wake_out: false,
            last_error: String::new(),
            lock,
            renewed: now,
            fenced: false,
        }
    }

    /// Remembers that a loaded session has outbound QoS 2 state.
    pub fn loaded_qos2(&mut self, client: &str) {
        self.encoder.has_qos2(client);
    }

    fn hold_over(&self, now: Instant) -> bool {
        self.fenced
            || self
                .down_since
                .is_some_and(|since| now.duration_since(since) >= self.config.hold)
    }

    /// Batches stop landing from now (logged once per outage).
    fn down(&mut self, why: &str, now: Instant) {
        if self.down_since.is_none() {
            tracing::warn!(url = %self.config.url, error = %why, "Redis unavailable; acknowledgements held, retrying");
        }
        self.last_error = why.to_string();
        self.down_since.get_or_insert(now);
    }

    /// Reads the slot map again; nodes whose address stays keep their connection.
    fn refresh_topology(&mut self, now: Instant) -> bool {
        let seeds: Vec<String> = self.topology.nodes.clone();
        match Topology::discover(&self.config, &seeds) {
            Ok(topology) => {
                if topology != self.topology {
                    tracing::info!(url = %self.config.url, masters = topology.nodes.len(), "Redis Cluster slot map changed");
                }
                let mut old: Vec<Node> = std::mem::take(&mut self.nodes);
                self.nodes = topology
                    .nodes
                    .iter()
                    .enumerate()
                    .map(|(i, addr)| {
                        let conn = old
                            .iter_mut()
                            .find(|n| n.addr == *addr)
                            .and_then(Node::take_conn);
                        Node::new(addr.clone(), i, conn, now)
                    })
                    .collect();
                self.topology = topology;
                self.topology_stale = false;
                true
            }
            Err(e) => {
                self.down(&format!("reading the cluster's slot map: {e}"), now);
                self.next_retry = now + self.backoff;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                false
            }
        }
    }

    /// Every node's part is over: how the batch ended.
    fn finish(&mut self, now: Instant) -> Landed {
        let end = self.batch_end.take().unwrap_or(self.durable);
        let mut error = None;
        let mut broken = false;
        let mut commands = 0;
        let mut bufs = Vec::with_capacity(self.nodes.len());
        for node in &mut self.nodes {
            let Some(mut part) = node.part.take() else {
                continue;
            };
            node.release_closing();
            node.handshaken |= !part.broken && part.error.is_none();
            broken |= part.broken;
            // The batch's own commands: a retry goes without this connection's handshake.
            commands += part.commands - part.prefix.0;
            if error.is_none() {
                error = part.error.take();
            }
            // With TLS the commands are kept apart from their records.
            if let Some(mut buf) = part.plain.take().or_else(|| part.buf.take()) {
                buf.drain(..part.prefix.1.min(buf.len()));
                bufs.push(buf);
            }
        }
        if !broken && error.is_none() {
            self.durable = end;
            self.down_since = None;
            self.refused = false;
            self.backoff = BACKOFF_MIN;
            bufs.extend(self.batch_whole.take());
            for mut buf in bufs {
                buf.clear();
                if self.pending.is_empty() && self.pending.capacity() < buf.capacity() {
                    std::mem::swap(&mut self.pending, &mut buf);
                }
                if self.spare.len() < self.nodes.len() {
                    self.spare.push(buf);
                }
            }
            return Landed {
                durable: self.durable,
                ..Landed::default()
            };
        }
        if let Some(e) = &error {
            if e.starts_with(lock::LOST) && !self.fenced {
                let key = String::from_utf8_lossy(&self.config.lock_key);
                tracing::error!(url = %self.config.url, lock = %key, "another broker process took this broker's Redis lock: this broker writes nothing more there, refuses durable publishes (and, sharing the database, CONNECTs); restart it");
                self.fenced = true;
                self.refused_upto = 0;
            }
            if ["MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN"]
                .iter()
                .any(|p| e.starts_with(p))
            {
                self.topology_stale = self.config.cluster;
            }
            // Redis answered but refused a command: the batch goes again after a backoff.
            self.down(&format!("Redis refused a write: {e}"), now);
            self.next_retry = now + self.backoff;
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        }
        if broken && self.config.cluster {
            // A master may have failed over: ask the cluster again.
            self.topology_stale = true;
        }
        // Sent again whole: the commands are idempotent.
        let whole = match self.batch_whole.take() {
            Some(whole) => whole,
            None => bufs.pop().unwrap_or_default(),
        };
        self.retry = Some((whole, commands, end));
        self.landed_nothing(now)
    }

    /// Nothing new landed: a refusal once the hold is over.
    fn landed_nothing(&mut self, now: Instant) -> Landed {
        let failed = if self.hold_over(now) && self.durable < self.appended {
            // The broker logs the refusal (once per streak).
            self.refused = true;
            self.refused_upto = self.appended;
            Some(std::io::Error::other(format!(
                "Redis {} unavailable for over {} ms: {}",
                self.config.url,
                self.config.hold.as_millis(),
                self.last_error
            )))
        } else {
            None
        };
        Landed {
            durable: self.durable,
            failed,
            maintenance: None,
        }
    }

    /// Once the hold is over, records appended since the last refusal are refused too: a
    /// completion at once reports it (nothing else would while Redis is away).
    fn wake_to_refuse(&mut self, now: Instant) -> Option<IoRequest> {
        if self.hold_over(now) && self.appended > self.refused_upto.max(self.durable) {
            return self.wake();
        }
        None
    }

    fn wake(&mut self) -> Option<IoRequest> {
        self.wake_out = true;
        Some(IoRequest::Wake { op: OP_WAKE })
    }

    /// Hands `buf` (`commands` commands, records up to `end`) to the nodes.
    fn start_batch(&mut self, buf: Vec<u8>, commands: usize, end: u64) {
        self.batch_end = Some(end);
        self.batch_since = Instant::now();
        self.progress_at = self.batch_since;
        if self.nodes.len() == 1 {
            if let Some(node) = self.nodes.first_mut() {
                node.start(buf, commands, &self.config);
            }
            return;
        }
        let mut parts: Vec<(Vec<u8>, usize)> = (0..self.nodes.len())
            .map(|_| (self.spare.pop().unwrap_or_default(), 0))
            .collect();
        let routed = cluster::route(&buf, &self.topology, &mut parts);
        debug_assert_eq!(routed, commands, "the encoder writes whole commands");
        for (node, (part, n)) in self.nodes.iter_mut().zip(parts) {
            if n > 0 {
                node.start(part, n, &self.config);
            } else {
                self.spare.push(part);
            }
        }
        if routed != commands {
            // Cannot happen (the encoder writes whole commands): fail the batch, never hang.
            tracing::error!(
                routed,
                commands,
                "a Redis pipeline did not split into whole commands"
            );
            for node in &mut self.nodes {
                if let Some(p) = &mut node.part {
                    p.error = Some("ringmq: malformed pipeline".into());
                }
            }
        }
        self.batch_whole = Some(buf);
    }

    /// True once no node has a part in flight.
    fn batch_over(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| n.part.as_ref().is_none_or(Part::over))
    }
}

impl Store for RedisStore {
    fn persistent(&self) -> bool {
        true
    }

    fn append(&mut self, record: &Record) -> Result<(), Error> {
        self.encoder.record(&mut self.pending, record);
        self.appended += 1;
        Ok(())
    }

    fn append_message(
        &mut self,
        client: &str,
        id: u64,
        qos: u8,
        retain: bool,
        message: &MessageRef<'_>,
    ) -> Result<(), Error> {
        self.encoder
            .message(&mut self.pending, client, id, qos, retain, message);
        self.appended += 1;
        Ok(())
    }

    fn append_acked(&mut self, client: &str, seqs: &[u64]) -> Result<(), Error> {
        self.encoder.acked(&mut self.pending, client, seqs);
        self.appended += 1;
        Ok(())
    }

    fn session_online(&mut self, client: &str) {
        self.encoder.online(&mut self.pending, client);
    }

    fn session_offline(&mut self, client: &str, expiry: u32) {
        let deadline = (expiry != u32::MAX).then(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            now + u64::from(expiry) * 1000
        });
        self.encoder.offline(&mut self.pending, client, deadline);
    }

    fn session_loaded(&mut self, client: &str, qos2: bool) {
        if qos2 {
            self.encoder.has_qos2(client);
        }
    }

    fn session_forgotten(&mut self, client: &str) {
        self.encoder.forget(client);
    }

    fn session_owned(&mut self, client: &str, broker: &str, epoch: u64) {
        if self.config.fenced {
            self.encoder.owned(client, broker, epoch);
        }
    }

    fn appended(&self) -> u64 {
        self.appended
    }

    fn fenced(&self) -> bool {
        self.fenced
    }

    fn failing(&self) -> bool {
        self.fenced || self.refused || self.pending.len() > self.config.pending_bytes_max
    }

    fn available(&self) -> bool {
        self.down_since.is_none() && !self.fenced
    }

    fn idle(&self) -> bool {
        self.batch_end.is_none() && self.retry.is_none() && self.encoder.commands() == 0
    }

    fn next_io(&mut self, now: Instant) -> Option<IoRequest> {
        if self.batch_end.is_some() || self.wake_out {
            return None;
        }
        if self.fenced {
            return self.wake_to_refuse(now);
        }
        if self.topology_stale && (now < self.next_retry || !self.refresh_topology(now)) {
            return self.wake_to_refuse(now);
        }
        let config = &self.config;
        let mut all = true;
        for node in &mut self.nodes {
            all &= node.connect(config, now);
        }
        if !all {
            let why = self
                .nodes
                .iter()
                .find(|n| !n.connected())
                .map(|n| format!("{}: {}", n.addr, n.last_error))
                .unwrap_or_default();
            self.down(&why, now);
            return self.wake_to_refuse(now);
        }
        if let Some((buf, commands, end)) = self.retry.take() {
            if now < self.next_retry {
                self.retry = Some((buf, commands, end));
                return self.wake_to_refuse(now);
            }
            self.start_batch(buf, commands, end);
            return self.continue_io();
        }
        if self.appended == self.durable && self.encoder.commands() == 0 {
            return None;
        }
        let commands = self.encoder.take(&mut self.pending);
        if commands == 0 {
            // Every record's commands were elided: landed, nothing to send.
            self.pending.clear();
            self.durable = self.appended;
            self.landed_empty = Some(self.appended);
            return self.wake();
        }
        let buf = std::mem::replace(&mut self.pending, self.spare.pop().unwrap_or_default());
        self.start_batch(buf, commands, self.appended);
        self.continue_io()
    }

    fn continue_io(&mut self) -> Option<IoRequest> {
        self.batch_end?;
        self.nodes.iter_mut().find_map(Node::request)
    }

    fn io_done(&mut self, done: IoDone) -> Option<Landed> {
        let now = Instant::now();
        let kind = done.op & 3;
        if kind == OP_WAKE {
            self.wake_out = false;
            if let Some(durable) = self.landed_empty.take() {
                return Some(Landed {
                    durable,
                    ..Landed::default()
                });
            }
            // Always a landing (maybe of nothing): it ends what `next_io` started.
            return Some(self.landed_nothing(now));
        }
        let (index, generation) = node::op_target(done.op);
        let node = self.nodes.get_mut(index)?;
        match node.done(kind, generation, done, now) {
            Some(why) => {
                let why = format!("{}: {why}", node.addr);
                self.down(&why, now);
            }
            None => self.progress_at = now,
        }
        if self.batch_end.is_none() || !self.batch_over() {
            return None;
        }
        Some(self.finish(now))
    }

    fn maintain(&mut self, _budget: u64) -> Result<(), Error> {
        let now = Instant::now();
        // A batch Redis has not answered within the hold (stopped, partitioned, a dead host
        // without a reset): its connections are broken, which completes what is out on them,
        // and the batch goes again once reconnected.
        let timeout = self.config.hold.max(REPLY_TIMEOUT_MIN);
        if self.batch_end.is_some() && now.duration_since(self.progress_at) >= timeout {
            let why = format!("no progress within {} ms", timeout.as_millis());
            for node in &mut self.nodes {
                if node.in_flight() && node.connected() {
                    node.broken(why.clone(), now);
                }
            }
            let first = self.down_since.is_none();
            self.down(&why, now);
            if first {
                // The outage began when the batch went out unanswered.
                self.down_since = Some(self.batch_since);
            }
        }
        // Renews the database's lock (a command in the next batch; a reply of `LOST`
        // fences this store). No lock when brokers share the database (`redis_shared`).
        if !self.fenced
            && !self.lock.is_empty()
            && now.duration_since(self.renewed) >= Duration::from_millis(lock::RENEW_EVERY_MS)
        {
            self.renewed = now;
            self.encoder
                .renew_lock(&mut self.pending, &self.config.lock_key, &self.lock);
        }
        Ok(())
    }
}

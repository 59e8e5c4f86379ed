//! One shard per core: a pinned thread running its own io_uring loop, the reactor. It owns
//! the ring, the listener, the sockets, the mesh transport and the timer; everything MQTT
//! decides is in its [`Core`], which it feeds and whose effects it applies.
//!
//! A loop pass: one `io_uring_enter` submits everything queued and waits for completions;
//! completions are handled (accepts, receives, finished sends, the doorbell, the timer, the
//! store's I/O); messages from peers are drained (bounded); blocked forwards are retried;
//! every connection with new output gets one send; the store's next batch is submitted;
//! peers pushed to are woken through this ring.
//!
//! # Layout
//! - `mod.rs`: [`Shard`], the loop, completion dispatch, connection life cycle.
//! - `effects.rs`: applying the core's effects (close, pause, resume, abort, hand over, push).
//! - `conn.rs`: [`conn::Conn`], a connection's I/O side.
//! - `linger.rs`: lingering close (the last packet reaches a client that is still sending).
//! - `listeners.rs`: the listeners (TCP, TLS, WebSocket, secure WebSocket), accepting, a
//!   connection's TLS / WebSocket layers, the hand-over to the home shard.
//! - `mesh.rs`: SPSC queues between shards and their doorbells.
//! - `peers.rs`: the reactor's side of the mesh (pushing, pausing on a full queue, draining,
//!   adopting handed-over connections, waking peers).
//! - `store_io.rs`: the store's I/O on the shard's store ring (commits, a socket store's
//!   traffic), mid-pass looks at landed commits.

pub mod conn;
mod effects;
mod linger;
mod listeners;
pub mod mesh;
mod peers;
mod store_io;

use std::collections::VecDeque;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Buf;
use net::uring::{Completion, Ring, RingConfig};
use storage::store::IoDone;

use crate::auth::reload::Reloadable;
use crate::capacity::{self, FreeSlots, SHRINK_EVERY};
use crate::config::Config;
use crate::core::peer::ShardMsg;
use crate::core::Core;
use crate::durable::recover::Recovered;
use crate::ids::{ConnId, ShardId};
use crate::metrics::Metrics;
use conn::{Conn, Linger, RecvState};
use mesh::Mesh;

pub use crate::metrics::Stats;

const KIND_ACCEPT: u64 = 1;
const KIND_RECV: u64 = 2;
const KIND_SEND: u64 = 3;
const KIND_DOORBELL_READ: u64 = 4;
const KIND_DOORBELL_WRITE: u64 = 5;
const KIND_TIMER: u64 = 6;
/// The store's I/O; the operation number the store gave rides in the slot bits.
const KIND_STORE: u64 = 7;
/// In a long loop pass, the store is looked at every this many completions: a landed commit
/// releases its acknowledgements and the next commit starts mid-pass (see `kick_store`).
const COMMIT_KICK_EVERY: usize = 8;
/// ... once this long has passed since the pass began or the last look.
const COMMIT_KICK_AFTER: Duration = Duration::from_micros(250);

fn token(kind: u64, id: ConnId) -> u64 {
    kind << 56 | (u64::from(id.generation) & 0xFF_FFFF) << 32 | u64::from(id.slot)
}

fn token_conn(token: u64) -> ConnId {
    ConnId {
        slot: token as u32,
        generation: ((token >> 32) & 0xFF_FFFF) as u32,
    }
}

fn store_token(op: u32) -> u64 {
    token(
        KIND_STORE,
        ConnId {
            slot: op,
            generation: 0,
        },
    )
}

const NO_CONN: ConnId = ConnId {
    slot: 0,
    generation: 0,
};
const TICK: Duration = Duration::from_millis(250);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A shard: the reactor and its core.
pub struct Shard {
    ring: Ring,
    /// The store's I/O (commits, a socket store's traffic): a ring of its own, so a commit's
    /// completion is seen as soon as it lands, not after the deferred work of every receive
    /// queued before it on `ring` (the kernel runs 20 of those per enter). It rings the
    /// mesh doorbell, which `ring` reads, when it posts a completion.
    store_ring: Ring,
    /// Entries queued on `store_ring` and not submitted yet (a failed submission leaves them
    /// there, tried again every pass).
    store_ring_queued: bool,
    /// The last submission to `store_ring` failed (logged once per streak).
    store_ring_failing: bool,
    listeners: Vec<listeners::Listener>,
    /// Settings for the TLS / WebSocket layers of connections.
    layer_settings: Arc<crate::transport::LayerSettings>,
    mesh: Mesh,
    conns: Vec<Option<Conn>>,
    /// Free slots of `conns`, lowest first (so the free tail can be given back).
    free_conns: FreeSlots,
    /// The generation the next connection gets (24 bits, never 0): a slot reused, or cut
    /// off and grown again, never carries an old connection's id.
    next_generation: u32,
    /// Ticks until the next shrink pass (`crate::capacity`).
    shrink_in: u32,
    conn_count: usize,
    /// Mesh messages that found their peer's queue full, in order; input is paused while any.
    blocked: VecDeque<(ShardId, ShardMsg)>,
    /// Connections with undecoded input left while paused.
    stalled: Vec<ConnId>,
    /// Connections in a lingering close (`linger.rs`), checked for their deadline each tick.
    lingering: Vec<ConnId>,
    stop: Arc<AtomicBool>,
    stopping_since: Option<Instant>,
    /// Accept is failing (EMFILE...): logged once when it starts and once when it ends.
    accept_failing: bool,
    wakes: Vec<RawFd>,
    /// Scratch for messages drained from peers (kept to reuse its allocation).
    inbox: Vec<(ShardId, ShardMsg)>,
    core: Core,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("core", &self.core)
            .field("conns", &self.conn_count)
            .finish()
    }
}

impl Shard {
    /// Makes this shard part of a cluster node: a downlink sink reading `table`, its route
    /// changes reported to `feed`.
    pub fn join_cluster(
        &mut self,
        table: Arc<arc_swap::ArcSwap<crate::cluster::table::RouteTable>>,
        feed: Arc<crate::cluster::feed::Feed>,
    ) -> anyhow::Result<()> {
        let (Some(kafka), Some(cluster)) = (&self.core.config.kafka, &self.core.config.cluster)
        else {
            anyhow::bail!("a cluster node needs [kafka] and [cluster]");
        };
        let bytes_max = crate::kafka::record_bytes_max(self.core.config.packet_bytes_max);
        let (shard, bell) = (self.core.id.index(), self.mesh.doorbell_file()?);
        let nodes = (table, feed.clone());
        let sink =
            crate::cluster::sink::ClusterSink::new(kafka, cluster, nodes, shard, bytes_max, bell)?;
        self.core.sinks.add(Box::new(sink));
        self.core.join_cluster(feed);
        Ok(())
    }

    /// Sets up the shard's ring and listener. Call on the shard's own thread.
    pub fn new(
        id: ShardId,
        config: Config,
        mesh: Mesh,
        stop: Arc<AtomicBool>,
        auth: Arc<Reloadable>,
        metrics: Arc<Metrics>,
        recovered: Recovered,
    ) -> anyhow::Result<Self> {
        let sq = 4096u32;
        let ring = Ring::new(RingConfig {
            sq_entries: sq,
            cq_entries: sq * 8,
            recv_buffer_count: config.recv_buffer_count,
            recv_buffer_bytes: config.recv_buffer_bytes,
        })
        .map_err(|e| anyhow::anyhow!("shard {}: io_uring setup: {e}", id.0))?;
        let store_ring = Ring::new_store(store_io::STORE_RING_ENTRIES)
            .and_then(|r| r.register_eventfd(mesh.doorbell_fd()).map(|()| r))
            .map_err(|e| anyhow::anyhow!("shard {}: the store's io_uring: {e}", id.0))?;
        let listeners = listeners::open(&config, id.0)?;
        let layer_settings = listeners::layer_settings(&config);
        let mut core = Core::new(
            id,
            config,
            auth.current(),
            metrics,
            recovered,
            Instant::now(),
        );
        core.follow_auth(auth);
        Ok(Self {
            ring,
            store_ring,
            store_ring_queued: false,
            store_ring_failing: false,
            listeners,
            layer_settings,
            mesh,
            conns: Vec::new(),
            free_conns: FreeSlots::default(),
            next_generation: 1,
            shrink_in: SHRINK_EVERY,
            conn_count: 0,
            blocked: VecDeque::new(),
            stalled: Vec::new(),
            lingering: Vec::new(),
            stop,
            stopping_since: None,
            accept_failing: false,
            wakes: Vec::new(),
            inbox: Vec::new(),
            core,
        })
    }

    /// Registers the MQTT -> Kafka sink when `[[kafka.to_kafka]]` rules exist; the
    /// `ack = "local"` rules' messages go to `outbox`.
    pub fn add_kafka_sink(
        &mut self,
        outbox: Option<Arc<crate::kafka::outbox::Shared>>,
    ) -> anyhow::Result<()> {
        let Some(kafka) = self
            .core
            .config
            .kafka
            .as_ref()
            .filter(|k| !k.to_kafka.is_empty())
        else {
            return Ok(());
        };
        let rules = crate::kafka::rules(kafka)?;
        let sink = crate::kafka::sink::KafkaSink::new(
            kafka,
            rules,
            self.core.id.index(),
            crate::kafka::record_bytes_max(self.core.config.packet_bytes_max),
            self.mesh.doorbell_file()?,
        )?
        .with_outbox(outbox);
        self.core.sinks.add(Box::new(sink));
        Ok(())
    }

    /// Shares this shard's sessions with other brokers on the same Redis (`redis_shared`).
    pub fn share_sessions(&mut self, shared: crate::owners::Shared) {
        self.core.share_sessions(shared);
    }

    /// Registers an inbound source (Kafka -> MQTT) on this shard.
    pub fn add_source(&mut self, source: Box<dyn crate::source::Source + Send>) {
        self.core.sources.add(source);
    }

    /// Runs the loop until shutdown completes.
    pub fn run(mut self) -> anyhow::Result<Stats> {
        self.arm_accept();
        self.ring
            .read_eventfd(self.mesh.doorbell_fd(), token(KIND_DOORBELL_READ, NO_CONN));
        self.ring.timer(TICK, token(KIND_TIMER, NO_CONN));
        let batch = self.core.config.wait_completions_min as usize;
        let batch_timeout = Duration::from_micros(self.core.config.wait_timeout_us);
        loop {
            if self.core.feeds_due() || self.ring.has_completions() {
                // Retained streams to go on with, or completions a mid-pass look gathered:
                // gather what is ready without blocking.
                self.ring.submit_and_reap()?;
            } else if batch > 1 {
                self.ring.submit_and_wait_batch(batch, batch_timeout)?;
            } else {
                self.ring.submit_and_wait(1)?;
            }
            self.core.now = Instant::now();
            // Landed commits first: their acknowledgements leave this pass and the next
            // commit may start while the rest of the pass is handled.
            self.take_store_completions();
            let mut completions = self.ring.completions();
            let mut looked = self.core.now;
            for (n, c) in completions.drain(..).enumerate() {
                self.on_completion(c);
                if n % COMMIT_KICK_EVERY == COMMIT_KICK_EVERY - 1 {
                    let now = Instant::now();
                    if now.duration_since(looked) >= COMMIT_KICK_AFTER {
                        looked = now;
                        self.kick_store()?;
                    }
                }
            }
            self.ring.return_completions(completions);
            self.drain_mesh();
            self.core.poll_sinks();
            self.core.poll_owners();
            self.core.pump_due_feeds();
            self.apply();
            self.retry_blocked();
            // Connections resumed while the stalled ones were handled: this pass, not the next.
            for _ in 0..4 {
                if self.stalled.is_empty() || self.paused() {
                    break;
                }
                self.retry_blocked();
            }
            if self.stopping_since.is_none() && !self.core.sources.is_empty() && !self.paused() {
                // Sources feed like clients: not while input is paused or the shard stops.
                self.core.poll_sources();
                self.apply();
            }
            self.flush();
            self.core.flush_acked();
            self.submit_store_io();
            self.wake_peers();
            if self.stop.load(Ordering::Relaxed) && self.stopping_since.is_none() {
                self.begin_shutdown();
            }
            if let Some(since) = self.stopping_since {
                // Done when every client is gone and what their sessions' ends appended is
                // on disk (or the grace is over).
                let done = self.conn_count == 0 && self.core.durable.settled();
                if done || self.core.now.duration_since(since) > SHUTDOWN_GRACE {
                    break;
                }
            }
        }
        tracing::debug!(shard = self.core.id.0, stats = ?self.core.stats, "shard stopped");
        Ok(self.core.stats)
    }

    fn on_completion(&mut self, c: Completion) {
        match c.token >> 56 {
            KIND_ACCEPT => self.on_accept(&c),
            KIND_RECV => self.on_recv(token_conn(c.token), &c),
            KIND_SEND => self.on_send(token_conn(c.token), c),
            KIND_DOORBELL_READ => {
                self.mesh.doorbell_answered();
                // While stopping, still read for as long as the store has records to land:
                // its ring rings this doorbell when a commit lands.
                if self.stopping_since.is_none() || !self.core.durable.settled() {
                    self.ring
                        .read_eventfd(self.mesh.doorbell_fd(), token(KIND_DOORBELL_READ, NO_CONN));
                }
            }
            KIND_TIMER => self.on_tick(),
            KIND_STORE => {
                self.core.store_io_done(IoDone {
                    op: token_conn(c.token).slot,
                    result: c.result,
                    buf: c.write_buf,
                });
                self.continue_store_io();
                self.apply();
            }
            // Doorbell writes and cancel requests need nothing.
            _ => {}
        }
    }

    // ---- connections -------------------------------------------------------------------

    fn add_conn(&mut self, fd: OwnedFd) -> ConnId {
        let slot = match self.free_conns.take() {
            Some(slot) => slot,
            None => {
                self.conns.push(None);
                (self.conns.len() - 1) as u32
            }
        };
        let generation = self.next_generation;
        self.next_generation = (generation + 1) & 0xFF_FFFF;
        if self.next_generation == 0 {
            self.next_generation = 1;
        }
        let id = ConnId { slot, generation };
        if let Some(s) = self.conns.get_mut(slot as usize) {
            *s = Some(Conn::new(id, fd));
        }
        self.conn_count += 1;
        self.core.open_link(id);
        id
    }

    /// Frees the slot (closing the socket if it is still here) once nothing is in flight.
    fn release_if_idle(&mut self, id: ConnId) {
        let Some(conn) = lookup(&mut self.conns, id) else {
            return;
        };
        // The layers' answers still to send (nothing is, to an abandoned peer; a failed
        // send discarded them).
        let layered = !conn.aborted && conn.transport.as_deref().is_some_and(|t| t.has_output());
        if !conn.closing || !conn.idle() || layered || !self.core.output_empty(id) {
            return;
        }
        let linger = conn.linger;
        match linger {
            Linger::Wanted if self.start_linger(id) => return,
            // Its receive is re-armed by `on_linger_recv` or ended by `expire_lingers`.
            Linger::Active { .. } => return,
            _ => {}
        }
        let Some(conn) = lookup(&mut self.conns, id) else {
            return;
        };
        debug_assert!(conn.idle());
        if let Some(s) = self.conns.get_mut(id.slot as usize) {
            *s = None;
        }
        self.free_conns.put(id.slot);
        self.conn_count -= 1;
        self.core.close_link(id);
    }

    fn arm_recv(&mut self, id: ConnId) {
        let connected = self.core.conn_mut(id).is_some_and(|l| l.session.is_some());
        let Some(conn) = lookup(&mut self.conns, id) else {
            return;
        };
        if conn.recv != RecvState::Idle
            || conn.closing
            || conn.fd.is_none()
            || conn.handoff.is_some()
        {
            return;
        }
        let fd = conn.raw_fd();
        if connected {
            conn.recv = RecvState::Multi;
            self.ring.recv_multi(fd, token(KIND_RECV, id));
        } else {
            conn.recv = RecvState::Single;
            self.ring.recv(fd, token(KIND_RECV, id));
        }
    }

    fn on_recv(&mut self, id: ConnId, c: &Completion) {
        let Some(conn) = lookup(&mut self.conns, id) else {
            // A late completion for a freed connection: just give the buffer back.
            self.ring.received(c, |_| {});
            return;
        };
        if matches!(conn.linger, Linger::Active { .. } | Linger::Done) {
            self.on_linger_recv(id, c);
            return;
        }
        if c.result == 0 || (c.result < 0 && !is_transient(-c.result)) {
            conn.peer_gone = true;
        }
        let closing = conn.closing;
        let mut failed = None;
        match conn.transport.as_deref_mut() {
            None => self.ring.received(c, |bytes| {
                if !closing {
                    conn.rbuf.extend_from_slice(bytes);
                }
            }),
            // TLS / WebSocket: the MQTT bytes the received ones carry.
            Some(layers) => {
                let rbuf = &mut conn.rbuf;
                self.ring.received(c, |bytes| {
                    if !closing && failed.is_none() {
                        failed = layers.input(bytes, rbuf).err();
                    }
                });
            }
        }
        if !c.more() {
            conn.recv = RecvState::Idle;
        }
        let layered = conn.transport.is_some();
        let ended = layered && !closing && self.after_layers(id, failed);
        if (c.result == 0 || ended) && !closing && self.core.claiming(id) {
            // Its CONNECT waits for its claim: what it sent after it is read once the claim
            // answers, and this end of the stream is found again then (a receive re-armed).
            return;
        }
        if c.result == 0 || ended {
            // What it sent before closing counts (its DISCONNECT too), even while held.
            self.process_input_held(id, true);
            self.core.close(id, None, "peer closed the connection");
            self.apply();
            self.release_if_idle(id);
            return;
        }
        if c.result < 0 {
            match -c.result {
                errno if is_transient(errno) => {}
                errno => {
                    let error = std::io::Error::from_raw_os_error(errno);
                    self.core
                        .close(id, None, &format!("receive failed: {error}"));
                    self.apply();
                }
            }
        } else {
            self.core.received(id, c.result as usize);
            self.process_input(id);
        }
        self.after_recv(id);
    }

    /// Re-arms the receive when it ended, unless the connection is closing, moved away, or
    /// paused with a full read buffer.
    fn after_recv(&mut self, id: ConnId) {
        let config = &self.core.config;
        // Paused (a peer queue or a sink is full) or held: nothing is decoded until it ends,
        // and the receive stops once two receive buffers' worth is waiting (the rest waits in
        // the socket, where TCP pushes back), so many paused publishers cost little memory.
        let limit = 2 * config.recv_buffer_bytes as usize;
        let paused = self.paused();
        let Some(conn) = lookup(&mut self.conns, id) else {
            return;
        };
        if conn.closing {
            self.release_if_idle(id);
            return;
        }
        if conn.held {
            if conn.rbuf.len() >= limit && conn.recv != RecvState::Idle && !conn.recv_paused {
                self.ring.cancel(token(KIND_RECV, id));
                conn.recv_paused = true;
            }
            return;
        }
        if paused && conn.rbuf.len() >= limit {
            if conn.recv != RecvState::Idle && !conn.recv_paused {
                self.ring.cancel(token(KIND_RECV, id));
            }
            conn.recv_paused = true;
            return;
        }
        if conn.recv == RecvState::Idle {
            self.arm_recv(id);
        }
    }

    /// Decodes and hands the core every whole packet in the connection's read buffer,
    /// applying its effects after each (so a full peer queue pauses before the next).
    ///
    /// A connection held by a congested session is not decoded; one that becomes held while
    /// its buffer is decoded finishes the bytes already read (what its client sent before
    /// the pause), so a resumed publisher's acknowledgements leave in one send, not one each.
    ///
    /// While held, packets at the head of the buffer other than PUBLISH (acknowledgements,
    /// PINGREQ, DISCONNECT) are still handled, so a held client that also subscribes keeps
    /// acknowledging what it receives; the first PUBLISH stops it.
    fn process_input(&mut self, id: ConnId) {
        self.process_input_held(id, false);
    }

    /// `process_input`; with `ignore_hold` (the client closed its side) everything it sent is
    /// handled, held or not.
    fn process_input_held(&mut self, id: ConnId, ignore_hold: bool) {
        let held = !ignore_hold && lookup(&mut self.conns, id).is_some_and(|c| c.held);
        loop {
            if self.paused() {
                if !self.stalled.contains(&id) {
                    self.stalled.push(id);
                }
                return;
            }
            let Some(conn) = lookup(&mut self.conns, id) else {
                return;
            };
            if conn.closing || conn.fd.is_none() || conn.handoff.is_some() {
                return;
            }
            if held && conn.rbuf.first().is_some_and(|b| b >> 4 == 3) {
                return;
            }
            match self.core.decode(id, &mut conn.rbuf) {
                Ok(Some(packet)) => self.core.packet(id, packet),
                Ok(None) => return,
                Err(e) => {
                    self.core.decode_error(id, e);
                    self.apply();
                    return;
                }
            }
            self.apply();
        }
    }

    /// One send per connection with queued output and none in flight.
    fn flush(&mut self) {
        let mut dirty = std::mem::take(&mut self.core.dirty);
        for id in dirty.drain(..) {
            let Some(conn) = lookup(&mut self.conns, id) else {
                // Output for a connection that has gone (or moved to another shard).
                if let Some(link) = self.core.conn_mut(id) {
                    link.dirty = false;
                }
                continue;
            };
            let buf = if conn.sending == 0 && conn.fd.is_some() {
                let plain = self.core.take_output(id, &mut conn.spare);
                match conn.transport.as_deref_mut() {
                    None => plain,
                    // TLS records / WebSocket frames, with the layers' own answers.
                    Some(layers) => {
                        let wire = layers.wrap(plain, &mut conn.spare);
                        if layers.failed() {
                            self.core.close(id, None, "TLS write failed");
                        }
                        wire
                    }
                }
            } else {
                if let Some(link) = self.core.conn_mut(id) {
                    link.dirty = false;
                }
                None
            };
            match (buf, lookup(&mut self.conns, id)) {
                (Some(buf), Some(conn)) => {
                    conn.sending = buf.len();
                    self.ring.send(conn.raw_fd(), buf, token(KIND_SEND, id));
                }
                (None, Some(conn)) if conn.closing => self.release_if_idle(id),
                _ => {}
            }
        }
        // Keep the list's allocation; anything the core queued meanwhile stays queued.
        dirty.append(&mut self.core.dirty);
        self.core.dirty = dirty;
    }

    fn on_send(&mut self, id: ConnId, c: Completion) {
        let Some(mut buf) = c.send_buf else { return };
        let Some(conn) = lookup(&mut self.conns, id) else {
            return;
        };
        conn.sending = 0;
        if c.result < 0 {
            conn.peer_gone = true;
            if let Some(layers) = conn.transport.as_deref_mut() {
                layers.discard_output();
            }
            let err = std::io::Error::from_raw_os_error(-c.result);
            self.core.discard_output(id);
            self.core.close(id, None, &format!("send failed: {err}"));
            self.apply();
            self.release_if_idle(id);
            return;
        }
        let sent = usize::try_from(c.result).unwrap_or(0);
        if sent < buf.len() && conn.aborted {
            // Abandoned: the rest is not sent.
            if let Some(layers) = conn.transport.as_deref_mut() {
                layers.discard_output();
            }
            self.core.sent(id, sent, 0);
            self.core.discard_output(id);
            self.release_if_idle(id);
            return;
        }
        if sent < buf.len() {
            // A short send: the rest goes first, before anything queued since.
            buf.advance(sent);
            conn.sending = buf.len();
            let fd = conn.raw_fd();
            self.core.sent(id, sent, buf.len());
            self.ring.send(fd, buf, token(KIND_SEND, id));
            return;
        }
        buf.clear();
        if conn.spare.is_none() && buf.capacity() <= 1 << 20 {
            conn.spare = Some(buf);
        }
        let closing = conn.closing;
        // A hand-over that waited for this send (not if the connection closed meanwhile).
        let handoff = conn.handoff.take().filter(|_| !closing);
        let layered = conn.transport.as_deref().is_some_and(|t| t.has_output());
        self.core.sent(id, sent, 0);
        if let Some((home, connect)) = handoff {
            // Held back while the send was in flight.
            self.hand_over(id, home, connect);
            self.apply();
            return;
        }
        if layered {
            // The layers' own answers (a pong, a TLS record) queued meanwhile.
            self.core.mark_dirty(id);
        }
        if closing {
            self.release_if_idle(id);
        }
        self.apply();
    }

    // ---- time --------------------------------------------------------------------------

    fn on_tick(&mut self) {
        if !self.accepting() && self.stopping_since.is_none() {
            self.arm_accept();
        }
        self.core.tick();
        self.apply();
        self.expire_lingers();
        self.shrink_in -= 1;
        if self.shrink_in == 0 {
            self.shrink_in = SHRINK_EVERY;
            self.shrink();
        }
    }

    /// Gives back the capacity a past peak left in the reactor's and the core's containers
    /// (`crate::capacity`), then free heap memory to the kernel.
    fn shrink(&mut self) {
        capacity::shrink_slab(&mut self.conns, &mut self.free_conns);
        capacity::shrink_vec(&mut self.stalled);
        capacity::shrink_vec(&mut self.lingering);
        capacity::shrink_vec(&mut self.inbox);
        capacity::shrink_deque(&mut self.blocked);
        self.core.shrink();
        debug_assert_eq!(
            self.conns.iter().flatten().count(),
            self.conn_count,
            "every live connection has a slot"
        );
        // Every pass, not only when a container shrank: connections that ended freed their
        // buffers too.
        net::uring::trim_heap();
    }

    fn begin_shutdown(&mut self) {
        self.stopping_since = Some(self.core.now);
        self.shorten_lingers();
        self.cancel_accept();
        self.core.shutdown();
        self.apply();
        self.flush();
    }
}

/// A receive error that ends nothing: out of buffers, cancelled, interrupted.
fn is_transient(errno: i32) -> bool {
    matches!(
        errno,
        libc::ENOBUFS | libc::ECANCELED | libc::EINTR | libc::EAGAIN
    )
}

/// The live connection `id` in `conns` (slot and generation match).
fn lookup(conns: &mut [Option<Conn>], id: ConnId) -> Option<&mut Conn> {
    conns
        .get_mut(id.slot as usize)
        .and_then(Option::as_mut)
        .filter(|c| c.id == id)
}

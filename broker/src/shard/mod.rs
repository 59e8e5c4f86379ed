//! One shard per core: a pinned thread running its own io_uring loop. A shard owns its
//! connections and the sessions homed on it outright (no locks), keeps a replica of the
//! route table, and talks to its peers only through the mesh.
//!
//! A loop pass: one `io_uring_enter` submits everything queued and waits for completions;
//! completions are handled (accepts, receives, finished sends, the doorbell, the timer);
//! messages from peers are drained (bounded); blocked forwards are retried; every connection
//! with new output gets one send; peers pushed to are woken through this ring.
//!
//! # Layout
//! - `mod.rs`: [`Shard`], the loop, completion dispatch, connection life cycle, sessions, the
//!   mesh, the tick.
//! - `route.rs`: publishing, matching, delivery, shared groups, retained on subscribe.
//! - `durable.rs`: recovery into sessions, journals into the log, commits, held acks.
//! - `journal.rs`: [`journal::Journal`], the shard's log and the waits on it.
//! - `conn.rs`: [`conn::Conn`].
//! - `mesh.rs`: SPSC queues between shards and their doorbells.
//! - Packet handling is in `crate::handle`, one file per packet kind.

pub mod conn;
mod durable;
pub mod journal;
pub mod mesh;
mod route;

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use bytestring::ByteString;
use net::codec::{Disconnect, Packet, ProtocolVersion, ReasonCode};
use net::uring::{Completion, Ring, RingConfig};
use rustc_hash::FxHashMap;

use crate::auth::{Auth, VerifiedCache};
use crate::config::Config;
use crate::ids::{ConnId, SessionId, ShardId};
use crate::metrics::{Histogram, Metrics, Snapshot};
use crate::retained::Retained;
use crate::router::{LocalMatch, Router, SharedPick};
use crate::session::{Message, Session};
use conn::{Conn, RecvState};
use mesh::{AckRef, Mesh, ShardMsg};

const KIND_ACCEPT: u64 = 1;
const KIND_RECV: u64 = 2;
const KIND_SEND: u64 = 3;
const KIND_DOORBELL_READ: u64 = 4;
const KIND_DOORBELL_WRITE: u64 = 5;
const KIND_TIMER: u64 = 6;
const KIND_LOG_WRITE: u64 = 7;
const KIND_LOG_SYNC: u64 = 8;

fn token(kind: u64, id: ConnId) -> u64 {
    kind << 56 | (u64::from(id.generation) & 0xFF_FFFF) << 32 | u64::from(id.slot)
}

fn token_conn(token: u64) -> ConnId {
    ConnId {
        slot: token as u32,
        generation: ((token >> 32) & 0xFF_FFFF) as u32,
    }
}

const NO_CONN: ConnId = ConnId {
    slot: 0,
    generation: 0,
};
const TICK: Duration = Duration::from_millis(250);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Counters of one shard (logged at shutdown; exported by the metrics issue).
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// PUBLISH packets received from clients.
    pub publishes_in: u64,
    /// PUBLISH packets encoded to clients (first transmissions).
    pub publishes_out: u64,
    /// Messages forwarded to peer shards.
    pub forwarded: u64,
    /// Messages dropped (QoS 0 to a full outbox or offline session, oldest queued).
    pub dropped: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed for a protocol violation or bad input.
    pub protocol_errors: u64,
    /// Bytes read from client sockets.
    pub bytes_in: u64,
    /// Bytes written to client sockets.
    pub bytes_out: u64,
    /// Refused CONNECTs and denied publishes or subscribes.
    pub auth_denied: u64,
}

/// Where a message being routed came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A client of this shard (its session): no-local applies, peers get a copy; with a token
    /// (sync durability), the copies ask the peers to confirm what they log.
    Client(SessionId, Option<u64>),
    /// The broker itself (a will, `$SYS`): peers get a copy.
    Broker,
    /// A peer shard, which already forwarded it and chose shared-subscription members.
    Peer,
}

/// A shard.
pub struct Shard {
    pub(crate) id: ShardId,
    pub(crate) config: Config,
    pub(crate) ring: Ring,
    listener: OwnedFd,
    pub(crate) mesh: Mesh,
    pub(crate) conns: Vec<Option<Conn>>,
    free_conns: Vec<u32>,
    generations: Vec<u32>,
    conn_count: usize,
    pub(crate) sessions: Vec<Option<Session>>,
    free_sessions: Vec<u32>,
    pub(crate) by_client: FxHashMap<ByteString, SessionId>,
    pub(crate) router: Router,
    pub(crate) matches: Vec<LocalMatch>,
    dirty: Vec<ConnId>,
    /// Mesh messages that found their peer's queue full, in order; input is paused while any.
    blocked: VecDeque<(ShardId, ShardMsg)>,
    /// Connections with undecoded input left while paused.
    stalled: Vec<ConnId>,
    stop: Arc<AtomicBool>,
    stopping_since: Option<Instant>,
    accept_armed: bool,
    /// Accept is failing (EMFILE...): logged once when it starts and once when it ends.
    accept_failing: bool,
    pub(crate) now: Instant,
    pub(crate) stats: Stats,
    wakes: Vec<RawFd>,
    /// Scratch for messages drained from peers (kept to reuse its allocation).
    inbox: Vec<(ShardId, ShardMsg)>,
    next_assigned_id: u64,
    /// SUBACKs held until every peer has applied the subscription's route updates, so a
    /// publish made on any shard after the SUBACK reaches the subscriber.
    pending_subacks: FxHashMap<u64, PendingSubAck>,
    next_barrier: u64,
    pub(crate) retained: Retained,
    /// Scratch for retained messages matching a new subscription.
    retained_found: Vec<Message>,
    /// Scratch for shared-subscription picks.
    shared_picks: Vec<SharedPick>,
    pub(crate) auth: Arc<Auth>,
    pub(crate) verified: VerifiedCache,
    metrics: Arc<Metrics>,
    latency: Histogram,
    last_sys: Instant,
    /// The durable log (None in memory mode).
    pub(crate) journal: Option<journal::Journal>,
    last_retain_version: u64,
}

/// What a shard starts from after recovery: its log, the sessions in it, the retained
/// messages merged from every shard's log, and the routes of the peers' recovered sessions.
#[derive(Debug)]
pub struct Recovered {
    /// The shard's log, replayed.
    pub log: storage::log::Log,
    /// The durable state of this shard's sessions.
    pub state: storage::state::State,
    /// Retained messages of all shards, newest version per topic.
    pub retained: Vec<(storage::record::StoredMessage, u64)>,
    /// (filter, peer shard) of the peers' recovered subscriptions.
    pub remote_routes: Vec<(String, ShardId)>,
}

/// Retained messages to send after a SUBACK: (filter, options, subscription identifier).
pub(crate) type RetainedWanted = Vec<(ByteString, net::codec::SubscriptionOptions, u32)>;

/// A SUBACK waiting for peers to confirm the route updates before it.
#[derive(Debug)]
struct PendingSubAck {
    conn: ConnId,
    ack: Packet,
    retained: RetainedWanted,
    waiting: usize,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("id", &self.id)
            .field("conns", &self.conn_count)
            .finish()
    }
}

impl Shard {
    /// Sets up the shard's ring and listener. Call on the shard's own thread.
    pub fn new(
        id: ShardId,
        config: Config,
        mesh: Mesh,
        stop: Arc<AtomicBool>,
        auth: Arc<Auth>,
        metrics: Arc<Metrics>,
        recovered: Option<Recovered>,
    ) -> anyhow::Result<Self> {
        let sq = 4096u32;
        let ring = Ring::new(RingConfig {
            sq_entries: sq,
            cq_entries: sq * 8,
            recv_buffer_count: config.recv_buffer_count,
            recv_buffer_bytes: config.recv_buffer_bytes,
        })
        .map_err(|e| anyhow::anyhow!("shard {}: io_uring setup: {e}", id.0))?;
        let listener = net::uring::reuseport_listener(config.listen, 4096)
            .map_err(|e| anyhow::anyhow!("shard {}: listen on {}: {e}", id.0, config.listen))?;
        let retained = Retained::new(config.retained_count_max, config.retained_bytes_max);
        let now = Instant::now();
        let fsync_interval = Duration::from_millis(config.fsync_interval_ms);
        let durability = config.durability;
        let (journal, recovered) = match recovered {
            Some(Recovered {
                log,
                state,
                retained,
                remote_routes,
            }) => (
                Some(journal::Journal::new(log, durability, fsync_interval, now)),
                Some((state, retained, remote_routes)),
            ),
            None => (None, None),
        };
        let mut shard = Self {
            id,
            config,
            ring,
            listener,
            mesh,
            conns: Vec::new(),
            free_conns: Vec::new(),
            generations: Vec::new(),
            conn_count: 0,
            sessions: Vec::new(),
            free_sessions: Vec::new(),
            by_client: FxHashMap::default(),
            router: Router::default(),
            matches: Vec::new(),
            dirty: Vec::new(),
            blocked: VecDeque::new(),
            stalled: Vec::new(),
            stop,
            stopping_since: None,
            accept_armed: false,
            accept_failing: false,
            now: Instant::now(),
            stats: Stats::default(),
            wakes: Vec::new(),
            inbox: Vec::new(),
            next_assigned_id: 0,
            pending_subacks: FxHashMap::default(),
            next_barrier: 0,
            retained,
            retained_found: Vec::new(),
            shared_picks: Vec::new(),
            auth,
            verified: VerifiedCache::default(),
            metrics,
            latency: Histogram::default(),
            last_sys: now,
            journal,
            last_retain_version: 0,
        };
        if let Some((state, retained, routes)) = recovered {
            shard.restore(state, retained, routes);
        }
        Ok(shard)
    }

    /// Runs the loop until shutdown completes.
    pub fn run(mut self) -> anyhow::Result<Stats> {
        self.ring
            .accept_multi(self.listener.as_raw_fd(), token(KIND_ACCEPT, NO_CONN));
        self.accept_armed = true;
        self.ring
            .read_eventfd(self.mesh.doorbell_fd(), token(KIND_DOORBELL_READ, NO_CONN));
        self.ring.timer(TICK, token(KIND_TIMER, NO_CONN));
        let batch = self.config.wait_completions_min as usize;
        let batch_timeout = Duration::from_micros(self.config.wait_timeout_us);
        loop {
            if batch > 1 {
                self.ring.submit_and_wait_batch(batch, batch_timeout)?;
            } else {
                self.ring.submit_and_wait(1)?;
            }
            self.now = Instant::now();
            let mut completions = self.ring.completions();
            for c in completions.drain(..) {
                self.on_completion(c);
            }
            self.ring.return_completions(completions);
            self.drain_mesh();
            self.retry_blocked();
            self.flush();
            self.commit_log();
            self.wake_peers();
            if self.stop.load(Ordering::Relaxed) && self.stopping_since.is_none() {
                self.begin_shutdown();
            }
            if let Some(since) = self.stopping_since {
                if self.conn_count == 0 || self.now.duration_since(since) > SHUTDOWN_GRACE {
                    break;
                }
            }
        }
        tracing::debug!(shard = self.id.0, stats = ?self.stats, "shard stopped");
        Ok(self.stats)
    }

    fn on_completion(&mut self, c: Completion) {
        match c.token >> 56 {
            KIND_ACCEPT => self.on_accept(&c),
            KIND_RECV => self.on_recv(token_conn(c.token), &c),
            KIND_SEND => self.on_send(token_conn(c.token), c),
            KIND_DOORBELL_READ => {
                self.mesh.doorbell_answered();
                if self.stopping_since.is_none() {
                    self.ring
                        .read_eventfd(self.mesh.doorbell_fd(), token(KIND_DOORBELL_READ, NO_CONN));
                }
            }
            KIND_TIMER => self.on_tick(),
            KIND_LOG_WRITE | KIND_LOG_SYNC => self.on_log_completion(c),
            // Doorbell writes and cancel requests need nothing.
            _ => {}
        }
    }

    // ---- connections -------------------------------------------------------------------

    pub(crate) fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        lookup(&mut self.conns, id)
    }

    fn add_conn(&mut self, fd: OwnedFd) -> ConnId {
        let slot = match self.free_conns.pop() {
            Some(slot) => slot,
            None => {
                self.conns.push(None);
                self.generations.push(0);
                (self.conns.len() - 1) as u32
            }
        };
        let generation = self.generations.get(slot as usize).copied().unwrap_or(0);
        let id = ConnId { slot, generation };
        if let Some(s) = self.conns.get_mut(slot as usize) {
            *s = Some(Conn::new(id, fd, self.config.packet_bytes_max, self.now));
        }
        self.conn_count += 1;
        id
    }

    /// Frees the slot (closing the socket if it is still here) once nothing is in flight.
    fn release_if_idle(&mut self, id: ConnId) {
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        if !conn.closing || !conn.idle() || !conn.out.is_empty() {
            return;
        }
        if let Some(s) = self.conns.get_mut(id.slot as usize) {
            *s = None;
        }
        if let Some(g) = self.generations.get_mut(id.slot as usize) {
            *g = g.wrapping_add(1) & 0xFF_FFFF;
        }
        self.free_conns.push(id.slot);
        self.conn_count -= 1;
    }

    fn on_accept(&mut self, c: &Completion) {
        if !c.more() {
            self.accept_armed = false;
        }
        if c.result == -libc::ECANCELED {
            return;
        }
        if c.result < 0 {
            // EMFILE/ENFILE and friends: stop accepting until the next tick instead of
            // spinning on an error the kernel will keep returning.
            if self.accept_armed {
                self.ring.cancel(token(KIND_ACCEPT, NO_CONN));
            }
            if !self.accept_failing {
                self.accept_failing = true;
                let error = std::io::Error::from_raw_os_error(-c.result);
                tracing::warn!(shard = self.id.0, %error, "accept failed; retrying every tick until it succeeds");
            }
            return;
        }
        let fd = net::uring::adopt_fd(c.result);
        if self.accept_failing {
            self.accept_failing = false;
            tracing::info!(shard = self.id.0, "accepting connections again");
        }
        if self.stopping_since.is_some() {
            return;
        }
        if self.conn_count >= self.config.connections_per_shard_max {
            tracing::warn!(
                shard = self.id.0,
                limit = self.config.connections_per_shard_max,
                "connection refused: connections_per_shard_max reached"
            );
            return;
        }
        if let Err(e) = net::uring::set_nodelay(&fd) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        self.stats.accepted += 1;
        let id = self.add_conn(fd);
        self.arm_recv(id);
    }

    fn arm_recv(&mut self, id: ConnId) {
        let Some(conn) = lookup(&mut self.conns, id) else {
            return;
        };
        if conn.recv != RecvState::Idle || conn.closing || conn.fd.is_none() {
            return;
        }
        let fd = conn.raw_fd();
        if conn.session.is_some() {
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
        let closing = conn.closing;
        self.ring.received(c, |bytes| {
            if !closing {
                conn.rbuf.extend_from_slice(bytes);
            }
        });
        if !c.more() {
            conn.recv = RecvState::Idle;
        }
        if c.result == 0 {
            self.close(id, None, "peer closed the connection");
            self.release_if_idle(id);
            return;
        }
        if c.result < 0 {
            match -c.result {
                libc::ENOBUFS | libc::ECANCELED | libc::EINTR | libc::EAGAIN => {}
                errno => self.close(
                    id,
                    None,
                    &format!(
                        "receive failed: {}",
                        std::io::Error::from_raw_os_error(errno)
                    ),
                ),
            }
        } else {
            conn.last_seen = self.now;
            self.stats.bytes_in += c.result as u64;
            self.process_input(id);
        }
        self.after_recv(id);
    }

    /// Re-arms the receive when it ended, unless the connection is closing, moved away, or
    /// paused with a full read buffer.
    fn after_recv(&mut self, id: ConnId) {
        let limit = self.config.packet_bytes_max + self.config.recv_buffer_bytes as usize;
        let paused = !self.blocked.is_empty();
        let Some(conn) = lookup(&mut self.conns, id) else {
            return;
        };
        if conn.closing {
            self.release_if_idle(id);
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

    /// Decodes and handles every whole packet in the connection's read buffer.
    fn process_input(&mut self, id: ConnId) {
        loop {
            if !self.blocked.is_empty() {
                if !self.stalled.contains(&id) {
                    self.stalled.push(id);
                }
                return;
            }
            let Some(conn) = self.conn_mut(id) else {
                return;
            };
            if conn.closing || conn.fd.is_none() {
                return;
            }
            let decoder = conn.decoder;
            let decoded = decoder.decode(&mut conn.rbuf);
            match decoded {
                Ok(Some(packet)) => crate::handle::packet(self, id, packet),
                Ok(None) => return,
                Err(e) => {
                    let connected = self.conn_mut(id).is_some_and(|c| c.session.is_some());
                    if connected {
                        self.reject(id, Some(e.reason_code()), &format!("malformed packet: {e}"));
                    } else {
                        crate::handle::connect::refuse_undecodable(self, id, e);
                    }
                    return;
                }
            }
        }
    }

    /// Starts closing a connection: optionally tells an MQTT 5 client why (DISCONNECT with
    /// `reason`), detaches its session, cancels its receive; the socket closes once the
    /// output is flushed and no operation is in flight. Logs one line.
    pub(crate) fn close(&mut self, id: ConnId, reason: Option<ReasonCode>, why: &str) {
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        if conn.closing {
            return;
        }
        let session = conn.session.take();
        let version = conn.decoder.version;
        if let (Some(reason), Some(_), ProtocolVersion::V5) = (reason, session, version) {
            let mut d = Disconnect {
                reason,
                properties: Default::default(),
            };
            if conn.problem_info {
                d.properties.reason_string = Some(why.into());
            }
            crate::session::encode(version, &Packet::Disconnect(d), &mut conn.out);
        }
        conn.closing = true;
        if conn.recv != RecvState::Idle {
            self.ring.cancel(token(KIND_RECV, id));
        }
        let client = session
            .and_then(|sid| self.sessions.get(sid.0 as usize))
            .and_then(Option::as_ref)
            .map(|s| s.client_id.clone());
        tracing::debug!(shard = self.id.0, client = ?client.as_deref(), "closing connection: {why}");
        if let Some(sid) = session {
            self.session_disconnected(sid, id);
        }
        self.mark_dirty(id);
    }

    /// Closes a connection for bad input or a protocol violation: counted, and logged as one
    /// line at info level naming the client (if known) and the rule.
    pub(crate) fn reject(&mut self, id: ConnId, reason: Option<ReasonCode>, why: &str) {
        self.stats.protocol_errors += 1;
        let client = self
            .conn_mut(id)
            .and_then(|c| c.session)
            .and_then(|sid| self.sessions.get(sid.0 as usize))
            .and_then(Option::as_ref)
            .map(|s| s.client_id.clone());
        tracing::info!(shard = self.id.0, client = ?client.as_deref(), reason = ?reason.map(|r| r.0), "rejecting connection: {why}");
        self.close(id, reason, why);
    }

    pub(crate) fn mark_dirty(&mut self, id: ConnId) {
        if let Some(conn) = self.conn_mut(id) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    /// One send per connection with queued output and none in flight.
    fn flush(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for id in dirty.drain(..) {
            let Some(conn) = lookup(&mut self.conns, id) else {
                continue;
            };
            conn.dirty = false;
            if conn.sending == 0 && !conn.out.is_empty() && conn.fd.is_some() {
                let fresh = conn.spare.take().unwrap_or_default();
                let buf = std::mem::replace(&mut conn.out, fresh);
                conn.sending = buf.len();
                self.ring.send(conn.raw_fd(), buf, token(KIND_SEND, id));
            } else if conn.closing {
                self.release_if_idle(id);
            }
        }
        self.dirty = dirty;
    }

    fn on_send(&mut self, id: ConnId, c: Completion) {
        let Some(mut buf) = c.send_buf else { return };
        let Some(conn) = lookup(&mut self.conns, id) else {
            return;
        };
        conn.sending = 0;
        if c.result < 0 {
            let err = std::io::Error::from_raw_os_error(-c.result);
            conn.out.clear();
            self.close(id, None, &format!("send failed: {err}"));
            self.release_if_idle(id);
            return;
        }
        let sent = usize::try_from(c.result).unwrap_or(0);
        self.stats.bytes_out += sent as u64;
        if sent < buf.len() {
            // A short send: the rest goes first, before anything queued since.
            buf.advance(sent);
            conn.sending = buf.len();
            self.ring.send(conn.raw_fd(), buf, token(KIND_SEND, id));
            return;
        }
        buf.clear();
        if conn.spare.is_none() && buf.capacity() <= 1 << 20 {
            conn.spare = Some(buf);
        }
        let had_output = !conn.out.is_empty();
        let closing = conn.closing;
        if had_output {
            self.mark_dirty(id);
        } else if closing {
            self.release_if_idle(id);
        } else if let Some(sid) = self.conn_mut(id).and_then(|c| c.session) {
            // Room in the outbox again: let the session move queued messages in.
            self.refill(sid, id);
        }
    }

    /// Gives a session's queued messages a chance to go out (after acks or a drained outbox).
    pub(crate) fn refill(&mut self, sid: SessionId, id: ConnId) {
        let max = self.config.outbox_bytes_max;
        let now = self.now;
        let Some((session, conn)) = self.session_and_conn(sid, id) else {
            return;
        };
        if conn.closing || conn.outbox_bytes() >= max || session.queued_len() == 0 {
            return;
        }
        let before = conn.out.len();
        session.fill_window(now, &mut conn.out);
        let grew = conn.out.len() != before;
        if !session.journal.is_empty() {
            self.journal_of(sid);
        }
        if grew {
            self.mark_dirty(id);
        }
    }

    // ---- sessions ----------------------------------------------------------------------

    /// A session and its connection together (disjoint borrows of the shard).
    pub(crate) fn session_and_conn(
        &mut self,
        sid: SessionId,
        id: ConnId,
    ) -> Option<(&mut Session, &mut Conn)> {
        let session = self
            .sessions
            .get_mut(sid.0 as usize)
            .and_then(Option::as_mut)?;
        let conn = lookup(&mut self.conns, id)?;
        Some((session, conn))
    }

    pub(crate) fn session_mut(&mut self, sid: SessionId) -> Option<&mut Session> {
        self.sessions
            .get_mut(sid.0 as usize)
            .and_then(Option::as_mut)
    }

    pub(crate) fn add_session(&mut self, session: Session) -> SessionId {
        let client_id = session.client_id.clone();
        let sid = match self.free_sessions.pop() {
            Some(slot) => {
                if let Some(s) = self.sessions.get_mut(slot as usize) {
                    *s = Some(session);
                }
                SessionId(slot)
            }
            None => {
                self.sessions.push(Some(session));
                SessionId((self.sessions.len() - 1) as u32)
            }
        };
        self.by_client.insert(client_id, sid);
        sid
    }

    /// Removes a session and its subscriptions. A will still waiting for its delay is
    /// published now (the session ends first [MQTT-3.1.3-9]); messages it holds from shared
    /// subscriptions and has not finished go to other members of their groups.
    pub(crate) fn remove_session(&mut self, sid: SessionId) {
        let Some(mut session) = self.sessions.get_mut(sid.0 as usize).and_then(Option::take) else {
            return;
        };
        self.by_client.remove(&session.client_id);
        for filter in session.subscriptions.keys() {
            self.unroute(filter, sid);
        }
        self.free_sessions.push(sid.0);
        if session.durable {
            self.log(storage::record::Record::SessionEnd {
                client: session.client_id.to_string(),
            });
        }
        if session.conn.is_none() {
            if let Some(will) = session.will.take() {
                self.publish(will, Origin::Broker);
            }
        }
        for (filter, message) in session.take_shared_unfinished() {
            match self.router.pick_member(&filter, self.id, self.id) {
                Some(pick) => {
                    self.deliver_shared(pick, &message, 0, AckRef::NONE);
                }
                None => {
                    self.stats.dropped += 1;
                    tracing::debug!(shard = self.id.0, %filter, "shared message lost its last group member");
                }
            }
        }
    }

    /// Drops `sid`'s subscription to `filter` from the route table, telling peers if it was
    /// the filter's last local subscriber.
    pub(crate) fn unroute(&mut self, filter: &ByteString, sid: SessionId) -> bool {
        match self.router.unsubscribe(filter, sid) {
            Some(true) => {
                self.broadcast(|| ShardMsg::RouteRemove(filter.clone()));
                true
            }
            Some(false) => true,
            None => false,
        }
    }

    fn session_disconnected(&mut self, sid: SessionId, id: ConnId) {
        let now = self.now;
        let Some(session) = self.session_mut(sid) else {
            return;
        };
        if session.conn != Some(id) {
            return;
        }
        session.conn = None;
        // The will goes out now, or after its delay unless the session resumes first; never
        // later than the session's end [MQTT-3.1.3-9].
        let mut will_now = None;
        if let Some(will) = session.will.take() {
            let delay = session.will_delay.min(session.expiry_interval);
            if delay == 0 {
                will_now = Some(will);
            } else {
                session.will = Some(will);
                session.will_due = Some(now + Duration::from_secs(u64::from(delay)));
            }
        }
        match session.expiry_interval {
            0 => self.remove_session(sid),
            u32::MAX => session.expires_at = None,
            secs => session.expires_at = Some(now + Duration::from_secs(u64::from(secs))),
        }
        if let Some(will) = will_now {
            self.publish(will, Origin::Broker);
        }
    }

    pub(crate) fn next_assigned_client_id(&mut self) -> ByteString {
        self.next_assigned_id += 1;
        ByteString::from(format!(
            "ringmq-{}-{}-{}",
            self.id.0,
            std::process::id(),
            self.next_assigned_id
        ))
    }

    // ---- the mesh ---------------------------------------------------------------------

    pub(crate) fn send_to_peer(&mut self, peer: ShardId, msg: ShardMsg) {
        if !self.blocked.is_empty() {
            self.blocked.push_back((peer, msg));
            return;
        }
        if let Err(msg) = self.mesh.push(peer, msg) {
            tracing::debug!(
                shard = self.id.0,
                peer = peer.0,
                "peer queue full: pausing input"
            );
            self.blocked.push_back((peer, msg));
        }
    }

    pub(crate) fn broadcast(&mut self, mut msg: impl FnMut() -> ShardMsg) {
        for peer in 0..self.mesh.shards() {
            if peer != self.id.index() {
                self.send_to_peer(ShardId(peer as u16), msg());
            }
        }
    }

    fn retry_blocked(&mut self) {
        while let Some((peer, msg)) = self.blocked.pop_front() {
            if let Err(msg) = self.mesh.push(peer, msg) {
                self.blocked.push_front((peer, msg));
                return;
            }
        }
        // Unblocked: resume the connections that stopped mid-buffer.
        let stalled = std::mem::take(&mut self.stalled);
        for id in stalled {
            if let Some(conn) = self.conn_mut(id) {
                conn.recv_paused = false;
            }
            self.process_input(id);
            self.after_recv(id);
        }
    }

    fn drain_mesh(&mut self) {
        let budget = self.config.peer_drain_count_max;
        let mut inbox = std::mem::take(&mut self.inbox);
        self.mesh.drain(budget, |from, msg| inbox.push((from, msg)));
        for (from, msg) in inbox.drain(..) {
            match msg {
                ShardMsg::Publish(message, ack) => {
                    let before = self.journal.as_ref().map_or(0, |j| j.appended());
                    self.route(message, Origin::Peer);
                    self.confirm_forward(ack, before);
                }
                ShardMsg::SharedPublish {
                    filter,
                    message,
                    hops,
                    ack,
                } => self.on_shared_publish(from, filter, *message, hops, ack),
                ShardMsg::DurableAck(token, ok) => {
                    let ready = self
                        .journal
                        .as_mut()
                        .map(|j| j.peer_confirmed(token, ok))
                        .unwrap_or_default();
                    for (conn, packet) in ready {
                        self.reply_ack(conn, &packet);
                    }
                }
                ShardMsg::Retain { message, version } => {
                    self.store_retained(&message, version, false);
                }
                ShardMsg::RouteAdd(filter) => self.router.add_remote(&filter, from),
                ShardMsg::RouteRemove(filter) => self.router.remove_remote(&filter, from),
                ShardMsg::Barrier(token) => self.send_to_peer(from, ShardMsg::BarrierAck(token)),
                ShardMsg::BarrierAck(token) => self.barrier_acked(token),
                ShardMsg::Adopt {
                    fd,
                    mut connect,
                    rest,
                } => {
                    // The limit holds for connections handed over too, not only at accept.
                    let full = self.conn_count >= self.config.connections_per_shard_max;
                    let id = self.add_conn(fd);
                    if full {
                        crate::handle::connect::refuse(
                            self,
                            id,
                            &connect,
                            ReasonCode::SERVER_BUSY,
                            "connections_per_shard_max reached on the session's home shard",
                        );
                        self.flush();
                        continue;
                    }
                    if let Some(conn) = self.conn_mut(id) {
                        conn.rbuf = rest;
                    }
                    crate::handle::connect::accept(self, id, &mut connect);
                    self.process_input(id);
                    self.after_recv(id);
                }
            }
        }
        self.inbox = inbox;
    }

    /// Sends `ack` (a SUBACK) to `conn` once every peer has applied the route updates sent
    /// so far; at once on a single shard.
    pub(crate) fn reply_after_routes(
        &mut self,
        conn: ConnId,
        ack: Packet,
        retained: RetainedWanted,
    ) {
        let peers = self.mesh.shards().saturating_sub(1);
        if peers == 0 {
            reply(self, conn, &ack);
            return self.send_retained(conn, retained);
        }
        let token = self.next_barrier;
        self.next_barrier += 1;
        self.pending_subacks.insert(
            token,
            PendingSubAck {
                conn,
                ack,
                retained,
                waiting: peers,
            },
        );
        self.broadcast(|| ShardMsg::Barrier(token));
    }

    fn barrier_acked(&mut self, token: u64) {
        let Some(pending) = self.pending_subacks.get_mut(&token) else {
            return;
        };
        pending.waiting -= 1;
        if pending.waiting == 0 {
            if let Some(p) = self.pending_subacks.remove(&token) {
                reply(self, p.conn, &p.ack);
                self.send_retained(p.conn, p.retained);
            }
        }
    }

    fn wake_peers(&mut self) {
        let mut wakes = std::mem::take(&mut self.wakes);
        self.mesh.take_wakes(&mut wakes);
        for fd in wakes.drain(..) {
            self.ring
                .write_eventfd(fd, token(KIND_DOORBELL_WRITE, NO_CONN));
        }
        self.wakes = wakes;
    }

    // ---- time --------------------------------------------------------------------------

    fn on_tick(&mut self) {
        if !self.accept_armed && self.stopping_since.is_none() {
            self.ring
                .accept_multi(self.listener.as_raw_fd(), token(KIND_ACCEPT, NO_CONN));
            self.accept_armed = true;
        }
        let now = self.now;
        let connect_timeout = Duration::from_millis(self.config.connect_timeout_ms);
        let mut expired = Vec::new();
        let mut connected = 0u64;
        for conn in self.conns.iter().flatten() {
            if conn.closing {
                continue;
            }
            connected += u64::from(conn.session.is_some());
            match (conn.session, conn.keep_alive) {
                (None, _) if now.duration_since(conn.accepted_at) > connect_timeout => {
                    expired.push((conn.id, None, "no CONNECT within connect_timeout_ms"));
                }
                (Some(_), Some(ka)) if now.duration_since(conn.last_seen) > ka => {
                    expired.push((
                        conn.id,
                        Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
                        "keep alive timeout",
                    ));
                }
                _ => {}
            }
        }
        for (id, reason, why) in expired {
            tracing::info!(shard = self.id.0, "closing connection: {why}");
            self.close(id, reason, why);
        }
        let expired_sessions: Vec<SessionId> = self
            .sessions
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let s = s.as_ref()?;
                (s.conn.is_none() && s.expires_at.is_some_and(|t| t <= now))
                    .then_some(SessionId(i as u32))
            })
            .collect();
        for sid in expired_sessions {
            self.remove_session(sid);
        }
        let due_wills: Vec<Message> = self
            .sessions
            .iter_mut()
            .flatten()
            .filter(|s| s.conn.is_none() && s.will_due.is_some_and(|t| t <= now))
            .filter_map(|s| {
                s.will_due = None;
                s.will.take()
            })
            .collect();
        for will in due_wills {
            self.publish(will, Origin::Broker);
        }
        self.retained.prune(now);
        let budget = self.config.compaction_bytes_per_second / 4;
        if let Some(j) = self.journal.as_mut() {
            j.compact(budget);
        }
        self.publish_metrics(connected);
    }

    fn publish_metrics(&mut self, connected: u64) {
        let s = &self.stats;
        let snapshot = Snapshot {
            messages_received: s.publishes_in,
            messages_sent: s.publishes_out,
            messages_forwarded: s.forwarded,
            messages_dropped: s.dropped,
            bytes_received: s.bytes_in,
            bytes_sent: s.bytes_out,
            connections_accepted: s.accepted,
            protocol_errors: s.protocol_errors,
            auth_denied: s.auth_denied,
            clients_connected: connected,
            sessions: self.by_client.len() as u64,
            retained: self.retained.len() as u64,
        };
        self.metrics
            .store(self.id.index(), &snapshot, &self.latency);
        let interval = Duration::from_secs(self.config.sys_interval_secs);
        if self.id.0 != 0 || interval.is_zero() || self.now.duration_since(self.last_sys) < interval
        {
            return;
        }
        self.last_sys = self.now;
        for (topic, value) in self.metrics.sys_topics() {
            let message = Message::new(
                topic.into(),
                value.into(),
                net::codec::QoS::AtMostOnce,
                true,
                Default::default(),
                self.now,
            );
            self.publish(message, Origin::Broker);
        }
    }

    fn begin_shutdown(&mut self) {
        self.stopping_since = Some(self.now);
        if self.accept_armed {
            self.ring.cancel(token(KIND_ACCEPT, NO_CONN));
        }
        let ids: Vec<ConnId> = self.conns.iter().flatten().map(|c| c.id).collect();
        for id in ids {
            self.close(
                id,
                Some(ReasonCode::SERVER_SHUTTING_DOWN),
                "server shutting down",
            );
        }
        self.flush();
    }
}

/// The live connection `id` in `conns` (slot and generation match). A free function so callers
/// can borrow the connections apart from the rest of the shard.
pub(crate) fn lookup(conns: &mut [Option<Conn>], id: ConnId) -> Option<&mut Conn> {
    conns
        .get_mut(id.slot as usize)
        .and_then(Option::as_mut)
        .filter(|c| c.id == id)
}

/// Appends `packet` to a connection's output buffer and queues it for sending.
pub(crate) fn reply(shard: &mut Shard, id: ConnId, packet: &Packet) {
    let Some(conn) = shard.conn_mut(id) else {
        return;
    };
    crate::session::encode(conn.decoder.version, packet, &mut conn.out);
    shard.mark_dirty(id);
}

/// For `handle::*`: the read buffer that follows a CONNECT moving to another shard.
pub(crate) fn take_for_handoff(shard: &mut Shard, id: ConnId) -> Option<(OwnedFd, BytesMut)> {
    let conn = shard.conn_mut(id)?;
    if conn.recv != RecvState::Idle {
        return None;
    }
    let fd = conn.fd.take()?;
    let rest = std::mem::take(&mut conn.rbuf);
    conn.closing = true;
    shard.release_if_idle(id);
    Some((fd, rest))
}

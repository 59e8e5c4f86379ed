//! The sans-IO core of a shard: everything MQTT decides, with no ring and no sockets.
//!
//! The reactor (`crate::shard`) hands the core decoded packets, peer messages, store
//! completions and ticks, with the time; the core changes its state (sessions, routes,
//! retained messages, the ack ledger, the store) and leaves what the reactor must do:
//! encoded packets in each connection's [`link::Link::out`] with the connection in
//! [`Core::dirty`] (send it), and [`Effect`]s (close a socket, hand a connection to its home
//! shard, push a message to a peer shard). Store I/O is asked for through
//! [`Core::durable`]. The core never imports the reactor.
//!
//! # Layout
//! - `mod.rs`: [`Core`], [`Effect`], packet dispatch, links, output.
//! - `close.rs`: closing a connection, rejecting one for bad input.
//! - `link.rs`: [`link::Link`], the protocol side of a connection.
//! - `connect.rs`, `publish.rs`, `subscribe.rs`, `ack.rs`, `disconnect.rs`: one packet kind
//!   each.
//! - `route.rs`: publishing, matching, delivery to sessions, peers and sinks.
//! - `acks.rs`: acknowledgements held on the ledger, records into the store.
//! - `inbound.rs`: messages from sources (Kafka), published like a client's.
//! - `flow.rs`: backpressure (publishers paused by congested sessions), drop counting,
//!   stuck consumers.
//! - `sessions.rs`: session life cycle, the tick (timeouts, expiry, wills, metrics).
//! - `wills.rs`: the cluster's copy of each client's will (the node's wills topic).
//! - `peer.rs`: [`peer::ShardMsg`] and how the core answers peers.
//! - `restore.rs`: rebuilding state from a recovered store.

pub mod ack;
mod acks;
mod close;
pub mod connect;
pub mod disconnect;
pub mod flow;
#[cfg(test)]
mod flow_tests;
mod handover;
mod inbound;
pub mod link;
mod owners;
#[cfg(test)]
mod owners_tests;
pub mod peer;
pub mod publish;
mod restore;
mod retained_feed;
mod route;
mod sessions;
pub mod subscribe;
#[cfg(test)]
mod tests;
mod wills;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use bytestring::ByteString;
use net::codec::{Connect, DecodeError, Packet, ReasonCode};
use rustc_hash::FxHashMap;

use crate::auth::{Auth, VerifiedCache};
use crate::config::Config;
use crate::durable::recover::Recovered;
use crate::durable::Durable;
use crate::ids::{ConnId, SessionId, ShardId};
use crate::metrics::{Histogram, Metrics};
use crate::retained::Retained;
use crate::router::{LocalMatch, Router, SharedPick};
use crate::session::{Message, Session};
use crate::sink::Sinks;
use link::{lookup, Link};
use peer::ShardMsg;

pub use crate::metrics::Stats;

/// What the reactor must do for the core, in order.
#[derive(Debug)]
pub enum Effect {
    /// Stop reading from the connection; close its socket once its output is sent.
    Close(ConnId),
    /// Move the connection (socket and unread bytes) to the shard its session lives on.
    Handoff {
        /// The connection.
        conn: ConnId,
        /// Its session's home shard.
        home: ShardId,
        /// The CONNECT read from it.
        connect: Box<Connect>,
    },
    /// Push a message onto the mesh queue to `peer` (in order with the others).
    Peer(ShardId, ShardMsg),
    /// Stop reading the connection (a session it publishes to is congested).
    Pause(ConnId),
    /// Read the connection again (every session that paused it drained).
    Resume(ConnId),
    /// Abandon the connection's output (its client takes nothing): cancel its send.
    Abort(ConnId),
}

/// Where a message being routed came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A client of this shard (its session): no-local applies, peers get a copy; with a token
    /// (an acknowledgement held), the copies ask peers and sinks to confirm.
    Client(SessionId, Option<u64>),
    /// The broker itself (a will, `$SYS`): peers get a copy.
    Broker,
    /// A source (Kafka -> MQTT, a cluster downlink): peers get a copy; the Kafka sink does
    /// not (no loop back to Kafka), the cluster sink only for a Kafka -> MQTT record (a
    /// downlink's message is never forwarded again); with a token, the copies ask peers
    /// (and other nodes) to confirm.
    Source(Option<u64>),
    /// A peer shard, which already forwarded it and chose shared-subscription members.
    Peer,
}

/// Retained messages to send after a SUBACK: (filter, options, subscription identifier).
pub(crate) type RetainedWanted = Vec<(ByteString, net::codec::SubscriptionOptions, u32)>;

/// A SUBACK waiting for peers to confirm the route updates before it.
#[derive(Debug)]
pub(crate) struct PendingSubAck {
    conn: ConnId,
    ack: Packet,
    retained: RetainedWanted,
    waiting: usize,
}

/// The state of one shard, apart from its I/O.
pub struct Core {
    pub(crate) id: ShardId,
    /// Shards in the broker.
    pub(crate) shards: usize,
    pub(crate) config: Config,
    pub(crate) links: Vec<Option<Link>>,
    pub(crate) sessions: Vec<Option<Session>>,
    /// Free slots of `sessions`, lowest first.
    free_sessions: crate::capacity::FreeSlots,
    pub(crate) by_client: FxHashMap<ByteString, SessionId>,
    pub(crate) router: Router,
    matches: Vec<LocalMatch>,
    /// Connections with new output since the reactor last flushed (each once).
    pub dirty: Vec<ConnId>,
    /// What the reactor must do, in order.
    pub effects: VecDeque<Effect>,
    /// The time of the current loop pass.
    pub now: Instant,
    /// Counters (the reactor adds its byte and accept counts).
    pub stats: Stats,
    next_assigned_id: u64,
    /// SUBACKs held until every peer has applied the subscription's route updates, so a
    /// publish made on any shard after the SUBACK reaches the subscriber.
    pending_subacks: FxHashMap<u64, PendingSubAck>,
    next_barrier: u64,
    pub(crate) retained: Retained,
    /// Scratch for a page of retained messages matching a new subscription.
    retained_found: Vec<Message>,
    /// Scratch for shared-subscription picks.
    shared_picks: Vec<SharedPick>,
    pub(crate) auth: Arc<Auth>,
    /// Where newer auth settings come from (SIGHUP), and the version in use.
    auth_source: Option<(Arc<crate::auth::reload::Reloadable>, u64)>,
    pub(crate) verified: VerifiedCache,
    metrics: Arc<Metrics>,
    latency: Histogram,
    last_sys: Instant,
    /// The store and the acknowledgements waiting for it.
    pub durable: Durable,
    /// Outbound targets other than sessions and peers.
    pub sinks: Sinks,
    /// Inbound feeds other than clients.
    pub sources: crate::source::Sources,
    /// The shared groups the message being routed may reach (`Inbound::shared_only`); None:
    /// every matching group.
    pub(crate) shared_only: Option<Vec<ByteString>>,
    /// The version the message being published carries from another node
    /// (`Inbound::retain_version`); None: this shard versions it.
    pub(crate) carried_retain_version: Option<u64>,
    /// What this shard and its peers told each other of the node's handover table.
    pub(crate) handover_marks: handover::Marks,
    /// Where this shard reports a filter's first and last local subscriber (a cluster node).
    pub(crate) cluster: Option<Arc<crate::cluster::feed::Feed>>,
    /// The SUBSCRIBE being handled changed this shard's route state for a filter: its
    /// SUBACK waits for the route record (`reply_after_routes`).
    pub(crate) cluster_routed: bool,
    /// The route state last reported to the cluster per filter (absent: none).
    cluster_reported: FxHashMap<ByteString, crate::cluster::RouteState>,
    /// While a session moving away is forgotten: until when the routes it leaves stay.
    moving: Option<Instant>,
    /// Routes left by sessions that moved away, kept until then (`handover.rs`).
    held_routes: Vec<(ByteString, Instant)>,
    /// Sessions loaded from another node, until when their loaded ids count (`handover.rs`).
    imported_until: std::collections::VecDeque<(SessionId, Instant)>,
    /// Scratch for a batch of source messages.
    inbound_scratch: Vec<crate::source::Inbound>,
    last_retain_version: u64,
    /// The connection the message being routed came from (None: the broker's own).
    pub(crate) publisher: Option<flow::Publisher>,
    /// A delivery of the message being routed met a full queue under the `refuse` policy.
    pub(crate) refused: bool,
    /// Connected sessions over their high watermark, with the publishers they paused.
    pub(crate) congested: FxHashMap<SessionId, flow::Paused>,
    /// Clients whose will is in the cluster's wills topic (`wills.rs`).
    pub(crate) wills_noted: rustc_hash::FxHashSet<ByteString>,
    /// Sessions streaming the retained messages of new subscriptions.
    feeds: FxHashMap<SessionId, retained_feed::Feed>,
    next_feed_token: u64,
    /// Feeds to pump again on the next loop pass (each once: `Feed::due`).
    feeds_due: Vec<SessionId>,
    /// Sessions with done sequence numbers to write at the end of the pass (each once:
    /// `Session::acked_listed`).
    acked_dirty: Vec<SessionId>,
    /// Sessions shared with other brokers through Redis (`redis_shared`).
    owners: Option<owners::Owners>,
    /// The epochs of the sessions loaded at start, until `share_sessions` takes them.
    start_epochs: Vec<(String, u64)>,
    /// When this core started (Unix ms): part of the client ids it assigns.
    started_ms: u64,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("id", &self.id)
            .field("sessions", &self.by_client.len())
            .finish()
    }
}

impl Core {
    /// A shard's core, rebuilt from what its store recovered.
    pub fn new(
        id: ShardId,
        config: Config,
        auth: Arc<Auth>,
        metrics: Arc<Metrics>,
        recovered: Recovered,
        now: Instant,
    ) -> Self {
        let shards = config.shards.max(1);
        let retained = Retained::new(
            config.retained_count_max.div_ceil(shards),
            config.retained_bytes_max.div_ceil(shards),
        );
        let holds_acks = config.durability == crate::config::Durability::Sync;
        let Recovered {
            store,
            state,
            retained: recovered_retained,
            retain_version,
            cluster_retained,
            remote_routes,
            epochs,
        } = recovered;
        let mut core = Self {
            id,
            shards,
            config,
            links: Vec::new(),
            sessions: Vec::new(),
            free_sessions: crate::capacity::FreeSlots::default(),
            by_client: FxHashMap::default(),
            router: Router::default(),
            matches: Vec::new(),
            dirty: Vec::new(),
            effects: VecDeque::new(),
            now,
            stats: Stats::default(),
            next_assigned_id: 0,
            pending_subacks: FxHashMap::default(),
            next_barrier: 0,
            retained,
            retained_found: Vec::new(),
            shared_picks: Vec::new(),
            auth,
            auth_source: None,
            verified: VerifiedCache::default(),
            metrics,
            latency: Histogram::default(),
            last_sys: now,
            durable: Durable::new(store, holds_acks),
            sinks: Sinks::default(),
            sources: crate::source::Sources::default(),
            cluster: None,
            cluster_routed: false,
            cluster_reported: FxHashMap::default(),
            moving: None,
            held_routes: Vec::new(),
            imported_until: std::collections::VecDeque::new(),
            shared_only: None,
            carried_retain_version: None,
            handover_marks: Default::default(),
            inbound_scratch: Vec::new(),
            last_retain_version: retain_version,
            publisher: None,
            refused: false,
            congested: FxHashMap::default(),
            wills_noted: Default::default(),
            feeds: FxHashMap::default(),
            next_feed_token: 0,
            feeds_due: Vec::new(),
            acked_dirty: Vec::new(),
            owners: None,
            start_epochs: epochs,
            started_ms: storage::redis::layout::now_ms(),
        };
        if let Some(state) = state {
            core.restore(state, recovered_retained, remote_routes);
        }
        core.restore_cluster_retained(cluster_retained);
        core
    }

    /// Reports this shard's route changes to a cluster node's routes thread from now on,
    /// starting with every filter its restored sessions subscribe to.
    pub fn join_cluster(&mut self, feed: Arc<crate::cluster::feed::Feed>) {
        let mut filters: Vec<ByteString> = self
            .sessions
            .iter()
            .flatten()
            .flat_map(|s| s.subscriptions.keys().cloned())
            .collect();
        filters.sort_unstable();
        filters.dedup();
        for filter in filters {
            let state = self.route_state(&filter);
            feed.changed(self.id, &filter, state);
            self.cluster_reported.insert(filter, state);
        }
        self.cluster = Some(feed);
    }

    /// True when `sid`'s session outlives its connection on a store that outlives the
    /// broker (its messages are worth keeping for it while this node is dead).
    fn kept_for(&self, sid: SessionId) -> bool {
        self.durable.persistent()
            && self
                .sessions
                .get(sid.0 as usize)
                .and_then(Option::as_ref)
                .is_some_and(|s| s.expiry_interval > 0)
    }

    /// What this shard's subscribers of `filter` ask of the cluster, by looking at each: none,
    /// routes while the node is live, or routes kept while it is dead too (a persistent
    /// session subscribes: its messages wait in the node's downlink). Shared groups: live only.
    fn route_state(&self, filter: &str) -> crate::cluster::RouteState {
        use crate::cluster::RouteState;
        let local = self.router.local_of(filter);
        if local.is_empty() {
            return RouteState::None;
        }
        let kept =
            !net::topic::is_shared(filter) && local.iter().any(|(sid, _, _)| self.kept_for(*sid));
        if kept {
            RouteState::Kept
        } else {
            RouteState::Live
        }
    }

    /// `filter`'s local subscribers changed: `sid` joined (`joined`) or left (`peers`: the
    /// filter's first subscriber came, its last one went, or neither). Peers learn of the first
    /// and the last; a cluster node's routes thread of the filter's state when it changed (the
    /// SUBACK then waits for the route record). The state is worked out from the last one
    /// reported and the session joining or leaving; all subscribers are looked at only when
    /// one that kept the route leaves (or its session is already gone).
    pub(crate) fn route_changed(
        &mut self,
        filter: &ByteString,
        sid: SessionId,
        joined: bool,
        peers: Option<bool>,
    ) {
        if self.cluster.is_some() {
            use crate::cluster::RouteState;
            let last = self
                .cluster_reported
                .get(filter)
                .copied()
                .unwrap_or(RouteState::None);
            let shared = net::topic::is_shared(filter);
            let known = self
                .sessions
                .get(sid.0 as usize)
                .is_some_and(Option::is_some);
            let state = if self.router.local_of(filter).is_empty() {
                RouteState::None
            } else if joined && !shared && self.kept_for(sid) {
                RouteState::Kept
            } else if last == RouteState::None {
                RouteState::Live
            } else if !joined && last == RouteState::Kept && (!known || self.kept_for(sid)) {
                self.route_state(filter)
            } else {
                last
            };
            let held = state == RouteState::None && last != RouteState::None;
            if held && self.hold_route(filter) {
                // Kept a while for a session that moved away (`handover.rs`).
            } else if state != last {
                if state == RouteState::None {
                    self.cluster_reported.remove(filter);
                } else {
                    self.cluster_reported.insert(filter.clone(), state);
                }
                if let Some(feed) = &self.cluster {
                    feed.changed(self.id, filter, state);
                }
                self.cluster_routed |= state != RouteState::None;
            }
        }
        match peers {
            Some(true) => self.broadcast(|| ShardMsg::RouteAdd(filter.clone())),
            Some(false) => self.broadcast(|| ShardMsg::RouteRemove(filter.clone())),
            None => {}
        }
    }

    /// Takes newer auth settings from `source` on each tick (SIGHUP reloads).
    pub fn follow_auth(&mut self, source: Arc<crate::auth::reload::Reloadable>) {
        self.auth_source = Some((source, 0));
    }

    /// Swaps in reloaded auth settings, if any: the whole set at once; verified passwords are
    /// forgotten (a changed password must be checked again).
    pub(crate) fn refresh_auth(&mut self) {
        let Some((source, seen)) = &mut self.auth_source else {
            return;
        };
        if let Some(auth) = source.newer(seen) {
            self.auth = auth;
            self.verified = VerifiedCache::default();
            tracing::debug!(shard = self.id.0, "auth settings reloaded");
            subscribe::recheck_subscriptions(self);
        }
    }

    /// A state that cannot happen did: a failed assertion in tests, an error line and a
    /// count in release (the shard carries on).
    #[track_caller]
    pub(crate) fn invariant_broken(&mut self, what: &str) {
        self.stats.invariant_errors += 1;
        tracing::error!(shard = self.id.0, location = %std::panic::Location::caller(), "invariant broken: {what}");
        debug_assert!(false, "invariant broken: {what}");
    }

    // ---- links -------------------------------------------------------------------------

    /// A new connection (accepted or adopted) under `id`.
    pub fn open_link(&mut self, id: ConnId) {
        let slot = id.slot as usize;
        if self.links.len() <= slot {
            self.links.resize_with(slot + 1, || None);
        }
        let link = Link::new(id, self.config.packet_bytes_max, self.now);
        if let Some(s) = self.links.get_mut(slot) {
            debug_assert!(s.is_none(), "a link slot is reused only after it was freed");
            *s = Some(link);
        }
    }

    /// Gives back the capacity a past peak left in the core's containers
    /// (`crate::capacity`).
    pub fn shrink(&mut self) {
        use crate::capacity::{shrink_deque, shrink_map, shrink_slab, shrink_vec};
        let live_end = self
            .links
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |i| i + 1);
        self.links.truncate(live_end);
        shrink_vec(&mut self.links);
        shrink_slab(&mut self.sessions, &mut self.free_sessions);
        shrink_map(&mut self.by_client);
        shrink_map(&mut self.pending_subacks);
        shrink_map(&mut self.congested);
        shrink_map(&mut self.feeds);
        shrink_vec(&mut self.feeds_due);
        shrink_vec(&mut self.dirty);
        shrink_vec(&mut self.matches);
        shrink_vec(&mut self.retained_found);
        shrink_vec(&mut self.shared_picks);
        shrink_deque(&mut self.effects);
        debug_assert_eq!(
            self.sessions.iter().flatten().count(),
            self.by_client.len(),
            "every session is named"
        );
    }

    /// The reactor freed the connection's slot.
    pub fn close_link(&mut self, id: ConnId) {
        if let Some(s) = self.links.get_mut(id.slot as usize) {
            if s.as_ref().is_some_and(|l| l.id == id) {
                *s = None;
            }
        }
    }

    /// The live link `id`.
    pub fn conn_mut(&mut self, id: ConnId) -> Option<&mut Link> {
        lookup(&mut self.links, id)
    }

    /// Ids of every open link (for a shutdown).
    pub fn link_ids(&self) -> Vec<ConnId> {
        self.links.iter().flatten().map(|l| l.id).collect()
    }

    /// A session and its connection together (disjoint borrows).
    pub(crate) fn session_and_conn(
        &mut self,
        sid: SessionId,
        id: ConnId,
    ) -> Option<(&mut Session, &mut Link)> {
        let session = self
            .sessions
            .get_mut(sid.0 as usize)
            .and_then(Option::as_mut)?;
        let conn = lookup(&mut self.links, id)?;
        Some((session, conn))
    }

    pub(crate) fn session_mut(&mut self, sid: SessionId) -> Option<&mut Session> {
        self.sessions
            .get_mut(sid.0 as usize)
            .and_then(Option::as_mut)
    }

    // ---- input -------------------------------------------------------------------------

    /// Decodes the next whole packet of connection `id` from `rbuf` (its protocol version
    /// and size limit are the link's).
    pub fn decode(
        &mut self,
        id: ConnId,
        rbuf: &mut BytesMut,
    ) -> Result<Option<Packet>, DecodeError> {
        if self.claiming(id) {
            // A CONNECT waiting for its claim: what follows it waits too.
            return Ok(None);
        }
        match self.conn_mut(id) {
            Some(link) if !link.closing => link.decoder.decode(rbuf),
            _ => Ok(None),
        }
    }

    /// A TLS or WebSocket handshake starts on `id` (`handshake_timeout_ms` applies).
    pub fn handshake_started(&mut self, id: ConnId) {
        if let Some(link) = self.conn_mut(id) {
            link.handshaking = true;
        }
    }

    /// The handshake on `id` is done; `client` is the verified client certificate's name,
    /// the user name CONNECT will carry when `tls_cert_as_username` is set.
    pub fn handshake_done(&mut self, id: ConnId, client: Option<String>) {
        let as_user = self.config.tls_cert_as_username;
        if let Some(link) = self.conn_mut(id) {
            link.handshaking = false;
            if as_user {
                link.cert_user = client.map(String::into_boxed_str);
            }
        }
    }

    /// Bytes arrived on `id` (keep alive).
    pub fn received(&mut self, id: ConnId, bytes: usize) {
        let now = self.now;
        self.stats.bytes_in += bytes as u64;
        if let Some(link) = self.conn_mut(id) {
            link.last_seen = now;
        }
    }

    /// The connection's input could not be decoded.
    pub fn decode_error(&mut self, id: ConnId, e: DecodeError) {
        let connected = self.conn_mut(id).is_some_and(|c| c.session.is_some());
        if connected {
            self.reject(id, Some(e.reason_code()), &format!("malformed packet: {e}"));
        } else {
            connect::refuse_undecodable(self, id, e);
        }
    }

    /// Handles one decoded packet from connection `id`.
    pub fn packet(&mut self, id: ConnId, packet: Packet) {
        let connected = self.conn_mut(id).is_some_and(|c| c.session.is_some());
        match packet {
            Packet::Connect(c) if !connected => connect::on_connect(self, id, c),
            Packet::Connect(_) => {
                self.reject(
                    id,
                    Some(ReasonCode::PROTOCOL_ERROR),
                    "second CONNECT [MQTT-3.1.0-2]",
                );
            }
            _ if !connected => {
                self.reject(id, None, "packet before CONNECT [MQTT-3.1.0-1]");
            }
            Packet::Publish(p) => publish::on_publish(self, id, p),
            Packet::PubResp(r) => ack::on_pub_resp(self, id, r),
            Packet::Subscribe(s) => subscribe::on_subscribe(self, id, s),
            Packet::Unsubscribe(u) => subscribe::on_unsubscribe(self, id, u),
            Packet::PingReq => self.reply(id, &Packet::PingResp),
            Packet::Disconnect(d) => disconnect::on_disconnect(self, id, d),
            Packet::Auth(_) => {
                self.reject(
                    id,
                    Some(ReasonCode::PROTOCOL_ERROR),
                    "AUTH without an authentication method",
                );
            }
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                self.reject(
                    id,
                    Some(ReasonCode::PROTOCOL_ERROR),
                    "server-to-client packet from a client",
                );
            }
        }
    }

    /// A connection handed over by a peer (its CONNECT read there): refused when this shard
    /// is at `connections_per_shard_max` (`full`), else accepted here.
    pub fn adopt(&mut self, id: ConnId, connect: Box<Connect>, full: bool) {
        if full {
            return connect::refuse(
                self,
                id,
                &connect,
                ReasonCode::SERVER_BUSY,
                "connections_per_shard_max reached on the session's home shard",
            );
        }
        self.claim_then_accept(id, connect);
    }

    // ---- output ------------------------------------------------------------------------

    /// Appends `packet` to a connection's output.
    pub(crate) fn reply(&mut self, id: ConnId, packet: &Packet) {
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        crate::session::encode(conn.decoder.version, packet, &mut conn.out);
        self.mark_dirty(id);
    }

    pub(crate) fn mark_dirty(&mut self, id: ConnId) {
        if let Some(conn) = self.conn_mut(id) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    /// The reactor takes `id`'s output to send it (a `spare` buffer, if any, becomes the new
    /// output buffer); None when there is nothing to send.
    pub fn take_output(&mut self, id: ConnId, spare: &mut Option<BytesMut>) -> Option<BytesMut> {
        let conn = self.conn_mut(id)?;
        conn.dirty = false;
        if conn.out.is_empty() || conn.sending != 0 {
            return None;
        }
        let fresh = spare.take().unwrap_or_default();
        let buf = std::mem::replace(&mut conn.out, fresh);
        conn.sending = buf.len();
        Some(buf)
    }

    /// The send of `id` finished (`sent` bytes, or failed); lets its session move queued
    /// messages into the room that made.
    pub fn sent(&mut self, id: ConnId, sent: usize, rest: usize) {
        self.stats.bytes_out += sent as u64;
        let now = self.now;
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        conn.sending = rest;
        if sent > 0 {
            conn.last_progress = now;
        }
        if rest != 0 {
            return;
        }
        if !conn.out.is_empty() {
            self.mark_dirty(id);
        } else if let Some(sid) = conn.session.filter(|_| !conn.closing) {
            self.refill(sid, id);
            if self.feeds.contains_key(&sid) {
                self.pump_retained(sid);
            }
        }
    }

    /// The connection's output cannot be sent (the socket failed): drop it.
    pub fn discard_output(&mut self, id: ConnId) {
        if let Some(conn) = self.conn_mut(id) {
            conn.out.clear();
            conn.sending = 0;
        }
    }

    /// Nothing is waiting to be sent on `id`.
    pub fn output_empty(&mut self, id: ConnId) -> bool {
        self.conn_mut(id).is_none_or(|c| c.out.is_empty())
    }

    /// Gives a session's queued messages a chance to go out (after acks or a drained outbox).
    pub(crate) fn refill(&mut self, sid: SessionId, id: ConnId) {
        let max = self.config.outbox_bytes_max;
        let now = self.now;
        let Some((session, conn)) = self.session_and_conn(sid, id) else {
            return;
        };
        if session.queued_len() == 0 {
            session.drop_logged = false;
        }
        if conn.closing || conn.outbox_bytes() >= max || session.queued_len() == 0 {
            if !self.congested.is_empty() {
                self.relieve(sid);
            }
            return;
        }
        let before = conn.out.len();
        session.fill_window(now, &mut conn.out);
        let grew = conn.out.len() != before;
        let drops = session.drops.total != 0;
        if session.journal_pending() {
            self.journal_of(sid);
        }
        if drops {
            self.take_drops(sid);
        }
        if !self.congested.is_empty() {
            self.relieve(sid);
        }
        if grew {
            self.mark_dirty(id);
        }
    }

    /// Input must wait (a sink is full): the reactor stops reading until it drains.
    pub fn input_paused(&self) -> bool {
        self.sinks.any_full()
    }
}

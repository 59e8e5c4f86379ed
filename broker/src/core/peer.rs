//! What shards tell each other ([`ShardMsg`], carried by the reactor's mesh) and how the core
//! answers it: forwarded publishes, durability confirmations, retained messages for their
//! owner shard and pages of them for new subscriptions, route updates, SUBACK barriers. A connection handed over (`Adopt`) is the reactor's to take.

use std::os::fd::OwnedFd;

use bytes::BytesMut;
use bytestring::ByteString;
use net::codec::{Connect, Packet};

use super::flow::PublisherRef;
use super::{Core, Effect, Origin, PendingSubAck, RetainedWanted};
use crate::ids::{ConnId, SessionId, ShardId};
use crate::retained::Cursor;
use crate::session::Message;

/// What shards tell each other.
#[derive(Debug)]
pub enum ShardMsg {
    /// A publish matched subscriptions on the receiving shard; with an [`AckRef`] the
    /// receiver answers `DurableAck(token)` once what it logged is on disk (or refused). The
    /// publisher, if a client, is who a congested session there pauses.
    Publish(Message, AckRef, PublisherRef),
    /// The node's handover generation (`Handovers::noted`) the sender read before it routed
    /// the publishes that follow, sent when it changed: a session of the receiver that moved
    /// to another node after it gets their copies there.
    HandoversSeen(u64),
    /// What a forwarded publish caused on the sender is durable (true) or could not be
    /// written (false: the origin refuses the publish).
    DurableAck(u64, bool),
    /// A publish for one member of shared group `filter` (`$share/group/filter`) on the
    /// receiving shard; `hops` counts moves between shards whose members had left.
    SharedPublish {
        /// The group's full filter.
        filter: ByteString,
        /// The message.
        message: Box<Message>,
        /// Moves so far.
        hops: u8,
        /// Where the durability answer goes.
        ack: AckRef,
        /// The publishing connection, if a client.
        publisher: PublisherRef,
    },
    /// A copy forwarded from another node for session `client`, whose home shard the
    /// receiver is: delivered to it alone; with an [`AckRef`] the receiver answers
    /// `DurableAck(token)` once it is durable.
    ForClient {
        /// The session's client id.
        client: bytestring::ByteString,
        /// Its sequence number in the session's store on the old node (0: none).
        seq: u64,
        /// The message.
        message: Box<Message>,
        /// Where the durability answer goes.
        ack: AckRef,
    },
    /// A retained message (or a clear, empty payload) for the receiver's part of the
    /// retained store (it owns the topic); with an [`AckRef`] the receiver answers
    /// `DurableAck(token)` once it is logged.
    Retain {
        /// The message.
        message: Box<Message>,
        /// Its last-writer-wins version.
        version: u64,
        /// Where the durability answer goes.
        ack: AckRef,
    },
    /// A page of the receiver's retained messages matching `filter` after `cursor`, for a
    /// new subscription of session `sid` on the sender (answered with `RetainedPage`).
    RetainedQuery {
        /// The subscriber's session on the sender.
        sid: SessionId,
        /// The stream asking.
        token: u64,
        /// The subscription's filter.
        filter: ByteString,
        /// Where the page starts.
        cursor: Cursor,
    },
    /// Reply to `RetainedQuery`: matches, and where the next page starts.
    RetainedPage {
        /// The subscriber's session.
        sid: SessionId,
        /// The stream that asked.
        token: u64,
        /// The matches.
        messages: Vec<Message>,
        /// Where the next page starts (`Done`: this shard has no more).
        cursor: Cursor,
    },
    /// The sender now has subscribers for this filter.
    RouteAdd(ByteString),
    /// The sender has no more subscribers for this filter.
    RouteRemove(ByteString),
    /// Answer with `BarrierAck` once everything sent before it has been applied: SPSC order
    /// makes this "the route updates I sent you are in effect".
    Barrier(u64),
    /// Reply to `Barrier`.
    BarrierAck(u64),
    /// A session on the sender is congested by this publishing connection of the receiver:
    /// stop reading it (one more hold).
    Pause(ConnId),
    /// One hold on this publishing connection ends.
    Resume(ConnId),
    /// A connection whose CONNECT arrived on the sender but whose session lives on the
    /// receiver: the socket, the decoded CONNECT and whatever was read after it.
    Adopt {
        /// The client's socket, now owned by the receiver.
        fd: OwnedFd,
        /// Its CONNECT.
        connect: Box<Connect>,
        /// Bytes received after the CONNECT.
        rest: BytesMut,
        /// Its TLS / WebSocket layers (plain TCP: none).
        transport: Option<Box<crate::transport::Transport>>,
    },
}

// Two cache lines per queued message: a field added to a variant must not grow it.
const _: () = assert!(std::mem::size_of::<ShardMsg>() <= 128);

/// Origin shard and token of a forwarded publish whose durability the origin waits for,
/// packed in one word (origin in the top 16 bits); 0: none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AckRef(u64);

impl AckRef {
    /// No answer wanted.
    pub const NONE: AckRef = AckRef(0);

    /// An answer to `origin` for `token` (tokens stay below 2^48).
    pub fn new(origin: ShardId, token: u64) -> Self {
        Self(u64::from(origin.0) << 48 | (token & ((1 << 48) - 1)))
    }

    /// (origin, token), if an answer is wanted.
    pub fn get(self) -> Option<(ShardId, u64)> {
        (self.0 != 0).then_some((ShardId((self.0 >> 48) as u16), self.0 & ((1 << 48) - 1)))
    }
}

impl Core {
    /// Queues `msg` for `peer` (the reactor pushes it onto the mesh, in order).
    pub(crate) fn send_to_peer(&mut self, peer: ShardId, msg: ShardMsg) {
        debug_assert_ne!(peer, self.id, "a shard never sends to itself");
        self.effects.push_back(Effect::Peer(peer, msg));
    }

    /// Sends a message built by `msg` to every peer.
    pub(crate) fn broadcast(&mut self, mut msg: impl FnMut() -> ShardMsg) {
        for peer in 0..self.shards {
            if peer != self.id.index() {
                self.send_to_peer(ShardId(peer as u16), msg());
            }
        }
    }

    /// A message from peer `from` (anything but `Adopt`, which the reactor handles).
    pub fn on_peer(&mut self, from: ShardId, msg: ShardMsg) {
        match msg {
            ShardMsg::Publish(message, ack, publisher) => {
                let seen = self.handover_marks.heard(from);
                let before = self.durable.appended();
                (self.publisher, self.refused) = (publisher.get(), false);
                // A session here that moved to another node after the sender looked: the
                // sender routed its copy here, it goes on to that node.
                let moved = self.moved_away_since(&message, seen);
                let token =
                    (!moved.is_empty() && ack != AckRef::NONE).then(|| self.durable.next_token());
                let pending = self.forward_moved(&message, None, token, &moved);
                self.route(message, Origin::Peer, 0);
                self.publisher = None;
                self.relay_forward(ack, before, token, pending);
                self.refused = false;
            }
            ShardMsg::ForClient {
                client,
                seq,
                message,
                ack,
            } => {
                let before = self.durable.appended();
                self.refused = false;
                let token = (ack != AckRef::NONE).then(|| self.durable.next_token());
                let pending = self.deliver_for_client(&client, seq, &message, token);
                self.relay_forward(ack, before, token, pending);
                self.refused = false;
            }
            ShardMsg::SharedPublish {
                filter,
                message,
                hops,
                ack,
                publisher,
            } => {
                (self.publisher, self.refused) = (publisher.get(), false);
                self.on_shared_publish(from, filter, *message, hops, ack);
                (self.publisher, self.refused) = (None, false);
            }
            ShardMsg::Pause(conn) => self.hold_link(conn, true),
            ShardMsg::Resume(conn) => self.hold_link(conn, false),
            ShardMsg::DurableAck(token, ok) => self.confirmed(token, ok),
            ShardMsg::HandoversSeen(seen) => self.handover_marks.hear(from, seen),
            ShardMsg::Retain {
                message,
                version,
                ack,
            } => {
                let before = self.durable.appended();
                self.store_retained(&message, version);
                self.confirm_forward(ack, before);
            }
            ShardMsg::RetainedQuery {
                sid,
                token,
                filter,
                cursor,
            } => self.on_retained_query(from, sid, token, filter, cursor),
            ShardMsg::RetainedPage {
                sid,
                token,
                messages,
                cursor,
            } => self.on_retained_page(from, sid, token, messages, cursor),
            ShardMsg::RouteAdd(filter) => self.router.add_remote(&filter, from),
            ShardMsg::RouteRemove(filter) => self.router.remove_remote(&filter, from),
            ShardMsg::Barrier(token) => self.send_to_peer(from, ShardMsg::BarrierAck(token)),
            ShardMsg::BarrierAck(token) => self.barrier_acked(token),
            ShardMsg::Adopt { .. } => {
                self.invariant_broken("a handed-over connection reached the core");
            }
        }
    }

    /// Sends `ack` (a SUBACK) to `conn` once every peer has applied the route updates sent
    /// so far; at once on a single shard.
    pub(crate) fn reply_after_routes(
        &mut self,
        conn: ConnId,
        ack: Packet,
        retained: RetainedWanted,
    ) {
        let peers = self.shards.saturating_sub(1);
        // A cluster node's route state changed: the SUBACK also waits for Kafka to have its record.
        let cluster = std::mem::take(&mut self.cluster_routed);
        let waiting = peers + usize::from(cluster);
        if waiting == 0 {
            self.reply(conn, &ack);
            return self.retained_after_suback(conn, retained);
        }
        let token = self.next_barrier;
        self.next_barrier += 1;
        self.pending_subacks.insert(
            token,
            PendingSubAck {
                conn,
                ack,
                retained,
                waiting,
            },
        );
        if peers > 0 {
            self.broadcast(|| ShardMsg::Barrier(token));
        }
        if let Some(feed) = self.cluster.as_ref().filter(|_| cluster) {
            feed.barrier(self.id, token);
        }
    }

    pub(crate) fn barrier_acked(&mut self, token: u64) {
        let Some(pending) = self.pending_subacks.get_mut(&token) else {
            return self.invariant_broken("a barrier answer with no SUBACK waiting");
        };
        pending.waiting -= 1;
        if pending.waiting == 0 {
            if let Some(p) = self.pending_subacks.remove(&token) {
                self.reply(p.conn, &p.ack);
                self.retained_after_suback(p.conn, p.retained);
            }
        }
    }

    fn retained_after_suback(&mut self, conn: ConnId, retained: RetainedWanted) {
        if let Some(sid) = self.conn_mut(conn).and_then(|c| c.session) {
            self.send_retained(sid, retained);
        }
    }
}

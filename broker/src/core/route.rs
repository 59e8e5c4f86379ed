//! Routing on a shard: publishing (retained store first), matching, local delivery into
//! sessions, shared-subscription picks, forwarding to peers, and the retained messages a new
//! subscription receives.

use bytestring::ByteString;

use super::flow::PublisherRef;
use super::link::lookup;
use super::peer::{AckRef, ShardMsg};
use super::{Core, Origin};
use crate::ids::{SessionId, ShardId};
use crate::retained::SetOutcome;
use crate::router::SharedPick;
use crate::session::{Delivery, Grant, Message, SubIds};

impl Core {
    /// Publishes a message from a client or the broker: a retained one updates the retained
    /// store of its topic's owner shard (this one, or a peer through the mesh, which then
    /// confirms durability like a forwarded publish), then it is routed. Returns how many
    /// confirmations (peers, sinks) the publisher's acknowledgement waits for.
    pub(crate) fn publish(&mut self, message: Message, origin: Origin) -> usize {
        let mut confirming = 0;
        let mut retain_version = 0;
        if message.retain {
            // Another node's copy keeps the version its node gave it (so every node keeps
            // the same last writer); this shard's later sets are versioned above it.
            let version = match self.carried_retain_version.take() {
                Some(v) if v != 0 && crate::retained::plausible(v, self.now) => {
                    // Every shard of this node versions its later sets above it.
                    crate::retained::raise_floor(v);
                    v
                }
                _ => self.next_retain_version(),
            };
            retain_version = version;
            let owner = crate::retained::owner(&message.topic, self.shards);
            if owner == self.id {
                self.store_retained(&message, version);
            } else {
                let ack = match origin {
                    Origin::Client(_, Some(token)) | Origin::Source(Some(token)) => {
                        AckRef::new(self.id, token)
                    }
                    _ => AckRef::NONE,
                };
                confirming += usize::from(ack != AckRef::NONE);
                let message = Box::new(message.clone());
                self.send_to_peer(
                    owner,
                    ShardMsg::Retain {
                        message,
                        version,
                        ack,
                    },
                );
            }
        }
        confirming + self.route(message, origin, retain_version)
    }

    /// Applies a retained message (or clear) to this shard's part of the store, and logs it.
    pub(super) fn store_retained(&mut self, message: &Message, version: u64) {
        let outcome = self.retained.set(message, version, self.now);
        if matches!(outcome, SetOutcome::Stored | SetOutcome::Cleared) && self.durable.persistent()
        {
            let record = crate::retained::record(message, version, self.now);
            self.durable.append(&record);
        }
        if outcome == SetOutcome::Full {
            tracing::debug!(shard = self.id.0, topic = %message.topic, "retained message not stored: retained_count_max or retained_bytes_max reached");
        }
    }

    /// Delivers a message to the matching sessions on this shard and one member of each
    /// matching shared group and, unless it came from a peer, forwards it once to every peer
    /// shard with subscribers and offers it to the sinks that want it. Returns how many
    /// confirmations (peers, sinks) the publisher's acknowledgement waits for.
    /// `retain_version`: a retained message's version (0 otherwise), for the sinks.
    pub(crate) fn route(&mut self, message: Message, origin: Origin, retain_version: u64) -> usize {
        let mut matches = std::mem::take(&mut self.matches);
        let mut picks = std::mem::take(&mut self.shared_picks);
        let (from, ack) = match origin {
            Origin::Client(sid, token) => (
                Some(sid),
                token.map_or(AckRef::NONE, |t| AckRef::new(self.id, t)),
            ),
            Origin::Source(token) => (
                None,
                token.map_or(AckRef::NONE, |t| AckRef::new(self.id, t)),
            ),
            _ => (None, AckRef::NONE),
        };
        let mut confirming = 0;
        let shared = (origin != Origin::Peer).then_some(&mut picks);
        let remote = self
            .router
            .matches(&message.topic, self.id, &mut matches, shared);
        if let Some(only) = &self.shared_only {
            picks.retain(|p| only.contains(p.filter()));
        }
        let feeds = message.retain && !self.feeds.is_empty();
        // One id for every durable session here that gets the message: its body is logged once.
        let log_id = self.durable.next_message_id();
        crate::router::local_copies(&matches, from, message.retain, |copy| {
            let (sid, qos, retain) = (copy.session, copy.qos, copy.retain);
            self.deliver(sid, &message, qos, copy.sub_ids, retain, None, log_id);
            if feeds {
                self.note_live_retained(sid, &message.topic);
            }
        });
        self.matches = matches;
        for pick in picks.drain(..) {
            confirming += usize::from(self.deliver_shared(pick, &message, 0, ack, log_id));
        }
        self.shared_picks = picks;
        if origin != Origin::Peer {
            let mut mask = remote & !self.id.bit();
            // Before the sinks look into the node's handover table (the cluster sink).
            let seen = (mask != 0).then(|| {
                self.handover_marks
                    .seen
                    .unwrap_or_else(|| self.handovers_noted())
            });
            while mask != 0 {
                let peer = ShardId(mask.trailing_zeros() as u16);
                mask &= mask - 1;
                self.stats.forwarded += 1;
                confirming += usize::from(ack != AckRef::NONE);
                let publisher = PublisherRef::new(self.publisher);
                if let Some(told) = seen.and_then(|s| self.handover_marks.tell(peer, s)) {
                    self.send_to_peer(peer, ShardMsg::HandoversSeen(told));
                }
                self.send_to_peer(peer, ShardMsg::Publish(message.clone(), ack, publisher));
            }
            if !self.sinks.is_empty() {
                let (publisher, token, only) = match origin {
                    Origin::Client(sid, token) => (
                        self.session_mut(sid)
                            .map(|s| s.client_id.clone())
                            .unwrap_or_default(),
                        token,
                        None,
                    ),
                    // A Kafka -> MQTT record reaches the other nodes' subscribers too; a
                    // message from another node (it names its shared groups) stops here.
                    Origin::Source(token) if self.shared_only.is_none() => {
                        (Default::default(), token, Some("cluster"))
                    }
                    Origin::Source(_) => (Default::default(), None, Some("")),
                    _ => (Default::default(), None, None),
                };
                if only != Some("") {
                    confirming +=
                        self.sinks
                            .offer(&message, &publisher, token, only, retain_version);
                }
            }
        }
        confirming
    }

    /// A message for one shared group: to the chosen local member, or to the chosen peer
    /// (with `ack`; returns true if that asks the peer to confirm durability). `log_id`: the
    /// message's id on this shard ([`crate::durable::Durable::next_message_id`]).
    pub(super) fn deliver_shared(
        &mut self,
        pick: SharedPick,
        message: &Message,
        hops: u8,
        ack: AckRef,
        log_id: u64,
    ) -> bool {
        match pick {
            SharedPick::Local((sid, options, sub_id), filter) => {
                let retain = options.retain_as_published && message.retain;
                let sub_ids = SubIds::one(sub_id);
                self.deliver(
                    sid,
                    message,
                    options.qos,
                    sub_ids,
                    retain,
                    Some(filter),
                    log_id,
                );
                false
            }
            SharedPick::Remote(peer, filter) => {
                self.stats.forwarded += 1;
                let publisher = PublisherRef::new(self.publisher);
                self.send_to_peer(
                    peer,
                    ShardMsg::SharedPublish {
                        filter,
                        message: Box::new(message.clone()),
                        hops,
                        ack,
                        publisher,
                    },
                );
                ack != AckRef::NONE
            }
        }
    }

    /// A peer picked this shard for a shared group: one local member gets it and this shard
    /// confirms durability to the origin; if no member is left here the message moves on to
    /// another peer with members (at most once round the shards), which confirms instead.
    pub(super) fn on_shared_publish(
        &mut self,
        from: ShardId,
        filter: ByteString,
        message: Message,
        hops: u8,
        ack: AckRef,
    ) {
        let before = self.durable.appended();
        match self.router.pick_member(&filter, self.id, from) {
            Some(pick @ SharedPick::Local(..)) => {
                let log_id = self.durable.next_message_id();
                self.deliver_shared(pick, &message, hops, AckRef::NONE, log_id);
            }
            Some(SharedPick::Remote(peer, filter)) if usize::from(hops) < self.shards => {
                let publisher = PublisherRef::new(self.publisher);
                self.send_to_peer(
                    peer,
                    ShardMsg::SharedPublish {
                        filter,
                        message: Box::new(message),
                        hops: hops + 1,
                        ack,
                        publisher,
                    },
                );
                return;
            }
            _ => {
                self.stats.dropped_no_subscriber += 1;
                tracing::debug!(shard = self.id.0, %filter, "shared message with no member left");
            }
        }
        self.confirm_forward(ack, before);
    }

    /// As [`Core::confirm_forward`], once `pending` sinks also confirmed `token` (the
    /// copies this shard sent on for the forwarded message; none: as it).
    pub(super) fn relay_forward(
        &mut self,
        ack: AckRef,
        before: u64,
        token: Option<u64>,
        pending: usize,
    ) {
        let Some(token) = token.filter(|_| pending > 0) else {
            return self.confirm_forward(ack, before);
        };
        let Some((origin, origin_token)) = ack.get() else {
            return;
        };
        if std::mem::take(&mut self.refused) {
            return self.send_to_peer(origin, ShardMsg::DurableAck(origin_token, false));
        }
        self.durable
            .relay(token, origin, origin_token, before, pending);
    }

    /// Tells the origin of a forwarded message that what it caused here is durable (now, or
    /// after the commit that covers it), or that a full queue refused it (`self.refused`).
    pub(super) fn confirm_forward(&mut self, ack: AckRef, before: u64) {
        let Some((origin, token)) = ack.get() else {
            return;
        };
        if std::mem::take(&mut self.refused) {
            return self.send_to_peer(origin, ShardMsg::DurableAck(token, false));
        }
        if self.durable.wait_for_peer(origin, token, before) {
            self.send_to_peer(origin, ShardMsg::DurableAck(token, true));
        }
    }

    /// Offers `message` to one session. `log_id`: the message's id on this shard, the same
    /// for every session the routing of one message reaches (its body is logged once).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn deliver(
        &mut self,
        sid: SessionId,
        message: &Message,
        subscription_qos: net::codec::QoS,
        sub_ids: SubIds,
        retain: bool,
        shared: Option<ByteString>,
        log_id: u64,
    ) {
        let max = self.config.outbox_bytes_max;
        let now = self.now;
        let Some(Some(session)) = self.sessions.get_mut(sid.0 as usize) else {
            // Routes and links are removed with their session.
            return self.invariant_broken("delivery to a session that does not exist");
        };
        let grant = Grant {
            qos: crate::router::granted(message.qos, subscription_qos),
            retain,
            sub_ids,
            shared,
        };
        let conn = session
            .conn
            .and_then(|id| lookup(&mut self.links, id))
            .filter(|c| !c.closing && c.outbox_bytes() < max);
        let conn_id = conn.as_ref().map(|c| c.id);
        // A connected session fed by a client publisher pauses it instead of dropping (the
        // overshoot is what was in flight before the pause took: bounded by the read and
        // mesh buffers); a client feeding its own subscription cannot be paused by it.
        let may_exceed = match (self.publisher, session.conn) {
            (Some(p), Some(own)) => p.shard != self.id || p.conn != own,
            _ => false,
        };
        session.log_id = log_id;
        let delivery = session.deliver(message, grant, now, conn.map(|c| &mut c.out), may_exceed);
        let drops = session.drops.total != 0;
        if session.journal_pending() {
            self.journal_with(sid, Some(message));
        }
        match delivery {
            Delivery::Sent => {
                self.stats.publishes_out += 1;
                self.latency
                    .record(now.saturating_duration_since(message.received_at));
                if let Some(id) = conn_id {
                    self.mark_dirty(id);
                }
            }
            Delivery::Queued => self.queued_for(sid),
            Delivery::Dropped => {}
            Delivery::Full => match self.publisher {
                // Refused: the publisher learns it from its PUBACK / PUBREC.
                Some(p) if p.v5 => {
                    self.refused = true;
                    self.stats.refused_queue_full += 1;
                }
                // MQTT 3 publishers and the broker's own messages cannot be told.
                _ => {
                    if let Some(session) = self.session_mut(sid) {
                        session.drop(crate::session::DropReason::QueueFull);
                    }
                    return self.take_drops(sid);
                }
            },
        }
        if drops {
            self.take_drops(sid);
        }
    }

    /// A version for a retained set made here now: above every version this shard made or
    /// took and above the node's floor (versions taken from other nodes), with this shard's
    /// id in the low bits.
    pub(super) fn next_retain_version(&mut self) -> u64 {
        let above = self.last_retain_version.max(crate::retained::floor());
        let next = ((above >> 6).saturating_add(1) << 6) | u64::from(self.id.0 & 63);
        let v = crate::retained::version(self.now, self.id).max(next);
        self.last_retain_version = v;
        v
    }
}

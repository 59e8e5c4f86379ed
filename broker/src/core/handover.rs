//! A session's move between cluster nodes, the copies side (`cluster/handover.rs` has the
//! node's table): the node a session left notes it before forgetting it and forwards the
//! downlink records for it that still arrive (the record's offset is stored once Kafka took
//! the forwarded copy); the node it moved to delivers such a copy to that session alone, on
//! its home shard, as a subscriber's copy of the original publish.

use bytestring::ByteString;
use net::codec::QoS;

use super::peer::{AckRef, ShardMsg};
use super::Core;
use crate::ids::{SessionId, ShardId};
use crate::session::Message;

impl Core {
    /// Forgets session `sid`, which broker `broker` claimed. In a cluster its filters are
    /// followed so that copies still coming here reach it there, and the routes it leaves
    /// without a subscriber here stay for `cluster.node_timeout_ms` (until every node has
    /// read the new owner's: without that, a node reading this node's withdrawal first would
    /// route the session's messages nowhere in between).
    pub(super) fn forget_moved(&mut self, sid: SessionId, broker: &str) {
        self.note_moved(sid, broker);
        self.moving = self
            .cluster
            .as_ref()
            .map(|feed| self.now + feed.handovers.grace());
        self.forget_session(sid, "session taken over by a client on another broker");
        self.moving = None;
    }

    /// A filter left without a subscriber here while a session moves away: its route stays
    /// until the move's grace ends (true), or goes now (false).
    pub(super) fn hold_route(&mut self, filter: &ByteString) -> bool {
        use crate::cluster::RouteState;
        let Some(until) = self.moving else {
            return false;
        };
        // A shared group's copies picked for this node would find no member here.
        if net::topic::is_shared(filter) {
            return false;
        }
        // Live only: should this node die meanwhile, no copy is kept for it.
        if self.cluster_reported.get(filter) == Some(&RouteState::Kept) {
            self.cluster_reported
                .insert(filter.clone(), RouteState::Live);
            if let Some(feed) = &self.cluster {
                feed.changed(self.id, filter, RouteState::Live);
            }
        }
        self.held_routes.push((filter.clone(), until));
        true
    }

    /// Routes held for moves whose grace ended: withdrawn if no subscriber came back (on the
    /// tick).
    pub(super) fn release_held_routes(&mut self) {
        use crate::cluster::RouteState;
        let now = self.now;
        if let Some(feed) = &self.cluster {
            feed.handovers.prune(now);
        }
        while self.imported_until.front().is_some_and(|(_, t)| *t <= now) {
            if let Some((sid, _)) = self.imported_until.pop_front() {
                // Only its own deadline's (the slot may be another session's by now).
                if let Some(session) = self.session_mut(sid) {
                    if session.imported.as_ref().is_some_and(|i| i.1 <= now) {
                        session.imported = None;
                    }
                }
            }
        }
        if self.held_routes.iter().all(|(_, until)| *until > now) {
            return;
        }
        let (due, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held_routes)
            .into_iter()
            .partition(|(_, until)| *until <= now);
        self.held_routes = held;
        for (filter, _) in due {
            let Some(&last) = self.cluster_reported.get(&filter) else {
                continue;
            };
            let state = self.route_state(&filter);
            if state == last {
                continue;
            }
            if state == RouteState::None {
                self.cluster_reported.remove(&filter);
            } else {
                self.cluster_reported.insert(filter.clone(), state);
            }
            if let Some(feed) = &self.cluster {
                feed.changed(self.id, &filter, state);
            }
        }
    }

    /// Session `client`, just imported, was node `from`'s: should that node be dead, the
    /// copies for it still in its downlink are read by the salvage thread
    /// (`cluster/salvage.rs`).
    pub(super) fn claimed_from(&mut self, client: &str, from: &str) {
        let Some(feed) = self.cluster.clone() else {
            return;
        };
        if self
            .owners
            .as_ref()
            .is_some_and(|o| *o.shared.broker == *from)
        {
            return;
        }
        let Some(sid) = self.by_client.get(client).copied() else {
            return;
        };
        let now = self.now;
        let Some(session) = self.session_mut(sid) else {
            return;
        };
        let filters = followed_filters(session);
        if filters.is_empty() {
            return;
        }
        let claim = crate::cluster::salvage::Claim {
            client: session.client_id.clone(),
            filters,
            from: from.into(),
            at: now,
            at_ms: crate::kafka::now_millis(),
        };
        if !feed.claims.push(claim, feed.handovers.max()) {
            tracing::warn!(client, node = from, "more than cluster.moved_max sessions taken from other nodes wait: the copies for this one in its old node's downlink are not read should that node be dead");
        }
    }

    /// Notes session `sid`, about to be forgotten for broker `broker`, in the node's table.
    fn note_moved(&mut self, sid: SessionId, broker: &str) {
        let Some(feed) = self.cluster.clone() else {
            return;
        };
        if self
            .owners
            .as_ref()
            .is_some_and(|o| *o.shared.broker == *broker)
        {
            return;
        }
        let Some(session) = self.session_mut(sid) else {
            return;
        };
        let filters = followed_filters(session);
        if filters.is_empty() {
            return;
        }
        let client = session.client_id.clone();
        // What the session had not finished may be only here (a change not written to the
        // store before the new node read it): forwarded too, with its sequence number, which
        // the new node skips if it loaded that message. No publisher waits on these.
        let unfinished: Vec<(Message, u64)> = session
            .unfinished()
            .map(|(m, seq)| (m.clone(), seq))
            .collect();
        let now_ms = crate::kafka::now_millis();
        feed.handovers
            .note(client.clone(), filters, broker, self.now, now_ms);
        for (message, seq) in &unfinished {
            self.stats.cluster_moved_forwarded += 1;
            self.sinks.forward(message, None, broker, &client, *seq);
        }
        if !unfinished.is_empty() {
            tracing::info!(shard = self.id.0, %client, node = broker, messages = unfinished.len(), "the unfinished messages of a session that moved forwarded to its node");
        }
    }

    /// Session `sid` was just loaded from another broker's store: the sequence numbers it
    /// came with are kept for `cluster.moved_keep_ms`, so copies that broker forwards again
    /// are not delivered twice.
    pub(super) fn note_imported(&mut self, sid: SessionId) {
        let Some(feed) = self.cluster.clone() else {
            return;
        };
        let until = self.now + feed.handovers.keep();
        if let Some(session) = self.session_mut(sid) {
            let seqs: rustc_hash::FxHashSet<u64> = session.seqs().collect();
            session.imported = (!seqs.is_empty()).then(|| Box::new((seqs, until)));
            if session.imported.is_some() {
                self.imported_until.push_back((sid, until));
            }
        }
    }

    /// `client` is held here (again): no longer followed elsewhere.
    pub(super) fn held_here(&mut self, client: &str) {
        if let Some(feed) = &self.cluster {
            feed.handovers.back(client);
        }
    }

    /// Forwards a downlink record's `message` (produced at `stamp_ms`) to every session that
    /// moved away and wants it, through the cluster sink; how many confirmations `token`
    /// waits for. Only QoS 1 and 2 (a QoS 0 copy may be lost, not repeated).
    pub(super) fn forward_moved(
        &mut self,
        message: &Message,
        stamp_ms: Option<i64>,
        token: Option<u64>,
        targets: &[(ByteString, Box<str>)],
    ) -> usize {
        debug_assert!(message.qos != QoS::AtMostOnce || targets.is_empty());
        let mut pending = 0;
        for (client, node) in targets {
            tracing::debug!(shard = self.id.0, %client, node = &**node, topic = %message.topic, stamp_ms, "a copy for a session that moved away forwarded to its node");
            self.stats.cluster_moved_forwarded += 1;
            pending += self.sinks.forward(message, token, node, client, 0);
        }
        pending
    }

    /// The moved sessions a downlink record's `message` is for (none for QoS 0, when no
    /// session moved away from this node, or when its publisher's node sent it to theirs too:
    /// `sent_to`).
    pub(super) fn moved_targets(
        &self,
        message: &Message,
        stamp_ms: Option<i64>,
        sent_to: Option<&str>,
    ) -> Vec<(ByteString, Box<str>)> {
        let mut out = Vec::new();
        if let Some(feed) = &self.cluster {
            if message.qos != QoS::AtMostOnce && !feed.handovers.is_empty() {
                feed.handovers
                    .targets(&message.topic, stamp_ms, sent_to, self.now, &mut out);
            }
        }
        out
    }

    /// The node's handover generation now (0 outside a cluster): see `Handovers::noted`.
    pub(super) fn handovers_noted(&self) -> u64 {
        self.cluster.as_ref().map_or(0, |f| f.handovers.noted())
    }

    /// The sessions of this shard that moved to another node after the handover generation
    /// `seen` (read by the peer shard that routed `message` here before it looked into the
    /// table): they were to get a copy here, they get it there.
    pub(super) fn moved_away_since(
        &self,
        message: &Message,
        seen: u64,
    ) -> Vec<(ByteString, Box<str>)> {
        let mut out = Vec::new();
        let Some(feed) = &self.cluster else {
            return out;
        };
        if message.qos == QoS::AtMostOnce {
            return out;
        }
        // Whenever it was produced: the sender routed it before it saw the move (a copy held
        // in a full peer queue may arrive later than the grace).
        feed.handovers
            .targets_noted_after(&message.topic, None, self.now, seen, &mut out);
        out.retain(|(client, _)| {
            crate::ids::home_shard(client.as_bytes(), self.shards) == self.id
                && !self.by_client.contains_key(&**client)
        });
        out
    }

    /// A forwarded copy for session `client` taken from a source: delivered on its home shard
    /// (here, or sent there with `token`: returns 1 when that shard will confirm it).
    pub(super) fn publish_for_client(
        &mut self,
        client: ByteString,
        seq: u64,
        message: Message,
        token: Option<u64>,
    ) -> usize {
        let home = crate::ids::home_shard(client.as_bytes(), self.shards);
        if home == self.id {
            return self.deliver_for_client(&client, seq, &message, token);
        }
        let ack = token.map_or(AckRef::NONE, |t| AckRef::new(self.id, t));
        self.send_to_peer(
            home,
            ShardMsg::ForClient {
                client,
                seq,
                message: Box::new(message),
                ack,
            },
        );
        usize::from(token.is_some())
    }

    /// Delivers `message` to session `client` on this shard as its matching subscriptions
    /// ask (highest QoS, their identifiers; shared groups' excepted), and to nobody else;
    /// not when it is the session's own message `seq` it was loaded with. Refused
    /// (`self.refused`) while its claim here is out; forwarded again, with `token`, when the
    /// session moved on to another node meanwhile (returns how many confirmations `token`
    /// waits for); dropped when the session is not here (it ended: counted).
    pub(super) fn deliver_for_client(
        &mut self,
        client: &str,
        seq: u64,
        message: &Message,
        token: Option<u64>,
    ) -> usize {
        let Some(sid) = self.by_client.get(client).copied() else {
            if self.owners.as_ref().is_some_and(|o| o.claiming(client)) {
                // Claimed here, not loaded yet: refused, so the record is read again.
                self.refused = true;
                return 0;
            }
            let moved_to = self
                .cluster
                .as_ref()
                .filter(|_| message.qos != QoS::AtMostOnce)
                .and_then(|feed| feed.handovers.node_of(client, self.now));
            if let Some(node) = moved_to {
                // It moved on again while copies for it were on their way here: on to its
                // node, with its sequence number (that node may have loaded the message).
                tracing::debug!(shard = self.id.0, client, node = &*node, topic = %message.topic, "a forwarded copy for a session that moved on again forwarded to its node");
                self.stats.cluster_moved_forwarded += 1;
                return self.sinks.forward(message, token, &node, client, seq);
            }
            self.stats.dropped_no_subscriber += 1;
            tracing::debug!(shard = self.id.0, client, topic = %message.topic, "a forwarded copy for a session that is not here is dropped");
            return 0;
        };
        let now = self.now;
        if let Some(session) = self.session_mut(sid) {
            if session.imported.as_ref().is_some_and(|i| i.1 <= now) {
                session.imported = None;
            }
            if seq != 0
                && session
                    .imported
                    .as_ref()
                    .is_some_and(|i| i.0.contains(&seq))
            {
                return 0;
            }
        }
        let mut matches = std::mem::take(&mut self.matches);
        matches.clear();
        self.router
            .matches(&message.topic, self.id, &mut matches, None);
        let log_id = self.durable.next_message_id();
        crate::router::local_copies(&matches, None, message.retain, |copy| {
            if copy.session == sid {
                self.deliver(
                    sid,
                    message,
                    copy.qos,
                    copy.sub_ids,
                    copy.retain,
                    None,
                    log_id,
                );
            }
        });
        matches.clear();
        self.matches = matches;
        0
    }
}

/// What a shard and its peers told each other of the node's handover table
/// (`ShardMsg::HandoversSeen`): a peer shard's publish arrives after the generation it read
/// before routing it, so the receiver knows which moves the sender's look missed.
#[derive(Debug, Default)]
pub(crate) struct Marks {
    /// Read before the message being published was looked up in the table (the sources'
    /// path); None: read when it is routed.
    pub(crate) seen: Option<u64>,
    /// The generation last told to each peer.
    told: Vec<u64>,
    /// The generation each peer last told.
    heard: Vec<u64>,
}

impl Marks {
    /// `seen` is to be told to `peer` before a publish: returned if it changed since.
    pub(super) fn tell(&mut self, peer: ShardId, seen: u64) -> Option<u64> {
        let i = peer.index();
        if self.told.len() <= i {
            self.told.resize(i + 1, 0);
        }
        let told = self.told.get_mut(i)?;
        (*told != seen).then(|| {
            *told = seen;
            seen
        })
    }

    /// Peer `from` read generation `seen` before routing what follows.
    pub(super) fn hear(&mut self, from: ShardId, seen: u64) {
        let i = from.index();
        if self.heard.len() <= i {
            self.heard.resize(i + 1, 0);
        }
        if let Some(h) = self.heard.get_mut(i) {
            *h = seen;
        }
    }

    /// What peer `from` read before routing its latest publish.
    pub(super) fn heard(&self, from: ShardId) -> u64 {
        self.heard.get(from.index()).copied().unwrap_or(0)
    }
}

/// The filters a session's copies are followed by when it moves (a shared group's are served
/// by another member).
fn followed_filters(session: &crate::session::Session) -> Vec<ByteString> {
    session
        .subscriptions
        .keys()
        .filter(|f| !f.starts_with("$share/"))
        .cloned()
        .collect()
}

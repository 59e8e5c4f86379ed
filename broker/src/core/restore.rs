//! Rebuilding a shard's state from what its store recovered: sessions, their subscriptions
//! and queued messages, inbound QoS 2 ids, routes and retained messages, before any
//! connection is accepted.

use std::time::Duration;

use bytestring::ByteString;
use net::codec::ProtocolVersion;

use super::Core;
use crate::ids::ShardId;
use crate::session::{Grant, Session};

impl Core {
    /// Rebuilds sessions, their subscriptions and queued messages, inbound QoS 2 ids, routes
    /// and retained messages from the recovered log, before any connection is accepted.
    pub(super) fn restore(
        &mut self,
        state: storage::state::State,
        retained: Vec<(storage::record::StoredMessage, u64)>,
        remote_routes: Vec<(String, ShardId)>,
    ) {
        let now = self.now;
        let (mut sessions, mut messages) = (0usize, 0usize);
        let storage::state::State {
            sessions: stored,
            bodies,
            ..
        } = state;
        for (client, st) in stored {
            messages += self.restore_session(client, st, &bodies, false).1;
            sessions += 1;
        }
        for (filter, peer) in remote_routes {
            self.router.add_remote(&filter, peer);
        }
        let retained_count = retained.len();
        let mut not_kept = 0usize;
        for (m, version) in retained {
            if let Some(message) = crate::session::unstored(&m, now) {
                if self.retained.set(&message, version, now) == crate::retained::SetOutcome::Full {
                    not_kept += 1;
                }
                self.last_retain_version = self.last_retain_version.max(version);
            }
        }
        if not_kept > 0 {
            tracing::warn!(
                shard = self.id.0,
                not_kept,
                "recovered retained messages over this shard's share of retained_count_max / retained_bytes_max: not kept"
            );
        }
        tracing::info!(
            shard = self.id.0,
            sessions,
            messages,
            retained = retained_count,
            "recovered from the store"
        );
    }

    /// Applies what a cluster's retained topic holds for this shard's topics over what its
    /// log gave (last writer wins), logging each that wins: a clear learnt this way outlives
    /// its tombstone in Kafka.
    pub(super) fn restore_cluster_retained(
        &mut self,
        retained: Vec<(crate::session::Message, u64)>,
    ) {
        for (message, version) in retained {
            self.store_retained(&message, version);
            self.last_retain_version = self.last_retain_version.max(version);
        }
    }

    /// Rebuilds one offline session (its queued messages and subscriptions) from its durable
    /// state: its id and how many messages it holds. `live`: the broker runs (a session
    /// claimed from another broker), so new routes are told to the peers as a SUBSCRIBE's
    /// are; at start they learn them from the recovery.
    pub(super) fn restore_session(
        &mut self,
        client: String,
        st: storage::state::SessionState,
        bodies: &storage::bodies::Bodies,
        live: bool,
    ) -> (crate::ids::SessionId, usize) {
        let now = self.now;
        let mut messages = 0;
        let mut limits = crate::session::SessionLimits::new(
            usize::from(self.config.inflight_count_max),
            self.config.session_queue_count_max,
            self.config.session_queue_bytes_max,
        );
        limits.full_policy = self.config.session_queue_full_policy;
        let mut session = Session::new(ByteString::from(client), ProtocolVersion::V311, limits);
        session.durable = true;
        session.expiry_interval = st.expiry;
        session.expires_at =
            (st.expiry != u32::MAX).then(|| now + Duration::from_secs(u64::from(st.expiry)));
        for (seq, m) in st.messages {
            self.durable.ids_above(seq);
            let stored = storage::compact::stored(bodies.get(m.body), m.qos, m.retain);
            let Some(message) = stored
                .as_ref()
                .and_then(|s| crate::session::unstored(s, now))
            else {
                tracing::warn!(seq, "recovered message with undecodable properties dropped");
                continue;
            };
            let grant = Grant {
                qos: message.qos,
                retain: m.retain,
                sub_ids: crate::session::SubIds::None,
                shared: None,
            };
            session.restore(seq, message, grant, m.packet_id, m.released);
            messages += 1;
        }
        for packet_id in st.qos2_received {
            session.restore_inbound_qos2(packet_id);
        }
        let subs: Vec<_> = st.subscriptions.into_values().collect();
        let sid = self.add_session(session);
        for sub in subs {
            let Ok(options) = net::codec::SubscriptionOptions::from_byte(sub.options) else {
                tracing::warn!(filter = %sub.filter, "recovered subscription with invalid options dropped");
                continue;
            };
            let filter = ByteString::from(sub.filter);
            if let Some(s) = self.session_mut(sid) {
                s.subscriptions
                    .insert(filter.clone(), (options, sub.sub_id));
            }
            let first = self.router.subscribe(&filter, sid, options, sub.sub_id);
            if live && (first || self.cluster.is_some()) {
                self.route_changed(&filter, sid, true, first.then_some(true));
            }
        }
        (sid, messages)
    }
}

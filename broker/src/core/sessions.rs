//! Sessions on their home shard: adding and removing them (with their routes, their will and
//! their unfinished shared messages), a connection going away, and the periodic tick.

use std::time::Duration;

use bytestring::ByteString;
use net::codec::ReasonCode;

use super::{Core, Origin};
use crate::ids::{ConnId, SessionId};
use crate::session::{Message, Session};

impl Core {
    pub(crate) fn add_session(&mut self, session: Session) -> SessionId {
        let client_id = session.client_id.clone();
        let sid = match self.free_sessions.take() {
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
        self.take_drops(sid);
        self.release_publishers(sid);
        self.feeds.remove(&sid);
        let Some(mut session) = self.sessions.get_mut(sid.0 as usize).and_then(Option::take) else {
            return;
        };
        self.by_client.remove(&session.client_id);
        self.session_ended(&session.client_id);
        for filter in session.subscriptions.keys() {
            self.unroute(filter, sid);
        }
        self.free_sessions.put(sid.0);
        if session.durable {
            session.journal_end();
        }
        for entry in &session.journal {
            self.durable.append_journal(&session.client_id, entry, None);
        }
        session.journal.clear();
        let replaced = self
            .owners
            .as_ref()
            .is_none_or(|o| o.accepting.as_deref() == Some(&*session.client_id));
        if !replaced {
            // Its last writes are encoded (guarded by its epoch): nothing more is kept. Not
            // for a session a claimed CONNECT replaces: the new one writes under that epoch.
            self.durable.session_forgotten(&session.client_id);
        }
        if session.conn.is_none() {
            if let Some(will) = session.will.take() {
                self.publish(will, Origin::Broker);
            }
        }
        self.note_will_gone(&session.client_id);
        for (filter, message) in session.take_shared_unfinished() {
            match self.router.pick_member(&filter, self.id, self.id) {
                Some(pick) => {
                    let log_id = self.durable.next_message_id();
                    self.deliver_shared(pick, &message, 0, super::peer::AckRef::NONE, log_id);
                }
                None => {
                    self.stats.dropped_no_subscriber += 1;
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
                self.route_changed(filter, sid, false, Some(false));
                true
            }
            Some(false) => {
                if self.cluster.is_some() {
                    // Maybe the last persistent subscriber left.
                    self.route_changed(filter, sid, false, None);
                }
                true
            }
            None => false,
        }
    }

    pub(crate) fn session_disconnected(&mut self, sid: SessionId, id: ConnId) {
        let now = self.now;
        let noted = !self.wills_noted.is_empty();
        let Some(session) = self.session_mut(sid) else {
            return;
        };
        if session.conn != Some(id) {
            return;
        }
        // For the cluster's copy of its will (`wills.rs`), once the session is settled.
        let client = noted.then(|| session.client_id.clone());
        session.conn = None;
        // Offline, the queue policy applies instead: its publishers go on.
        self.release_publishers(sid);
        self.park_retained(sid);
        let Some(session) = self.session_mut(sid) else {
            return;
        };
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
            secs => {
                session.expires_at = Some(now + Duration::from_secs(u64::from(secs)));
                if session.durable {
                    let client = session.client_id.clone();
                    self.durable.session_offline(&client, secs);
                }
            }
        }
        if let Some(will) = will_now {
            self.publish(will, Origin::Broker);
        }
        if let Some(client) = client {
            self.note_will_gone(&client);
        }
    }

    /// A new client id for a client that sent none (MQTT 5), homed on this shard (so a
    /// reconnect with it finds the session here). About `shards` tries.
    pub(crate) fn next_assigned_client_id(&mut self) -> ByteString {
        // Unique across restarts (the start time: a container's pid repeats) and, with
        // sessions shared through Redis, across brokers (the broker id).
        let broker = self.shared_broker_id();
        loop {
            self.next_assigned_id += 1;
            let id = match &broker {
                Some(b) => format!(
                    "ringmq-{b}-{}-{:x}-{}",
                    self.id.0, self.started_ms, self.next_assigned_id
                ),
                None => format!(
                    "ringmq-{}-{}-{:x}-{}",
                    self.id.0,
                    std::process::id(),
                    self.started_ms,
                    self.next_assigned_id
                ),
            };
            if crate::ids::home_shard(id.as_bytes(), self.shards) == self.id {
                return ByteString::from(id);
            }
        }
    }

    /// The shard's periodic work (every 250 ms): CONNECT and keep-alive timeouts, session
    /// expiry, delayed wills, retained tombstones, store maintenance, metrics and `$SYS`.
    pub fn tick(&mut self) {
        self.refresh_auth();
        self.release_held_routes();
        let now = self.now;
        let connect_timeout = Duration::from_millis(self.config.connect_timeout_ms);
        let handshake_timeout = Duration::from_millis(self.config.handshake_timeout_ms);
        let mut expired = Vec::new();
        let mut connected = 0u64;
        for conn in self.links.iter().flatten() {
            if conn.closing {
                continue;
            }
            connected += u64::from(conn.session.is_some());
            match (conn.session, conn.keep_alive) {
                (None, _)
                    if conn.handshaking
                        && now.duration_since(conn.accepted_at) > handshake_timeout =>
                {
                    expired.push((
                        conn.id,
                        None,
                        "TLS / WebSocket handshake not finished within handshake_timeout_ms",
                    ));
                }
                // A CONNECT waiting for its claim in Redis has come (the claim answers or
                // fails within its own bounds).
                (None, _)
                    if now.duration_since(conn.accepted_at) > connect_timeout
                        && !self.claiming(conn.id) =>
                {
                    expired.push((conn.id, None, "no CONNECT within connect_timeout_ms"));
                }
                // A publisher held by backpressure is not read: its silence is ours.
                (Some(_), Some(ka))
                    if conn.held_by == 0 && now.duration_since(conn.last_seen) > ka =>
                {
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
        self.close_stuck_consumers();
        self.owners_tick();
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
        let due_wills: Vec<(ByteString, Message)> = self
            .sessions
            .iter_mut()
            .flatten()
            .filter(|s| s.conn.is_none() && s.will_due.is_some_and(|t| t <= now))
            .filter_map(|s| {
                s.will_due = None;
                Some((s.client_id.clone(), s.will.take()?))
            })
            .collect();
        for (client, will) in due_wills {
            self.publish(will, Origin::Broker);
            self.note_will_gone(&client);
        }
        self.retained.prune(now);
        let budget = self.config.compaction_bytes_per_second / 4;
        self.durable.maintain(budget);
        self.publish_metrics(connected);
    }

    fn publish_metrics(&mut self, connected: u64) {
        self.stats.clients_connected = connected;
        self.stats.sessions = self.by_client.len() as u64;
        self.stats.retained = self.retained.len() as u64;
        self.stats.acks_held = self.durable.held_len() as u64;
        self.stats.store_up = u64::from(self.durable.available());
        // The sinks' and sources' histograms, in `metrics::HISTOGRAMS` order after the first.
        let mut feeds = [crate::metrics::Histogram::default(); 4];
        if !self.sinks.is_empty() {
            let c = self.sinks.counts("kafka");
            feeds[0] = c.latency;
            self.stats.kafka_delivered = c.delivered;
            self.stats.kafka_failed = c.failed;
            self.stats.kafka_in_flight = c.in_flight;
            self.stats.kafka_backlog = c.backlog;
            self.stats.kafka_backlog_bytes = c.backlog_bytes;
            self.stats.kafka_producers_replaced = c.replaced;
            self.stats.kafka_dead_letters = c.dead;
            self.stats.kafka_latency_millis = c.latency.sum;
            let c = self.sinks.counts("cluster");
            feeds[1] = c.latency;
            self.stats.cluster_out_delivered = c.delivered;
            self.stats.cluster_out_failed = c.failed;
            self.stats.cluster_out_in_flight = c.in_flight;
            self.stats.cluster_out_latency_millis = c.latency.sum;
            self.stats.cluster_acks_delayed = c.delayed;
        }
        if !self.sources.is_empty() {
            let c = self.sources.counts("kafka:");
            feeds[2] = c.lag;
            self.stats.kafka_in_received = c.received;
            self.stats.kafka_in_handed_on = c.handed_on;
            self.stats.kafka_in_refused = c.refused;
            self.stats.kafka_in_invalid = c.invalid;
            self.stats.kafka_in_behind = c.behind;
            let c = self.sources.counts("cluster:");
            feeds[3] = c.lag;
            self.stats.cluster_in_received = c.received;
            self.stats.cluster_in_handed_on = c.handed_on;
            self.stats.cluster_in_behind = c.behind;
        }
        if let Some(feed) = self.cluster.as_ref().filter(|_| self.id.0 == 0) {
            self.stats.cluster_nodes_live = feed.nodes_live();
            self.stats.cluster_nodes_known = feed.nodes_known();
            self.stats.cluster_nodes_congested = feed.nodes_congested();
            self.stats.cluster_wills_published = feed.wills.published();
            self.stats.cluster_routes_producers_replaced = feed.routes_producers_replaced();
            self.stats.cluster_salvaged = feed.claims.forwarded();
            self.stats.cluster_moved_followed = feed.handovers.len() as u64;
        }
        let [kafka, cluster, kafka_in, cluster_in] = &feeds;
        let histograms = [&self.latency, kafka, cluster, kafka_in, cluster_in];
        self.metrics.store(self.id.index(), &self.stats, histograms);
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

    /// Shutdown: every connection is told (MQTT 5: DISCONNECT 0x8B) and closed.
    pub fn shutdown(&mut self) {
        for id in self.link_ids() {
            self.close(
                id,
                Some(ReasonCode::SERVER_SHUTTING_DOWN),
                "server shutting down",
            );
        }
    }
}

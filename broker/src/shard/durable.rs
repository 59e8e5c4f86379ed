//! What the shard does with its durable log ([`super::journal::Journal`]): rebuilding
//! sessions, routes and retained messages from a recovered log, moving session journals into
//! the log, group commits through the ring, and the acknowledgements held until durable.

use std::time::Duration;

use bytestring::ByteString;
use net::codec::{Packet, ProtocolVersion};
use net::uring::Completion;

use super::mesh::ShardMsg;
use super::{reply, token, Shard, KIND_LOG_SYNC, KIND_LOG_WRITE, NO_CONN};
use crate::ids::{ConnId, SessionId, ShardId};
use crate::session::{Grant, Session};

impl Shard {
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
        for (client, st) in state.sessions {
            let limits = crate::session::SessionLimits::new(
                usize::from(self.config.inflight_count_max),
                self.config.session_queue_count_max,
                self.config.session_queue_bytes_max,
            );
            let mut session = Session::new(ByteString::from(client), ProtocolVersion::V311, limits);
            session.durable = true;
            session.expiry_interval = st.expiry;
            session.expires_at =
                (st.expiry != u32::MAX).then(|| now + Duration::from_secs(u64::from(st.expiry)));
            for (seq, m) in st.messages {
                let Some(message) = crate::session::unstored(&m.message, now) else {
                    tracing::warn!(seq, "recovered message with undecodable properties dropped");
                    continue;
                };
                let grant = Grant {
                    qos: message.qos,
                    retain: m.message.retain,
                    sub_id: 0,
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
                let options = crate::handle::subscribe::options_from_byte(sub.options);
                let filter = ByteString::from(sub.filter);
                if let Some(s) = self.session_mut(sid) {
                    s.subscriptions
                        .insert(filter.clone(), (options, sub.sub_id));
                }
                self.router.subscribe(&filter, sid, options, sub.sub_id);
            }
            sessions += 1;
        }
        for (filter, peer) in remote_routes {
            self.router.add_remote(&filter, peer);
        }
        let retained_count = retained.len();
        for (m, version) in retained {
            if let Some(message) = crate::session::unstored(&m, now) {
                self.retained.set(&message, version, now);
                self.last_retain_version = self.last_retain_version.max(version);
            }
        }
        tracing::info!(
            shard = self.id.0,
            sessions,
            messages,
            retained = retained_count,
            "recovered from the log"
        );
    }

    /// Moves a session's journal into the log.
    pub(crate) fn journal_of(&mut self, sid: SessionId) {
        let Some(journal) = self.journal.as_mut() else {
            return;
        };
        let Some(session) = self
            .sessions
            .get_mut(sid.0 as usize)
            .and_then(Option::as_mut)
        else {
            return;
        };
        for record in session.journal.drain(..) {
            journal.append(&record);
        }
    }

    /// Appends one record to the log (if there is one).
    pub(crate) fn log(&mut self, record: storage::record::Record) {
        if let Some(j) = self.journal.as_mut() {
            j.append(&record);
        }
    }

    /// Sends `packet` (a PUBACK or PUBREC) once the publish it answers is durable: the records
    /// appended since `before` here, and the `peers` its copies carrying `token` went to.
    pub(crate) fn ack_when_durable(
        &mut self,
        id: ConnId,
        packet: Packet,
        before: u64,
        token: Option<u64>,
        peers: usize,
    ) {
        let Some(j) = self.journal.as_mut().filter(|j| j.holds_acks()) else {
            return reply(self, id, &packet);
        };
        let mark = j.appended();
        let mark = if mark > before { mark } else { 0 };
        let token = token.unwrap_or_else(|| j.next_token());
        for (conn, packet) in j.hold(token, id, packet, mark, peers) {
            self.reply_ack(conn, &packet);
        }
    }

    /// Sends a released acknowledgement. A refusal (the log could not be written) goes to an
    /// MQTT 5 client as the reason code; an MQTT 3 client cannot be refused, so its connection
    /// closes and it publishes again after reconnecting.
    pub(super) fn reply_ack(&mut self, conn: ConnId, packet: &Packet) {
        let refused = matches!(packet, Packet::PubResp(r) if r.reason.0 >= 0x80);
        let v5 = self
            .conn_mut(conn)
            .is_some_and(|c| c.decoder.version.is_v5());
        if refused && !v5 {
            return self.close(conn, None, "cannot acknowledge: the log write failed");
        }
        reply(self, conn, packet);
    }

    /// Answers in the publish flow (PUBACK, PUBREC, PUBCOMP) leave in order: behind any held
    /// acknowledgement of the same connection.
    pub(crate) fn reply_in_order(&mut self, id: ConnId, packet: Packet) {
        let Some(j) = self.journal.as_mut().filter(|j| j.has_held(id)) else {
            return reply(self, id, &packet);
        };
        let token = j.next_token();
        for (conn, packet) in j.hold(token, id, packet, 0, 0) {
            self.reply_ack(conn, &packet);
        }
    }

    /// Starts the next group commit if one is due and none is in flight.
    pub(super) fn commit_log(&mut self) {
        let now = self.now;
        let Some((fd, flight)) = self.journal.as_mut().and_then(|j| j.due(now)) else {
            return;
        };
        let (write, sync) = (
            token(KIND_LOG_WRITE, NO_CONN),
            token(KIND_LOG_SYNC, NO_CONN),
        );
        if let Err(buf) =
            self.ring
                .write_and_sync(fd, flight.buf, flight.range, flight.offset, write, sync)
        {
            if let Some(j) = self.journal.as_mut() {
                j.not_sent(buf);
            }
        }
    }

    pub(super) fn on_log_completion(&mut self, c: Completion) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        let released = if c.token >> 56 == KIND_LOG_WRITE {
            j.write_done(c.write_buf, c.result)
        } else {
            j.sync_done(c.result)
        };
        let Some(released) = released else {
            return;
        };
        for (conn, packet) in released.acks {
            self.reply_ack(conn, &packet);
        }
        for (origin, token, ok) in released.peer_acks {
            self.send_to_peer(origin, ShardMsg::DurableAck(token, ok));
        }
    }
}

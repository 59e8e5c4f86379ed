//! Acknowledgements and records: session journals moved into the store, PUBACK / PUBREC
//! held on the ledger until durable (and confirmed by peers and sinks), answers kept in each
//! connection's order, the store's completions and the sinks' confirmations applied.

use net::codec::{Packet, PubResp};

use super::peer::ShardMsg;
use super::Core;
use crate::ids::{ConnId, SessionId};
use crate::session::Message;

/// Writes a session's done sequence numbers as one record, if it has any.
fn write_acked(durable: &mut crate::durable::Durable, session: &mut crate::session::Session) {
    if !session.acked.is_empty() {
        durable.append_acked(&session.client_id, &session.acked);
        session.acked.clear();
    }
}

impl Core {
    /// Moves a session's journal into the log; its done sequence numbers wait for the end of
    /// the loop pass ([`Core::flush_acked`]). The journal holds no queued message (those are
    /// written by [`Core::journal_with`] as they are delivered).
    pub(crate) fn journal_of(&mut self, sid: SessionId) {
        self.journal_with(sid, None);
    }

    /// [`Core::journal_of`] right after `message` was given to the session: the journal's
    /// queued entries are that message.
    pub(crate) fn journal_with(&mut self, sid: SessionId, message: Option<&Message>) {
        let Some(session) = self
            .sessions
            .get_mut(sid.0 as usize)
            .and_then(Option::as_mut)
        else {
            return;
        };
        // A done message's packet id may be given to the next one in the same pass: its
        // `Acked` goes before that `Sent`, or a crash between them would restore both under
        // one id.
        if !session.acked.is_empty() && session.journal_has_send() {
            write_acked(&mut self.durable, session);
        }
        // Written in place and then dropped in place: an entry is not moved out (a memcpy
        // of a message's size per entry).
        for entry in &session.journal {
            self.durable
                .append_journal(&session.client_id, entry, message);
        }
        session.journal.clear();
        if !session.acked.is_empty() && !session.acked_listed {
            session.acked_listed = true;
            self.acked_dirty.push(sid);
        }
    }

    /// Writes each session's done sequence numbers of this loop pass as one record (called
    /// once per pass, before the store's next batch is taken).
    pub fn flush_acked(&mut self) {
        let mut dirty = std::mem::take(&mut self.acked_dirty);
        for sid in dirty.drain(..) {
            let Some(session) = self
                .sessions
                .get_mut(sid.0 as usize)
                .and_then(Option::as_mut)
            else {
                continue;
            };
            session.acked_listed = false;
            write_acked(&mut self.durable, session);
        }
        self.acked_dirty = dirty;
    }

    /// Sends `packet` (a PUBACK or PUBREC) once the publish it answers is durable: the records
    /// appended since `before` here, and the `peers` its copies carrying `token` went to.
    pub(crate) fn ack_when_durable(
        &mut self,
        id: ConnId,
        packet: PubResp,
        before: u64,
        token: Option<u64>,
        peers: usize,
    ) {
        if token.is_none() && !self.durable.holds_acks() && !self.durable.has_held(id) {
            return self.reply_ack(id, packet);
        }
        let mark = self.durable.appended();
        let mark = if mark > before && self.durable.holds_acks() {
            mark
        } else {
            0
        };
        let token = token.unwrap_or_else(|| self.durable.next_token());
        for (conn, packet) in self.durable.hold(token, id, packet, mark, peers) {
            self.reply_ack(conn, packet);
        }
    }

    /// Sends a released acknowledgement. A refusal (the log could not be written) goes to an
    /// MQTT 5 client as the reason code; an MQTT 3 client cannot be refused, so its connection
    /// closes and it publishes again after reconnecting.
    pub(crate) fn reply_ack(&mut self, conn: ConnId, r: PubResp) {
        if crate::source::Sources::is_lane(conn) {
            // A source's message: the source learns it was handed on (or refused).
            return self.sources.released(conn, r.reason.0 < 0x80);
        }
        let refused = r.reason.0 >= 0x80;
        let v5 = self
            .conn_mut(conn)
            .is_some_and(|c| c.decoder.version.is_v5());
        if refused && !v5 {
            return self.close(
                conn,
                None,
                "cannot acknowledge: the store or a sink refused the message",
            );
        }
        if refused && r.kind == net::codec::PubRespKind::PubRec {
            // A refused QoS 2 flow ends at this PUBREC [MQTT-4.3.3-9]: the client may
            // reuse the id at once.
            if let Some(sid) = self.conn_mut(conn).and_then(|c| c.session) {
                if let Some(session) = self.session_mut(sid) {
                    session.inbound_qos2_release(r.packet_id);
                }
                self.journal_of(sid);
            }
        }
        self.reply(conn, &Packet::PubResp(r));
    }

    /// Answers in the publish flow (PUBACK, PUBREC, PUBCOMP) leave in order: behind any held
    /// acknowledgement of the same connection.
    pub(crate) fn reply_in_order(&mut self, id: ConnId, packet: PubResp) {
        if !self.durable.has_held(id) {
            return self.reply(id, &Packet::PubResp(packet));
        }
        let token = self.durable.next_token();
        for (conn, packet) in self.durable.hold(token, id, packet, 0, 0) {
            self.reply_ack(conn, packet);
        }
    }

    /// One completion of the store's I/O: acknowledgements a landed batch released go out,
    /// peers waiting for this shard's records are told.
    pub fn store_io_done(&mut self, done: storage::store::IoDone) {
        let Some(mut released) = self.durable.io_done(done, self.now, &mut self.stats) else {
            return;
        };
        self.stats.acks_released += released.acks.len() as u64;
        for (conn, packet) in released.acks.drain(..) {
            self.reply_ack(conn, packet);
        }
        for (origin, token, ok) in released.peer_acks.drain(..) {
            self.send_to_peer(origin, ShardMsg::DurableAck(token, ok));
        }
        self.durable.recycle(released);
    }

    /// Confirmations sinks have made since the last pass: held acknowledgements they
    /// release go out.
    pub fn poll_sinks(&mut self) {
        if self.sinks.is_empty() {
            return;
        }
        // SUBACKs whose route records Kafka acknowledged (a cluster node).
        while let Some(token) = self.cluster.as_ref().and_then(|f| f.answered(self.id)) {
            self.barrier_acked(token);
        }
        for (token, ok) in self.sinks.confirmed() {
            self.confirmed(token, ok);
        }
    }

    /// A peer or sink answered `token`: the acknowledgements it released go out, and the
    /// peers a relay of theirs waited for are told.
    pub(crate) fn confirmed(&mut self, token: u64, ok: bool) {
        for (conn, packet) in self.durable.peer_confirmed(token, ok) {
            self.reply_ack(conn, packet);
        }
        for (origin, token, ok) in self.durable.take_told() {
            self.send_to_peer(origin, ShardMsg::DurableAck(token, ok));
        }
    }
}

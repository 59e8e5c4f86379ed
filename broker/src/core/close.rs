//! Closing connections: [`Core::close`] (optionally telling an MQTT 5 client why, the
//! session detached, the socket closed by the reactor once the output is flushed) and
//! [`Core::reject`] for bad input or a protocol violation (counted, one log line).

use bytestring::ByteString;
use net::codec::{Disconnect, Packet, ProtocolVersion, ReasonCode};

use super::{Core, Effect};
use crate::ids::ConnId;

impl Core {
    /// Starts closing a connection: optionally tells an MQTT 5 client why (DISCONNECT with
    /// `reason`), detaches its session; the reactor closes the socket once the output is
    /// flushed. Logs one line.
    pub fn close(&mut self, id: ConnId, reason: Option<ReasonCode>, why: &str) {
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
        let client = session
            .and_then(|sid| self.sessions.get(sid.0 as usize))
            .and_then(Option::as_ref)
            .map(|s| s.client_id.clone());
        tracing::debug!(shard = self.id.0, client = ?client.as_deref(), "closing connection: {why}");
        if let Some(sid) = session {
            self.session_disconnected(sid, id);
        }
        self.effects.push_back(Effect::Close(id));
        self.mark_dirty(id);
    }

    /// The client id of connection `id`'s session, if it has one (for log lines).
    pub(crate) fn client_of(&mut self, id: ConnId) -> Option<ByteString> {
        let sid = self.conn_mut(id)?.session?;
        self.sessions
            .get(sid.0 as usize)?
            .as_ref()
            .map(|s| s.client_id.clone())
    }

    /// Closes a connection for bad input or a protocol violation: counted, and logged as one
    /// line at info level naming the client (if known) and the rule.
    pub(crate) fn reject(&mut self, id: ConnId, reason: Option<ReasonCode>, why: &str) {
        self.stats.protocol_errors += 1;
        let client = self.client_of(id);
        tracing::info!(shard = self.id.0, client = ?client.as_deref(), reason = ?reason.map(|r| r.0), "rejecting connection: {why}");
        self.close(id, reason, why);
    }
}

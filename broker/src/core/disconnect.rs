//! DISCONNECT from a client: a normal close, which discards the will unless the MQTT 5
//! reason is 0x04 (disconnect with will message); MQTT 5 may change the session expiry
//! interval.

use net::codec::{Disconnect, ReasonCode};

use super::Core;
use crate::ids::ConnId;

pub(crate) fn on_disconnect(core: &mut Core, id: ConnId, d: Disconnect) {
    if let Some(secs) = d.properties.session_expiry_interval {
        let sid = core.conn_mut(id).and_then(|c| c.session);
        if let Some(session) = sid.and_then(|sid| core.session_mut(sid)) {
            if session.expiry_interval == 0 && secs != 0 {
                // [MQTT-3.14.2-2]: a session that was to end at disconnect cannot be extended.
                return core.reject(
                    id,
                    Some(ReasonCode::PROTOCOL_ERROR),
                    "session expiry set at DISCONNECT after 0 at CONNECT",
                );
            }
            session.expiry_interval = secs;
            if secs != 0 {
                session.journal_expiry();
            }
        }
    }
    if d.reason != ReasonCode::DISCONNECT_WITH_WILL_MESSAGE {
        let sid = core.conn_mut(id).and_then(|c| c.session);
        if let Some(session) = sid.and_then(|sid| core.session_mut(sid)) {
            session.will = None;
        }
    }
    core.close(id, None, "client disconnected");
}

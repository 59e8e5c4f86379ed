//! PUBACK, PUBREC, PUBREL and PUBCOMP from a client.

use net::codec::{PubResp, PubRespKind, ReasonCode};

use super::Core;
use crate::ids::ConnId;

pub(crate) fn on_pub_resp(core: &mut Core, id: ConnId, r: PubResp) {
    let Some(sid) = core.conn_mut(id).and_then(|c| c.session) else {
        // `Core::packet` hands these packets over only for connected links.
        return core.invariant_broken("a packet after CONNECT on a link without a session");
    };
    let now = core.now;
    let Some((session, conn)) = core.session_and_conn(sid, id) else {
        return;
    };
    match r.kind {
        PubRespKind::PubAck => {
            session.on_puback(r.packet_id, now, &mut conn.out);
        }
        PubRespKind::PubRec => {
            session.on_pubrec(&r, now, &mut conn.out);
        }
        PubRespKind::PubComp => {
            session.on_pubcomp(r.packet_id, now, &mut conn.out);
        }
        PubRespKind::PubRel => {
            let known = session.inbound_qos2_release(r.packet_id);
            core.journal_of(sid);
            let mut comp = PubResp::new(PubRespKind::PubComp, r.packet_id);
            if !known {
                comp.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
            }
            return core.reply_in_order(id, comp);
        }
    }
    let dirty = !conn.out.is_empty();
    let drops = session.drops.total != 0;
    if session.journal_pending() {
        core.journal_of(sid);
    }
    if drops {
        core.take_drops(sid);
    }
    if !core.congested.is_empty() {
        core.relieve(sid);
    }
    if dirty {
        core.mark_dirty(id);
    }
    if core.feeds.contains_key(&sid) {
        core.pump_retained(sid);
    }
}

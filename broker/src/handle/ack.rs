//! PUBACK, PUBREC, PUBREL and PUBCOMP from a client.

use net::codec::{Packet, PubResp, PubRespKind, ReasonCode};

use crate::ids::ConnId;
use crate::shard::Shard;

pub(crate) fn on_pub_resp(shard: &mut Shard, id: ConnId, r: PubResp) {
    let Some(sid) = shard.conn_mut(id).and_then(|c| c.session) else {
        return;
    };
    let now = shard.now;
    let Some((session, conn)) = shard.session_and_conn(sid, id) else {
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
            shard.journal_of(sid);
            let mut comp = PubResp::new(PubRespKind::PubComp, r.packet_id);
            if !known {
                comp.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
            }
            return shard.reply_in_order(id, Packet::PubResp(comp));
        }
    }
    let dirty = !conn.out.is_empty();
    if !session.journal.is_empty() {
        shard.journal_of(sid);
    }
    if dirty {
        shard.mark_dirty(id);
    }
}

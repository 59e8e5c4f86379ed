//! PUBACK, PUBREC, PUBREL and PUBCOMP from a client.

use net::codec::{Packet, PubResp, PubRespKind, ReasonCode};

use crate::ids::ConnId;
use crate::shard::{reply, Shard};

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
            let mut comp = PubResp::new(PubRespKind::PubComp, r.packet_id);
            if !known {
                comp.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
            }
            return reply(shard, id, &Packet::PubResp(comp));
        }
    }
    if !conn.out.is_empty() {
        shard.mark_dirty(id);
    }
}

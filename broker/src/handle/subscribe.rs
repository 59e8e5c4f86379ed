//! SUBSCRIBE and UNSUBSCRIBE: the session's subscriptions, the local route table, and the
//! route updates peers need.

use net::codec::{Packet, QoS, ReasonCode, SubAck, Subscribe, UnsubAck, Unsubscribe};
use net::topic::is_shared;

use crate::ids::ConnId;
use crate::shard::mesh::ShardMsg;
use crate::shard::{reply, Shard};

pub(crate) fn on_subscribe(shard: &mut Shard, id: ConnId, s: Subscribe) {
    let Some(sid) = shard.conn_mut(id).and_then(|c| c.session) else {
        return;
    };
    let v5 = shard
        .conn_mut(id)
        .is_some_and(|c| c.decoder.version.is_v5());
    let mut reasons = Vec::with_capacity(s.filters.len());
    for (filter, options) in s.filters {
        if is_shared(&filter) {
            reasons.push(if v5 {
                ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
            } else {
                ReasonCode::V3_SUBACK_FAILURE
            });
            continue;
        }
        let Some(session) = shard.session_mut(sid) else {
            return;
        };
        session.subscriptions.insert(filter.clone(), options);
        if shard.router.subscribe(&filter, sid, options) {
            shard.broadcast(|| ShardMsg::RouteAdd(filter.clone()));
        }
        let granted = options.qos.min(QoS::ExactlyOnce);
        reasons.push(ReasonCode(granted as u8));
    }
    let ack = SubAck {
        packet_id: s.packet_id,
        properties: Default::default(),
        reasons,
    };
    shard.reply_after_routes(id, Packet::SubAck(ack));
}

pub(crate) fn on_unsubscribe(shard: &mut Shard, id: ConnId, u: Unsubscribe) {
    let Some(sid) = shard.conn_mut(id).and_then(|c| c.session) else {
        return;
    };
    let v5 = shard
        .conn_mut(id)
        .is_some_and(|c| c.decoder.version.is_v5());
    let mut reasons = Vec::with_capacity(u.filters.len());
    for filter in u.filters {
        let existed = shard
            .session_mut(sid)
            .and_then(|s| s.subscriptions.remove(&filter))
            .is_some();
        if existed {
            shard.unroute(&filter, sid);
        }
        reasons.push(if existed {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::NO_SUBSCRIPTION_EXISTED
        });
    }
    if !v5 {
        reasons.clear();
    }
    let ack = UnsubAck {
        packet_id: u.packet_id,
        properties: Default::default(),
        reasons,
    };
    reply(shard, id, &Packet::UnsubAck(ack));
}

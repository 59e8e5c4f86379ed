//! PUBLISH from a client: the spec checks the codec cannot make (they depend on connection
//! state), QoS 2 exactly-once on receipt, routing, and the acknowledgement.

use net::codec::{Packet, PubResp, PubRespKind, Publish, QoS, ReasonCode};

use crate::ids::ConnId;
use crate::session::Message;
use crate::shard::{reply, Shard};

pub(crate) fn on_publish(shard: &mut Shard, id: ConnId, mut p: Publish) {
    shard.stats.publishes_in += 1;
    let Some(sid) = shard.conn_mut(id).and_then(|c| c.session) else {
        return;
    };
    if p.properties.topic_alias.is_some() {
        // CONNACK announced a topic alias maximum of 0 [MQTT-3.3.2-9].
        return shard.reject(
            id,
            Some(ReasonCode::TOPIC_ALIAS_INVALID),
            "topic alias sent but not allowed",
        );
    }
    if !p.properties.subscription_identifiers.is_empty() {
        return shard.reject(
            id,
            Some(ReasonCode::PROTOCOL_ERROR),
            "subscription identifier in a client PUBLISH [MQTT-3.3.4-6]",
        );
    }
    let max_inbound = usize::from(shard.config.inflight_count_max);
    if let (QoS::ExactlyOnce, Some(pid)) = (p.qos, p.packet_id) {
        let Some(session) = shard.session_mut(sid) else {
            return;
        };
        if !session.inbound_qos2_begin(pid) {
            // A retransmission of a message already received: acknowledge, do not deliver.
            return reply(
                shard,
                id,
                &Packet::PubResp(PubResp::new(PubRespKind::PubRec, pid)),
            );
        }
        if session.inbound_qos2_len() > max_inbound {
            return shard.reject(
                id,
                Some(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED),
                "receive maximum exceeded [MQTT-3.3.4-9]",
            );
        }
    }
    let message = Message {
        topic: p.topic,
        payload: p.payload,
        qos: p.qos,
        retain: p.retain,
        properties: std::mem::take(&mut p.properties),
    };
    shard.route(message, Some(sid));
    match (p.qos, p.packet_id) {
        (QoS::AtLeastOnce, Some(pid)) => reply(
            shard,
            id,
            &Packet::PubResp(PubResp::new(PubRespKind::PubAck, pid)),
        ),
        (QoS::ExactlyOnce, Some(pid)) => reply(
            shard,
            id,
            &Packet::PubResp(PubResp::new(PubRespKind::PubRec, pid)),
        ),
        _ => {}
    }
}

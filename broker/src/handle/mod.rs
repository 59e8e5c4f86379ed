//! Packet handling, one file per packet kind. Each handler runs on the connection's shard
//! (after CONNECT, the session's home shard) and works on the shard's state directly.

pub mod ack;
pub mod connect;
pub mod disconnect;
pub mod publish;
pub mod subscribe;

use net::codec::{Packet, ReasonCode};

use crate::ids::ConnId;
use crate::shard::{reply, Shard};

/// Dispatches one decoded packet from connection `id`.
pub(crate) fn packet(shard: &mut Shard, id: ConnId, packet: Packet) {
    let connected = shard.conn_mut(id).is_some_and(|c| c.session.is_some());
    match packet {
        Packet::Connect(c) if !connected => connect::on_connect(shard, id, c),
        Packet::Connect(_) => {
            shard.reject(
                id,
                Some(ReasonCode::PROTOCOL_ERROR),
                "second CONNECT [MQTT-3.1.0-2]",
            );
        }
        _ if !connected => {
            shard.reject(id, None, "packet before CONNECT [MQTT-3.1.0-1]");
        }
        Packet::Publish(p) => publish::on_publish(shard, id, p),
        Packet::PubResp(r) => ack::on_pub_resp(shard, id, r),
        Packet::Subscribe(s) => subscribe::on_subscribe(shard, id, s),
        Packet::Unsubscribe(u) => subscribe::on_unsubscribe(shard, id, u),
        Packet::PingReq => reply(shard, id, &Packet::PingResp),
        Packet::Disconnect(d) => disconnect::on_disconnect(shard, id, d),
        Packet::Auth(_) => {
            shard.reject(
                id,
                Some(ReasonCode::PROTOCOL_ERROR),
                "AUTH without an authentication method",
            );
        }
        Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
            shard.reject(
                id,
                Some(ReasonCode::PROTOCOL_ERROR),
                "server-to-client packet from a client",
            );
        }
    }
}

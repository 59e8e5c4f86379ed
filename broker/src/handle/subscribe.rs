//! SUBSCRIBE and UNSUBSCRIBE: the session's subscriptions, the local route table, the route
//! updates peers need, the checks (ACL, limits, shared-subscription rules) and the retained
//! messages a new subscription receives.

use bytestring::ByteString;
use net::codec::{
    Packet, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck,
    Unsubscribe,
};
use net::topic::is_shared;
use storage::record::{Record, StoredSubscription};

use crate::ids::ConnId;
use crate::shard::mesh::ShardMsg;
use crate::shard::{reply, RetainedWanted, Shard};

pub(crate) fn on_subscribe(shard: &mut Shard, id: ConnId, s: Subscribe) {
    let Some(sid) = shard.conn_mut(id).and_then(|c| c.session) else {
        return;
    };
    let (v5, problem_info) = shard.conn_mut(id).map_or((false, false), |c| {
        (c.decoder.version.is_v5(), c.problem_info)
    });
    let sub_id = s
        .properties
        .subscription_identifiers
        .first()
        .copied()
        .unwrap_or(0);
    let max_qos = shard.config.max_qos();
    let mut reasons = Vec::with_capacity(s.filters.len());
    let mut retained: RetainedWanted = Vec::new();
    let mut refused = None;
    for (filter, options) in s.filters {
        let shared = is_shared(&filter);
        if shared && options.no_local {
            return shard.reject(
                id,
                Some(ReasonCode::PROTOCOL_ERROR),
                "no local on a shared subscription [MQTT-3.8.3-4]",
            );
        }
        let Some(session) = shard.session_mut(sid) else {
            return;
        };
        let (user, client) = (session.user.clone(), session.client_id.clone());
        let existed = session.subscriptions.contains_key(&filter);
        let count = session.subscriptions.len();
        let refusal = if filter.split('/').count()
            > shard.config.topic_levels_max + 2 * usize::from(shared)
        {
            Some((
                ReasonCode::TOPIC_FILTER_INVALID,
                "filter has more levels than topic_levels_max",
            ))
        } else if !existed && count >= shard.config.subscriptions_per_session_max {
            Some((
                ReasonCode::QUOTA_EXCEEDED,
                "subscriptions_per_session_max reached",
            ))
        } else if !shard.auth.can_subscribe(user.as_deref(), &client, &filter) {
            shard.stats.auth_denied += 1;
            Some((
                ReasonCode::NOT_AUTHORIZED,
                "subscription not allowed by the ACL",
            ))
        } else {
            None
        };
        if let Some((code, why)) = refusal {
            tracing::debug!(shard = shard.id.0, client = %client, %filter, "subscription refused: {why}");
            reasons.push(if v5 {
                code
            } else {
                ReasonCode::V3_SUBACK_FAILURE
            });
            refused = Some(why);
            continue;
        }
        let mut options = options;
        options.qos = granted(options.qos, max_qos);
        let mut durable = false;
        if let Some(session) = shard.session_mut(sid) {
            session
                .subscriptions
                .insert(filter.clone(), (options, sub_id));
            durable = session.durable;
        }
        if durable {
            shard.log(Record::Subscribe {
                client: client.to_string(),
                sub: StoredSubscription {
                    filter: filter.to_string(),
                    options: options_to_byte(options),
                    sub_id,
                },
            });
        }
        if shard.router.subscribe(&filter, sid, options, sub_id) {
            shard.broadcast(|| ShardMsg::RouteAdd(filter.clone()));
        }
        let send_retained = !shared
            && match options.retain_handling {
                RetainHandling::OnSubscribe => true,
                RetainHandling::OnNewSubscription => !existed,
                RetainHandling::Never => false,
            };
        if send_retained {
            retained.push((filter, options, sub_id));
        }
        reasons.push(ReasonCode(options.qos as u8));
    }
    let mut ack = SubAck {
        packet_id: s.packet_id,
        properties: Default::default(),
        reasons,
    };
    if let (true, true, Some(why)) = (v5, problem_info, refused) {
        ack.properties.reason_string = Some(ByteString::from(why));
    }
    shard.reply_after_routes(id, Packet::SubAck(ack), retained);
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
        let (existed, durable, client) = match shard.session_mut(sid) {
            Some(s) => (
                s.subscriptions.remove(&filter).is_some(),
                s.durable,
                s.client_id.clone(),
            ),
            None => return,
        };
        if existed {
            shard.unroute(&filter, sid);
            if durable {
                shard.log(Record::Unsubscribe {
                    client: client.to_string(),
                    filter: filter.to_string(),
                });
            }
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

/// Subscription options as their wire byte (for the log).
pub fn options_to_byte(o: SubscriptionOptions) -> u8 {
    let rh = match o.retain_handling {
        RetainHandling::OnSubscribe => 0,
        RetainHandling::OnNewSubscription => 1,
        RetainHandling::Never => 2,
    };
    o.qos as u8 | u8::from(o.no_local) << 2 | u8::from(o.retain_as_published) << 3 | rh << 4
}

/// Subscription options from their wire byte.
pub fn options_from_byte(b: u8) -> SubscriptionOptions {
    let qos = match b & 3 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    };
    let mut o = SubscriptionOptions::qos(qos);
    o.no_local = b & 4 != 0;
    o.retain_as_published = b & 8 != 0;
    o.retain_handling = match (b >> 4) & 3 {
        0 => RetainHandling::OnSubscribe,
        1 => RetainHandling::OnNewSubscription,
        _ => RetainHandling::Never,
    };
    o
}

/// The QoS granted to a subscription (the requested one, capped by `qos_max`).
pub fn granted(requested: QoS, max: QoS) -> QoS {
    requested.min(max)
}

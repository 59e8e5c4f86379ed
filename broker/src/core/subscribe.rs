//! SUBSCRIBE and UNSUBSCRIBE: the session's subscriptions, the local route table, the route
//! updates peers need, the checks (ACL, limits, shared-subscription rules) and the retained
//! messages a new subscription receives.

use bytestring::ByteString;
use net::codec::{
    Packet, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use net::topic::is_shared;

use super::{Core, RetainedWanted};
use crate::asyncapi::SubscribeVerdict;
use crate::ids::{ConnId, SessionId};

pub(crate) fn on_subscribe(core: &mut Core, id: ConnId, s: Subscribe) {
    // Set by this SUBSCRIBE's route state changes only (`reply_after_routes` takes it).
    core.cluster_routed = false;
    let Some(sid) = core.conn_mut(id).and_then(|c| c.session) else {
        // `Core::packet` hands these packets over only for connected links.
        return core.invariant_broken("a packet after CONNECT on a link without a session");
    };
    let (v5, problem_info) = core.conn_mut(id).map_or((false, false), |c| {
        (c.decoder.version.is_v5(), c.problem_info)
    });
    let sub_id = s
        .properties
        .subscription_identifiers
        .first()
        .copied()
        .unwrap_or(0);
    let max_qos = core.config.max_qos();
    let mut reasons = Vec::with_capacity(s.filters.len());
    let mut retained: RetainedWanted = Vec::new();
    let mut refused = None;
    let bridge = core.conn_mut(id).is_some_and(|c| c.bridge);
    for (filter, mut options) in s.filters {
        let shared = is_shared(&filter);
        if bridge && !shared {
            // As Mosquitto treats bridges: nothing the bridge published comes back to it,
            // retained messages stay retained.
            options.no_local = true;
            options.retain_as_published = true;
        }
        if shared && options.no_local {
            return core.reject(
                id,
                Some(ReasonCode::PROTOCOL_ERROR),
                "no local on a shared subscription [MQTT-3.8.3-4]",
            );
        }
        let Some(session) = core.session_mut(sid) else {
            return;
        };
        let (user, client) = (session.user.clone(), session.client_id.clone());
        let existed = session.subscriptions.contains_key(&filter);
        let count = session.subscriptions.len();
        let refusal =
            if filter.split('/').count() > core.config.topic_levels_max + 2 * usize::from(shared) {
                Some((
                    ReasonCode::TOPIC_FILTER_INVALID,
                    "filter has more levels than topic_levels_max",
                ))
            } else if !existed && count >= core.config.subscriptions_per_session_max {
                Some((
                    ReasonCode::QUOTA_EXCEEDED,
                    "subscriptions_per_session_max reached",
                ))
            } else if !core.auth.can_subscribe(user.as_deref(), &client, &filter) {
                core.stats.auth_denied += 1;
                Some((
                    ReasonCode::NOT_AUTHORIZED,
                    "subscription not allowed by the ACL",
                ))
            } else {
                api_refusal(core, &filter, shared)
            };
        if let Some((code, why)) = refusal {
            tracing::debug!(shard = core.id.0, client = %client, %filter, "subscription refused: {why}");
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
        if let Some(session) = core.session_mut(sid) {
            session
                .subscriptions
                .insert(filter.clone(), (options, sub_id));
            session.journal_subscribe(&filter, options, sub_id);
        }
        core.journal_of(sid);
        let first = core.router.subscribe(&filter, sid, options, sub_id);
        if first || core.cluster.is_some() {
            core.route_changed(&filter, sid, true, first.then_some(true));
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
    core.reply_after_routes(id, Packet::SubAck(ack), retained);
}

pub(crate) fn on_unsubscribe(core: &mut Core, id: ConnId, u: Unsubscribe) {
    let Some(sid) = core.conn_mut(id).and_then(|c| c.session) else {
        // `Core::packet` hands these packets over only for connected links.
        return core.invariant_broken("a packet after CONNECT on a link without a session");
    };
    let v5 = core.conn_mut(id).is_some_and(|c| c.decoder.version.is_v5());
    let mut reasons = Vec::with_capacity(u.filters.len());
    for filter in u.filters {
        if core.session_mut(sid).is_none() {
            return;
        }
        let existed = drop_subscription(core, sid, &filter);
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
    core.reply(id, &Packet::UnsubAck(ack));
}

/// Removes `sid`'s subscription to `filter` (its route, its record, its retained stream);
/// false if it had none.
fn drop_subscription(core: &mut Core, sid: SessionId, filter: &ByteString) -> bool {
    let Some(s) = core.session_mut(sid) else {
        return false;
    };
    if s.subscriptions.remove(filter).is_none() {
        return false;
    }
    s.journal_unsubscribe(filter);
    core.unroute(filter, sid);
    core.journal_of(sid);
    core.end_retained(sid, filter);
    true
}

/// After the auth settings were reloaded (SIGHUP): every subscription the ACL or the AsyncAPI
/// document no longer allows is removed, as if its client had unsubscribed (MQTT has no way
/// to tell the client; its session carries on with the rest). One line per shard says how
/// many; each is at debug level.
pub(crate) fn recheck_subscriptions(core: &mut Core) {
    let mut revoked: Vec<(SessionId, ByteString)> = Vec::new();
    for (slot, session) in core.sessions.iter().enumerate() {
        let Some(session) = session else { continue };
        let sid = SessionId(slot as u32);
        for filter in session.subscriptions.keys() {
            let user = session.user.as_deref();
            let denied = !core.auth.can_subscribe(user, &session.client_id, filter)
                || api_refusal(core, filter, is_shared(filter)).is_some();
            if denied {
                revoked.push((sid, filter.clone()));
            }
        }
    }
    if revoked.is_empty() {
        return;
    }
    let shard = core.id.0;
    for (sid, filter) in &revoked {
        if let Some(s) = core.session_mut(*sid) {
            tracing::debug!(shard, client = %s.client_id, %filter, "subscription removed: no longer allowed after the reload");
        }
        drop_subscription(core, *sid, filter);
    }
    core.stats.auth_denied += revoked.len() as u64;
    tracing::info!(
        shard = core.id.0,
        subscriptions = revoked.len(),
        "subscriptions no longer allowed by the reloaded ACL or AsyncAPI document removed"
    );
}

/// What the AsyncAPI document says of a filter (the filter inside `$share/group/...`).
fn api_refusal(core: &Core, filter: &str, shared: bool) -> Option<(ReasonCode, &'static str)> {
    let api = core.auth.api.as_ref()?;
    let inner = if shared {
        filter.splitn(3, '/').nth(2).unwrap_or(filter)
    } else {
        filter
    };
    match api.check_subscribe(inner) {
        SubscribeVerdict::Allowed => None,
        SubscribeVerdict::NoChannel => Some((
            ReasonCode::TOPIC_FILTER_INVALID,
            "the filter matches no channel of the AsyncAPI document (asyncapi_strict)",
        )),
        SubscribeVerdict::NotAllowed => Some((
            ReasonCode::NOT_AUTHORIZED,
            "no channel the filter matches lets clients subscribe (AsyncAPI operations)",
        )),
    }
}

/// The QoS granted to a subscription (the requested one, capped by `qos_max`).
pub fn granted(requested: QoS, max: QoS) -> QoS {
    requested.min(max)
}

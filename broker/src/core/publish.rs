//! PUBLISH from a client: the checks that depend on connection state (topic aliases, maximum
//! QoS, retain availability, topic levels, the ACL, the publish rate), QoS 2 exactly-once on
//! receipt, routing, and the acknowledgement.

use bytestring::ByteString;
use net::codec::{PubResp, PubRespKind, Publish, QoS, ReasonCode};

use super::flow::Publisher;
use super::{Core, Origin};
use crate::asyncapi::Verdict;
use crate::config::{InvalidMqtt3, InvalidQos0, QueueFullPolicy};
use crate::ids::ConnId;
use crate::session::Message;

/// Resolves a topic alias [MQTT-3.3.2.3.4]: a PUBLISH with a topic and an alias sets the
/// alias; with an empty topic it uses it. `Err` is the reason to disconnect with.
fn resolve_alias(core: &mut Core, id: ConnId, p: &mut Publish) -> Result<(), ReasonCode> {
    // Read through `Deref` first: writing through `DerefMut` would allocate properties for
    // every PUBLISH that has none.
    let Some(alias) = p.properties.topic_alias else {
        return if p.topic.is_empty() {
            Err(ReasonCode::PROTOCOL_ERROR)
        } else {
            Ok(())
        };
    };
    p.properties.topic_alias = None;
    let max = core.config.topic_alias_max;
    if alias.get() > max {
        return Err(ReasonCode::TOPIC_ALIAS_INVALID);
    }
    let Some(conn) = core.conn_mut(id) else {
        return Ok(());
    };
    let slot = usize::from(alias.get() - 1);
    if p.topic.is_empty() {
        match conn.aliases_in.get(slot).cloned().flatten() {
            Some(topic) => p.topic = topic,
            None => return Err(ReasonCode::PROTOCOL_ERROR),
        }
    } else {
        if conn.aliases_in.len() <= slot {
            conn.aliases_in.resize(slot + 1, None);
        }
        if let Some(entry) = conn.aliases_in.get_mut(slot) {
            *entry = Some(p.topic.clone());
        }
    }
    Ok(())
}

fn ack_with(core: &mut Core, id: ConnId, p: &Publish, reason: ReasonCode, why: &str) {
    let kind = match p.qos {
        QoS::AtMostOnce => return,
        QoS::AtLeastOnce => PubRespKind::PubAck,
        QoS::ExactlyOnce => PubRespKind::PubRec,
    };
    let Some(pid) = p.packet_id else { return };
    let v5 = core.conn_mut(id).is_some_and(|c| c.decoder.version.is_v5());
    let problem_info = core.conn_mut(id).is_some_and(|c| c.problem_info);
    let mut r = PubResp::new(kind, pid);
    if v5 {
        // MQTT 3 has no way to refuse a PUBLISH: it is acknowledged and dropped.
        r.reason = reason;
        if problem_info {
            r.properties.reason_string = Some(ByteString::from(why));
        }
    }
    core.reply_in_order(id, r);
}

pub(crate) fn on_publish(core: &mut Core, id: ConnId, mut p: Publish) {
    core.stats.publishes_in += 1;
    let before = core.durable.appended();
    let Some(sid) = core.conn_mut(id).and_then(|c| c.session) else {
        // `Core::packet` hands these packets over only for connected links.
        return core.invariant_broken("a packet after CONNECT on a link without a session");
    };
    if let Err(reason) = resolve_alias(core, id, &mut p) {
        return core.reject(id, Some(reason), "bad topic alias [MQTT-3.3.2-7/8]");
    }
    if !p.properties.subscription_identifiers.is_empty() {
        return core.reject(
            id,
            Some(ReasonCode::PROTOCOL_ERROR),
            "subscription identifier in a client PUBLISH [MQTT-3.3.4-6]",
        );
    }
    if p.qos > core.config.max_qos() {
        return core.reject(
            id,
            Some(ReasonCode::QOS_NOT_SUPPORTED),
            "PUBLISH above the maximum QoS [MQTT-3.2.2-11]",
        );
    }
    if p.retain && !core.config.retain_available {
        return core.reject(
            id,
            Some(ReasonCode::RETAIN_NOT_SUPPORTED),
            "retained PUBLISH but retain_available is false [MQTT-3.2.2-14]",
        );
    }
    let rate = core.config.publish_rate_max;
    let now = core.now;
    if rate > 0
        && !core
            .conn_mut(id)
            .is_none_or(|c| c.take_publish_token(rate, now))
    {
        return core.reject(
            id,
            Some(ReasonCode::MESSAGE_RATE_TOO_HIGH),
            "publish rate above publish_rate_max",
        );
    }
    if p.qos != QoS::AtMostOnce && core.durable.failing() {
        // The log cannot be written: a message that needs durability is refused, not acked.
        let v5 = core.conn_mut(id).is_some_and(|c| c.decoder.version.is_v5());
        if !v5 {
            return core.close(id, None, "publish refused: the log cannot be written");
        }
        return ack_with(
            core,
            id,
            &p,
            ReasonCode::QUOTA_EXCEEDED,
            "the broker cannot write its log (disk full?)",
        );
    }
    let max_inbound = usize::from(core.config.inflight_count_max);
    if let (QoS::ExactlyOnce, Some(pid)) = (p.qos, p.packet_id) {
        let Some(session) = core.session_mut(sid) else {
            return;
        };
        let new = session.inbound_qos2_begin(pid);
        core.journal_of(sid);
        if !new {
            // A retransmission of a message already received: acknowledge, do not deliver.
            return core.reply_in_order(id, PubResp::new(PubRespKind::PubRec, pid));
        }
        let Some(session) = core.session_mut(sid) else {
            return;
        };
        if session.inbound_qos2_len() > max_inbound {
            return core.reject(
                id,
                Some(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED),
                "receive maximum exceeded [MQTT-3.3.4-9]",
            );
        }
    }
    // A topic of n bytes has at most n + 1 levels: count only when it could be over.
    let levels_max = core.config.topic_levels_max;
    if p.topic.len() >= levels_max && p.topic.split('/').count() > levels_max {
        return refuse(
            core,
            id,
            sid,
            &p,
            ReasonCode::TOPIC_NAME_INVALID,
            "topic has more levels than topic_levels_max",
        );
    }
    let allowed = !core.auth.has_acl()
        || match core.sessions.get(sid.0 as usize).and_then(Option::as_ref) {
            Some(s) => core
                .auth
                .can_publish(s.user.as_deref(), &s.client_id, &p.topic),
            None => return,
        };
    if !allowed {
        core.stats.auth_denied += 1;
        tracing::debug!(shard = core.id.0, topic = %p.topic, "publish denied by the ACL");
        return refuse(
            core,
            id,
            sid,
            &p,
            ReasonCode::NOT_AUTHORIZED,
            "publish not allowed by the ACL",
        );
    }
    let verdict = core
        .auth
        .api
        .as_ref()
        .map(|api| api.check_message(&p.topic, &p.payload, &p.properties));
    if let Some(verdict) = verdict.filter(|v| *v != Verdict::Valid) {
        return refuse_by_api(core, id, sid, &p, verdict);
    }
    // A retained message whose topic another shard owns is acknowledged once the owner has
    // it, so a subscription made after the acknowledgement finds it.
    let retained_elsewhere = p.retain && crate::retained::owner(&p.topic, core.shards) != core.id;
    let message = Message::new(
        p.topic,
        p.payload,
        p.qos,
        p.retain,
        std::mem::take(&mut p.properties),
        now,
    );
    let kind = match (p.qos, p.packet_id) {
        (QoS::AtLeastOnce, Some(pid)) => Some((PubRespKind::PubAck, pid)),
        (QoS::ExactlyOnce, Some(pid)) => Some((PubRespKind::PubRec, pid)),
        _ => None,
    };
    let v5 = core.conn_mut(id).is_some_and(|c| c.decoder.version.is_v5());
    // In sync durability the acknowledgement waits for the log (here and on the peers the
    // message is forwarded to, which answer the token); under the `refuse` queue policy an
    // MQTT 5 publisher's waits for the peers' verdict too.
    let refusable =
        v5 && core.shards > 1 && core.config.session_queue_full_policy == QueueFullPolicy::Refuse;
    let holds = kind.is_some()
        && (core.durable.holds_acks() || !core.sinks.is_empty() || refusable || retained_elsewhere);
    let token = holds.then(|| core.durable.next_token());
    core.publisher = Some(Publisher {
        shard: core.id,
        conn: id,
        v5,
    });
    core.refused = false;
    let peers = core.publish(message, Origin::Client(sid, token));
    core.publisher = None;
    let refused = std::mem::take(&mut core.refused);
    if let Some((kind, pid)) = kind {
        let mut r = PubResp::new(kind, pid);
        if refused {
            // MQTT 5 only; a refused PUBREC releases its id when it is sent (`reply_ack`).
            r.reason = ReasonCode::QUOTA_EXCEEDED;
            if core.conn_mut(id).is_some_and(|c| c.problem_info) {
                r.properties.reason_string = Some(ByteString::from_static(
                    "a subscriber's session queue is full (session_queue_full_policy = refuse)",
                ));
            }
        }
        core.ack_when_durable(id, r, before, token, peers);
    }
}

/// A PUBLISH the AsyncAPI document refuses: MQTT 5 QoS 1/2 get the reason (0x99 invalid
/// payload with the failing schema path, 0x90 topic, 0x87 operation); MQTT 5 QoS 0 and
/// MQTT 3 follow `asyncapi_invalid_qos0` / `asyncapi_invalid_mqtt3`. Counted either way.
fn refuse_by_api(
    core: &mut Core,
    id: ConnId,
    sid: crate::ids::SessionId,
    p: &Publish,
    verdict: Verdict,
) {
    let (code, why) = match verdict {
        Verdict::Valid => return,
        Verdict::NoChannel => (
            ReasonCode::TOPIC_NAME_INVALID,
            "the topic matches no channel of the AsyncAPI document (asyncapi_strict)".to_string(),
        ),
        Verdict::BadParameter(why) => (ReasonCode::TOPIC_NAME_INVALID, why),
        Verdict::NotAllowed(why) => (ReasonCode::NOT_AUTHORIZED, why),
        Verdict::Invalid(why) => (ReasonCode::PAYLOAD_FORMAT_INVALID, why),
    };
    core.stats.asyncapi_invalid += 1;
    tracing::debug!(shard = core.id.0, topic = %p.topic, "publish refused by the AsyncAPI document: {why}");
    let v5 = core.conn_mut(id).is_some_and(|c| c.decoder.version.is_v5());
    if !v5 && core.config.asyncapi_invalid_mqtt3 == InvalidMqtt3::Close {
        // The QoS 2 id this PUBLISH began is released: the session may outlive the close.
        if let (QoS::ExactlyOnce, Some(pid)) = (p.qos, p.packet_id) {
            if let Some(s) = core.session_mut(sid) {
                s.inbound_qos2_release(pid);
            }
            core.journal_of(sid);
        }
        return core.close(id, None, &format!("AsyncAPI: {why}"));
    }
    if v5 && p.qos == QoS::AtMostOnce {
        if core.config.asyncapi_invalid_qos0 == InvalidQos0::Disconnect {
            core.close(id, Some(code), &format!("AsyncAPI: {why}"));
        }
        return;
    }
    refuse(core, id, sid, p, code, &why);
}

/// Refuses a PUBLISH whose QoS 2 flow had begun: the id is forgotten, the reason answered.
fn refuse(
    core: &mut Core,
    id: ConnId,
    sid: crate::ids::SessionId,
    p: &Publish,
    reason: ReasonCode,
    why: &str,
) {
    forget_qos2(core, sid, p);
    ack_with(core, id, p, reason, why);
}

/// A refused QoS 2 PUBLISH ends its flow at the PUBREC [MQTT-4.3.3-9] (MQTT 5); an MQTT 3
/// client gets a plain PUBREC and will send PUBREL, so its id stays until then.
fn forget_qos2(core: &mut Core, sid: crate::ids::SessionId, p: &Publish) {
    if let (QoS::ExactlyOnce, Some(pid)) = (p.qos, p.packet_id) {
        if let Some(s) = core.session_mut(sid) {
            if s.version.is_v5() {
                s.inbound_qos2_release(pid);
            }
            core.journal_of(sid);
        }
    }
}

//! CONNECT: credentials, client id and keep-alive rules, the will, moving the connection to
//! its home shard, session takeover and resume, CONNACK with the broker's capabilities.

use crate::asyncapi::Verdict;
use net::codec::{ConnAck, Connect, DecodeError, Packet, Properties, ProtocolVersion, ReasonCode};

use super::{Core, Effect};
use crate::ids::{home_shard, ConnId};
use crate::session::{encode, Message, Session, SessionLimits};

/// Refuses a connection whose first packet could not be decoded: a CONNACK with the reason
/// where the protocol has one (unsupported protocol version), then close.
pub(crate) fn refuse_undecodable(core: &mut Core, id: ConnId, e: DecodeError) {
    if e.reason_code() == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION {
        // The client's version is unknown; a 3.1.1-shaped CONNACK with return code 1 is what
        // every version understands [MQTT-3.1.2-2].
        let ack = ConnAck {
            session_present: false,
            code: ReasonCode(1),
            properties: Default::default(),
        };
        if let Some(conn) = core.conn_mut(id) {
            encode(ProtocolVersion::V311, &Packet::ConnAck(ack), &mut conn.out);
        }
    }
    core.close(id, None, &format!("bad first packet: {e}"));
}

/// Answers a CONNECT with a refusal (MQTT 3: the matching return code) and closes.
pub(crate) fn refuse(
    core: &mut Core,
    id: ConnId,
    connect: &Connect,
    reason: ReasonCode,
    why: &str,
) {
    let version = connect.version;
    let code = if version.is_v5() {
        reason
    } else {
        reason.v3_connack()
    };
    let mut ack = ConnAck {
        session_present: false,
        code,
        properties: Default::default(),
    };
    if version.is_v5() && connect.properties.request_problem_information != Some(false) {
        ack.properties.reason_string = Some(why.into());
    }
    if let Some(conn) = core.conn_mut(id) {
        conn.decoder.version = version;
        encode(version, &Packet::ConnAck(ack), &mut conn.out);
    }
    core.reject(id, None, why);
}

/// Checks a CONNECT against the broker's rules and the credentials: the refusal, if any.
fn check(
    core: &mut Core,
    connect: &Connect,
    certified: bool,
) -> Result<(), (ReasonCode, &'static str)> {
    let version = connect.version;
    if connect.properties.authentication_method.is_some() {
        return Err((
            ReasonCode::BAD_AUTHENTICATION_METHOD,
            "enhanced authentication is not supported",
        ));
    }
    if connect.client_id.is_empty()
        && (version == ProtocolVersion::V31 || (!version.is_v5() && !connect.clean_start))
    {
        return Err((
            ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            "empty client id without clean session [MQTT-3.1.3-8]",
        ));
    }
    if !version.is_v5() && connect.keep_alive > core.config.keep_alive_max_secs {
        return Err((
            ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            "keep alive above keep_alive_max_secs",
        ));
    }
    let user = connect.username.as_deref();
    // A verified client certificate named the user (`tls_cert_as_username`): no password.
    let verdict = core.auth.check_connect(
        user,
        connect.password.as_deref(),
        certified,
        &mut core.verified,
    );
    if let Err(code) = verdict {
        core.stats.auth_denied += 1;
        return Err((
            code,
            if code == ReasonCode::NOT_AUTHORIZED {
                "anonymous clients are not allowed"
            } else {
                "bad user name or password"
            },
        ));
    }
    if let Some(will) = &connect.will {
        if will.qos > core.config.max_qos() {
            return Err((ReasonCode::QOS_NOT_SUPPORTED, "will QoS above qos_max"));
        }
        if will.retain && !core.config.retain_available {
            return Err((
                ReasonCode::RETAIN_NOT_SUPPORTED,
                "retained will but retain is off",
            ));
        }
        if will.topic.split('/').count() > core.config.topic_levels_max {
            return Err((
                ReasonCode::TOPIC_NAME_INVALID,
                "will topic has too many levels",
            ));
        }
        if !core.auth.can_publish(user, &connect.client_id, &will.topic) {
            core.stats.auth_denied += 1;
            return Err((
                ReasonCode::NOT_AUTHORIZED,
                "will topic not allowed by the ACL",
            ));
        }
        let verdict = core
            .auth
            .api
            .as_ref()
            .map(|api| api.check_message(&will.topic, &will.payload, &will.properties));
        if let Some(verdict) = verdict.filter(|v| *v != Verdict::Valid) {
            core.stats.asyncapi_invalid += 1;
            tracing::debug!(shard = core.id.0, topic = %will.topic, ?verdict, "will refused by the AsyncAPI document");
            return Err(match verdict {
                Verdict::Invalid(_) => (
                    ReasonCode::PAYLOAD_FORMAT_INVALID,
                    "will payload refused by the AsyncAPI document",
                ),
                Verdict::NotAllowed(_) => (
                    ReasonCode::NOT_AUTHORIZED,
                    "will topic: clients may not publish there (AsyncAPI operations)",
                ),
                _ => (
                    ReasonCode::TOPIC_NAME_INVALID,
                    "will topic refused by the AsyncAPI document",
                ),
            });
        }
    }
    Ok(())
}

/// CONNECT on the shard the socket was accepted on.
pub(crate) fn on_connect(core: &mut Core, id: ConnId, mut connect: Box<Connect>) {
    let certified = core.conn_mut(id).and_then(|l| l.cert_user.take());
    if let Some(name) = &certified {
        connect.username = Some(name.as_ref().into());
        connect.password = None;
    }
    if let Err((reason, why)) = check(core, &connect, certified.is_some()) {
        return refuse(core, id, &connect, reason, why);
    }
    // Empty client ids get an assigned one on the shard they landed on: no need to move.
    let home = if connect.client_id.is_empty() {
        core.id
    } else {
        home_shard(connect.client_id.as_bytes(), core.shards)
    };
    if home == core.id {
        return core.claim_then_accept(id, connect);
    }
    // The reactor moves the socket and its unread bytes; the link here goes with it.
    core.effects.push_back(Effect::Handoff {
        conn: id,
        home,
        connect,
    });
}

/// CONNECT on the session's home shard: takeover, clean start or resume, CONNACK.
/// `assigned`: the client id was assigned to it already (it sent none).
pub(crate) fn accept(
    core: &mut Core,
    id: ConnId,
    connect: &mut Connect,
    assigned: Option<bytestring::ByteString>,
) {
    let version = connect.version;
    let mut assigned = assigned;
    if connect.client_id.is_empty() {
        let cid = core.next_assigned_client_id();
        assigned = Some(cid.clone());
        connect.client_id = cid;
    }
    let limits = SessionLimits {
        window: connect
            .properties
            .receive_maximum
            .map_or(usize::from(core.config.inflight_count_max), |m| {
                usize::from(m.get())
            }),
        queue_max: core.config.session_queue_count_max,
        queue_bytes_max: core.config.session_queue_bytes_max,
        full_policy: core.config.session_queue_full_policy,
        alias_max: connect.properties.topic_alias_maximum.unwrap_or(0),
        packet_bytes_max: connect
            .properties
            .maximum_packet_size
            .map(|n| n.get() as usize),
    };
    let mut will_delay = 0;
    let will = connect.will.take().map(|w| {
        let mut properties = w.properties;
        // The interval is the will's, not the message's: a PUBLISH cannot carry it (present
        // and 0 included, or the will could not be encoded for its subscribers).
        will_delay = properties.will_delay_interval.take().unwrap_or(0);
        Message::new(w.topic, w.payload, w.qos, w.retain, properties, core.now)
    });

    // Takeover: the same client id is connected already (necessarily on this shard).
    let existing = core.by_client.get(&connect.client_id).copied();
    if let Some(sid) = existing {
        if let Some(old) = core.session_mut(sid).and_then(|s| s.conn) {
            core.close(
                old,
                Some(ReasonCode::SESSION_TAKEN_OVER),
                "session taken over by a new connection",
            );
        }
    }
    // close() may have removed a non-persistent session.
    let existing = core.by_client.get(&connect.client_id).copied();
    let (sid, session_present) = match existing {
        Some(sid) if !connect.clean_start => (sid, true),
        Some(sid) => {
            core.remove_session(sid);
            (
                core.add_session(Session::new(connect.client_id.clone(), version, limits)),
                false,
            )
        }
        None => (
            core.add_session(Session::new(connect.client_id.clone(), version, limits)),
            false,
        ),
    };
    let expiry = if version.is_v5() {
        connect.properties.session_expiry_interval.unwrap_or(0)
    } else if connect.clean_start {
        0
    } else {
        u32::MAX
    };
    let journaled = core.durable.persistent();
    let mut log_session = false;
    let mut end_on_disk = false;
    if let Some(session) = core.session_mut(sid) {
        let durable = journaled && expiry != 0;
        if durable && (!session.durable || session.expiry_interval != expiry) {
            log_session = true;
        } else if session.durable && !durable {
            // Persistent before, ends with this connection now: forget it on disk.
            end_on_disk = true;
        }
        session.durable = durable;
        session.version = version;
        session.conn = Some(id);
        session.user = connect.username.clone();
        session.expiry_interval = expiry;
        session.expires_at = None;
        session.set_limits(limits);
        // A delayed will of the previous connection is not sent: the session resumed.
        session.will = will;
        session.will_delay = will_delay;
        session.will_due = None;
        if log_session {
            session.journal_expiry();
        }
        if end_on_disk {
            session.journal_end();
        }
        if durable {
            let client = session.client_id.clone();
            core.durable.session_online(&client);
        }
    }
    core.note_connect_will(sid);
    let keep_alive_max = core.config.keep_alive_max_secs;
    let server_keep_alive = (version.is_v5()
        && (connect.keep_alive == 0 || connect.keep_alive > keep_alive_max)
        && keep_alive_max != u16::MAX)
        .then_some(keep_alive_max);
    let keep_alive = server_keep_alive.unwrap_or(connect.keep_alive);

    let mut properties = Properties::default();
    if version.is_v5() {
        properties.receive_maximum = std::num::NonZeroU16::new(core.config.inflight_count_max);
        properties.maximum_packet_size = u32::try_from(core.config.packet_bytes_max)
            .ok()
            .and_then(std::num::NonZeroU32::new);
        properties.assigned_client_identifier = assigned;
        properties.retain_available = Some(core.config.retain_available);
        properties.shared_subscription_available = Some(true);
        properties.subscription_identifier_available = Some(true);
        properties.wildcard_subscription_available = Some(true);
        properties.topic_alias_maximum = Some(core.config.topic_alias_max);
        properties.maximum_qos = (core.config.qos_max < 2).then(|| core.config.max_qos());
        properties.server_keep_alive = server_keep_alive;
    }
    let rate = core.config.publish_rate_max;
    let problem_info = connect.properties.request_problem_information != Some(false);
    let Some(conn) = core.conn_mut(id) else {
        return;
    };
    conn.decoder.version = version;
    conn.session = Some(sid);
    conn.keep_alive =
        (keep_alive > 0).then(|| std::time::Duration::from_millis(u64::from(keep_alive) * 1500));
    conn.problem_info = problem_info;
    conn.rate_tokens = f64::from(rate);
    conn.aliases_in.clear();
    conn.bridge = connect.bridge;
    let ack = ConnAck {
        session_present,
        code: ReasonCode::SUCCESS,
        properties: properties.into(),
    };
    core.reply(id, &Packet::ConnAck(ack));
    // Resume: unacknowledged messages again (DUP), then the queue.
    let now = core.now;
    if let Some((session, conn)) = core.session_and_conn(sid, id) {
        session.resume(now, &mut conn.out);
    }
    core.journal_of(sid);
    core.take_drops(sid);
    tracing::debug!(shard = core.id.0, client = %connect.client_id, session_present, "client connected");
}

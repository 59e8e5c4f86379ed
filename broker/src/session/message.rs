//! The application message as it travels through the broker, and its stored form (what the
//! store keeps of a queued or retained message, with wall-clock times).

use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use net::codec::{BoxedProperties, QoS};
use storage::record::StoredMessage;

/// Milliseconds of the Unix epoch for an `Instant` (0 for none).
#[inline]
pub(super) fn wall_ms(at: Option<Instant>, now: Instant) -> u64 {
    let Some(at) = at else { return 0 };
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let wall = if at >= now {
        wall + at.duration_since(now)
    } else {
        wall.saturating_sub(now.duration_since(at))
    };
    u64::try_from(wall.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A message as the log stores it.
pub fn stored(message: &Message, qos: QoS, retain: bool, now: Instant) -> StoredMessage {
    StoredMessage {
        topic: message.topic.to_string(),
        payload: message.payload.to_vec(),
        qos: qos as u8,
        retain,
        properties: message.properties.to_publish_wire(),
        expires_at_ms: wall_ms(message.expires_at, now),
    }
}

/// A stored message back as a broker message (received now; expiry kept). `None` if its
/// properties do not decode.
pub fn unstored(m: &StoredMessage, now: Instant) -> Option<Message> {
    let properties = BoxedProperties::from_publish_wire(&m.properties).ok()?;
    let qos = match m.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    };
    let mut message = Message::new(
        ByteString::from(m.topic.clone()),
        Bytes::from(m.payload.clone()),
        qos,
        m.retain,
        properties,
        now,
    );
    message.expires_at = (m.expires_at_ms != 0).then(|| {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let at = Duration::from_millis(m.expires_at_ms);
        now + at.saturating_sub(wall)
    });
    Some(message)
}

/// An application message as it travels through the broker (payload shared, never copied).
#[derive(Clone, Debug)]
pub struct Message {
    /// Topic name.
    pub topic: ByteString,
    /// Payload.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// RETAIN flag as published.
    pub retain: bool,
    /// MQTT 5 properties passed through to subscribers (topic alias and subscription
    /// identifiers removed; the message expiry interval is rewritten on the way out).
    pub properties: BoxedProperties,
    /// When the broker received it (shard clock): delivery latency.
    pub received_at: Instant,
    /// When it expires (MQTT 5 message expiry interval), if it does.
    pub expires_at: Option<Instant>,
}

impl Message {
    /// A message received at `now`; its expiry comes from its message expiry interval.
    pub fn new(
        topic: ByteString,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        properties: BoxedProperties,
        now: Instant,
    ) -> Self {
        let expires_at = properties
            .message_expiry_interval
            .map(|secs| now + Duration::from_secs(u64::from(secs)));
        Self {
            topic,
            payload,
            qos,
            retain,
            properties,
            received_at: now,
            expires_at,
        }
    }

    /// True once the message's expiry interval has passed.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

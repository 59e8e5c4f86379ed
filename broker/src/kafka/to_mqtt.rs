//! A compiled `[[kafka.to_mqtt]]` rule and the mapping of one Kafka record to an MQTT message:
//! the MQTT topic from the rule's template (`{key}`, `{header:NAME}`, `{topic}`), the QoS from
//! the rule, RETAIN from the `mqtt.retain` header, MQTT 5 properties from the headers the
//! MQTT -> Kafka side writes (`content-type`, `mqtt.payload_format_indicator`,
//! `mqtt.response_topic`, `mqtt.correlation_data`, `mqtt.message_expiry`), every other header
//! as a user property. A record that gives no valid MQTT message is skipped with the reason.

use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;
use net::codec::{BoxedProperties, QoS};

use super::config::ToMqtt;
use super::rule::{template, Piece};
use crate::session::Message;

/// The longest MQTT string or binary field.
const STRING_MAX: usize = 65_535;

/// A piece of an MQTT topic template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    /// The record key.
    Key,
    /// A header's value.
    Header(String),
    /// The Kafka topic.
    Topic,
    /// The whole MQTT topic from the `mqtt.topic` header (a cluster downlink).
    MqttTopic,
}

/// One Kafka -> MQTT rule.
#[derive(Clone, Debug)]
pub struct Route {
    /// The Kafka topic.
    pub topic: String,
    parts: Vec<Part>,
    /// QoS of the MQTT publish (the most a `mqtt.qos` header may ask, on a downlink).
    pub qos: QoS,
    /// The QoS comes from the record's `mqtt.qos` header (a cluster downlink).
    qos_from_header: bool,
    /// Consumer group.
    pub group: String,
    /// `earliest` or `latest` (`auto.offset.reset`).
    pub offset_reset: String,
    /// A cluster downlink's node: the sessions that moved away from it (whether a record's
    /// `mqtt.cluster.to` / `from` headers are worth reading).
    moved: Option<std::sync::Arc<crate::cluster::feed::Feed>>,
}

/// A Kafka record as the mapping sees it.
#[derive(Debug)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    /// Headers in record order (a value may be absent).
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
    /// When it was produced (milliseconds of the Unix epoch), if Kafka says.
    pub timestamp: Option<i64>,
}

impl Record<'_> {
    /// The last value of header `name` (absent or null: None).
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| *v)
    }
}

impl Route {
    /// Checks and compiles `rule`.
    pub fn compile(rule: &ToMqtt) -> Result<Self, String> {
        super::rule::check_kafka_topic(&rule.topic)?;
        let mut parts = Vec::new();
        for piece in template(&rule.mqtt_topic, "mqtt_topic")? {
            parts.push(match piece {
                Piece::Text(t) => Part::Text(t.into()),
                Piece::Name("key") => Part::Key,
                Piece::Name("topic") => Part::Topic,
                Piece::Name(n) => match n.strip_prefix("header:") {
                    Some(h) if !h.is_empty() => Part::Header(h.into()),
                    _ => {
                        return Err(format!(
                            "mqtt_topic: `{{{n}}}`: use {{key}}, {{topic}} or {{header:NAME}}"
                        ))
                    }
                },
            });
        }
        for part in &parts {
            if let Part::Text(t) = part {
                if t.contains(['+', '#', '\0', '}']) {
                    return Err(format!(
                        "mqtt_topic: `{}` has a wildcard, `}}` or NUL",
                        rule.mqtt_topic
                    ));
                }
            }
        }
        match parts.first() {
            None => return Err("mqtt_topic: empty".into()),
            Some(Part::Text(t)) if t.starts_with('$') => {
                return Err("mqtt_topic: a `$` topic is the broker's own".into())
            }
            _ => {}
        }
        let qos = match rule.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            q => return Err(format!("qos: {q}: 0, 1 or 2")),
        };
        if rule.group.is_empty() {
            return Err("group: empty".into());
        }
        if !["earliest", "latest"].contains(&rule.offset_reset.as_str()) {
            return Err(format!(
                "offset_reset: `{}`: earliest or latest",
                rule.offset_reset
            ));
        }
        Ok(Self {
            topic: rule.topic.clone(),
            parts,
            qos,
            qos_from_header: false,
            group: rule.group.clone(),
            offset_reset: rule.offset_reset.clone(),
            moved: None,
        })
    }

    /// A cluster node's downlink: records other nodes produced for this node's subscribers,
    /// each carrying its MQTT topic, QoS and RETAIN in the `mqtt.*` headers; consumed by
    /// `group` from the earliest offset not committed.
    pub fn downlink(
        topic: &str,
        group: &str,
        moved: Option<std::sync::Arc<crate::cluster::feed::Feed>>,
    ) -> Self {
        Self {
            topic: topic.into(),
            parts: vec![Part::MqttTopic],
            qos: QoS::ExactlyOnce,
            qos_from_header: true,
            group: group.into(),
            offset_reset: "earliest".into(),
            moved,
        }
    }

    /// Where a cluster node's downlink consumer reports how far it is behind (the node's
    /// feed's, which its routes thread reads for its congestion); `None` for other routes.
    pub fn downlink_behind(&self) -> Option<std::sync::Arc<super::behind::Behind>> {
        Some(self.moved.as_ref()?.downlink_behind.clone())
    }

    /// A cluster node's downlink (read by that node alone, every partition assigned).
    pub fn is_downlink(&self) -> bool {
        self.qos_from_header
    }

    /// The shared groups a downlink record may reach (its `mqtt.cluster.shared` header);
    /// `None` (every group) for a Kafka -> MQTT rule's record.
    pub fn shared_only(&self, record: &Record<'_>) -> Option<Vec<ByteString>> {
        if !self.qos_from_header {
            return None;
        }
        let list = record.header("mqtt.cluster.shared").unwrap_or_default();
        let list = std::str::from_utf8(list).unwrap_or_default();
        Some(
            list.split('\0')
                .filter(|f| !f.is_empty())
                .map(ByteString::from)
                .collect(),
        )
    }

    /// The one session a cluster downlink's record is for (`mqtt.cluster.for_client`: a copy
    /// forwarded by the node that session moved away from); None for every other record.
    /// With it, the sequence number the copy had in that session (`mqtt.cluster.seq`; 0: none).
    pub fn for_client(&self, record: &Record<'_>) -> Option<(ByteString, u64)> {
        if !self.is_downlink() {
            return None;
        }
        let client = record.header(crate::cluster::handover::FOR_CLIENT_HEADER)?;
        let client = std::str::from_utf8(client).ok().map(ByteString::from)?;
        let seq = record
            .header(crate::cluster::handover::SEQ_HEADER)
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(0);
        Some((client, seq))
    }

    /// The nodes that have a cluster downlink's copy besides this one: those it was produced
    /// to when several (`mqtt.cluster.to`) and the one that produced it (`mqtt.cluster.from`),
    /// comma-separated.
    pub fn sent_to(&self, record: &Record<'_>) -> Option<Box<str>> {
        use crate::cluster::handover::{FROM_HEADER, TO_HEADER};
        // Read only while some session that moved away is followed.
        if self.moved.as_ref().is_none_or(|f| f.handovers.is_empty()) {
            return None;
        }
        let text = |h| record.header(h).and_then(|v| std::str::from_utf8(v).ok());
        crate::cluster::handover::sent_to(text(TO_HEADER), text(FROM_HEADER))
    }

    /// The version a cluster downlink's retained copy carries (`mqtt.retain_version`, the
    /// publishing node's); None for another rule's record.
    pub fn retain_version(&self, record: &Record<'_>) -> Option<u64> {
        if !self.is_downlink() {
            return None;
        }
        let v = record.header(crate::cluster::retained::VERSION_HEADER)?;
        std::str::from_utf8(v)
            .ok()?
            .parse()
            .ok()
            .filter(|&v| v != 0)
    }

    /// The MQTT topic for `record`, or why there is none.
    fn render(&self, record: &Record<'_>) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            let value = match part {
                Part::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Part::Topic => record.topic.as_bytes(),
                Part::MqttTopic => {
                    let topic = record
                        .header("mqtt.topic")
                        .ok_or("the record has no header `mqtt.topic`")?;
                    let topic = std::str::from_utf8(topic)
                        .map_err(|_| "header `mqtt.topic` is not UTF-8".to_string())?;
                    out.push_str(topic);
                    continue;
                }
                Part::Key => record.key.ok_or("the record has no key")?,
                Part::Header(h) => record
                    .header(h)
                    .ok_or_else(|| format!("the record has no header `{h}`"))?,
            };
            let value = std::str::from_utf8(value)
                .map_err(|_| "a placeholder's value is not UTF-8".to_string())?;
            if value.is_empty() || value.contains(['/', '+', '#', '\0']) {
                return Err(format!(
                    "a placeholder's value `{value}` is empty or has / + # NUL"
                ));
            }
            out.push_str(value);
        }
        Ok(out)
    }

    /// The MQTT message for `record`, received at `now`; `Err` says why the record is skipped.
    /// `levels_max` and `bytes_max` are the broker's topic level and packet size limits.
    pub fn message(
        &self,
        record: &Record<'_>,
        levels_max: usize,
        bytes_max: usize,
        now: Instant,
    ) -> Result<Message, String> {
        let topic = self.render(record)?;
        net::topic::validate_topic_name(&topic)
            .map_err(|e| format!("`{topic}` is not an MQTT topic name: {e}"))?;
        if topic.starts_with('$') {
            return Err(format!("`{topic}`: a `$` topic is the broker's own"));
        }
        if topic.len() > STRING_MAX {
            return Err("the MQTT topic is longer than 65535 bytes".into());
        }
        if topic.split('/').count() > levels_max {
            return Err(format!("`{topic}` has more than topic_levels_max levels"));
        }
        let mut properties = BoxedProperties::default();
        let mut retain = false;
        let mut size = topic.len() + record.payload.len();
        for &(name, value) in &record.headers {
            if value.is_some_and(|v| v.len() > STRING_MAX) || name.len() > STRING_MAX {
                // An MQTT string or binary property holds at most 65535 bytes.
                return Err(format!("header `{name}` is longer than 65535 bytes"));
            }
            let text = value.and_then(|v| std::str::from_utf8(v).ok());
            match name {
                "mqtt.retain" => retain = matches!(text, Some("1" | "true")),
                "content-type" => {
                    properties.content_type = text.map(ByteString::from);
                }
                "mqtt.payload_format_indicator" => {
                    properties.payload_format_indicator = text.map(|t| t == "1");
                }
                "mqtt.response_topic" => {
                    properties.response_topic = text
                        .filter(|t| net::topic::validate_topic_name(t).is_ok())
                        .map(ByteString::from);
                }
                "mqtt.correlation_data" => {
                    properties.correlation_data = value.map(Bytes::copy_from_slice);
                }
                "mqtt.message_expiry" => {
                    properties.message_expiry_interval = text.and_then(|t| t.parse().ok());
                }
                // The MQTT -> Kafka side's context (topic, client id, QoS) and unknown
                // `mqtt.` names are not user properties.
                n if n.starts_with("mqtt.") => {}
                n => {
                    let v = match value {
                        None => "",
                        Some(v) => std::str::from_utf8(v).map_err(|_| {
                            format!("header `{n}` is not UTF-8 (a user property must be)")
                        })?,
                    };
                    if n.contains('\0') || v.contains('\0') {
                        return Err(format!("header `{n}` has a NUL"));
                    }
                    size += n.len() + v.len() + 5;
                    properties
                        .user_properties
                        .push((ByteString::from(n), ByteString::from(v)));
                }
            }
        }
        if properties.payload_format_indicator == Some(true)
            && std::str::from_utf8(record.payload).is_err()
        {
            return Err("payload format indicator 1 but the payload is not UTF-8".into());
        }
        if size > bytes_max {
            return Err(format!("larger than packet_bytes_max ({bytes_max})"));
        }
        // The expiry counts from the record's production: time spent in Kafka (a cluster
        // node down, a consumer behind) is taken off, and a message past it is not delivered.
        if let (Some(secs), Some(produced)) = (properties.message_expiry_interval, record.timestamp)
        {
            let waited = crate::kafka::now_millis().saturating_sub(produced).max(0);
            let left = i64::from(secs) * 1000 - waited;
            if left <= 0 {
                return Err("its message expiry passed while it waited in Kafka".into());
            }
            properties.message_expiry_interval =
                Some(u32::try_from((left + 999) / 1000).unwrap_or(secs));
        }
        if properties.is_empty() {
            properties = BoxedProperties::default();
        }
        let qos = match record.header("mqtt.qos") {
            Some(b"0") if self.qos_from_header => QoS::AtMostOnce,
            Some(b"1") if self.qos_from_header => QoS::AtLeastOnce,
            Some(b"2") if self.qos_from_header => QoS::ExactlyOnce,
            _ if self.qos_from_header => return Err("no valid `mqtt.qos` header".into()),
            _ => self.qos,
        };
        Ok(Message::new(
            ByteString::from(topic),
            Bytes::copy_from_slice(record.payload),
            qos,
            retain,
            properties,
            now,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(mqtt_topic: &str) -> Result<Route, String> {
        Route::compile(&ToMqtt {
            topic: "commands".into(),
            mqtt_topic: mqtt_topic.into(),
            qos: 1,
            group: "g".into(),
            offset_reset: "earliest".into(),
            partitions: None,
        })
    }

    fn record<'a>(key: Option<&'a [u8]>, headers: Vec<(&'a str, Option<&'a [u8]>)>) -> Record<'a> {
        Record {
            topic: "commands",
            key,
            payload: b"on",
            headers,
            timestamp: None,
        }
    }

    #[test]
    fn the_expiry_counts_from_the_records_production() {
        let r = route("devices/{key}").unwrap();
        let now = Instant::now();
        let mut rec = record(Some(b"d1"), vec![("mqtt.message_expiry", Some(b"10"))]);
        rec.timestamp = Some(crate::kafka::now_millis() - 4_000);
        let m = r.message(&rec, 16, 1 << 20, now).unwrap();
        let left = m.properties.message_expiry_interval.unwrap();
        assert!((5..=6).contains(&left), "{left}");
        rec.timestamp = Some(crate::kafka::now_millis() - 11_000);
        assert!(r
            .message(&rec, 16, 1 << 20, now)
            .unwrap_err()
            .contains("expiry"));
        rec.timestamp = None;
        let m = r.message(&rec, 16, 1 << 20, now).unwrap();
        assert_eq!(m.properties.message_expiry_interval, Some(10));
    }

    #[test]
    fn templates_take_the_key_headers_and_topic() {
        let r = route("devices/{key}/{header:kind}/{topic}").unwrap();
        let rec = record(
            Some(b"d1"),
            vec![
                ("kind", Some(b"set")),
                ("mqtt.retain", Some(b"1")),
                ("content-type", Some(b"text/plain")),
                ("mqtt.correlation_data", Some(b"\x00\x01")),
                ("mqtt.client_id", Some(b"x")),
                ("trace", None),
            ],
        );
        let m = r.message(&rec, 128, 1 << 20, Instant::now()).unwrap();
        assert_eq!(&m.topic[..], "devices/d1/set/commands");
        assert!(m.retain);
        assert_eq!(m.qos, QoS::AtLeastOnce);
        assert_eq!(m.properties.content_type.as_deref(), Some("text/plain"));
        assert_eq!(
            m.properties.correlation_data.as_deref(),
            Some(&b"\x00\x01"[..])
        );
        let users: Vec<_> = m
            .properties
            .user_properties
            .iter()
            .map(|(k, v)| (&k[..], &v[..]))
            .collect();
        assert_eq!(users, vec![("kind", "set"), ("trace", "")]);
    }

    #[test]
    fn records_without_a_valid_topic_are_skipped_with_the_reason() {
        let r = route("devices/{key}/commands").unwrap();
        let now = Instant::now();
        assert!(r
            .message(&record(None, vec![]), 128, 1 << 20, now)
            .unwrap_err()
            .contains("no key"));
        for bad in [&b"a/b"[..], b"+", b"", b"\xff"] {
            assert!(r
                .message(&record(Some(bad), vec![]), 128, 1 << 20, now)
                .is_err());
        }
        assert!(r
            .message(&record(Some(b"d"), vec![]), 2, 1 << 20, now)
            .unwrap_err()
            .contains("levels"));
        assert!(r
            .message(&record(Some(b"d"), vec![]), 128, 10, now)
            .unwrap_err()
            .contains("packet_bytes_max"));
        let long = vec![b'x'; 70_000];
        assert!(r
            .message(
                &record(Some(b"d"), vec![("big", Some(&long))]),
                128,
                1 << 20,
                now
            )
            .unwrap_err()
            .contains("65535"));
        assert!(r
            .message(&record(Some(&long), vec![]), 128, 1 << 20, now)
            .unwrap_err()
            .contains("65535"));
        let dollar = route("{key}/x").unwrap();
        assert!(dollar
            .message(&record(Some(b"$SYS"), vec![]), 128, 1 << 20, now)
            .unwrap_err()
            .contains("$"));
        let bad_user = record(Some(b"d"), vec![("x", Some(b"\xff"))]);
        assert!(r
            .message(&bad_user, 128, 1 << 20, now)
            .unwrap_err()
            .contains("UTF-8"));
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        assert!(route("a/{nope}").unwrap_err().contains("{nope}"));
        assert!(route("a/+/{key}").unwrap_err().contains("wildcard"));
        assert!(route("$SYS/{key}").unwrap_err().contains("$"));
        assert!(route("a/{key").unwrap_err().contains("`{`"));
        assert!(route("").unwrap_err().contains("empty"));
        let mut bad = ToMqtt {
            topic: "bad topic".into(),
            mqtt_topic: "a".into(),
            qos: 1,
            group: "g".into(),
            offset_reset: "earliest".into(),
            partitions: None,
        };
        assert!(Route::compile(&bad).unwrap_err().contains("Kafka topic"));
        bad.topic = "t".into();
        bad.qos = 3;
        assert!(Route::compile(&bad).unwrap_err().contains("qos"));
        bad.qos = 0;
        bad.offset_reset = "middle".into();
        assert!(Route::compile(&bad).unwrap_err().contains("offset_reset"));
    }
}

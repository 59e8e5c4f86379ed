//! The Kafka bridge rules an AsyncAPI document's Kafka bindings give, and how they join the
//! `[kafka]` rules of the config (at start; a SIGHUP reload changes validation only).
//!
//! A channel with `bindings.kafka` (`topic`, optional `partitions`, and `x-key`: the channel
//! parameter that is the record key, or `client_id` / `topic` / `none`; default: its first
//! parameter, else `client_id`):
//! - clients publish on it: a `[[kafka.to_kafka]]` rule: the filter is the address with `+`
//!   for each parameter, the Kafka topic the binding's with `{parameter}`s filled from the
//!   MQTT topic, `ack = "kafka"`;
//! - clients only subscribe to it: a `[[kafka.to_mqtt]]` rule: the Kafka topic (literal) to
//!   the address, the key parameter from the record key and the others from the headers of
//!   the same name; QoS from the subscribe operation's `bindings.mqtt.qos` (1), the consumer
//!   group from its `bindings.kafka.groupId` (`ringmq`).
//!
//! A channel clients both publish and subscribe on is bridged to Kafka only (bringing its
//! records back would deliver each client message twice). An explicit config rule with the
//! same filter (to Kafka) or Kafka topic (to MQTT) replaces the generated one; a generated
//! filter overlapping another rule's is a start-up error naming both (the first matching
//! rule takes a message, so one would silently take the other's). A generated Kafka -> MQTT
//! rule in a group an explicit rule uses takes that rule's `offset_reset`. Each generated
//! rule is compiled here, so its errors name the binding's JSON pointer.

use std::path::Path;

use super::doc::{self, ChannelSpec, KafkaSpec, Spec};
use crate::kafka::config::{KafkaConfig, ToKafka, ToMqtt};
use crate::kafka::rule::{template, Piece, Rule};
use crate::kafka::to_mqtt::Route;

/// The rules a document's Kafka bindings give, each with its channel's name.
#[derive(Debug, Default)]
pub struct Mapping {
    /// MQTT -> Kafka.
    pub to_kafka: Vec<(String, ToKafka)>,
    /// Kafka -> MQTT.
    pub to_mqtt: Vec<(String, ToMqtt)>,
}

impl Mapping {
    /// The mapping of the document at `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let spec =
            doc::parse_at(&text, Some(path)).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_spec(&spec).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The mapping of a parsed document.
    pub fn from_spec(spec: &Spec) -> Result<Self, String> {
        let mut m = Self::default();
        for c in &spec.channels {
            if let Some(k) = &c.kafka {
                m.channel(c, k)?;
            }
        }
        Ok(m)
    }

    /// No channel is bound to Kafka.
    pub fn is_empty(&self) -> bool {
        self.to_kafka.is_empty() && self.to_mqtt.is_empty()
    }

    fn channel(&mut self, c: &ChannelSpec, k: &KafkaSpec) -> Result<(), String> {
        let levels: Vec<&str> = c.address.split('/').collect();
        // Each parameter with its level (whole levels only, as the topic map requires).
        let params: Vec<(&str, usize)> = levels
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let name = l.strip_prefix('{')?.strip_suffix('}')?;
                Some((name, i))
            })
            .collect();
        let topic = k.topic.as_deref().ok_or_else(|| {
            format!(
                "{}/topic: missing (the Kafka topic; a channel address is not a Kafka topic name)",
                k.pointer
            )
        })?;
        let param = |p: &str| params.iter().position(|(name, _)| *name == p);
        let key = match k.key.as_deref() {
            None if params.is_empty() => Key::Fixed("client_id"),
            None => Key::Param(0),
            // A parameter first (one may be named like a keyword).
            Some(p) => match (param(p), p) {
                (Some(i), _) => Key::Param(i),
                (None, "client_id") => Key::Fixed("client_id"),
                (None, "topic") => Key::Fixed("topic"),
                (None, "none") => Key::Fixed("none"),
                (None, _) => {
                    return Err(format!(
                        "{}/x-key: `{p}` is not a parameter of {} (nor client_id, topic, none)",
                        k.pointer, c.address
                    ))
                }
            },
        };
        if let Some(n) = k.partitions {
            if n > 100_000 {
                return Err(format!("{}/partitions: at most 100000", k.pointer));
            }
            if topic.contains('{') && c.publish {
                return Err(format!(
                    "{}/partitions: only for a topic the broker creates (no placeholder)",
                    k.pointer
                ));
            }
        }
        if c.publish {
            // `{parameter}` -> `{N}`: its wildcard of the filter; `{client_id}` stays.
            let mut kafka_topic = String::new();
            for piece in template(topic, "topic").map_err(|e| format!("{}/{e}", k.pointer))? {
                match piece {
                    Piece::Text(t) => kafka_topic.push_str(t),
                    Piece::Name(n) => match param(n) {
                        Some(i) => kafka_topic.push_str(&format!("{{{}}}", i + 1)),
                        None if n == "client_id" => kafka_topic.push_str("{client_id}"),
                        None => {
                            return Err(format!(
                                "{}/topic: `{{{n}}}` is not a parameter of {} (nor {{client_id}})",
                                k.pointer, c.address
                            ))
                        }
                    },
                }
            }
            let filter: Vec<&str> = levels
                .iter()
                .map(|l| if l.starts_with('{') { "+" } else { l })
                .collect();
            let key = match key {
                Key::Fixed(f) => f.to_string(),
                Key::Param(i) => format!("level:{}", params.get(i).map_or(0, |p| p.1) + 1),
            };
            let rule = ToKafka {
                filter: filter.join("/"),
                topic: kafka_topic,
                key,
                ack: "kafka".into(),
                partitions: k.partitions,
            };
            // Checked here, so an error names the binding rather than a generated rule.
            Rule::compile(&rule).map_err(|e| format!("{}: {e}", k.pointer))?;
            self.to_kafka.push((c.name.clone(), rule));
        } else if c.subscribe {
            if topic.contains('{') {
                return Err(format!(
                    "{}/topic: `{topic}`: clients subscribe here, so the Kafka topic is read and must be literal",
                    k.pointer
                ));
            }
            let mqtt_topic: Vec<String> = levels
                .iter()
                .enumerate()
                .map(
                    |(level, l)| match params.iter().position(|(_, at)| *at == level) {
                        Some(i) if key == Key::Param(i) => "{key}".to_string(),
                        Some(i) => format!("{{header:{}}}", params.get(i).map_or("", |p| p.0)),
                        None => l.to_string(),
                    },
                )
                .collect();
            let rule = ToMqtt {
                topic: topic.to_string(),
                mqtt_topic: mqtt_topic.join("/"),
                qos: k.qos.unwrap_or(1),
                group: k.group.clone().unwrap_or_else(|| "ringmq".into()),
                offset_reset: "earliest".into(),
                partitions: k.partitions,
            };
            Route::compile(&rule).map_err(|e| format!("{}: {e}", k.pointer))?;
            self.to_mqtt.push((c.name.clone(), rule));
        }
        Ok(())
    }

    /// Lines for `ringmq asyncapi check`.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for (channel, r) in &self.to_kafka {
            s.push_str(&format!(
                "kafka: {} -> Kafka topic {} (key {}, ack {}; channel {channel})\n",
                r.filter, r.topic, r.key, r.ack
            ));
        }
        for (channel, r) in &self.to_mqtt {
            s.push_str(&format!(
                "kafka: Kafka topic {} -> {} (QoS {}, group {}; channel {channel})\n",
                r.topic, r.mqtt_topic, r.qos, r.group
            ));
        }
        s
    }

    /// Adds the generated rules to the config's (explicit rules win; see the module doc).
    pub fn merge_into(self, config: &mut KafkaConfig) -> Result<(), String> {
        // A binding's partitions must agree with every other rule naming its topic.
        let generated = self
            .to_kafka
            .iter()
            .map(|(c, r)| (c, &r.topic, r.partitions));
        let generated = generated.chain(
            self.to_mqtt
                .iter()
                .map(|(c, r)| (c, &r.topic, r.partitions)),
        );
        for (channel, topic, p) in generated {
            let Some(p) = p else { continue };
            let explicit = config.to_kafka.iter().map(|r| (&r.topic, r.partitions));
            let explicit = explicit.chain(config.to_mqtt.iter().map(|r| (&r.topic, r.partitions)));
            let others =
                explicit.chain(self.to_kafka.iter().map(|(_, r)| (&r.topic, r.partitions)));
            let mut others =
                others.chain(self.to_mqtt.iter().map(|(_, r)| (&r.topic, r.partitions)));
            if let Some(q) = others.find_map(|(t, q)| q.filter(|q| t == topic && *q != p)) {
                return Err(format!(
                    "channel {channel}: its binding gives Kafka topic `{topic}` {p} partitions, another rule {q}"
                ));
            }
        }
        let explicit = config.to_kafka.len();
        // The channel of each generated rule added.
        let mut added: Vec<String> = Vec::new();
        for (channel, rule) in self.to_kafka {
            let explicit_rules = config.to_kafka.iter().take(explicit);
            if explicit_rules.clone().any(|e| e.filter == rule.filter) {
                continue;
            }
            if let Some((i, e)) = config
                .to_kafka
                .iter()
                .enumerate()
                .find(|(_, e)| crate::router::filter::overlap(&e.filter, &rule.filter))
            {
                let other = match added.get(i.wrapping_sub(explicit)) {
                    Some(c) if i >= explicit => format!("channel {c}'s binding"),
                    _ => format!("kafka.to_kafka[{i}]"),
                };
                return Err(format!(
                    "channel {channel}: its Kafka binding (filter `{}`) overlaps {other} (filter `{}`): the first matching rule takes a message, so one would take the other's (an explicit rule with the same filter replaces a binding)",
                    rule.filter, e.filter
                ));
            }
            config.to_kafka.push(rule);
            added.push(channel);
        }
        let explicit = config.to_mqtt.len();
        let mut added: Vec<String> = Vec::new();
        for (channel, mut rule) in self.to_mqtt {
            match config.to_mqtt.iter().position(|e| e.topic == rule.topic) {
                Some(i) if i < explicit => {}
                Some(i) => {
                    let other = added.get(i - explicit).cloned().unwrap_or_default();
                    return Err(format!(
                        "channels {other} and {channel}: both bound to Kafka topic `{}`",
                        rule.topic
                    ));
                }
                None => {
                    // One consumer per group: a group's start position is the explicit one.
                    if let Some(e) = config.to_mqtt.iter().find(|e| e.group == rule.group) {
                        rule.offset_reset = e.offset_reset.clone();
                    }
                    config.to_mqtt.push(rule);
                    added.push(channel);
                }
            }
        }
        Ok(())
    }
}

/// Where a channel's record key comes from.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Key {
    /// `client_id`, `topic` or `none`.
    Fixed(&'static str),
    /// The channel's Nth parameter.
    Param(usize),
}

#[cfg(test)]
mod tests;

//! A compiled `[[kafka.to_kafka]]` rule: its filter, the Kafka topic template, the key and the
//! acknowledgement mode; rendering a topic and a key for one message.

use super::config::ToKafka;

/// A piece of a topic template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    /// The Nth wildcard's match (from 1).
    Level(usize),
    ClientId,
}

/// What the record key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// The publisher's client id.
    ClientId,
    /// The MQTT topic.
    Topic,
    /// The topic's Nth level (from 1).
    Level(usize),
    /// No key.
    None,
}

/// One MQTT -> Kafka rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// MQTT topic filter.
    pub filter: String,
    parts: Vec<Part>,
    /// The record key.
    pub key: Key,
    /// The Kafka topic when the template has no placeholder (created at start).
    pub fixed_topic: Option<String>,
    /// Partitions of the fixed topic if the broker creates it (`kafka.partitions` if None).
    pub partitions: Option<i32>,
    /// When the publisher is acknowledged.
    pub ack: Ack,
}

/// When a publish a rule takes is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ack {
    /// Once Kafka acknowledged it (acks = all).
    Kafka,
    /// Once it is durable in the broker's outbox (`kafka::outbox`), produced from there.
    Local,
}

impl Rule {
    /// Checks and compiles `rule`.
    pub fn compile(rule: &ToKafka) -> Result<Self, String> {
        net::topic::validate_topic_filter(&rule.filter).map_err(|e| format!("bad filter: {e}"))?;
        if net::topic::is_shared(&rule.filter) {
            return Err("a shared-subscription filter cannot be a rule".into());
        }
        let wildcards = rule
            .filter
            .split('/')
            .filter(|l| *l == "+" || *l == "#")
            .count();
        let mut parts = Vec::new();
        for piece in template(&rule.topic, "topic")? {
            parts.push(match piece {
                Piece::Text(t) => Part::Text(t.into()),
                Piece::Name("client_id") => Part::ClientId,
                Piece::Name(n) => match n.parse::<usize>() {
                    Ok(i) if (1..=wildcards).contains(&i) => Part::Level(i),
                    _ => {
                        return Err(format!(
                            "topic: `{{{n}}}`: use {{client_id}} or {{1}}..{{{wildcards}}} (the filter's wildcards)"
                        ))
                    }
                },
            });
        }
        if parts.is_empty() {
            return Err("topic: empty".into());
        }
        let fixed_topic = match parts.as_slice() {
            [Part::Text(t)] => {
                check_kafka_topic(t)?;
                Some(t.clone())
            }
            _ => None,
        };
        let key = match rule.key.as_str() {
            "client_id" => Key::ClientId,
            "topic" => Key::Topic,
            "none" => Key::None,
            k => match k.strip_prefix("level:").map(str::parse::<usize>) {
                Some(Ok(n)) if n >= 1 => Key::Level(n),
                _ => {
                    return Err(format!(
                        "key: `{k}`: one of client_id, topic, level:N (N from 1), none"
                    ))
                }
            },
        };
        let ack = match rule.ack.as_str() {
            "kafka" => Ack::Kafka,
            // Acknowledged before Kafka sees it: the topic must exist (created at start).
            "local" if fixed_topic.is_none() => {
                return Err("ack = \"local\" needs a topic without placeholders (created at start): a message is acknowledged before Kafka could say a templated topic does not exist".into())
            }
            "local" => Ack::Local,
            a => return Err(format!("ack: `{a}`: kafka or local")),
        };
        Ok(Self {
            filter: rule.filter.clone(),
            parts,
            key,
            fixed_topic,
            partitions: rule.partitions,
            ack,
        })
    }

    /// True when the rule takes messages published on `topic`.
    pub fn wants(&self, topic: &str) -> bool {
        crate::router::filter::matches(&self.filter, topic)
    }

    /// The Kafka topic for a message on `topic` from `client_id`, into `out`; false if the
    /// result is not a valid Kafka topic name (the message is not produced).
    pub fn render_topic(&self, topic: &str, client_id: &str, out: &mut String) -> bool {
        out.clear();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::ClientId => out.push_str(client_id),
                Part::Level(i) => out.push_str(capture(&self.filter, topic, *i).unwrap_or("")),
            }
        }
        check_kafka_topic(out).is_ok()
    }

    /// The record key for a message on `topic` from `client_id`.
    pub fn key<'a>(&self, topic: &'a str, client_id: &'a str) -> Option<&'a str> {
        match self.key {
            Key::ClientId => Some(client_id),
            Key::Topic => Some(topic),
            Key::Level(n) => topic.split('/').nth(n - 1),
            Key::None => None,
        }
    }
}

/// A piece of a template: literal text or a `{name}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    Text(&'a str),
    Name(&'a str),
}

/// Splits template `s` (the config key `field`) into text and `{name}`s.
pub(crate) fn template<'a>(s: &'a str, field: &str) -> Result<Vec<Piece<'a>>, String> {
    let mut pieces = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        let close = rest
            .get(open..)
            .and_then(|r| r.find('}'))
            .ok_or_else(|| format!("{field}: `{{` without `}}`"))?;
        if open > 0 {
            pieces.push(Piece::Text(rest.get(..open).unwrap_or_default()));
        }
        pieces.push(Piece::Name(
            rest.get(open + 1..open + close).unwrap_or_default(),
        ));
        rest = rest.get(open + close + 1..).unwrap_or_default();
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

/// The part of `topic` the `i`th wildcard (from 1) of `filter` matched.
fn capture<'a>(filter: &str, topic: &'a str, i: usize) -> Option<&'a str> {
    let mut seen = 0;
    let mut at = 0;
    let mut levels = topic.split('/');
    for f in filter.split('/') {
        let level = levels.next()?;
        match f {
            "+" => {
                seen += 1;
                if seen == i {
                    return Some(level);
                }
            }
            "#" => {
                seen += 1;
                return (seen == i).then(|| topic.get(at..)).flatten();
            }
            _ => {}
        }
        at += level.len() + 1;
    }
    None
}

/// Kafka's rule for topic names: 1-249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub(crate) fn check_kafka_topic(t: &str) -> Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "topic: `{t}` is not a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(filter: &str, topic: &str, key: &str) -> Result<Rule, String> {
        Rule::compile(&ToKafka {
            filter: filter.into(),
            topic: topic.into(),
            key: key.into(),
            ack: "kafka".into(),
            partitions: None,
        })
    }

    #[test]
    fn templates_render_wildcard_levels_and_the_client_id() {
        let r = rule("devices/+/telemetry/#", "t-{1}.{2}-{client_id}", "level:2").unwrap();
        let mut out = String::new();
        assert!(!r.render_topic("devices/d1/telemetry/a/b", "c1", &mut out));
        assert_eq!(out, "t-d1.a/b-c1", "`/` is not a Kafka topic character");
        assert!(r.render_topic("devices/d1/telemetry/x", "c1", &mut out));
        assert_eq!(out, "t-d1.x-c1");
        assert_eq!(r.key("devices/d1/telemetry/x", "c1"), Some("d1"));
        let fixed = rule("a/#", "telemetry", "client_id").unwrap();
        assert_eq!(fixed.fixed_topic.as_deref(), Some("telemetry"));
        assert!(fixed.wants("a/b") && !fixed.wants("b"));
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        assert!(rule("a/+", "t{2}", "none").unwrap_err().contains("{2}"));
        assert!(rule("a/+/#x", "t", "none").unwrap_err().contains("filter"));
        assert!(rule("a", "bad topic", "none")
            .unwrap_err()
            .contains("Kafka topic"));
        assert!(rule("a", "t", "level:0").unwrap_err().contains("key"));
        assert!(rule("a", "t{", "none").unwrap_err().contains("`{`"));
    }
}

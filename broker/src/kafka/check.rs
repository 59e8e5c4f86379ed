//! `ringmq kafka check`: what the Kafka bridge would do with a configuration, checked before
//! the broker starts — rule conflicts (a `to_kafka` rule an earlier one hides, overlapping
//! filters, a topic both produced to and consumed), whether the Kafka brokers answer, and
//! whether every topic a rule names exists (or will be created) with the partitions the rule
//! asks for. Each finding names the rule; any error makes the command fail.

use std::fmt::Write as _;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::config::KafkaConfig;
use crate::router::filter::{hides, overlap};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// The bridge would not work as configured.
    Error,
    /// Works, but probably not as meant.
    Warning,
    /// For information.
    Ok,
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// How bad.
    pub level: Level,
    /// What, naming the rule.
    pub text: String,
}

/// The whole report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// In the order found.
    pub findings: Vec<Finding>,
}

impl Report {
    fn push(&mut self, level: Level, text: String) {
        self.findings.push(Finding { level, text });
    }

    /// How many errors.
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.level == Level::Error)
            .count()
    }

    /// The report as text, one finding per line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let tag = match f.level {
                Level::Error => "error",
                Level::Warning => "warning",
                Level::Ok => "ok",
            };
            let _ = writeln!(out, "{tag}: {}", f.text);
        }
        let warnings = self
            .findings
            .iter()
            .filter(|f| f.level == Level::Warning)
            .count();
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let _ = writeln!(
            out,
            "{}, {}",
            plural(self.errors(), "error"),
            plural(warnings, "warning")
        );
        out
    }
}

/// The conflicts between rules, found without Kafka.
pub fn conflicts(config: &KafkaConfig, report: &mut Report) {
    let rules = &config.to_kafka;
    for (j, later) in rules.iter().enumerate() {
        for (i, earlier) in rules.iter().enumerate().take(j) {
            if hides(&earlier.filter, &later.filter) {
                report.push(
                    Level::Error,
                    format!(
                        "kafka.to_kafka[{j}] (filter `{}`) never takes a message: kafka.to_kafka[{i}] (filter `{}`) comes first and matches every topic it does",
                        later.filter, earlier.filter
                    ),
                );
            } else if overlap(&earlier.filter, &later.filter) {
                report.push(
                    Level::Warning,
                    format!(
                        "kafka.to_kafka[{j}] (filter `{}`) overlaps kafka.to_kafka[{i}] (filter `{}`): a topic matching both goes to kafka.to_kafka[{i}] only (the first match wins)",
                        later.filter, earlier.filter
                    ),
                );
            }
        }
    }
    for (i, out) in rules.iter().enumerate() {
        let mut back = config.to_mqtt.iter().enumerate();
        if let Some((j, back)) = back.find(|(_, r)| r.topic == out.topic) {
            report.push(
                Level::Warning,
                format!(
                    "kafka.to_kafka[{i}] produces to `{}`, which kafka.to_mqtt[{j}] consumes: what MQTT clients publish on `{}` reaches MQTT subscribers a second time, from Kafka, on `{}` (not a loop: records from Kafka are not produced again)",
                    out.topic, out.filter, back.mqtt_topic
                ),
            );
        }
    }
}

/// A topic a rule (or the cluster) needs: its name, who needs it, the partitions asked for.
struct Needed {
    topic: String,
    by: String,
    /// As `kafka::create_topics` gives them (a rule's own, else `kafka.partitions`).
    partitions: i32,
    /// A rule (or the cluster) says the partitions: another count is worth a warning.
    said: bool,
    /// The broker creates it at start when missing.
    created: bool,
    /// Another partition count stops the broker's start (the cluster's routes topic).
    exact: bool,
}

/// Checks `config` (validated already: rules compile) against the Kafka it names, waiting at
/// most `kafka.timeout_ms` for it; `cluster` adds the cluster's topics.
pub fn run(
    config: &KafkaConfig,
    cluster: Option<&crate::cluster::config::ClusterConfig>,
) -> Report {
    let mut report = Report::default();
    conflicts(config, &mut report);
    let mut needed = Vec::new();
    // The rules compile (the config was validated); the topics as `create_topics` makes them.
    let rules = super::rules(config).unwrap_or_default();
    let fixed = super::fixed_topics(config, &rules);
    let given = |topic: &str| {
        let partitions = fixed.iter().find(|(t, _)| *t == topic).map(|(_, p)| *p);
        let out = config.to_kafka.iter().map(|r| (&r.topic, r.partitions));
        let back = config.to_mqtt.iter().map(|r| (&r.topic, r.partitions));
        let said = out.chain(back).any(|(t, p)| t == topic && p.is_some());
        (partitions.unwrap_or(config.partitions), said)
    };
    let rule_topics = config.to_kafka.iter().enumerate().map(|(i, rule)| {
        let by = format!("kafka.to_kafka[{i}] (filter `{}`)", rule.filter);
        let fixed = rules.get(i).and_then(|r| r.fixed_topic.clone());
        (by, rule.topic.clone(), fixed.is_some())
    });
    let back_topics = config.to_mqtt.iter().enumerate().map(|(i, rule)| {
        let by = format!("kafka.to_mqtt[{i}] (topic `{}`)", rule.topic);
        (by, rule.topic.clone(), true)
    });
    for (by, topic, fixed) in rule_topics.chain(back_topics) {
        if !fixed {
            report.push(
                Level::Ok,
                format!("{by}: templated topic `{topic}`; each topic it makes must exist (a record to a missing one fails its publisher with 0x97)"),
            );
            continue;
        }
        let (partitions, said) = given(&topic);
        needed.push(Needed {
            topic,
            by,
            partitions,
            said,
            created: config.create_topics,
            exact: false,
        });
    }
    if let Some(c) = cluster {
        for (topic, exact) in [
            (c.routes_topic.clone(), true),
            (c.downlink(), false),
            (c.retained_topic.clone(), false),
            (c.wills_of(&c.node_id), false),
        ] {
            needed.push(Needed {
                topic,
                by: format!("cluster (node `{}`)", c.node_id),
                partitions: if exact { 1 } else { config.partitions },
                said: exact,
                created: true,
                exact,
            });
        }
    }
    let consumer: BaseConsumer<super::Quiet> = match rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("client.id", format!("{}-check", config.client_id))
        .set("broker.address.family", "v4")
        .set("allow.auto.create.topics", "false")
        .create_with_context(super::Quiet)
    {
        Ok(c) => c,
        Err(e) => {
            report.push(Level::Error, format!("kafka: cannot create a client: {e}"));
            return report;
        }
    };
    let wait = Duration::from_millis(config.timeout_ms);
    let metadata = match consumer.fetch_metadata(None, wait) {
        Ok(m) => m,
        Err(e) => {
            report.push(
                Level::Error,
                format!(
                    "kafka.brokers `{}`: no answer within kafka.timeout_ms ({} ms): {e}",
                    config.brokers, config.timeout_ms
                ),
            );
            return report;
        }
    };
    let brokers: Vec<String> = metadata
        .brokers()
        .iter()
        .map(|b| format!("{} at {}:{}", b.id(), b.host(), b.port()))
        .collect();
    report.push(
        Level::Ok,
        format!(
            "kafka.brokers `{}` answered: brokers {}",
            config.brokers,
            brokers.join(", ")
        ),
    );
    let brokers_seen = metadata.brokers().len();
    let replication = usize::try_from(config.replication).unwrap_or(0);
    let find = |topic: &str| {
        let mut topics = metadata.topics().iter();
        topics.find(|t| t.name() == topic && t.error().is_none())
    };
    let creates = needed.iter().any(|n| n.created && find(&n.topic).is_none());
    if creates && replication > brokers_seen {
        report.push(
            Level::Error,
            format!(
                "kafka.replication {replication}: Kafka lists {brokers_seen} broker(s), so a topic created at start cannot have {replication} replicas"
            ),
        );
    }
    for need in needed {
        let asked = need.partitions;
        match find(&need.topic) {
            None if need.created => report.push(
                Level::Ok,
                format!(
                    "{}: topic `{}` does not exist; created at start with {asked} partitions",
                    need.by, need.topic
                ),
            ),
            None => report.push(
                Level::Error,
                format!(
                    "{}: topic `{}` does not exist and kafka.create_topics is false",
                    need.by, need.topic
                ),
            ),
            Some(t) => {
                let have = t.partitions().len();
                let differs = need.said && usize::try_from(need.partitions).ok() != Some(have);
                let (level, note) = match (differs, need.exact) {
                    (false, _) => (Level::Ok, String::new()),
                    (true, true) => (
                        Level::Error,
                        format!(" (it must have exactly {asked}: the broker does not start)"),
                    ),
                    (true, false) => (
                        Level::Warning,
                        format!(" (the rules ask for {asked}; an existing topic is not changed)"),
                    ),
                };
                report.push(
                    level,
                    format!(
                        "{}: topic `{}` exists with {have} partitions{note}",
                        need.by, need.topic
                    ),
                );
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(filters: &[&str]) -> KafkaConfig {
        let mut c = KafkaConfig::default();
        for f in filters {
            c.to_kafka.push(super::super::config::ToKafka {
                filter: (*f).into(),
                topic: "t".into(),
                key: "none".into(),
                ack: "kafka".into(),
                partitions: None,
            });
        }
        c
    }

    #[test]
    fn a_hidden_rule_is_an_error_and_an_overlap_a_warning() {
        let mut report = Report::default();
        // `#` takes no `$` topic: the `$dev/#` rule is neither hidden nor overlapped.
        let rules = ["a/#", "a/b/+", "x/+/y", "x/z/+", "q", "#", "$dev/#"];
        conflicts(&config(&rules), &mut report);
        let levels: Vec<Level> = report.findings.iter().map(|f| f.level).collect();
        // a/b/+ hidden by a/#; x/z/+ overlaps x/+/y; `#` overlaps the five before it.
        let mut want = vec![Level::Error];
        want.extend([Level::Warning; 6]);
        assert_eq!(levels, want, "{report:?}");
        assert!(report.findings[0].text.contains("kafka.to_kafka[1]"));
        assert!(report.findings[0].text.contains("kafka.to_kafka[0]"));
        assert!(report.findings[1].text.contains("kafka.to_kafka[3]"));
        assert_eq!(report.errors(), 1);
        assert!(!report.render().contains("$dev"), "{report:?}");
        assert!(report.render().ends_with("1 error, 6 warnings\n"));
    }

    #[test]
    fn a_wildcard_first_filter_hides_no_dollar_rule() {
        assert!(hides("a/#", "a/b/+"));
        assert!(!hides("#", "$dev/x"));
        assert!(hides("$dev/#", "$dev/x"));
    }

    #[test]
    fn filters_overlap_when_some_topic_matches_both() {
        for (a, b, want) in [
            ("a/b", "a/b", true),
            ("a/+", "a/b", true),
            ("a/#", "a", true),
            ("#", "x/y/z", true),
            ("a/+/c", "a/b/d", false),
            ("a/b", "a/b/c", false),
            ("+/+", "a", false),
            ("a/+/#", "a", false),
            ("#", "$SYS/x", false),
            ("+/x", "$a/x", false),
            ("$a/#", "$a/b", true),
        ] {
            assert_eq!(overlap(a, b), want, "{a} vs {b}");
            assert_eq!(overlap(b, a), want, "{b} vs {a}");
        }
    }
}

//! The `[cluster]` table: this node's id, the heartbeat and the node timeout, the Kafka topics
//! the nodes share; checked at start with errors naming the key.

use serde::Deserialize;

/// `[cluster]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id: unique in the cluster and stable across restarts (its downlink topic
    /// and consumer group are named after it); letters, digits, `.`, `_`, `-`, 1-64 bytes.
    pub node_id: String,
    /// How often this node writes its heartbeat to the routes topic.
    pub heartbeat_ms: u64,
    /// A node without a heartbeat for this long is dead: nothing is routed to it until it
    /// beats again.
    pub node_timeout_ms: u64,
    /// A dead node's persistent sessions keep their routes this long after its last
    /// heartbeat (their messages wait in its downlink); after it, they are dropped too.
    pub node_keep_ms: u64,
    /// The compacted topic of route changes and heartbeats (one partition, created at start).
    pub routes_topic: String,
    /// Node N's downlink topic is this prefix followed by N.
    pub downlink_prefix: String,
    /// The compacted topic of retained messages (keyed by MQTT topic, `kafka.partitions`
    /// partitions, created at start), read from its start by a node starting.
    pub retained_topic: String,
    /// Node N's wills topic is this prefix followed by N (compacted, keyed by client id): the
    /// wills of its connected clients, which another node publishes if N dies.
    pub wills_prefix: String,
    /// A session that moved from this node to another is followed this long: copies for it
    /// still arriving in this node's downlink are produced again to its new node's.
    pub moved_keep_ms: u64,
    /// At most this many sessions followed at once (the oldest is dropped first).
    pub moved_max: usize,
    /// Records this node's downlink may have behind it (not handed on yet) before it says it
    /// is congested in its heartbeats: the other nodes' shards producing copies for it pause
    /// their clients' input until it is at `downlink_behind_resume` again. 0: never.
    pub downlink_behind_max: u64,
    /// A congested node says it is not any more once its downlink is this far behind or less.
    pub downlink_behind_resume: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            heartbeat_ms: 1_000,
            node_timeout_ms: 10_000,
            node_keep_ms: 86_400_000,
            routes_topic: "ringmq.routes".into(),
            downlink_prefix: "ringmq.downlink.".into(),
            retained_topic: "ringmq.retained".into(),
            wills_prefix: "ringmq.wills.".into(),
            moved_keep_ms: 600_000,
            moved_max: 10_000,
            downlink_behind_max: 100_000,
            downlink_behind_resume: 10_000,
        }
    }
}

fn kafka_name(key: &str, name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 200
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "cluster.{key}: `{name}`: 1-200 letters, digits, `.`, `_` or `-`"
        ));
    }
    Ok(())
}

impl ClusterConfig {
    /// Checks every value; the error names the key.
    pub fn check(&self) -> Result<(), String> {
        if self.node_id.len() > 64 {
            return Err("cluster.node_id: at most 64 bytes".into());
        }
        kafka_name("node_id", &self.node_id)?;
        if self.node_keep_ms < self.node_timeout_ms {
            return Err("cluster.node_keep_ms: at least cluster.node_timeout_ms".into());
        }
        kafka_name("routes_topic", &self.routes_topic)?;
        kafka_name("downlink_prefix", &self.downlink_prefix)?;
        kafka_name("retained_topic", &self.retained_topic)?;
        kafka_name("wills_prefix", &self.wills_prefix)?;
        if self.wills_prefix.starts_with(&self.downlink_prefix)
            || self.downlink_prefix.starts_with(&self.wills_prefix)
            || self.routes_topic.starts_with(&self.wills_prefix)
            || self.retained_topic.starts_with(&self.wills_prefix)
        {
            return Err(
                "cluster.wills_prefix: overlaps cluster.downlink_prefix or another cluster topic"
                    .into(),
            );
        }
        if !(100..=60_000).contains(&self.heartbeat_ms) {
            return Err("cluster.heartbeat_ms: between 100 and 60000".into());
        }
        if self.node_timeout_ms < (3 * self.heartbeat_ms).max(1_000)
            || self.node_timeout_ms > 3_600_000
        {
            return Err("cluster.node_timeout_ms: at least three times cluster.heartbeat_ms and 1000, at most 3600000".into());
        }
        if !(1_000..=86_400_000).contains(&self.moved_keep_ms)
            || self.moved_keep_ms < self.node_timeout_ms
        {
            return Err(
                "cluster.moved_keep_ms: between 1000 and 86400000, at least cluster.node_timeout_ms"
                    .into(),
            );
        }
        if !(1..=1_000_000).contains(&self.moved_max) {
            return Err("cluster.moved_max: between 1 and 1000000".into());
        }
        if self.downlink_behind_max != 0 && self.downlink_behind_resume >= self.downlink_behind_max
        {
            return Err("cluster.downlink_behind_resume: below cluster.downlink_behind_max".into());
        }
        if self.downlink() == self.routes_topic {
            return Err("cluster.routes_topic: the same as this node's downlink topic".into());
        }
        if self.retained_topic == self.routes_topic
            || self.retained_topic.starts_with(&self.downlink_prefix)
        {
            return Err(
                "cluster.retained_topic: the routes topic or a name in cluster.downlink_prefix"
                    .into(),
            );
        }
        Ok(())
    }

    /// This node's downlink topic.
    pub fn downlink(&self) -> String {
        self.downlink_of(&self.node_id)
    }

    /// Node `node`'s downlink topic.
    pub fn downlink_of(&self, node: &str) -> String {
        format!("{}{node}", self.downlink_prefix)
    }

    /// Node `node`'s wills topic.
    pub fn wills_of(&self, node: &str) -> String {
        format!("{}{node}", self.wills_prefix)
    }

    /// The consumer group of this node's downlink.
    pub fn group(&self) -> String {
        Self::group_of(&self.node_id)
    }

    /// The consumer group of node `node`'s downlink.
    pub fn group_of(node: &str) -> String {
        format!("ringmq-node-{node}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_name_the_key() {
        let ok = ClusterConfig {
            node_id: "n1".into(),
            ..Default::default()
        };
        assert_eq!(ok.check(), Ok(()));
        assert_eq!(ok.downlink(), "ringmq.downlink.n1");
        for (bad, key) in [
            (
                ClusterConfig {
                    node_id: String::new(),
                    ..ok.clone()
                },
                "cluster.node_id",
            ),
            (
                ClusterConfig {
                    node_id: "a/b".into(),
                    ..ok.clone()
                },
                "cluster.node_id",
            ),
            (
                ClusterConfig {
                    node_timeout_ms: 1_000,
                    ..ok.clone()
                },
                "cluster.node_timeout_ms",
            ),
            (
                ClusterConfig {
                    retained_topic: "ringmq.downlink.r".into(),
                    ..ok.clone()
                },
                "cluster.retained_topic",
            ),
            (
                ClusterConfig {
                    retained_topic: "ringmq.routes".into(),
                    ..ok.clone()
                },
                "cluster.retained_topic",
            ),
            (
                ClusterConfig {
                    downlink_behind_resume: 100_000,
                    ..ok.clone()
                },
                "cluster.downlink_behind_resume",
            ),
        ] {
            assert!(bad.check().unwrap_err().starts_with(key), "{bad:?}");
        }
    }
}

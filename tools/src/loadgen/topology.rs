//! Who publishes where and who subscribes to what, per scenario, and which (subscriber group,
//! publisher) pairs must see every message (the basis of exact loss accounting); and which
//! broker node each client connects to, with what CONNECT.

use std::net::SocketAddr;

use super::wire::Hello;

/// A publishing client.
#[derive(Debug, Clone)]
pub struct PublisherSpec {
    /// Client identifier.
    pub client_id: String,
    /// Topic it publishes to.
    pub topic: String,
}

/// A subscribing client.
#[derive(Debug, Clone)]
pub struct SubscriberSpec {
    /// Client identifier.
    pub client_id: String,
    /// Its one subscription.
    pub filter: String,
    /// Accounting group: its own index, or the shared group's, whose members together must
    /// see every message once.
    pub group: u32,
}

/// A scenario's clients.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Scenario name for reports.
    pub name: String,
    /// Publishers (index = position).
    pub publishers: Vec<PublisherSpec>,
    /// Subscribers.
    pub subscribers: Vec<SubscriberSpec>,
    /// (group, publisher) pairs that must receive every acknowledged message.
    pub expected: Vec<(u32, u32)>,
}

impl Topology {
    /// Publisher i -> topic i -> subscriber i (TBMQ's point-to-point test).
    pub fn p2p(pairs: usize, prefix: &str) -> Self {
        Self {
            name: "p2p".into(),
            publishers: (0..pairs)
                .map(|i| PublisherSpec {
                    client_id: format!("{prefix}-pub-{i}"),
                    topic: format!("rb/p2p/{i}"),
                })
                .collect(),
            subscribers: (0..pairs)
                .map(|i| SubscriberSpec {
                    client_id: format!("{prefix}-sub-{i}"),
                    filter: format!("rb/p2p/{i}"),
                    group: i as u32,
                })
                .collect(),
            expected: (0..pairs as u32).map(|i| (i, i)).collect(),
        }
    }

    /// Many publishers, few subscribers, each subscriber seeing every message; with `shared`,
    /// the subscribers form one `$share` group and each message goes to one of them.
    pub fn fan_in(publishers: usize, subscribers: usize, shared: bool, prefix: &str) -> Self {
        let filter = if shared {
            "$share/rb/rb/fanin/+".to_string()
        } else {
            "rb/fanin/+".to_string()
        };
        let subs: Vec<SubscriberSpec> = (0..subscribers)
            .map(|i| SubscriberSpec {
                client_id: format!("{prefix}-sub-{i}"),
                filter: filter.clone(),
                group: if shared { 0 } else { i as u32 },
            })
            .collect();
        let groups: Vec<u32> = if shared {
            vec![0]
        } else {
            (0..subscribers as u32).collect()
        };
        Self {
            name: if shared {
                "fan-in-shared".into()
            } else {
                "fan-in".into()
            },
            publishers: (0..publishers)
                .map(|i| PublisherSpec {
                    client_id: format!("{prefix}-pub-{i}"),
                    topic: format!("rb/fanin/{i}"),
                })
                .collect(),
            subscribers: subs,
            expected: groups
                .iter()
                .flat_map(|&g| (0..publishers as u32).map(move |p| (g, p)))
                .collect(),
        }
    }

    /// Few publishers, many subscribers, every subscriber seeing every message.
    pub fn fan_out(publishers: usize, subscribers: usize, prefix: &str) -> Self {
        Self {
            name: "fan-out".into(),
            publishers: (0..publishers)
                .map(|i| PublisherSpec {
                    client_id: format!("{prefix}-pub-{i}"),
                    topic: format!("rb/fanout/{i}"),
                })
                .collect(),
            subscribers: (0..subscribers)
                .map(|i| SubscriberSpec {
                    client_id: format!("{prefix}-sub-{i}"),
                    filter: "rb/fanout/+".into(),
                    group: i as u32,
                })
                .collect(),
            expected: (0..subscribers as u32)
                .flat_map(|s| (0..publishers as u32).map(move |p| (s, p)))
                .collect(),
        }
    }

    /// Kafka -> MQTT: `keys` Kafka keys stand for the publishers (the broker maps a record
    /// with key `kK` to MQTT `rb/kafka/kK`); every subscriber (`rb/kafka/+`) sees every record.
    pub fn kafka_in(keys: usize, subscribers: usize, prefix: &str) -> Self {
        let mut t = Self::fan_out(keys, subscribers, prefix);
        t.name = "kafka-in".into();
        for (i, p) in t.publishers.iter_mut().enumerate() {
            p.client_id = format!("k{i}");
            p.topic = format!("rb/kafka/k{i}");
        }
        for s in &mut t.subscribers {
            s.filter = "rb/kafka/+".into();
        }
        t
    }

    /// MQTT -> Kafka: `publishers` MQTT publishers on `rb/kout/i`, produced to Kafka by the
    /// broker's `[[kafka.to_kafka]]` rule; one Kafka consumer (group 0) sees every message.
    pub fn kafka_out(publishers: usize, prefix: &str) -> Self {
        let mut t = Self::p2p(publishers, prefix);
        t.name = "kafka-out".into();
        for (i, p) in t.publishers.iter_mut().enumerate() {
            p.topic = format!("rb/kout/{i}");
        }
        t.subscribers.clear();
        t.expected = (0..publishers as u32).map(|p| (0, p)).collect();
        t
    }

    /// Deliveries per published message (fan-out factor; 1 for p2p and shared fan-in).
    pub fn deliveries_per_message(&self) -> f64 {
        if self.publishers.is_empty() {
            0.0
        } else {
            self.expected.len() as f64 / self.publishers.len() as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let t = Topology::fan_out(2, 10, "x");
        assert_eq!(
            (t.publishers.len(), t.subscribers.len(), t.expected.len()),
            (2, 10, 20)
        );
        assert_eq!(t.deliveries_per_message(), 10.0);
        let t = Topology::fan_in(50, 4, true, "x");
        assert_eq!(t.expected.len(), 50);
        assert!(t
            .subscribers
            .iter()
            .all(|s| s.group == 0 && s.filter.starts_with("$share/")));
        let t = Topology::p2p(3, "x");
        assert_eq!(t.expected, vec![(0, 0), (1, 1), (2, 2)]);
    }
}

/// Where each client of a topology connects, and how it says hello.
impl super::Load {
    /// Each subscriber's address and CONNECT (with its SUBSCRIBE), in order.
    pub fn subscriber_hellos<'a>(&'a self, topology: &'a Topology) -> Vec<(SocketAddr, Hello<'a>)> {
        (topology.subscribers.iter().enumerate())
            .map(|(index, s)| {
                let hello = Hello {
                    client_id: &s.client_id,
                    version: self.version,
                    clean: !self.persistent,
                    session_expiry: 3600,
                    subscribe: Some((s.filter.as_str(), self.qos)),
                    layers: &self.layers,
                };
                (self.subscriber_addr(index), hello)
            })
            .collect()
    }

    /// Each of `publishers`' address and CONNECT, in order.
    pub fn publisher_hellos<'a>(
        &'a self,
        publishers: &'a [PublisherSpec],
    ) -> Vec<(SocketAddr, Hello<'a>)> {
        (publishers.iter().enumerate())
            .map(|(index, p)| {
                let hello = Hello {
                    client_id: &p.client_id,
                    version: self.version,
                    clean: true,
                    session_expiry: 0,
                    subscribe: None,
                    layers: &self.layers,
                };
                (self.publisher_addr(index), hello)
            })
            .collect()
    }

    /// Where subscriber `index` connects.
    pub fn subscriber_addr(&self, index: usize) -> SocketAddr {
        match self.nodes.len() {
            0 => self.addr,
            n => self
                .nodes
                .get((index + 1) % n)
                .copied()
                .unwrap_or(self.addr),
        }
    }

    /// Where publisher `index` connects.
    pub fn publisher_addr(&self, index: usize) -> SocketAddr {
        let single = self.pub_addr.unwrap_or(self.addr);
        match self.nodes.len() {
            0 => single,
            n => self.nodes.get(index % n).copied().unwrap_or(single),
        }
    }
}

#[cfg(test)]
mod node_tests {
    use super::SocketAddr;

    /// Over a cluster every pair is split over two nodes; without one, `addr` and
    /// `pub_addr` hold.
    #[test]
    fn pairs_spread_over_the_nodes() {
        let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let mut load = crate::matrix::load(net::codec::QoS::AtLeastOnce, 64, 0.0, 1.0);
        load.addr = at(1);
        assert_eq!(
            (load.publisher_addr(5), load.subscriber_addr(5)),
            (at(1), at(1))
        );
        load.pub_addr = Some(at(2));
        assert_eq!(
            (load.publisher_addr(5), load.subscriber_addr(5)),
            (at(2), at(1))
        );
        load.nodes = vec![at(10), at(11), at(12)];
        for i in 0..9 {
            let (p, s) = (load.publisher_addr(i), load.subscriber_addr(i));
            assert_ne!(p, s, "pair {i} crosses");
            assert_eq!(p, at(10 + (i % 3) as u16));
        }
    }
}

//! Published figures of other brokers, cited in BENCHMARKS.md apart from what was measured:
//! who, the test, the hardware, the figure, and the source, with what makes it not comparable
//! one-to-one with this machine's runs.

/// One published result.
struct Cited {
    who: &'static str,
    test: &'static str,
    hardware: &'static str,
    figure: &'static str,
    source: &'static str,
}

const CITED: [Cited; 4] = [
    Cited {
        who: "TBMQ (ThingsBoard)",
        test: "P2P, persistent DEVICE clients (clean_session = false), QoS 1, 62 B, one message per second per publisher, 10-minute phases from 200k to 1M msg/s; sessions in Redis Cluster, routing through Kafka",
        hardware: "AWS EKS, broker nodes scaled with the load (plus Kafka and Redis nodes)",
        figure: "1M msg/s counted as incoming + outgoing (500k delivered); on average about 8,900 msg/s per broker CPU core",
        source: "https://thingsboard.io/docs/mqtt-broker/reference/1m-throughput-p2p-performance-test and https://www.preprints.org/manuscript/202505.0445/v1",
    },
    Cited {
        who: "TBMQ (ThingsBoard)",
        test: "fan-out, one node: 100 publishers x 10 msg/s, 3,000 subscribers of a wildcard each, QoS 0, ~66 B, 30 minutes",
        hardware: "m7a.8xlarge (32 vCPU, 128 GiB) with 3 Kafka nodes and a PostgreSQL RDS instance",
        figure: "3M msg/s delivered at 54% CPU and 75 GiB, latency avg 7.4 ms, p95 11 ms",
        source: "https://thingsboard.io/docs/mqtt-broker/reference/3m-throughput-single-node-performance-test",
    },
    Cited {
        who: "EMQX 5.1.0",
        test: "MQTT -> Kafka through the rule engine: 100,000 clients, each one QoS 1 message of 1 KiB per second",
        hardware: "one EMQX node, 32 cores / 64 GiB (Alibaba c6.8xlarge), Kafka standalone on another",
        figure: "100k msg/s bridged to Kafka",
        source: "https://emqx.com/en/blog/mqtt-performance-benchmark-testing-emqx-kafka-integration",
    },
    Cited {
        who: "Zilla Plus (Aklivity)",
        test: "OpenMessaging Benchmark with Kafka clients through the proxy, against Kafka on EC2 (part 1) and Confluent Cloud (part 2); no MQTT figure published",
        hardware: "AWS EC2 / Confluent Cloud",
        figure: "p99 under 3 ms added on publish and 4 ms end to end (part 2); up to 2x lower p99 than bare Kafka (part 1)",
        source: "https://www.aklivity.io/post/zilla-plus-on-confluent-cloud-aklivity-zilla-benchmark-series-part-2",
    },
];

/// The section, in markdown.
pub fn section() -> String {
    let mut md = String::from(
        "## Published figures of other brokers (not measured here)\n\n\
         Cited from their authors, on their hardware; none was run on this machine, and their \
         units differ (TBMQ counts incoming plus outgoing messages; the tables above count \
         deliveries). A figure per core is the fairest comparison with one ringmq core here, \
         and still only a rough one (other CPUs, real networks, clusters).\n\n\
         | who | test | hardware | figure | source |\n|---|---|---|---|---|\n",
    );
    for c in &CITED {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            c.who, c.test, c.hardware, c.figure, c.source
        ));
    }
    md.push('\n');
    md
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_citation_names_its_source() {
        let md = super::section();
        assert_eq!(md.matches("| https://").count(), super::CITED.len());
        assert!(md.contains("not measured here"));
    }
}

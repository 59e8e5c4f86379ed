//! A cluster node against librdkafka's mock cluster answering with an error a real Kafka gives
//! rarely: an out-of-order sequence answer to the routes producer (the idempotent producer
//! fails for good) has the node replace that producer; a later SUBSCRIBE is acknowledged and
//! both subscriptions' route records are in the topic; with Kafka slow to answer, a SUBACK
//! waits for its route record's acknowledgement.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
#[path = "common/kafka.rs"]
mod kafka;

use std::time::{Duration, Instant};

use common::{scratch_dir, Broker, Raw};
use net::codec::{ProtocolVersion, QoS};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

#[test]
fn a_routes_producer_that_failed_for_good_is_replaced_and_route_records_reach_kafka_again() {
    let mock = MockCluster::new(1).unwrap();
    for topic in [
        "ringmq.routes",
        "ringmq.downlink.m",
        "ringmq.retained",
        "ringmq.wills.m",
    ] {
        mock.create_topic(topic, 1, 1).unwrap();
    }
    let dir = scratch_dir("cluster-mock");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ringmq.toml");
    std::fs::write(
        &path,
        format!(
            "[kafka]\nbrokers = \"{}\"\npartitions = 1\ntimeout_ms = 5000\nlinger_ms = 1\n\
             [cluster]\nnode_id = \"m\"\nheartbeat_ms = 200\nnode_timeout_ms = 1500\n",
            mock.bootstrap_servers()
        ),
    )
    .unwrap();
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let broker = Broker::start(&[
        "--config",
        path.to_str().unwrap(),
        "--metrics-listen",
        &metrics,
    ]);
    let (mut c, _) = Raw::connect(broker.addr, ProtocolVersion::V5, "mock-sub", true);
    c.subscribe("f/1", QoS::AtLeastOnce);
    // The next Produce answer is out of order: the routes producer (the only one producing
    // here: heartbeats and route records) fails for good.
    let desync = RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER;
    mock.request_errors(RDKafkaApiKey::Produce, &[desync]);
    let series = "ringmq_cluster_routes_producers_replaced_total";
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::metric(&metrics, series) < 1 {
        assert!(
            Instant::now() < deadline,
            "the routes producer was not replaced"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The replacement writes route records.
    c.subscribe("f/2", QoS::AtLeastOnce);
    let records = kafka::consume(
        &mock.bootstrap_servers(),
        "ringmq.routes",
        usize::MAX,
        Duration::from_secs(5),
    );
    let routes: Vec<(String, String)> = records
        .iter()
        .filter_map(|r| {
            let key = r.key.clone()?;
            key.contains('/')
                .then(|| (key, String::from_utf8_lossy(&r.payload).into_owned()))
        })
        .collect();
    for key in ["m/f/1", "m/f/2"] {
        assert!(
            routes.iter().any(|(k, v)| k == key && v == "1"),
            "{key} in the routes topic: {routes:?}"
        );
    }
    // Kafka slow to answer: the SUBACK waits for the route record's acknowledgement.
    mock.broker_round_trip_time(1, Duration::from_millis(1500))
        .unwrap();
    let start = Instant::now();
    c.subscribe("f/3", QoS::AtLeastOnce);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1000),
        "SUBACK after {waited:?}, before Kafka answered"
    );
    drop(broker);
}

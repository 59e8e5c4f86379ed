//! The Kafka sink (one module, through its public API) against librdkafka's mock cluster: a
//! producer that fails for good (librdkafka's fatal error, raised with its test hook) is
//! replaced; what it held is refused, never acknowledged; later messages reach Kafka again.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::kafka::config::{KafkaConfig, ToKafka};
use broker::kafka::rule::Rule;
use broker::kafka::sink::KafkaSink;
use broker::session::Message;
use broker::sink::{Offer, Sink};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::Producer;

fn message() -> Message {
    Message::new(
        "a/1".into(),
        bytes::Bytes::from_static(b"p"),
        net::codec::QoS::AtLeastOnce,
        false,
        net::codec::BoxedProperties::default(),
        Instant::now(),
    )
}

/// Waits for the report of `token`.
fn report(sink: &mut KafkaSink, token: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    loop {
        sink.confirmed(&mut out);
        if let Some((_, ok)) = out.iter().find(|(t, _)| *t == token) {
            return *ok;
        }
        assert!(Instant::now() < deadline, "no report for {token}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_producer_that_failed_for_good_is_replaced() {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic("t", 1, 1).unwrap();
    let config = KafkaConfig {
        brokers: mock.bootstrap_servers(),
        linger_ms: 50,
        timeout_ms: 5_000,
        ..KafkaConfig::default()
    };
    let rule = Rule::compile(&ToKafka {
        filter: "a/#".into(),
        topic: "t".into(),
        key: "none".into(),
        ack: "kafka".into(),
        partitions: None,
    })
    .unwrap();
    let bell = std::env::temp_dir().join(format!("ringmq-bell-{}", std::process::id()));
    let doorbell = std::fs::File::create(&bell).unwrap();
    let mut sink = KafkaSink::new(&config, Arc::new(vec![rule]), 0, 1 << 20, doorbell).unwrap();
    assert_eq!(sink.offer(&message(), "p", Some(1), 0), Offer::Pending);
    assert!(report(&mut sink, 1), "delivered");
    // A record waiting in the producer when it fails for good.
    assert_eq!(sink.offer(&message(), "p", Some(2), 0), Offer::Pending);
    let code = unsafe {
        rdkafka::bindings::rd_kafka_test_fatal_error(
            sink.producer().client().native_ptr(),
            rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
            c"test".as_ptr(),
        )
    };
    assert_eq!(
        code,
        rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
    );
    assert!(!report(&mut sink, 2), "refused, never acknowledged");
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.producers_replaced() == 0 {
        let mut out = Vec::new();
        sink.confirmed(&mut out);
        assert!(Instant::now() < deadline, "the producer was not replaced");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(sink.offer(&message(), "p", Some(3), 0), Offer::Pending);
    assert!(report(&mut sink, 3), "delivered by the new producer");
    let _ = std::fs::remove_file(&bell);
}

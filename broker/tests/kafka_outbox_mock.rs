//! `ack = "local"` against librdkafka's mock cluster answering with errors a real Kafka gives
//! rarely: a record refused for itself ("message too large"), already acknowledged to its
//! publisher, is produced once more alone, then set aside in `kafka-outbox/dead/` with its
//! bytes, and the outbox goes on with the records after it; an out-of-order sequence answer
//! (the idempotent producer fails for good) has the outbox replace its producer and produce
//! again what Kafka had not acknowledged, in order.
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

use common::{id_on, scratch_dir, Broker, Raw};
use net::codec::{ProtocolVersion, QoS};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

/// The files in `dir` (none if it does not exist).
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

/// A broker with one `ack = "local"` rule (`local/+/t` -> `loc`) on the mock cluster.
fn start<C: rdkafka::ClientContext>(
    mock: &MockCluster<'_, C>,
    name: &str,
) -> (Broker, std::path::PathBuf, String) {
    let dir = scratch_dir(name);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ringmq.toml");
    std::fs::write(
        &path,
        format!(
            "[kafka]\nbrokers = \"{}\"\npartitions = 1\ntimeout_ms = 2000\n\
             [[kafka.to_kafka]]\nfilter = \"local/+/t\"\ntopic = \"loc\"\nkey = \"none\"\nack = \"local\"\n",
            mock.bootstrap_servers()
        ),
    )
    .unwrap();
    let data = dir.join("data");
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let args = [
        "--config",
        path.to_str().unwrap(),
        "--metrics-listen",
        &metrics,
    ];
    (Broker::start_in(&data, &args), data, metrics)
}

/// [`start`], with the topic `loc` created and a client whose first message (`first`) is
/// acknowledged and in Kafka.
fn started<C: rdkafka::ClientContext>(
    mock: &MockCluster<'_, C>,
    name: &str,
    first: &[u8],
) -> (Broker, std::path::PathBuf, String, Raw) {
    mock.create_topic("loc", 1, 1).unwrap();
    let (broker, data, metrics) = start(mock, name);
    let (mut c, _) = Raw::connect(broker.addr, ProtocolVersion::V5, &id_on(name, 0), true);
    c.publish("local/a/t", first, QoS::AtLeastOnce, 1);
    assert_eq!(c.puback_within(1, Duration::from_secs(10)), Some(0));
    let got = kafka::consume(&mock.bootstrap_servers(), "loc", 1, Duration::from_secs(20));
    assert_eq!(got.len(), 1, "the first record reached Kafka");
    (broker, data, metrics, c)
}

/// Waits until the metric `series` (summed over shards) is at least `least`.
fn metric_reaches(metrics: &str, series: &str, least: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::metric(metrics, series) < least {
        assert!(Instant::now() < deadline, "{series} below {least}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_record_kafka_refuses_for_itself_is_set_aside_and_the_rest_go_on() {
    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    let (broker, data, metrics, mut c) = started(&mock, "kafka-dead-letter", b"first");
    // The next two produce requests (the batch, then the record alone) are refused.
    let too_large = RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE;
    mock.request_errors(RDKafkaApiKey::Produce, &[too_large, too_large]);
    c.publish("local/a/t", b"refused", QoS::AtLeastOnce, 2);
    assert_eq!(
        c.puback_within(2, Duration::from_secs(10)),
        Some(0),
        "acknowledged once in the outbox, whatever Kafka says later"
    );
    let dead = data.join("kafka-outbox").join("dead");
    let deadline = Instant::now() + Duration::from_secs(30);
    while files(&dead).is_empty() {
        assert!(Instant::now() < deadline, "no record set aside in {dead:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    metric_reaches(&metrics, "ringmq_kafka_dead_letters_total", 1);
    let kept = files(&dead);
    assert_eq!(kept.len(), 1, "{kept:?}");
    let bytes = std::fs::read(&kept[0]).unwrap();
    assert!(
        bytes.windows(7).any(|w| w == b"refused"),
        "the dead letter holds the record's payload"
    );
    // The outbox goes on: the next record reaches Kafka after the first; the refused one
    // never does.
    c.publish("local/a/t", b"third", QoS::AtLeastOnce, 3);
    assert_eq!(c.puback_within(3, Duration::from_secs(10)), Some(0));
    let got = kafka::consume(&brokers, "loc", 2, Duration::from_secs(20));
    let payloads: Vec<&[u8]> = got.iter().map(|r| r.payload.as_slice()).collect();
    assert_eq!(payloads, vec![&b"first"[..], &b"third"[..]]);
    drop(broker);
}

#[test]
fn a_producer_that_failed_for_good_is_replaced_and_the_outbox_produces_again() {
    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    let (broker, _, metrics, mut c) = started(&mock, "kafka-outbox-fatal", b"m1");
    // An out-of-order sequence answer: librdkafka's idempotent producer fails for good. A
    // producer that stayed failed would deliver nothing more.
    let desync = RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER;
    mock.request_errors(RDKafkaApiKey::Produce, &[desync]);
    for n in 2..=6u16 {
        c.publish("local/a/t", format!("m{n}").as_bytes(), QoS::AtLeastOnce, n);
        assert_eq!(c.puback_within(n, Duration::from_secs(10)), Some(0));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // More than six asked for: repeats may come among them.
        let got = kafka::consume(&brokers, "loc", 20, Duration::from_secs(5));
        // Repeats (produced again after the replacement) dropped by outbox id.
        let mut ids = std::collections::HashSet::new();
        let payloads: Vec<String> = got
            .iter()
            .filter(|r| {
                let id = r.headers.iter().find(|(k, _)| k == "ringmq.outbox_id");
                ids.insert(id.map(|(_, v)| v.clone()))
            })
            .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
            .collect();
        if payloads.len() == 6 {
            assert_eq!(payloads, ["m1", "m2", "m3", "m4", "m5", "m6"]);
            // Replaced, not recovered in place.
            metric_reaches(&metrics, "ringmq_kafka_producers_replaced_total{", 1);
            break;
        }
        assert!(Instant::now() < deadline, "not all in Kafka: {payloads:?}");
    }
    drop(broker);
}

//! The load generator against the real broker (in-process, 2 shards) on a few messages:
//! exact loss / duplicate accounting and sane histograms.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use net::codec::{ProtocolVersion, QoS};
use tools::loadgen::{run_p2p, P2p};

#[test]
fn p2p_against_ringmq_accounts_exactly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = broker::config::Config {
        listen: addr,
        shards: 2,
        ..Default::default()
    }
    .validate()
    .unwrap();
    let broker = broker::run(config).unwrap();
    for (qos, version) in [
        (QoS::AtMostOnce, ProtocolVersion::V311),
        (QoS::AtLeastOnce, ProtocolVersion::V311),
        (QoS::ExactlyOnce, ProtocolVersion::V5),
    ] {
        let report = run_p2p(P2p {
            addr,
            pairs: 8,
            qos,
            payload_bytes: 64,
            rate: 500,
            inflight: 16,
            warmup: Duration::from_millis(200),
            duration: Duration::from_millis(800),
            drain: Duration::from_secs(5),
            version,
            broker_pid: Some(std::process::id()),
            client_prefix: format!("t{}", qos as u8),
        })
        .unwrap();
        eprint!("{}", report.table());
        assert!(report.sent > 0);
        assert_eq!(
            report.acknowledged, report.sent,
            "{qos:?}: every publish acknowledged"
        );
        assert_eq!(
            report.delivered, report.acknowledged,
            "{qos:?}: every message delivered"
        );
        assert_eq!(
            (report.lost, report.duplicated, report.out_of_order),
            (0, 0, 0),
            "{qos:?}"
        );
        // ~8 pairs x 500 msg/s for 0.8 s.
        assert!(
            report.delivered_per_second > 1000.0,
            "{}",
            report.delivered_per_second
        );
        assert!(
            report.latency.count > 0
                && report.latency.p50_us > 0.0
                && report.latency.p99_us >= report.latency.p50_us
        );
        if qos != QoS::AtMostOnce {
            assert!(report.ack_latency.count > 0);
        }
        assert!(report.broker_cpu_seconds.is_some());
    }
    broker.stop();
    broker.join().unwrap();
}

//! `ringmq-bench --tls` / `--ws` against the real broker (in-process, 2 shards) with TLS,
//! WebSocket and secure WebSocket listeners: exact accounting over each, full and resumed
//! TLS handshakes in the connection scenario. Certificates from Debian's openssl.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../broker/tests/common/certs.rs"]
mod certs;

use std::net::SocketAddr;
use std::time::Duration;

use net::codec::{ProtocolVersion, QoS};
use tools::loadgen::conn::{run_conn, ConnLoad};
use tools::loadgen::layers::Layers;
use tools::loadgen::topology::Topology;
use tools::loadgen::{run, Load};

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn p2p_and_connections_over_tls_and_websocket() {
    let dir = std::env::temp_dir().join(format!("ringmq-bench-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let certs = certs::Certs::new(dir.clone());
    certs.server("server", "ca");
    let (tcp, tls, ws, wss) = (free_addr(), free_addr(), free_addr(), free_addr());
    let config = broker::config::Config {
        listen: tcp,
        tls_listen: Some(tls),
        ws_listen: Some(ws),
        wss_listen: Some(wss),
        tls_cert: Some(certs.pem("server").into()),
        tls_key: Some(certs.key("server").into()),
        shards: 2,
        durability: broker::config::Durability::Memory,
        ..Default::default()
    }
    .validate()
    .unwrap();
    let broker = broker::run(config).unwrap();
    let ca = std::path::PathBuf::from(certs.pem("ca"));
    let secure = Some(Layers::tls_config(&ca, false).unwrap());
    let cases = [
        (tls, secure.clone(), None),
        (ws, None, Some("/mqtt".to_owned())),
        (wss, secure.clone(), Some("/mqtt".to_owned())),
    ];
    for (addr, tls, ws_path) in cases {
        let layers = Layers { tls, ws_path };
        let name = layers.name();
        let load = Load {
            addr,
            qos: QoS::AtLeastOnce,
            payload_bytes: 64,
            json: false,
            rate: 300.0,
            inflight: 16,
            warmup: Duration::from_millis(200),
            duration: Duration::from_millis(800),
            drain: Duration::from_secs(5),
            version: ProtocolVersion::V5,
            broker_pid: Some(std::process::id()),
            persistent: false,
            offline: None,
            kafka_in: None,
            kafka_out: None,
            layers,
        };
        let report = run(&Topology::p2p(4, &format!("l{name}")), &load).unwrap();
        eprint!("{name}: {}", report.table());
        assert!(
            report.sent > 0 && report.acknowledged == report.sent,
            "{name}"
        );
        assert_eq!(report.delivered, report.sent, "{name}");
        assert_eq!((report.lost, report.duplicated), (0, 0), "{name}");
    }
    for resume in [false, true] {
        let report = run_conn(&ConnLoad {
            addr: tls,
            clients: 100,
            workers: 2,
            version: ProtocolVersion::V311,
            broker_pid: Some(std::process::id()),
            prefix: format!("tls{resume}"),
            layers: Layers {
                tls: Some(Layers::tls_config(&ca, resume).unwrap()),
                ws_path: None,
            },
            settle: Duration::from_millis(100),
        })
        .unwrap();
        eprint!("{}", report.table());
        assert_eq!(report.clients, 100);
    }
    broker.stop();
    broker.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

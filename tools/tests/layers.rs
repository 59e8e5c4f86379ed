//! `ringmq-bench --tls` / `--ws` against the real broker (in-process, 2 shards) with TLS,
//! WebSocket and secure WebSocket listeners: exact accounting over each, full and resumed
//! TLS handshakes in the connection scenario. Certificates from Debian's openssl.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../broker/tests/common/certs.rs"]
mod certs;
mod support;

use std::time::Duration;

use net::codec::{ProtocolVersion, QoS};
use support::{free_addr, load};
use tools::loadgen::conn::{run_conn, ConnLoad};
use tools::loadgen::layers::Layers;
use tools::loadgen::topology::Topology;
use tools::loadgen::{run, Load};

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
            layers,
            ..load(addr, QoS::AtLeastOnce, ProtocolVersion::V5)
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

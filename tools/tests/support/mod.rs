//! What the load generator's test binaries share: a free local address and a small P2P
//! load to run over it.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use net::codec::{ProtocolVersion, QoS};
use tools::loadgen::Load;

/// A free port on 127.0.0.1.
pub fn free_addr() -> SocketAddr {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// A short paced load: 64 B payloads at 300 msg/s per publisher, 16 in flight, 0.8 s measured.
pub fn load(addr: SocketAddr, qos: QoS, version: ProtocolVersion) -> Load {
    Load {
        addr,
        pub_addr: None,
        nodes: Vec::new(),
        other_pids: Vec::new(),
        qos,
        payload_bytes: 64,
        json: false,
        rate: 300.0,
        inflight: 16,
        warmup: Duration::from_millis(200),
        duration: Duration::from_millis(800),
        drain: Duration::from_secs(5),
        version,
        broker_pid: Some(std::process::id()),
        persistent: false,
        offline: None,
        kafka_in: None,
        kafka_out: None,
        layers: Default::default(),
    }
}

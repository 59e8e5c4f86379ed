//! The Redis store over TLS (`rediss://`) to a real redis-server with a TLS port and client
//! certificates required (`tls-auth-clients yes`), certificates made by openssl: the crash
//! test (every batch's records encrypted on the shard's ring, the start-up load over a
//! blocking TLS stream), two brokers sharing the database over TLS (claims and notices), and
//! clear start-up errors for an untrusted server or a missing client certificate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "common/certs.rs"]
mod certs;
mod common;
#[path = "common/crash.rs"]
mod crash;
#[path = "common/redis.rs"]
mod redis;

use std::time::Duration;

use certs::Certs;
use common::{scratch_dir, Broker, Raw};
use net::codec::{Packet, ProtocolVersion, QoS};
use redis::Redis;

const V4: ProtocolVersion = ProtocolVersion::V311;

struct Setup {
    certs: Certs,
    redis: Redis,
    url: String,
}

fn setup() -> Setup {
    let certs = Certs::new(scratch_dir("redis-certs"));
    certs.server("redis", "ca");
    certs.client("broker", "ringmq", "ca", 30);
    let (redis, tls_port) = Redis::start_tls(&certs.dir);
    let url = format!("rediss://127.0.0.1:{tls_port}");
    Setup { certs, redis, url }
}

impl Setup {
    fn args<'a>(&'a self, ca: &'a str, extra: &[&'a str]) -> Vec<String> {
        let mut args = vec![
            "--store".to_string(),
            "redis".into(),
            "--redis-url".into(),
            self.url.clone(),
            "--redis-tls-ca".into(),
            ca.into(),
            "--redis-tls-cert".into(),
            self.certs.pem("broker"),
            "--redis-tls-key".into(),
            self.certs.key("broker"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    fn broker(&self, extra: &[&str]) -> Broker {
        let ca = self.certs.pem("ca");
        let args = self.args(&ca, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Broker::start(&args)
    }
}

#[test]
fn nothing_acknowledged_is_lost_across_sigkill_over_tls() {
    let s = setup();
    crash::nothing_acknowledged_is_lost(2, |fresh| {
        if fresh {
            assert_eq!(s.redis.cli(&["FLUSHALL"]).trim(), "OK");
        }
        s.broker(&["--session-queue-count-max", "100000"])
    });
    // The records went through the TLS port: the plain one sees what they wrote.
    assert!(s.redis.int(&["DBSIZE"]) > 0);
}

#[test]
fn two_brokers_share_the_database_over_tls() {
    let s = setup();
    let shared = |id| s.broker(&["--redis-shared", "true", "--redis-broker-id", id]);
    let (a, b) = (shared("a"), shared("b"));
    let (mut first, _) = Raw::connect(a.addr, V4, "tls-mover", false);
    first.subscribe("tm/#", QoS::AtLeastOnce);
    first.send(&Packet::Disconnect(Default::default()));
    let (mut publ, _) = Raw::connect(a.addr, V4, "tls-pub", true);
    for i in 1..=20u16 {
        // 4 KiB each: batches of several TLS records.
        publ.publish("tm/x", &vec![i as u8; 4096], QoS::AtLeastOnce, i);
        assert_eq!(publ.puback_within(i, Duration::from_secs(5)), Some(0));
    }
    let (mut moved, ack) = Raw::connect(b.addr, V4, "tls-mover", false);
    assert!(ack.session_present);
    let got = moved.drain_publishes(20, Duration::from_secs(5));
    let firsts: Vec<u8> = got.iter().map(|p| p.payload[0]).collect();
    assert_eq!(firsts, (1..=20).collect::<Vec<u8>>());
    assert!(got.iter().all(|p| p.payload.len() == 4096));
    // The takeover notice reached a over TLS too: a connection there now is taken from b.
    let (_back, ack) = Raw::connect(a.addr, V4, "tls-mover", false);
    assert!(ack.session_present);
    match moved.recv_within(Duration::from_secs(5)) {
        None | Some(Packet::Disconnect(_)) => {}
        other => panic!("expected b to close the taken-over connection, got {other:?}"),
    }
}

#[test]
fn an_untrusted_redis_or_a_missing_client_certificate_is_a_clear_start_error() {
    let s = setup();
    // A CA that did not sign Redis's certificate.
    s.certs.ca("other");
    let other = s.certs.pem("other");
    let args = s.args(&other, &["--redis-start-wait-secs", "0"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = common::refused_start(&args);
    assert!(err.contains("TLS handshake"), "{err}");
    assert!(err.contains("rediss://127.0.0.1"), "{err}");
    // No client certificate: Redis refuses the session.
    let args = [
        "--store",
        "redis",
        "--redis-url",
        &s.url,
        "--redis-tls-ca",
        &s.certs.pem("ca"),
        "--redis-start-wait-secs",
        "0",
    ];
    let err = common::refused_start(&args);
    assert!(err.contains("unreachable"), "{err}");
    // TLS files with a plain URL are a configuration error.
    let plain = s.redis.url();
    let err = common::refused_start(&[
        "--store",
        "redis",
        "--redis-url",
        &plain,
        "--redis-tls-ca",
        &s.certs.pem("ca"),
    ]);
    assert!(err.contains("rediss://"), "{err}");
}

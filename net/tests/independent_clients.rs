//! Byte-exact tests against packets produced by independent clients.
//!
//! `live_*` tests run the real clients (mosquitto_pub / mosquitto_sub 2.0 and python paho-mqtt
//! 2.x, installed by the test command) against a tiny scripted MQTT server on loopback, capture
//! the raw bytes of every packet they send, and check that each decodes to the expected fields
//! and re-encodes to the very same bytes. `committed_fixtures` replays the captures committed
//! under `tests/fixtures/` (their provenance is the first line of each file), so the codec stays
//! checked against them even where those client versions are gone. Regenerate with
//! `RINGMQ_WRITE_FIXTURES=1 cargo test -p ringmq-net --test independent_clients`.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use net::codec::{
    ConnAck, Decoder, FixedHeader, Packet, PacketId, ProtocolVersion, PubResp, PubRespKind,
    Publish, QoS, ReasonCode, SubAck, UnsubAck,
};
use net::limits::PACKET_BYTES_MAX;

/// One packet a client sent: its raw bytes and what they decoded to.
struct Captured {
    raw: Vec<u8>,
    packet: Packet,
}

/// Serves one connection: answers like a broker would (CONNACK, acks, SUBACK with a message
/// to the subscriber) and records every packet received until DISCONNECT or EOF.
fn serve_one(listener: &TcpListener, mut client: Child) -> (Vec<Captured>, ProtocolVersion) {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut stream: TcpStream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = client.try_wait().unwrap() {
                    panic!("client exited before connecting: {status}");
                }
                assert!(Instant::now() < deadline, "client never connected");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut decoder = Decoder::new(PACKET_BYTES_MAX);
    let mut buf = BytesMut::new();
    let mut captured = Vec::new();
    let mut next_id = 1u16;
    'outer: loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).expect("read from client");
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(header) = FixedHeader::parse(&buf).unwrap() {
            if buf.len() < header.packet_bytes() {
                break;
            }
            let raw = buf[..header.packet_bytes()].to_vec();
            let packet = decoder
                .decode(&mut buf)
                .expect("client packet decodes")
                .unwrap();
            let mut reply = BytesMut::new();
            let v = decoder.version;
            let mut done = false;
            match &packet {
                Packet::Connect(c) => {
                    decoder.version = c.version;
                    let ack = ConnAck {
                        session_present: false,
                        code: ReasonCode::SUCCESS,
                        properties: Default::default(),
                    };
                    Packet::ConnAck(ack).encode(c.version, &mut reply).unwrap();
                }
                Packet::Publish(p) => match (p.qos, p.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => {
                        Packet::PubResp(PubResp::new(PubRespKind::PubAck, id))
                            .encode(v, &mut reply)
                            .unwrap()
                    }
                    (QoS::ExactlyOnce, Some(id)) => {
                        Packet::PubResp(PubResp::new(PubRespKind::PubRec, id))
                            .encode(v, &mut reply)
                            .unwrap()
                    }
                    _ => {}
                },
                Packet::PubResp(r) => match r.kind {
                    PubRespKind::PubRel => {
                        Packet::PubResp(PubResp::new(PubRespKind::PubComp, r.packet_id))
                            .encode(v, &mut reply)
                            .unwrap()
                    }
                    PubRespKind::PubRec => {
                        Packet::PubResp(PubResp::new(PubRespKind::PubRel, r.packet_id))
                            .encode(v, &mut reply)
                            .unwrap()
                    }
                    _ => {}
                },
                Packet::Subscribe(s) => {
                    let reasons = s
                        .filters
                        .iter()
                        .map(|(_, o)| ReasonCode(o.qos as u8))
                        .collect();
                    let ack = SubAck {
                        packet_id: s.packet_id,
                        properties: Default::default(),
                        reasons,
                    };
                    Packet::SubAck(ack).encode(v, &mut reply).unwrap();
                    // Deliver one message at the granted QoS so the client acknowledges it.
                    let qos = s.filters[0].1.qos;
                    let publish = Publish {
                        dup: false,
                        qos,
                        retain: false,
                        topic: "fixtures/delivered".into(),
                        packet_id: (qos != QoS::AtMostOnce)
                            .then(|| PacketId::new(next_id).unwrap()),
                        properties: Default::default(),
                        payload: bytes::Bytes::from_static(b"from the capture server"),
                    };
                    next_id += 1;
                    Packet::Publish(publish).encode(v, &mut reply).unwrap();
                }
                Packet::Unsubscribe(u) => {
                    let reasons = if v.is_v5() {
                        vec![ReasonCode::SUCCESS; u.filters.len()]
                    } else {
                        vec![]
                    };
                    let ack = UnsubAck {
                        packet_id: u.packet_id,
                        properties: Default::default(),
                        reasons,
                    };
                    Packet::UnsubAck(ack).encode(v, &mut reply).unwrap();
                }
                Packet::PingReq => Packet::PingResp.encode(v, &mut reply).unwrap(),
                Packet::Disconnect(_) => done = true,
                other => panic!("unexpected packet from a client: {other:?}"),
            }
            captured.push(Captured { raw, packet });
            if !reply.is_empty() {
                stream.write_all(&reply).unwrap();
            }
            if done {
                break 'outer;
            }
        }
    }
    let status = client.wait().unwrap();
    assert!(status.success(), "client failed: {status}");
    (captured, decoder.version)
}

fn run(program: &str, args: &[&str]) -> (Vec<Captured>, ProtocolVersion) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            if *a == "PORT" {
                port.clone()
            } else {
                a.to_string()
            }
        })
        .collect();
    let child = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}); the test command (scripts/test.sh) installs it")
        });
    serve_one(&listener, child)
}

/// Re-encodes every captured packet and compares with the client's bytes.
fn assert_byte_exact(captured: &[Captured], version: ProtocolVersion) {
    for c in captured {
        let mut out = BytesMut::new();
        c.packet.encode(version, &mut out).unwrap();
        assert_eq!(
            out.to_vec(),
            c.raw,
            "re-encoding {:?} differs from the client's bytes",
            c.packet
        );
    }
}

/// Asserts byte-exact re-encoding, then records the capture as a fixture if asked to.
fn check_and_record(name: &str, provenance: &str, version: ProtocolVersion, captured: &[Captured]) {
    assert_byte_exact(captured, version);
    maybe_write_fixture(name, provenance, version, captured);
}

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.hex"))
}

/// Writes captures as a fixture file when RINGMQ_WRITE_FIXTURES is set.
fn maybe_write_fixture(
    name: &str,
    provenance: &str,
    version: ProtocolVersion,
    captured: &[Captured],
) {
    if std::env::var_os("RINGMQ_WRITE_FIXTURES").is_none() {
        return;
    }
    let mut text = format!("# {provenance}\nversion {}\n", version.level());
    for c in captured {
        let hex: String = c.raw.iter().map(|b| format!("{b:02x}")).collect();
        text.push_str(&hex);
        text.push('\n');
    }
    std::fs::write(fixture_path(name), text).unwrap();
}

fn kinds(captured: &[Captured]) -> Vec<String> {
    captured
        .iter()
        .map(|c| format!("{:?}", c.packet.packet_type()))
        .collect()
}

fn mosquitto_version() -> String {
    let out = Command::new("mosquitto_pub")
        .arg("--help")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string()
}

#[test]
fn live_mosquitto_pub_v311_with_will_and_credentials() {
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        "PORT",
        "-V",
        "mqttv311",
        "-i",
        "mosq-fixture",
        "-u",
        "bob",
        "-P",
        "pw",
        "--will-topic",
        "clients/mosq/status",
        "--will-payload",
        "gone",
        "--will-qos",
        "1",
        "--will-retain",
        "-k",
        "45",
        "-q",
        "1",
        "-t",
        "sensors/temp",
        "-m",
        "21.5",
    ];
    let (captured, version) = run("mosquitto_pub", &args);
    assert_eq!(version, ProtocolVersion::V311);
    assert_eq!(kinds(&captured), ["Connect", "Publish", "Disconnect"]);
    let Packet::Connect(c) = &captured[0].packet else {
        unreachable!()
    };
    assert_eq!(&*c.client_id, "mosq-fixture");
    assert_eq!(c.keep_alive, 45);
    assert_eq!(c.username.as_deref(), Some("bob"));
    assert_eq!(c.password.as_deref(), Some(&b"pw"[..]));
    let will = c.will.as_ref().unwrap();
    assert_eq!(
        (&*will.topic, &will.payload[..], will.qos, will.retain),
        ("clients/mosq/status", &b"gone"[..], QoS::AtLeastOnce, true)
    );
    let Packet::Publish(p) = &captured[1].packet else {
        unreachable!()
    };
    assert_eq!(
        (&*p.topic, &p.payload[..], p.qos),
        ("sensors/temp", &b"21.5"[..], QoS::AtLeastOnce)
    );
    check_and_record(
        "mosquitto_pub_v311",
        &format!("{}: mosquitto_pub {}", mosquitto_version(), args.join(" ")),
        version,
        &captured,
    );
}

#[test]
fn live_mosquitto_pub_v5_qos2_with_properties() {
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        "PORT",
        "-V",
        "mqttv5",
        "-i",
        "mosq5-fixture",
        "-q",
        "2",
        "-r",
        "-t",
        "sensors/humidity",
        "-m",
        "40%",
        "-D",
        "connect",
        "session-expiry-interval",
        "300",
        "-D",
        "connect",
        "receive-maximum",
        "20",
        "-D",
        "publish",
        "message-expiry-interval",
        "60",
        "-D",
        "publish",
        "content-type",
        "text/plain",
        "-D",
        "publish",
        "user-property",
        "site",
        "lab",
    ];
    let (captured, version) = run("mosquitto_pub", &args);
    assert_eq!(version, ProtocolVersion::V5);
    assert_eq!(
        kinds(&captured),
        ["Connect", "Publish", "PubRel", "Disconnect"]
    );
    let Packet::Connect(c) = &captured[0].packet else {
        unreachable!()
    };
    assert_eq!(c.properties.session_expiry_interval, Some(300));
    assert_eq!(c.properties.receive_maximum.map(|v| v.get()), Some(20));
    let Packet::Publish(p) = &captured[1].packet else {
        unreachable!()
    };
    assert!(p.retain);
    assert_eq!(p.qos, QoS::ExactlyOnce);
    assert_eq!(p.properties.message_expiry_interval, Some(60));
    assert_eq!(p.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(p.properties.user_properties.len(), 1);
    assert_eq!(&*p.properties.user_properties[0].0, "site");
    check_and_record(
        "mosquitto_pub_v5",
        &format!("{}: mosquitto_pub {}", mosquitto_version(), args.join(" ")),
        version,
        &captured,
    );
}

#[test]
fn live_mosquitto_pub_v31() {
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        "PORT",
        "-V",
        "mqttv31",
        "-i",
        "mosq31",
        "-q",
        "1",
        "-t",
        "legacy/t",
        "-m",
        "x",
    ];
    let (captured, version) = run("mosquitto_pub", &args);
    assert_eq!(version, ProtocolVersion::V31);
    assert_eq!(kinds(&captured), ["Connect", "Publish", "Disconnect"]);
    check_and_record(
        "mosquitto_pub_v31",
        &format!("{}: mosquitto_pub {}", mosquitto_version(), args.join(" ")),
        version,
        &captured,
    );
}

#[test]
fn live_mosquitto_sub_v5_subscription_options() {
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        "PORT",
        "-V",
        "mqttv5",
        "-i",
        "mosqsub-fixture",
        "-q",
        "1",
        "-t",
        "a/+/c",
        "-t",
        "x/#",
        "-C",
        "1",
        "-D",
        "subscribe",
        "subscription-identifier",
        "7",
    ];
    let (captured, version) = run("mosquitto_sub", &args);
    assert_eq!(
        kinds(&captured),
        ["Connect", "Subscribe", "PubAck", "Disconnect"]
    );
    let Packet::Subscribe(s) = &captured[1].packet else {
        unreachable!()
    };
    assert_eq!(s.properties.subscription_identifiers, vec![7]);
    let filters: Vec<&str> = s.filters.iter().map(|(f, _)| &**f).collect();
    assert_eq!(filters, ["a/+/c", "x/#"]);
    assert!(s.filters.iter().all(|(_, o)| o.qos == QoS::AtLeastOnce));
    check_and_record(
        "mosquitto_sub_v5",
        &format!("{}: mosquitto_sub {}", mosquitto_version(), args.join(" ")),
        version,
        &captured,
    );
}

fn paho(version: &str) -> (Vec<Captured>, ProtocolVersion) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/paho_session.py");
    run("python3", &[script.to_str().unwrap(), "PORT", version])
}

fn paho_version() -> String {
    let out = Command::new("python3")
        .args(["-c", "import paho.mqtt; print(paho.mqtt.__version__)"])
        .output()
        .unwrap();
    format!("paho-mqtt {}", String::from_utf8_lossy(&out.stdout).trim())
}

#[test]
fn live_paho_v311_session() {
    let (captured, version) = paho("v311");
    assert_eq!(version, ProtocolVersion::V311);
    let k = kinds(&captured);
    assert_eq!(k.first().map(String::as_str), Some("Connect"));
    assert_eq!(k.last().map(String::as_str), Some("Disconnect"));
    for want in [
        "Subscribe",
        "Publish",
        "PubRec",
        "PubRel",
        "PubComp",
        "Unsubscribe",
    ] {
        assert!(k.iter().any(|x| x == want), "paho sent no {want}: {k:?}");
    }
    let Packet::Connect(c) = &captured[0].packet else {
        unreachable!()
    };
    assert_eq!(
        (&*c.client_id, c.username.as_deref()),
        ("paho-fixture", Some("alice"))
    );
    check_and_record(
        "paho_v311",
        &format!(
            "{}: tests/clients/paho_session.py PORT v311",
            paho_version()
        ),
        version,
        &captured,
    );
}

#[test]
fn live_paho_v5_session() {
    let (captured, version) = paho("v5");
    assert_eq!(version, ProtocolVersion::V5);
    let Packet::Connect(c) = &captured[0].packet else {
        unreachable!()
    };
    assert_eq!(c.properties.session_expiry_interval, Some(120));
    let Packet::Subscribe(s) = &captured[1].packet else {
        unreachable!()
    };
    let o = s.filters[0].1;
    assert!(o.no_local && o.retain_as_published);
    assert_eq!(
        o.retain_handling,
        net::codec::RetainHandling::OnNewSubscription
    );
    let publishes: Vec<&Publish> = captured
        .iter()
        .filter_map(|c| {
            if let Packet::Publish(p) = &c.packet {
                Some(p)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(publishes.len(), 3);
    for p in &publishes {
        assert_eq!(p.properties.response_topic.as_deref(), Some("paho/reply"));
        assert_eq!(
            p.properties.correlation_data.as_deref(),
            Some(&[1u8, 2][..])
        );
    }
    check_and_record(
        "paho_v5",
        &format!("{}: tests/clients/paho_session.py PORT v5", paho_version()),
        version,
        &captured,
    );
}

#[test]
fn committed_fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "hex") {
            continue;
        }
        files += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        assert!(
            lines.next().unwrap().starts_with("# "),
            "{path:?}: first line is the provenance"
        );
        let level: u8 = lines
            .next()
            .unwrap()
            .strip_prefix("version ")
            .unwrap()
            .parse()
            .unwrap();
        let version = match level {
            3 => ProtocolVersion::V31,
            4 => ProtocolVersion::V311,
            _ => ProtocolVersion::V5,
        };
        let mut decoder = Decoder {
            version,
            packet_bytes_max: PACKET_BYTES_MAX,
        };
        let mut count = 0;
        for line in lines.filter(|l| !l.is_empty()) {
            let raw: Vec<u8> = (0..line.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&line[i..i + 2], 16).unwrap())
                .collect();
            let mut buf = BytesMut::from(&raw[..]);
            let packet = decoder.decode(&mut buf).unwrap().unwrap();
            assert!(buf.is_empty(), "{path:?}: one packet per line");
            if let Packet::Connect(c) = &packet {
                decoder.version = c.version;
            }
            let mut out = BytesMut::new();
            packet.encode(decoder.version, &mut out).unwrap();
            assert_eq!(out.to_vec(), raw, "{path:?}: {packet:?}");
            count += 1;
        }
        assert!(count >= 3, "{path:?}: too few packets");
    }
    assert!(files >= 6, "expected the committed fixtures in {dir:?}");
}

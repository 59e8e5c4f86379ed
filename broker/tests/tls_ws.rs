//! TLS, mutual TLS and MQTT over WebSocket with the real binary (2 shards) and real clients:
//! mosquitto_pub/sub with `--cafile` and client certificates (the certificate's CN as the
//! user name, the ACL applied), refusals (unknown CA, expired, missing certificate), paho
//! over `websockets`, MQTT.js over `ws://` and `wss://`, a headless Chromium page, bad input on every port (plain
//! MQTT on the TLS port, garbage, a non-upgrade request, unmasked and oversized frames, a
//! stalled handshake) costing nothing to other clients, and certificates reloaded on SIGHUP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "common/certs.rs"]
mod certs;
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use certs::Certs;
use common::{free_port, id_on, scratch_dir, Broker};

/// A broker with every listener: TCP (the harness's), TLS, WS and WSS on free ports.
struct Tls {
    broker: Broker,
    tls: u16,
    ws: u16,
    wss: u16,
    certs: Certs,
}

fn start(certs: Certs, extra: &[&str]) -> Tls {
    let (tls, ws, wss) = (free_port(), free_port(), free_port());
    let (t, w, s) = (
        format!("127.0.0.1:{tls}"),
        format!("127.0.0.1:{ws}"),
        format!("127.0.0.1:{wss}"),
    );
    let (cert, key) = (certs.pem("server"), certs.key("server"));
    let mut args = vec![
        "--tls-listen",
        &t,
        "--ws-listen",
        &w,
        "--wss-listen",
        &s,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    args.extend_from_slice(extra);
    let broker = Broker::start(&args);
    wait_listening(wss);
    Tls {
        broker,
        tls,
        ws,
        wss,
        certs,
    }
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !common::accepts(("127.0.0.1", port)) {
        assert!(Instant::now() < deadline, "port {port} not listening");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn certs_in(name: &str) -> Certs {
    let certs = Certs::new(scratch_dir(name));
    certs.server("server", "ca");
    certs
}

/// mosquitto_sub for `count` messages on `topic` with `args` (port, TLS options).
fn sub(args: &[String], topic: &str, count: usize) -> Child {
    let child = Command::new("mosquitto_sub")
        .args(args)
        .args([
            "-t",
            topic,
            "-C",
            &count.to_string(),
            "-W",
            "10",
            "-q",
            "1",
            "-v",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub (installed by scripts/test.sh)");
    // The subscription is in place before anything is published.
    std::thread::sleep(Duration::from_millis(400));
    child
}

fn publish(args: &[String], topic: &str, message: &str) -> Output {
    Command::new("mosquitto_pub")
        .args(args)
        .args(["-t", topic, "-m", message, "-q", "1"])
        .output()
        .unwrap()
}

fn lines(child: Child) -> Vec<String> {
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn tcp(b: &Tls, id: &str) -> Vec<String> {
    args(&[
        "-h",
        "127.0.0.1",
        "-p",
        &b.broker.port().to_string(),
        "-i",
        id,
    ])
}

fn tls(b: &Tls, id: &str) -> Vec<String> {
    let ca = b.certs.pem("ca");
    args(&[
        "-h",
        "127.0.0.1",
        "-p",
        &b.tls.to_string(),
        "--cafile",
        &ca,
        "-i",
        id,
    ])
}

fn with_cert(mut a: Vec<String>, certs: &Certs, name: &str) -> Vec<String> {
    a.extend(args(&[
        "--cert",
        &certs.pem(name),
        "--key",
        &certs.key(name),
    ]));
    a
}

/// Every client on every port still works: TLS subscriber, TCP publisher and back.
fn round_trip(b: &Tls, tag: &str) {
    for shard in 0..2 {
        let s = sub(&tls(b, &id_on(&format!("{tag}s"), shard)), "rt/#", 1);
        let p = publish(&tcp(b, &id_on(&format!("{tag}p"), 1 - shard)), "rt/x", tag);
        assert!(p.status.success());
        assert_eq!(lines(s), vec![format!("rt/x {tag}")]);
        let s = sub(&tcp(b, &id_on(&format!("{tag}t"), shard)), "rt/#", 1);
        let p = publish(&tls(b, &id_on(&format!("{tag}q"), 1 - shard)), "rt/y", tag);
        assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
        assert_eq!(lines(s), vec![format!("rt/y {tag}")]);
    }
}

/// Sends `bytes` and reads until the broker closes (or 5 s): what it answered.
fn answer_to(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("the broker did not close ({e}); answered {out:?}"),
        }
        assert!(Instant::now() < deadline, "the broker did not close");
    }
}

const UPGRADE: &str = "GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";

#[test]
fn tls_clients_cross_shard_and_bad_input_costs_nothing() {
    let b = start(certs_in("tls"), &["--ws-frame-bytes-max", "4096"]);
    round_trip(&b, "a");

    // Plain MQTT on the TLS port: a TLS alert (or nothing), then the close.
    let connect = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00";
    let answer = answer_to(b.tls, connect);
    assert!(answer.is_empty() || answer[0] == 0x15, "{answer:?}");
    // A non-upgrade HTTP request on the WebSocket port: HTTP 426.
    let answer = answer_to(b.ws, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(answer.starts_with(b"HTTP/1.1 426 "), "{answer:?}");
    // Plain MQTT on the WebSocket port: HTTP 400.
    assert!(answer_to(b.ws, connect).starts_with(b"HTTP/1.1 400 "));
    // An unmasked frame after the upgrade: close 1002; an oversized one: close 1009.
    for (frame, code) in [
        (vec![0x82u8, 0x02, 0x10, 0x00], 1002u16),
        (vec![0x82, 0xFE, 0x20, 0x00, 1, 2, 3, 4], 1009),
    ] {
        let mut bytes = UPGRADE.as_bytes().to_vec();
        bytes.extend_from_slice(&frame);
        let answer = answer_to(b.ws, &bytes);
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
        let head = text.find("\r\n\r\n").unwrap() + 4;
        let close = &answer[head..];
        assert_eq!(&close[..2], &[0x88, 0x02]);
        assert_eq!(u16::from_be_bytes([close[2], close[3]]), code);
    }
    // Garbage on every port.
    for port in [b.tls, b.ws, b.wss] {
        let garbage: Vec<u8> = (0..3000u32).map(|i| (i * 7919 % 251) as u8).collect();
        answer_to(port, &garbage);
    }
    // A wrong CA: the client refuses the server (and the server carries on).
    let mut wrong = tls(&b, "wrongca");
    b.certs.ca("other");
    wrong[5] = b.certs.pem("other");
    assert!(!publish(&wrong, "rt/z", "x").status.success());
    round_trip(&b, "b");
}

#[test]
fn mutual_tls_names_the_user_and_the_acl_applies() {
    let certs = certs_in("mtls");
    certs.client("alice", "alice", "ca", 30);
    certs.client("bob", "bob", "ca", 30);
    certs.client("expired", "alice", "ca", -1);
    certs.ca("rogue");
    certs.client("rogue-alice", "alice", "rogue", 30);
    let acl = certs.dir.join("acl");
    std::fs::write(&acl, "topic read #\nuser alice\ntopic readwrite alice/#\n").unwrap();
    let (ca, acl) = (certs.pem("ca"), acl.to_str().unwrap().to_owned());
    let b = start(
        certs,
        &[
            "--tls-ca",
            &ca,
            "--tls-client-auth",
            "required",
            "--tls-cert-as-username",
            "true",
            "--acl-file",
            &acl,
        ],
    );
    let watch = sub(&tcp(&b, "watcher"), "#", 1);
    for shard in 0..2 {
        // The CONNECT user name is ignored: the certificate's CN is the user.
        let mut bob_as_alice = with_cert(tls(&b, &id_on("bob", shard)), &b.certs, "bob");
        bob_as_alice.extend(args(&["-u", "alice"]));
        assert!(publish(&bob_as_alice, "alice/x", "from-bob")
            .status
            .success());
        let mut alice = with_cert(tls(&b, &id_on("alice", shard)), &b.certs, "alice");
        alice.extend(args(&["-u", "mallory"]));
        assert!(publish(&alice, "bob/x", "denied").status.success());
    }
    let alice = with_cert(tls(&b, "alice-ok"), &b.certs, "alice");
    assert!(publish(&alice, "alice/x", "from-alice").status.success());
    assert_eq!(lines(watch), vec!["alice/x from-alice".to_owned()]);

    // Without a password file, user names come from certificates only: a TCP client
    // claiming alice is refused (CONNACK 5 / 0x86).
    let mut claim = tcp(&b, "claims-alice");
    claim.extend(args(&["-u", "alice"]));
    let out = publish(&claim, "alice/x", "impostor");
    assert!(!out.status.success(), "a claimed user name was let in");
    // Refused handshakes: no certificate, an expired one, one from another CA.
    for cert in [None, Some("expired"), Some("rogue-alice")] {
        let mut a = tls(&b, "refused");
        if let Some(name) = cert {
            a = with_cert(a, &b.certs, name);
        }
        let out = publish(&a, "alice/x", "refused");
        assert!(!out.status.success(), "{cert:?} was let in");
    }
    // Still serving.
    let watch = sub(&tcp(&b, "watcher2"), "alice/#", 1);
    assert!(publish(&alice, "alice/y", "again").status.success());
    assert_eq!(lines(watch), vec!["alice/y again".to_owned()]);
}

/// Runs `program` (python3, node) on the client script `script` (in tests/clients); it must
/// succeed (paho-mqtt, MQTT.js, playwright-core and chromium are installed by scripts/test.sh).
fn run_client(what: &str, program: &str, script: &str, args: &[&str]) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients");
    let out = Command::new(program)
        .arg(format!("{dir}/{script}"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn websocket_clients_paho_mqttjs_and_chromium() {
    let b = start(certs_in("ws"), &["--ws-path", "/mqtt"]);
    let ca = b.certs.pem("ca");
    for (port, scheme) in [(b.ws, "ws"), (b.wss, "wss")] {
        let tcp_port = b.broker.port().to_string();
        let paho = [&port.to_string(), scheme, "/mqtt", &ca, &tcp_port];
        run_client(
            &format!("paho over {scheme}"),
            "python3",
            "paho_ws.py",
            &paho,
        );
        let url = format!("{scheme}://127.0.0.1:{port}/mqtt");
        run_client(
            &format!("MQTT.js over {scheme}"),
            "node",
            "js/ws.mjs",
            &[&url, &ca],
        );
    }
    // A headless Chromium page (MQTT.js's browser bundle) to a subscriber on the TCP port.
    let watch = sub(&tcp(&b, "browser-watch"), "browser/#", 1);
    let url = format!("ws://127.0.0.1:{}/mqtt", b.ws);
    run_client(
        "Chromium",
        "node",
        "js/browser.mjs",
        &[&url, "browser/page"],
    );
    assert_eq!(lines(watch), vec!["browser/page from-chromium".to_owned()]);
    // Another path: 404.
    let answer = answer_to(b.ws, UPGRADE.replace("/mqtt", "/other").as_bytes());
    assert!(answer.starts_with(b"HTTP/1.1 404 "), "{answer:?}");
}

#[test]
fn stalled_handshakes_time_out_and_certificates_reload_on_sighup() {
    let certs = certs_in("reload");
    certs.ca("ca2");
    let b = start(certs, &["--handshake-timeout-ms", "300"]);
    // A TLS connection that never says hello, a WebSocket one that never upgrades.
    let opened = Instant::now();
    let mut stalled: Vec<TcpStream> = [b.tls, b.ws]
        .iter()
        .map(|p| TcpStream::connect(("127.0.0.1", *p)).unwrap())
        .collect();
    round_trip(&b, "c");
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
    }
    assert!(opened.elapsed() < Duration::from_secs(5));

    // A client trusting only ca2 is refused; the server's files are replaced by a
    // certificate from ca2; SIGHUP; the client is let in.
    let mut a = tls(&b, "ca2-client");
    a[5] = b.certs.pem("ca2");
    assert!(!publish(&a, "rt/r", "before").status.success());
    b.certs.server("server-next", "ca2");
    std::fs::copy(b.certs.pem("server-next"), b.certs.pem("server")).unwrap();
    std::fs::copy(b.certs.key("server-next"), b.certs.key("server")).unwrap();
    let pid = b.broker.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !publish(&a, "rt/r", "after").status.success() {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn bad_tls_settings_refuse_to_start() {
    let certs = certs_in("badcfg");
    let err = common::refused_start(&["--tls-listen", "127.0.0.1:0"]);
    assert!(err.contains("tls_cert"), "{err}");
    let missing = certs.dir.join("missing.pem");
    let err = common::refused_start(&[
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        missing.to_str().unwrap(),
        "--tls-key",
        &certs.key("server"),
    ]);
    assert!(err.contains("missing.pem"), "{err}");
    let err = common::refused_start(&["--tls-client-auth", "required"]);
    assert!(err.contains("tls_ca"), "{err}");
    // A key that is not the certificate's.
    certs.server("second", "ca");
    let err = common::refused_start(&[
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        &certs.pem("server"),
        "--tls-key",
        &certs.key("second"),
    ]);
    assert!(err.contains("tls_cert"), "{err}");
}

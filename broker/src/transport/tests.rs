use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use proptest::prelude::*;

use super::*;
use crate::config::Config;

fn ws_settings() -> Arc<WsSettings> {
    Arc::new(WsSettings {
        path: Some("/mqtt".into()),
        frame_max: 1024,
        request_max: 4096,
    })
}

const UPGRADE: &[u8] = b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";

fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [3u8, 1, 4, 1];
    let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn drain(t: &mut Transport) -> Vec<u8> {
    let mut spare = None;
    t.wrap(None, &mut spare)
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

#[test]
fn websocket_upgrade_frames_ping_and_close() {
    let mut t = Transport::new(Kind::Ws, None, &ws_settings()).unwrap();
    let mut plain = BytesMut::new();
    // The request in two pieces, the first frame right behind it.
    let mut input = UPGRADE.to_vec();
    input.extend(masked(ws::opcode::BINARY, b"\xC0\x00"));
    t.input(&input[..20], &mut plain).unwrap();
    assert!(!t.established() && !t.has_output());
    t.input(&input[20..], &mut plain).unwrap();
    assert!(t.established());
    assert_eq!(&plain[..], b"\xC0\x00");
    let answer = String::from_utf8(drain(&mut t)).unwrap();
    assert!(answer.starts_with("HTTP/1.1 101 "), "{answer}");
    // Output goes out as one binary frame.
    let mut spare = None;
    let out = t
        .wrap(Some(BytesMut::from(&b"\xD0\x00"[..])), &mut spare)
        .unwrap();
    assert_eq!(&out[..], b"\x82\x02\xD0\x00");
    // Ping: a pong with its payload. Close: a close back, the peer is done.
    t.input(&masked(ws::opcode::PING, b"hi"), &mut plain)
        .unwrap();
    assert_eq!(drain(&mut t), b"\x8A\x02hi");
    t.input(&masked(ws::opcode::CLOSE, &[0x03, 0xE8]), &mut plain)
        .unwrap();
    assert!(t.peer_closed());
    assert_eq!(drain(&mut t), b"\x88\x02\x03\xE8");
    // Later input is ignored.
    t.input(b"anything", &mut plain).unwrap();
    assert_eq!(&plain[..], b"\xC0\x00");
}

#[test]
fn websocket_refusals_queue_their_answer() {
    let mut t = Transport::new(Kind::Ws, None, &ws_settings()).unwrap();
    let e = t
        .input(b"GET /x HTTP/1.1\r\nHost: y\r\n\r\n", &mut BytesMut::new())
        .unwrap_err();
    assert!(matches!(e, TransportError::Upgrade(_)), "{e}");
    assert!(drain(&mut t).starts_with(b"HTTP/1.1 404 "));

    let mut t = Transport::new(Kind::Ws, None, &ws_settings()).unwrap();
    let mut input = UPGRADE.to_vec();
    input.extend(masked(ws::opcode::TEXT, b"x"));
    let e = t.input(&input, &mut BytesMut::new()).unwrap_err();
    assert!(matches!(e, TransportError::Frame(_)), "{e}");
    assert!(
        drain(&mut t).ends_with(&[0x88, 0x02, 0x03, 0xEB]),
        "close 1003"
    );
}

/// A CA and a server certificate for 127.0.0.1 made by Debian's openssl.
fn server_files(dir: &Path) -> Config {
    std::fs::create_dir_all(dir).unwrap();
    let run = |args: &[&str]| {
        let ok = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "openssl {args:?}");
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let split = |line: String| line.split(' ').map(str::to_owned).collect::<Vec<_>>();
    let ca = split(format!(
        "req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=t"
    ));
    run(&ca.iter().map(String::as_str).collect::<Vec<_>>());
    let csr = split(format!("req {ec} -keyout s.key -out s.csr -subj /CN=s"));
    run(&csr.iter().map(String::as_str).collect::<Vec<_>>());
    std::fs::write(dir.join("s.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "s.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "s.pem",
        "-days",
        "2",
        "-extfile",
        "s.ext",
    ]);
    Config {
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_cert: Some(dir.join("s.pem")),
        tls_key: Some(dir.join("s.key")),
        ..Config::default()
    }
}

fn client(dir: &Path) -> rustls::ClientConnection {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    rustls::ClientConnection::new(Arc::new(config), name).unwrap()
}

use rustls::pki_types::pem::PemObject;

/// Moves bytes both ways until neither side has anything to say.
fn pump(c: &mut rustls::ClientConnection, t: &mut Transport, plain: &mut BytesMut) {
    for _ in 0..10 {
        let mut wire = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        t.input(&wire, plain).unwrap();
        let back = drain(t);
        if back.is_empty() && wire.is_empty() {
            return;
        }
        let mut rd = &back[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets().unwrap();
        }
    }
}

#[test]
fn tls_and_secure_websocket_carry_mqtt_bytes_both_ways() {
    let dir = std::env::temp_dir().join(format!("ringmq-transport-{}", std::process::id()));
    let config = server_files(&dir);
    let server = tls::server_config(&config).unwrap().unwrap();
    for kind in [Kind::Tls, Kind::Wss] {
        let mut t = Transport::new(kind, Some(&server), &ws_settings()).unwrap();
        let mut c = client(&dir);
        let mut plain = BytesMut::new();
        if kind == Kind::Wss {
            c.writer().write_all(UPGRADE).unwrap();
            c.writer()
                .write_all(&masked(ws::opcode::BINARY, b"\xC0\x00"))
                .unwrap();
        } else {
            c.writer().write_all(b"\xC0\x00").unwrap();
        }
        pump(&mut c, &mut t, &mut plain);
        assert!(t.established() && !c.is_handshaking());
        assert_eq!(&plain[..], b"\xC0\x00");
        assert_eq!(t.client_name(), None, "no client certificate");
        let mut spare = None;
        let out = t
            .wrap(Some(BytesMut::from(&b"\xD0\x00"[..])), &mut spare)
            .unwrap();
        let mut rd = &out[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets().unwrap();
        }
        let mut got = Vec::new();
        let _ = c.reader().read_to_end(&mut got);
        let want: &[u8] = if kind == Kind::Wss {
            b"\x82\x02\xD0\x00"
        } else {
            b"\xD0\x00"
        };
        assert!(got.ends_with(want), "{kind:?}: {got:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..2048), step in 1usize..300) {
        for kind in [Kind::Ws] {
            let mut t = Transport::new(kind, None, &ws_settings()).unwrap();
            let mut plain = BytesMut::new();
            for piece in input.chunks(step) {
                if t.input(piece, &mut plain).is_err() {
                    break;
                }
            }
            // After the upgrade, arbitrary frames.
            let mut t = Transport::new(kind, None, &ws_settings()).unwrap();
            t.input(UPGRADE, &mut plain).unwrap();
            for piece in input.chunks(step) {
                if t.input(piece, &mut plain).is_err() {
                    break;
                }
            }
        }
    }
}

#[test]
fn tls_arbitrary_bytes_end_in_an_error_not_a_panic() {
    let dir = std::env::temp_dir().join(format!("ringmq-transport-junk-{}", std::process::id()));
    let config = server_files(&dir);
    let server = tls::server_config(&config).unwrap().unwrap();
    for seed in 0..200u32 {
        let junk: Vec<u8> = (0..seed * 13 % 3000)
            .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
            .collect();
        let mut t = Transport::new(Kind::Wss, Some(&server), &ws_settings()).unwrap();
        let mut plain = BytesMut::new();
        for piece in junk.chunks(1 + seed as usize % 97) {
            if t.input(piece, &mut plain).is_err() {
                break;
            }
        }
        assert!(plain.is_empty());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

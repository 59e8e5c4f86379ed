//! A connection's TLS layers (`broker::transport`) against a real rustls client, in memory:
//! MQTT bytes both ways over TLS and secure WebSocket, records split at every size (kept per
//! connection only while incomplete), a client's key update, arbitrary bytes ending in an
//! error (never a panic), and the heap an idle connection's layers keep after the handshake and a
//! CONNECT / CONNACK exchange, counted by a counting allocator over 200 connections.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "common/certs.rs"]
mod certs;
mod common;
#[path = "common/counting.rs"]
mod counting;

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use broker::config::Config;
use broker::transport::{tls, Kind, LayerSettings, Transport};
use bytes::BytesMut;
use rustls::pki_types::pem::PemObject;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

/// The tests of this binary run one at a time: the heap count is process-wide.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

const UPGRADE: &[u8] = b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";

fn client_config(ca: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Moves bytes both ways until neither side has anything to say.
fn pump(c: &mut rustls::ClientConnection, t: &mut Transport, plain: &mut BytesMut) {
    loop {
        let mut wire = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        t.input(&wire, plain).unwrap();
        let mut spare = None;
        let back = t
            .wrap(None, &mut spare)
            .map(|b| b.to_vec())
            .unwrap_or_default();
        if back.is_empty() && wire.is_empty() {
            return;
        }
        let mut rd = &back[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets().unwrap();
        }
        let mut sink = Vec::new();
        let _ = c.reader().read_to_end(&mut sink);
    }
}

/// A server configuration (certificate for 127.0.0.1), a client trusting its CA, and
/// WebSocket settings.
fn setup(
    name: &str,
) -> (
    Arc<rustls::ServerConfig>,
    Arc<rustls::ClientConfig>,
    Arc<LayerSettings>,
) {
    let certs = certs::Certs::new(common::scratch_dir(name));
    certs.server("server", "ca");
    let config = Config {
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_cert: Some(certs.pem("server").into()),
        tls_key: Some(certs.key("server").into()),
        ..Config::default()
    };
    let server = tls::server_config(&config).unwrap().unwrap();
    let client = client_config(&certs.pem("ca"));
    let ws = Arc::new(LayerSettings {
        path: Some("/mqtt".into()),
        frame_max: 1 << 20,
        request_max: 8192,
        // The smallest outbox_bytes_max accepted: handshakes must not trip it.
        output_max: 1024,
    });
    (server, client, ws)
}

fn connection(client: &Arc<rustls::ClientConfig>) -> rustls::ClientConnection {
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    rustls::ClientConnection::new(client.clone(), name).unwrap()
}

#[test]
fn tls_and_secure_websocket_carry_mqtt_bytes_both_ways() {
    let _serial = serial();
    let (server, client, ws) = setup("tls-layers");
    for kind in [Kind::Tls, Kind::Wss] {
        let mut t = Transport::new(kind, Some(&server), &ws).unwrap();
        let mut c = connection(&client);
        let mut plain = BytesMut::new();
        if kind == Kind::Wss {
            c.writer().write_all(UPGRADE).unwrap();
            let mut frame = BytesMut::new();
            net::ws::encode_masked_frame(2, b"\xC0\x00", [3, 1, 4, 1], &mut frame);
            c.writer().write_all(&frame).unwrap();
        } else {
            c.writer().write_all(b"\xC0\x00").unwrap();
        }
        pump(&mut c, &mut t, &mut plain);
        assert!(t.established() && !c.is_handshaking());
        assert_eq!(&plain[..], b"\xC0\x00");
        assert_eq!(t.client_name(), None, "no client certificate");
        let got = answer_to(&mut c, &mut t, b"\xD0\x00");
        let want: &[u8] = if kind == Kind::Wss {
            b"\x82\x02\xD0\x00"
        } else {
            b"\xD0\x00"
        };
        assert!(got.ends_with(want), "{kind:?}: {got:?}");
    }
}

#[test]
fn bytes_after_close_notify_are_ignored_not_looped_on() {
    let _serial = serial();
    let (server, client, ws) = setup("tls-close");
    let mut t = Transport::new(Kind::Tls, Some(&server), &ws).unwrap();
    let mut c = connection(&client);
    let mut plain = BytesMut::new();
    pump(&mut c, &mut t, &mut plain);
    assert!(t.established());
    // Data, close_notify, then more than rustls' buffer takes at once, in one chunk.
    c.writer().write_all(b"\xC0\x00").unwrap();
    c.send_close_notify();
    let mut wire = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut wire).unwrap();
    }
    wire.extend(std::iter::repeat_n(0x17u8, 20_000));
    let _ = t.input(&wire, &mut plain);
    assert!(t.peer_closed());
    assert_eq!(&plain[..], b"\xC0\x00");
}

/// The broker side wraps `mqtt`; what the client reads of it.
fn answer_to(c: &mut rustls::ClientConnection, t: &mut Transport, mqtt: &[u8]) -> Vec<u8> {
    let mut spare = None;
    let out = t.wrap(Some(BytesMut::from(mqtt)), &mut spare).unwrap();
    let mut rd = &out[..];
    while !rd.is_empty() {
        c.read_tls(&mut rd).unwrap();
        c.process_new_packets().unwrap();
    }
    let mut got = Vec::new();
    let _ = c.reader().read_to_end(&mut got);
    got
}

/// What the client has to send, as wire bytes.
fn client_wire(c: &mut rustls::ClientConnection) -> Vec<u8> {
    let mut wire = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut wire).unwrap();
    }
    wire
}

#[test]
fn records_split_anywhere_are_joined_and_a_key_update_is_answered() {
    let _serial = serial();
    let (server, client, ws) = setup("tls-split");
    for kind in [Kind::Tls, Kind::Wss] {
        for piece in [1usize, 3, 7, 100, 4095, 16_000, 70_000] {
            let mut t = Transport::new(kind, Some(&server), &ws).unwrap();
            let mut c = connection(&client);
            c.set_buffer_limit(None);
            let mut plain = BytesMut::new();
            // The handshake, then 100,000 bytes of MQTT (several full records), each fed to
            // the broker's side in pieces of `piece` bytes (up to receive buffers larger than
            // the bound on what is kept of an incomplete record).
            let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
            if kind == Kind::Wss {
                c.writer().write_all(UPGRADE).unwrap();
                let mut frame = BytesMut::new();
                net::ws::encode_masked_frame(2, &payload, [9, 8, 7, 6], &mut frame);
                c.writer().write_all(&frame).unwrap();
            } else {
                c.writer().write_all(&payload).unwrap();
            }
            loop {
                let wire = client_wire(&mut c);
                for chunk in wire.chunks(piece) {
                    t.input(chunk, &mut plain).unwrap();
                }
                let mut spare = None;
                let back = t.wrap(None, &mut spare).map(|b| b.to_vec());
                if wire.is_empty() && back.is_none() {
                    break;
                }
                let back = back.unwrap_or_default();
                let mut rd = &back[..];
                while !rd.is_empty() {
                    c.read_tls(&mut rd).unwrap();
                    c.process_new_packets().unwrap();
                }
            }
            assert!(t.established(), "{kind:?} in pieces of {piece}");
            assert_eq!(plain.len(), payload.len(), "{kind:?} in pieces of {piece}");
            assert!(plain[..] == payload[..], "{kind:?} in pieces of {piece}");
            // A key update from the client: the broker answers with its own and both keep
            // talking.
            c.refresh_traffic_keys().unwrap();
            if kind == Kind::Wss {
                let mut frame = BytesMut::new();
                net::ws::encode_masked_frame(2, b"\xC0\x00", [1, 2, 3, 4], &mut frame);
                c.writer().write_all(&frame).unwrap();
            } else {
                c.writer().write_all(b"\xC0\x00").unwrap();
            }
            plain.clear();
            t.input(&client_wire(&mut c), &mut plain).unwrap();
            let got = answer_to(&mut c, &mut t, b"\xD0\x00");
            assert!(got.ends_with(b"\xD0\x00"), "{kind:?}: {got:?}");
            assert!(plain.ends_with(b"\xC0\x00"), "{kind:?}");
        }
    }
}

#[test]
fn tls_arbitrary_bytes_end_in_an_error_not_a_panic() {
    let _serial = serial();
    let (server, _, ws) = setup("tls-junk");
    for seed in 0..200u32 {
        let junk: Vec<u8> = (0..seed * 13 % 3000)
            .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
            .collect();
        let mut t = Transport::new(Kind::Wss, Some(&server), &ws).unwrap();
        let mut plain = BytesMut::new();
        for piece in junk.chunks(1 + seed as usize % 97) {
            if t.input(piece, &mut plain).is_err() {
                break;
            }
        }
        assert!(plain.is_empty());
    }
}

#[test]
fn idle_tls_layers_keep_little_heap() {
    let _serial = serial();
    let (server, client, ws) = setup("tls-memory");
    for kind in [Kind::Tls, Kind::Wss, Kind::Ws] {
        const N: usize = 200;
        let mut kept = Vec::with_capacity(N);
        let before = counting::LIVE.load(Ordering::Relaxed);
        for _ in 0..N {
            let tls = (kind != Kind::Ws).then_some(&server);
            let mut t = Transport::new(kind, tls, &ws).unwrap();
            let mut plain = BytesMut::new();
            if kind == Kind::Ws {
                t.input(UPGRADE, &mut plain).unwrap();
                let mut spare = None;
                t.wrap(None, &mut spare);
            } else {
                let mut c = connection(&client);
                let connect = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00";
                if kind == Kind::Wss {
                    c.writer().write_all(UPGRADE).unwrap();
                    let mut frame = BytesMut::new();
                    net::ws::encode_masked_frame(2, connect, [1, 2, 3, 4], &mut frame);
                    c.writer().write_all(&frame).unwrap();
                } else {
                    c.writer().write_all(connect).unwrap();
                }
                pump(&mut c, &mut t, &mut plain);
                let mut spare = None;
                let out = t.wrap(Some(BytesMut::from(&b"\x20\x02\x00\x00"[..])), &mut spare);
                assert!(out.is_some());
            }
            assert!(t.established());
            kept.push(t);
        }
        let per = (counting::LIVE.load(Ordering::Relaxed) - before) / N as i64;
        eprintln!("{kind:?}: {per} heap bytes per idle connection's layers (inline here; the broker boxes them)");
        // rustls' unbuffered connection and the record keys: no receive buffer (rustls'
        // buffered ServerConnection kept 4 KiB more, 7.5 KB in all).
        let bound = if kind == Kind::Ws { 512 } else { 4096 };
        assert!(per <= bound, "{kind:?}: {per} bytes per connection");
        drop(kept);
    }
}

use proptest::prelude::*;

use super::*;

fn ws_settings() -> Arc<LayerSettings> {
    Arc::new(LayerSettings {
        path: Some("/mqtt".into()),
        frame_max: 1024,
        request_max: 4096,
        output_max: 1 << 16,
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

#[test]
fn unread_answers_are_bounded() {
    // A peer that pings and never reads: past output_max the connection is given up.
    let settings = Arc::new(LayerSettings {
        output_max: 10_000,
        ..(*ws_settings()).clone()
    });
    let mut t = Transport::new(Kind::Ws, None, &settings).unwrap();
    let mut plain = BytesMut::new();
    t.input(UPGRADE, &mut plain).unwrap();
    let ping = masked(ws::opcode::PING, &[7; 125]);
    let mut result = Ok(());
    for _ in 0..100 {
        result = t.input(&ping, &mut plain);
        if result.is_err() {
            break;
        }
    }
    assert!(matches!(result, Err(TransportError::Backlog)), "{result:?}");
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

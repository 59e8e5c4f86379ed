use super::*;
use proptest::prelude::*;

fn request(extra: &str) -> String {
    format!(
        "GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A masked client frame.
fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn decode_all(d: &mut FrameDecoder, input: &[u8]) -> Result<(Vec<u8>, Vec<Control>), FrameError> {
    let mut data = BytesMut::new();
    let mut controls = Vec::new();
    d.decode(input, &mut data, &mut |c| controls.push(c))?;
    Ok((data.to_vec(), controls))
}

#[test]
fn rfc_accept_key() {
    assert_eq!(
        accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn upgrade_parsed_with_mqtt_subprotocol() {
    let req = request("Sec-WebSocket-Protocol: mqttv3.1, mqtt\r\n");
    let (up, used) = parse_upgrade(req.as_bytes(), 4096, Some("/mqtt"))
        .unwrap()
        .unwrap();
    assert_eq!(used, req.len());
    assert_eq!(up.protocol, Some("mqtt"));
    let mut out = BytesMut::new();
    accept_response(&up, &mut out);
    let text = std::str::from_utf8(&out).unwrap();
    assert!(text.starts_with("HTTP/1.1 101 "));
    assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(text.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
    // Incomplete: wait for more.
    assert_eq!(parse_upgrade(&req.as_bytes()[..40], 4096, None), Ok(None));
}

#[test]
fn upgrade_refusals() {
    let status = |req: &str, path: Option<&str>| {
        parse_upgrade(req.as_bytes(), 4096, path)
            .unwrap_err()
            .status
    };
    assert_eq!(status("GET / HTTP/1.1\r\nHost: x\r\n\r\n", None), 426);
    assert_eq!(status(&request(""), Some("/other")), 404);
    assert_eq!(
        status(&request("Sec-WebSocket-Protocol: chat\r\n"), None),
        400
    );
    assert_eq!(
        status("\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00", None),
        400
    );
    assert_eq!(
        status(&request("").replace("GET", "POST"), None),
        400,
        "only GET upgrades"
    );
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(5000));
    assert_eq!(
        parse_upgrade(big.as_bytes(), 4096, None)
            .unwrap_err()
            .status,
        431
    );
    let mut out = BytesMut::new();
    reject_response(&refuse(404, "nope"), &mut out);
    assert!(out.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
    // No subprotocol offered: accepted without one.
    let (up, _) = parse_upgrade(request("").as_bytes(), 4096, None)
        .unwrap()
        .unwrap();
    assert_eq!(up.protocol, None);
}

#[test]
fn frames_decode_across_splits_and_fragments() {
    let mut input = client_frame(false, opcode::BINARY, b"hello ", [1, 2, 3, 4]);
    input.extend(client_frame(true, opcode::PING, b"p", [9, 9, 9, 9]));
    input.extend(client_frame(
        true,
        opcode::CONTINUATION,
        b"world",
        [5, 6, 7, 8],
    ));
    let big = vec![7u8; 70_000];
    input.extend(client_frame(
        true,
        opcode::BINARY,
        &big,
        [0xAA, 0xBB, 0xCC, 0xDD],
    ));
    input.extend(client_frame(
        true,
        opcode::CLOSE,
        &1000u16.to_be_bytes(),
        [1, 1, 1, 1],
    ));
    for step in [1, 3, 7, 1000, input.len()] {
        let mut d = FrameDecoder::new(1 << 20);
        let mut data = BytesMut::new();
        let mut controls = Vec::new();
        for chunk in input.chunks(step) {
            d.decode(chunk, &mut data, &mut |c| controls.push(c))
                .unwrap();
        }
        assert_eq!(&data[..11], b"hello world");
        assert_eq!(&data[11..], &big[..]);
        assert_eq!(
            controls,
            vec![Control::Ping(b"p".to_vec()), Control::Close(Some(1000))]
        );
    }
}

#[test]
fn frame_rules() {
    let code = |input: Vec<u8>| {
        decode_all(&mut FrameDecoder::new(1000), &input)
            .unwrap_err()
            .code
    };
    // Unmasked.
    assert_eq!(code(vec![0x82, 0x01, 0x00]), close::PROTOCOL);
    assert_eq!(
        code(client_frame(true, opcode::TEXT, b"x", [0; 4])),
        close::UNSUPPORTED
    );
    assert_eq!(code(client_frame(true, 0x3, b"x", [0; 4])), close::PROTOCOL);
    assert_eq!(
        code(client_frame(true, opcode::CONTINUATION, b"x", [0; 4])),
        close::PROTOCOL
    );
    assert_eq!(
        code(client_frame(false, opcode::PING, b"x", [0; 4])),
        close::PROTOCOL
    );
    assert_eq!(
        code(client_frame(true, opcode::PING, &[0; 126], [0; 4])),
        close::PROTOCOL
    );
    assert_eq!(
        code(client_frame(true, opcode::BINARY, &[0; 1001], [0; 4])),
        close::TOO_BIG
    );
    let mut rsv = client_frame(true, opcode::BINARY, b"x", [0; 4]);
    rsv[0] |= 0x40;
    assert_eq!(code(rsv), close::PROTOCOL);
    let mut two = client_frame(false, opcode::BINARY, b"x", [0; 4]);
    two.extend(client_frame(true, opcode::BINARY, b"y", [0; 4]));
    assert_eq!(code(two), close::PROTOCOL);
    let mut huge = vec![0x82, 0x80 | 127];
    huge.extend_from_slice(&u64::MAX.to_be_bytes());
    huge.extend_from_slice(&[0; 4]);
    assert_eq!(code(huge), close::PROTOCOL);
    // A pong is taken silently; an empty binary frame is fine.
    let mut ok = client_frame(true, opcode::PONG, b"", [0; 4]);
    ok.extend(client_frame(true, opcode::BINARY, b"", [0; 4]));
    assert_eq!(
        decode_all(&mut FrameDecoder::new(10), &ok).unwrap(),
        (vec![], vec![])
    );
}

#[test]
fn server_frames_encode_lengths() {
    for n in [0usize, 125, 126, 65_535, 65_536] {
        let mut out = BytesMut::new();
        encode_frame(opcode::BINARY, &vec![1; n], &mut out);
        let header = match n {
            n if n < 126 => 2,
            n if n <= 0xFFFF => 4,
            _ => 10,
        };
        assert_eq!(out.len(), n + header);
        assert_eq!(out[0], 0x82);
        assert_eq!(out[1] & 0x80, 0, "server frames are unmasked");
    }
}

#[test]
fn client_side_round_trip() {
    // A client's masked frame reads back on the server side, and the reverse.
    let mut out = BytesMut::new();
    encode_masked_frame(
        opcode::BINARY,
        b"hello world, masked",
        [9, 8, 7, 6],
        &mut out,
    );
    let (data, _) = decode_all(&mut FrameDecoder::new(100), &out).unwrap();
    assert_eq!(data, b"hello world, masked");
    let mut out = BytesMut::new();
    encode_frame(opcode::BINARY, b"from server", &mut out);
    let (data, _) = decode_all(&mut FrameDecoder::for_client(100), &out).unwrap();
    assert_eq!(data, b"from server");
    let mut masked = BytesMut::new();
    encode_masked_frame(opcode::BINARY, b"x", [1, 2, 3, 4], &mut masked);
    assert_eq!(
        decode_all(&mut FrameDecoder::for_client(100), &masked)
            .unwrap_err()
            .code,
        close::PROTOCOL
    );
}

proptest! {
    #[test]
    fn never_panics(input in proptest::collection::vec(any::<u8>(), 0..512), step in 1usize..64) {
        let mut d = FrameDecoder::new(256);
        let mut data = BytesMut::new();
        for chunk in input.chunks(step) {
            if d.decode(chunk, &mut data, &mut |_| {}).is_err() {
                break;
            }
        }
        let _ = parse_upgrade(&input, 256, Some("/mqtt"));
    }

    #[test]
    fn payload_survives_masking_and_splits(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6),
        mask in any::<[u8; 4]>(),
        step in 1usize..50,
    ) {
        let mut input = Vec::new();
        for p in &payloads {
            input.extend(client_frame(true, opcode::BINARY, p, mask));
        }
        let mut d = FrameDecoder::new(1 << 16);
        let mut data = BytesMut::new();
        for chunk in input.chunks(step) {
            d.decode(chunk, &mut data, &mut |_| {}).unwrap();
        }
        prop_assert_eq!(data.to_vec(), payloads.concat());
    }
}

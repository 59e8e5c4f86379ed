//! Fuzz the WebSocket side of a connection: the upgrade request parser, then the frame
//! decoder fed the same bytes in pieces (the first byte picks the piece size).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = net::ws::parse_upgrade(data, 4096, Some("/mqtt"));
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut decoder = net::ws::FrameDecoder::new(1 << 16);
    let mut out = bytes::BytesMut::new();
    for piece in data.chunks(step) {
        if decoder.decode(piece, &mut out, &mut |_| {}).is_err() {
            break;
        }
    }
});

//! The oracle shared by the fuzz targets: decoding arbitrary bytes never panics, consumes
//! exactly the declared packet or nothing, and whatever decodes re-encodes to bytes that
//! decode to the same packet.

use bytes::BytesMut;
use net::codec::{Decoder, FixedHeader, Packet, ProtocolVersion};

/// Decodes every packet in `data` as a connection speaking `version` would.
pub fn check(version: ProtocolVersion, data: &[u8]) {
    let mut decoder = Decoder { version, packet_bytes_max: 1 << 20 };
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        let declared = FixedHeader::parse(&buf).ok().flatten().map(|h| h.packet_bytes());
        match decoder.decode(&mut buf) {
            Ok(Some(packet)) => {
                assert_eq!(Some(before - buf.len()), declared);
                round_trip(&decoder, &packet);
                if let Packet::Connect(c) = &packet {
                    decoder.version = c.version;
                }
            }
            Ok(None) => {
                assert_eq!(buf.len(), before);
                return;
            }
            Err(_) => return,
        }
    }
}

fn round_trip(decoder: &Decoder, packet: &Packet) {
    let mut out = BytesMut::new();
    packet.encode(decoder.version, &mut out).expect("a decoded packet encodes");
    assert_eq!(out.len(), packet.encoded_len(decoder.version));
    let again = decoder.decode(&mut out).expect("re-encoded packet decodes").expect("whole");
    assert_eq!(&again, packet);
    assert!(out.is_empty());
}

//! A plain loop of PUBLISH decode + encode (64 B, QoS 1, MQTT 3.1.1 or 5.0) for instruction-level
//! profiling: `valgrind --tool=callgrind target/release/examples/codec_loop [v5]`.
use bytes::{Bytes, BytesMut};
use net::codec::{Decoder, Packet, PacketId, ProtocolVersion, Publish, QoS};

fn main() {
    let version = if std::env::args().any(|a| a == "v5") {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    };
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "bench/device/0042/telemetry".into(),
        packet_id: PacketId::new(42),
        properties: Default::default(),
        payload: Bytes::from(vec![0xA5; 64]),
    });
    let mut one = BytesMut::new();
    packet.encode(version, &mut one).unwrap_or_default();
    let wire = one.repeat(256);
    let decoder = Decoder {
        version,
        packet_bytes_max: 1 << 20,
    };
    let mut out = BytesMut::with_capacity(wire.len());
    let mut n = 0usize;
    for _ in 0..2000 {
        let mut buf = BytesMut::from(&wire[..]);
        out.clear();
        while let Ok(Some(p)) = decoder.decode(&mut buf) {
            let _ = p.encode(version, &mut out);
            n += 1;
        }
    }
    println!("{n} packets, {} bytes out", out.len());
}

//! Codec throughput: decode and encode of PUBLISH, 64 B and 1 KiB payloads, QoS 0 and 1,
//! MQTT 3.1.1 and 5.0. Each iteration handles a batch of `BATCH` packets, as one socket read
//! or one socket write would. `decode_encode` is the broker's forwarding work per message
//! (split a PUBLISH off the read buffer, encode it into a write buffer) and is the figure the
//! codec issue targets (under 100 ns for 64 B QoS 1). `decode_encode_bytes` reports the same
//! work in bytes/s.
//!
//! Run: `cargo bench -p ringmq-benches --bench codec`

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use net::codec::{Decoder, Packet, PacketId, ProtocolVersion, Publish, QoS};

const BATCH: usize = 256;

struct Case {
    name: String,
    version: ProtocolVersion,
    packet: Packet,
    /// BATCH copies of the encoded packet, back to back.
    wire: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            for size in [64usize, 1024] {
                let packet = Packet::Publish(Publish {
                    dup: false,
                    qos,
                    retain: false,
                    topic: "bench/device/0042/telemetry".into(),
                    packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(42).unwrap()),
                    properties: Default::default(),
                    payload: Bytes::from(vec![0xA5; size]),
                });
                let mut one = BytesMut::new();
                packet.encode(version, &mut one).unwrap();
                let wire = one.repeat(BATCH);
                let v = if version.is_v5() { "v5" } else { "v4" };
                out.push(Case {
                    name: format!("{v}/qos{}/{size}B", qos as u8),
                    version,
                    packet,
                    wire,
                });
            }
        }
    }
    out
}

fn decode_all(decoder: &Decoder, mut buf: BytesMut) {
    while let Some(p) = decoder.decode(&mut buf).unwrap() {
        black_box(p);
    }
}

fn codec(c: &mut Criterion) {
    let cases = cases();

    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(BATCH as u64));
    for case in &cases {
        let decoder = Decoder {
            version: case.version,
            packet_bytes_max: 1 << 20,
        };
        g.bench_function(&case.name, |b| {
            b.iter_batched(
                || BytesMut::from(&case.wire[..]),
                |buf| decode_all(&decoder, buf),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();

    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(BATCH as u64));
    for case in &cases {
        let mut out = BytesMut::with_capacity(case.wire.len());
        g.bench_function(&case.name, |b| {
            b.iter(|| {
                out.clear();
                for _ in 0..BATCH {
                    case.packet.encode(case.version, &mut out).unwrap();
                }
                black_box(&out);
            })
        });
    }
    g.finish();

    for (group, bytes) in [("decode_encode", false), ("decode_encode_bytes", true)] {
        let mut g = c.benchmark_group(group);
        for case in &cases {
            g.throughput(if bytes {
                Throughput::Bytes(case.wire.len() as u64)
            } else {
                Throughput::Elements(BATCH as u64)
            });
            let decoder = Decoder {
                version: case.version,
                packet_bytes_max: 1 << 20,
            };
            let mut out = BytesMut::with_capacity(case.wire.len());
            g.bench_function(&case.name, |b| {
                b.iter_batched(
                    || BytesMut::from(&case.wire[..]),
                    |mut buf| {
                        out.clear();
                        while let Some(p) = decoder.decode(&mut buf).unwrap() {
                            p.encode(case.version, &mut out).unwrap();
                        }
                        black_box(&out);
                    },
                    BatchSize::SmallInput,
                )
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = codec
}
criterion_main!(benches);

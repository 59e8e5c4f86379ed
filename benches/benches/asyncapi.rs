//! AsyncAPI validation per PUBLISH, as the shard that receives it runs it: the topic's
//! channel found, its parameter checked, the payload checked against a 10-field object schema
//! (a flat one: in one pass over the payload, `asyncapi::flat`). A ~200 B payload and a
//! ~4 KiB one (the same object with a long string field), and the ~200 B one written with
//! spaces after its commas and colons (Python's `json.dumps`); `parse_only` is the
//! `serde_json::Value` parse alone, for scale, and `tape_only` the read into the tape that
//! schemas which are not flat are validated on.
//!
//! Run: `cargo bench -p ringmq-benches --bench asyncapi`

use std::hint::black_box;

use broker::asyncapi::{Api, Verdict};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const DOC: &str = r#"
asyncapi: 3.0.0
channels:
  telemetry:
    address: devices/{deviceId}/telemetry
    parameters:
      deviceId: {}
    messages:
      reading:
        payload:
          type: object
          required: [id, t, h, p, unit, ok, seq, ts, site, note]
          properties:
            id: { type: string, maxLength: 32 }
            t: { type: number, minimum: -50, maximum: 150 }
            h: { type: number, minimum: 0, maximum: 100 }
            p: { type: integer, minimum: 0 }
            unit: { type: string, enum: [C, F] }
            ok: { type: boolean }
            seq: { type: integer, minimum: 0 }
            ts: { type: integer }
            site: { type: string, pattern: "^[a-z]+-[0-9]+$" }
            note: { type: string, maxLength: 8192 }
operations:
  publishReading:
    action: receive
    channel: { $ref: '#/channels/telemetry' }
"#;

fn payload(note_len: usize) -> Vec<u8> {
    format!(
        r#"{{"id":"device-000042","t":21.5,"h":40.25,"p":101325,"unit":"C","ok":true,"seq":123456,"ts":1764580000000,"site":"plant-7","note":"{}"}}"#,
        "x".repeat(note_len)
    )
    .into_bytes()
}

/// The same object as Python's `json.dumps` writes it by default (`", "` and `": "`).
fn spaced_payload(note_len: usize) -> Vec<u8> {
    let compact = String::from_utf8(payload(note_len)).unwrap();
    compact
        .replace("\":", "\": ")
        .replace(",\"", ", \"")
        .into_bytes()
}

fn bench(c: &mut Criterion) {
    let api = Api::from_text(DOC, false).unwrap();
    let mut g = c.benchmark_group("asyncapi");
    g.throughput(Throughput::Elements(1));
    for (name, p) in [
        ("200B", payload(40)),
        ("4KiB", payload(3900)),
        // Last: the order it leaves remembered is spaced (which compact payloads also pass).
        ("200B_spaced", spaced_payload(40)),
    ] {
        assert_eq!(
            api.check_publish("devices/d1/telemetry", &p, None, false),
            Verdict::Valid,
            "{name}"
        );
        g.bench_function(format!("check_{name}"), |b| {
            b.iter(|| {
                black_box(api.check_publish("devices/d1/telemetry", black_box(&p), None, false))
            })
        });
        g.bench_function(format!("parse_only_{name}"), |b| {
            b.iter(|| black_box(serde_json::from_slice::<serde_json::Value>(black_box(&p)).is_ok()))
        });
        g.bench_function(format!("tape_only_{name}"), |b| {
            b.iter(|| black_box(broker::asyncapi::tape::with_payload(black_box(&p), |_| ())))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

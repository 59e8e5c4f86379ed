//! The retained store on its own: a set (a retained PUBLISH replacing the topic's message,
//! over 1,000,000 held), a page of a `#` scan (256 matches), and a narrow wildcard
//! (`ret/7/+`: all 1,000 matches of one branch, in pages of 256) against 1,000,000 stored
//! messages of 64 B on `ret/<i % 1000>/<i / 1000>`.
//!
//! Run: `cargo bench -p ringmq-benches --bench retained`

use std::hint::black_box;
use std::time::Instant;

use broker::retained::{Cursor, Retained};
use broker::session::Message;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use net::codec::QoS;

const COUNT: u32 = 1_000_000;

fn message(i: u32, now: Instant) -> Message {
    Message::new(
        format!("ret/{}/{}", i % 1000, i / 1000).into(),
        Bytes::from(vec![0xA5; 64]),
        QoS::AtLeastOnce,
        true,
        Default::default(),
        now,
    )
}

fn filled(now: Instant) -> Retained {
    let mut r = Retained::new(usize::MAX, usize::MAX);
    for i in 0..COUNT {
        r.set(&message(i, now), u64::from(i) + 1, now);
    }
    r
}

fn bench(c: &mut Criterion) {
    let now = Instant::now();
    let mut r = filled(now);
    let mut g = c.benchmark_group("retained");
    g.throughput(Throughput::Elements(1));
    let mut i = 0u32;
    let mut version = u64::from(COUNT) + 1;
    let replacements: Vec<Message> = (0..4096).map(|i| message(i * 241, now)).collect();
    g.bench_function("set_replace_1M", |b| {
        b.iter(|| {
            i = (i + 1) % 4096;
            version += 1;
            black_box(r.set(&replacements[i as usize], version, now));
        })
    });
    let mut out = Vec::with_capacity(256);
    g.throughput(Throughput::Elements(256));
    g.bench_function("page_256_of_hash_1M", |b| {
        b.iter(|| {
            out.clear();
            black_box(r.page("#", &Cursor::Start, 256, usize::MAX, now, &mut out));
        })
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("narrow_1000_of_1M", |b| {
        b.iter(|| {
            let mut cursor = Cursor::Start;
            let mut n = 0;
            while cursor != Cursor::Done {
                out.clear();
                cursor = r.page("ret/7/+", &cursor, 256, usize::MAX, now, &mut out);
                n += out.len();
            }
            assert_eq!(n, 1000);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

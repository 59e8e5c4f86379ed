//! Topic matching with 10,000 subscriptions in the route table: device-style exact filters,
//! `+` and `#` wildcards, and remote shard entries, as a broker with many clients holds.
//!
//! Run: `cargo bench -p ringmq-benches --bench router`

use std::hint::black_box;
use std::time::Duration;

use broker::ids::{SessionId, ShardId};
use broker::router::Router;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use net::codec::{QoS, SubscriptionOptions};

fn table() -> Router {
    let mut r = Router::default();
    let opts = SubscriptionOptions::qos(QoS::AtLeastOnce);
    // 9,000 exact device filters, 900 single-level wildcards, 90 multi-level, 10 global.
    for i in 0..9000u32 {
        r.subscribe(
            &format!("site/{}/device/{i}/telemetry", i % 50),
            SessionId(i),
            opts,
            0,
        );
    }
    for i in 0..900u32 {
        r.subscribe(
            &format!("site/{}/device/+/alarm/{i}", i % 50),
            SessionId(10_000 + i),
            opts,
            0,
        );
    }
    for i in 0..90u32 {
        r.subscribe(&format!("site/{i}/#"), SessionId(20_000 + i), opts, 0);
    }
    for i in 0..10u32 {
        r.add_remote(&format!("fleet/{i}/+/status"), ShardId((i % 2) as u16));
    }
    r
}

fn router(c: &mut Criterion) {
    let r = table();
    let mut out = Vec::new();
    let mut g = c.benchmark_group("topic_match_10k_filters");
    g.throughput(Throughput::Elements(1));
    g.bench_function("exact_hit", |b| {
        b.iter(|| {
            black_box(r.matches(
                black_box("site/7/device/4207/telemetry"),
                ShardId(0),
                &mut out,
                None,
            ))
        })
    });
    g.bench_function("wildcard_hit", |b| {
        b.iter(|| {
            black_box(r.matches(
                black_box("site/12/device/77/alarm/512"),
                ShardId(0),
                &mut out,
                None,
            ))
        })
    });
    g.bench_function("miss", |b| {
        b.iter(|| {
            black_box(r.matches(
                black_box("other/tree/entirely/x"),
                ShardId(0),
                &mut out,
                None,
            ))
        })
    });
    g.bench_function("remote_only", |b| {
        b.iter(|| {
            black_box(r.matches(
                black_box("fleet/3/truck9/status"),
                ShardId(0),
                &mut out,
                None,
            ))
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = router
}
criterion_main!(benches);

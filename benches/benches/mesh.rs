//! The cross-shard hop: a shard pushes `ShardMsg::Publish` (64 B payload as shared `Bytes`)
//! into the SPSC queue of a peer running on another core, which drains it. Measures messages
//! per second through one ordered pair, producer and consumer pinned to different cores.
//!
//! Run: `cargo bench -p ringmq-benches --bench mesh`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::core::flow::PublisherRef;
use broker::core::peer::{AckRef, ShardMsg};
use broker::ids::ShardId;
use broker::session::Message;
use broker::shard::mesh::{Mesh, MeshShared};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use net::codec::QoS;

fn hop(c: &mut Criterion) {
    let shared = MeshShared::new(2, 65_536, 64 << 20).unwrap();
    let mut producer = Mesh::new(shared.clone(), ShardId(0));
    let mut consumer = Mesh::new(shared, ShardId(1));
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let cores = core_affinity_ids();
    let consumer_thread = {
        let received = received.clone();
        let stop = stop.clone();
        let core = cores.get(1).copied();
        std::thread::spawn(move || {
            if let Some(core) = core {
                core_affinity::set_for_current(core);
            }
            while !stop.load(Ordering::Relaxed) {
                let n = consumer.drain(4096, |_, msg| drop(msg));
                if n > 0 {
                    received.fetch_add(n as u64, Ordering::Release);
                }
            }
        })
    };
    if let Some(core) = cores.first().copied() {
        core_affinity::set_for_current(core);
    }
    let message = Message::new(
        "bench/hop".into(),
        Bytes::from(vec![0u8; 64]),
        QoS::AtLeastOnce,
        false,
        Default::default(),
        Instant::now(),
    );
    let mut g = c.benchmark_group("cross_shard_hop");
    g.throughput(Throughput::Elements(1));
    g.bench_function("publish_64B", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let target = received.load(Ordering::Acquire) + iters;
            for _ in 0..iters {
                let mut msg = ShardMsg::Publish(message.clone(), AckRef::NONE, PublisherRef::NONE);
                while let Err(back) = producer.push(ShardId(1), msg) {
                    msg = back;
                    std::hint::spin_loop();
                }
            }
            while received.load(Ordering::Acquire) < target {
                std::hint::spin_loop();
            }
            start.elapsed()
        })
    });
    g.finish();
    stop.store(true, Ordering::Relaxed);
    consumer_thread.join().unwrap();
}

fn core_affinity_ids() -> Vec<core_affinity::CoreId> {
    core_affinity::get_core_ids().unwrap_or_default()
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = hop
}
criterion_main!(benches);

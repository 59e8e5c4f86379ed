//! Append throughput of the segment log with group commit: batches of records (64 B and
//! 1 KiB payloads) framed, written (O_DIRECT where the filesystem allows) and made durable
//! with one fdatasync per batch. Run: `cargo bench -p ringmq-benches --bench storage`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use storage::embedded::log::{Log, LogConfig};
use storage::record::{Record, StoredMessage};

fn bench(c: &mut Criterion) {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("storage-bench");
    let mut g = c.benchmark_group("log_append_group_commit");
    g.measurement_time(Duration::from_secs(5));
    for payload in [64usize, 1024] {
        for batch in [1u64, 64, 512] {
            let _ = std::fs::remove_dir_all(&dir);
            let config = LogConfig {
                compact_bytes_min: u64::MAX,
                ..LogConfig::new(dir.clone())
            };
            let (mut log, _) = Log::open(config).unwrap();
            let mut seq = 0u64;
            let record = |seq: u64| Record::Enqueue {
                client: "client-0001".into(),
                seq,
                message: StoredMessage {
                    topic: "sensors/site-1/device-42/telemetry".into(),
                    payload: vec![7u8; payload],
                    qos: 1,
                    retain: false,
                    properties: vec![],
                    expires_at_ms: 0,
                },
            };
            g.throughput(Throughput::Elements(batch));
            g.bench_function(format!("{payload}B_batch{batch}"), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        for _ in 0..batch {
                            seq += 1;
                            log.append(black_box(&record(seq))).unwrap();
                        }
                        log.commit().unwrap();
                    }
                    start.elapsed()
                })
            });
            let bytes = log.bytes();
            eprintln!(
                "  {payload} B batch {batch}: log {bytes} bytes in {} segments",
                log.segment_count()
            );
        }
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);

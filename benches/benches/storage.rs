//! Append throughput of the segment log with group commit: batches of records (64 B and
//! 1 KiB payloads) framed, written (O_DIRECT where the filesystem allows) and made durable
//! with one fdatasync per batch. And the CPU of logging one message's life without the disk
//! (`message_lifecycle`): queued then acknowledged, as the per-recipient `Enqueue` + `Done`
//! records of earlier versions and as the compact `Message` written from borrowed slices +
//! an `Acked` batch of 64. Run: `cargo bench -p ringmq-benches --bench storage`.

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
    lifecycle(c, &dir);
}

/// One message queued for a session and acknowledged: the log's CPU per message (records
/// framed and applied to the log's state; commits every 4096 messages, outside the timing).
fn lifecycle(c: &mut Criterion, dir: &std::path::Path) {
    use storage::compact::MessageRef;
    let mut g = c.benchmark_group("message_lifecycle");
    g.measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Elements(64));
    let topic = "sensors/site-1/device-42/telemetry";
    let payload = [7u8; 64];
    for compact in [false, true] {
        let _ = std::fs::remove_dir_all(dir);
        let config = LogConfig {
            compact_bytes_min: u64::MAX,
            ..LogConfig::new(dir.to_path_buf())
        };
        let (mut log, _) = Log::open(config).unwrap();
        let client = "client-0001";
        log.append(&Record::Session {
            client: client.into(),
            expiry: 3600,
        })
        .unwrap();
        let mut seq = 0u64;
        let mut seqs = Vec::with_capacity(64);
        let name = if compact {
            "message_ref_acked_batch"
        } else {
            "enqueue_done_rkyv"
        };
        g.bench_function(format!("64B_{name}"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    seqs.clear();
                    for _ in 0..64 {
                        seq += 1;
                        seqs.push(seq);
                        if compact {
                            let m = MessageRef {
                                topic,
                                properties: &[],
                                expires_at_ms: 0,
                                payload: &payload,
                            };
                            log.append_message(client, seq, 1, false, black_box(&m))
                                .unwrap();
                        } else {
                            log.append(black_box(&Record::Enqueue {
                                client: client.into(),
                                seq,
                                message: StoredMessage {
                                    topic: topic.into(),
                                    payload: payload.to_vec(),
                                    qos: 1,
                                    retain: false,
                                    properties: vec![],
                                    expires_at_ms: 0,
                                },
                            }))
                            .unwrap();
                        }
                    }
                    if compact {
                        log.append_acked(client, &seqs).unwrap();
                    } else {
                        for &s in &seqs {
                            log.append(&Record::Done {
                                client: client.into(),
                                seq: s,
                            })
                            .unwrap();
                        }
                    }
                    spent += start.elapsed();
                    if seq.is_multiple_of(4096) {
                        log.commit().unwrap();
                    }
                }
                spent
            })
        });
        eprintln!("  {name}: {} log bytes for {seq} messages", log.bytes());
    }
    g.finish();
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);

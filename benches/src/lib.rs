//! criterion micro-benchmarks for ringmq; the benchmarks themselves are under `benches/`.
//!
//! # Layout
//! - `benches/codec.rs`: decode and encode of PUBLISH (64 B and 1 KiB, QoS 0 and 1, v4 and v5).
//! - `benches/router.rs`: topic matching against 10,000 filters.
//! - `benches/mesh.rs`: the cross-shard hop (SPSC push, doorbell-free drain on another core).
//! - `examples/codec_loop.rs`: a plain decode+encode loop for callgrind.

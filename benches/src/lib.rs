//! criterion micro-benchmarks for ringmq; the benchmarks themselves are under `benches/`.
//!
//! # Layout
//! - `benches/codec.rs`: decode and encode of PUBLISH (64 B and 1 KiB, QoS 0 and 1, v4 and v5).

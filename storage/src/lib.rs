//! ringmq storage: durable records, batching and backends.
//!
//! Not built yet: the embedded segment log is issue 6, Redis and Kafka come after. This crate
//! exists so that the workspace layout is the final one.
#![forbid(unsafe_code)]

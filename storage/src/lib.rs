//! ringmq storage: durable records, batching and backends.
//!
//! - [`record`]: what is stored (rkyv records: sessions, subscriptions, queued messages and
//!   their acknowledgements, inbound QoS 2 ids, retained messages).
//! - [`frame`]: length + crc32c framing and the recovery scan (torn tail vs corruption).
//! - [`segment`]: the sans-IO appender: group commit into block-aligned writes.
//! - [`state`]: the state the records describe, and the records that rebuild it.
//! - [`log`]: the per-shard segment log on disk: lock, recovery, commit, roll, compaction.
//!
//! Not built yet: driving the log from the shard's io_uring and wiring it into the broker
//! (issue 6 continues), Redis and Kafka backends (later issues).
#![forbid(unsafe_code)]

pub mod frame;
pub mod log;
pub mod record;
pub mod segment;
pub mod state;

use std::path::PathBuf;

/// A storage error, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A damaged record with valid records after it: acknowledged data would be lost by
    /// skipping it, so start-up stops.
    #[error("{path}: corrupt record at offset {offset} with valid records after it; refusing to start (restore the file or move it away knowingly)")]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Offset of the damaged record.
        offset: u64,
    },
    /// Another process holds the directory's lock.
    #[error("{0}: locked by another broker")]
    Locked(PathBuf),
    /// A record could not be encoded.
    #[error("encoding a record: {0}")]
    Encode(String),
}

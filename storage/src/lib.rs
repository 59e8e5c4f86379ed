//! ringmq storage: durable records, the store boundary and its embedded implementation.
//!
//! # Layout
//! - [`checksum`]: CRC-32C of the log's frames (the CPU's instruction where it has one).
//! - [`compact`]: the hand-encoded records of the hot path (a message written once, further
//!   recipients as references, acknowledgements in batches) and message bodies.
//! - [`record`]: what is stored (rkyv records: sessions, subscriptions, queued messages and
//!   their acknowledgements, inbound QoS 2 ids, retained messages).
//! - [`bodies`]: the message bodies the state keeps for compaction, in shared chunks.
//! - [`queue`]: a session's unacknowledged messages in sequence order.
//! - [`state`]: the state the records describe, and the records that rebuild it.
//! - [`store`]: the [`store::Store`] trait the broker writes through (sans-IO: I/O requests
//!   out, completions in) and the memory store.
//! - [`embedded`]: the per-shard segment log on local disk (framing, group commit, recovery,
//!   rolling, compaction) behind that trait.
//! - [`redis`]: the same trait over Redis (sessions as hash-tagged keys, batches of commands
//!   pipelined on the shard's ring, the start-up load).
#![deny(unsafe_code)]

pub mod bodies;
pub mod checksum;
pub mod compact;
pub mod dir;
pub mod embedded;
pub mod queue;
pub mod record;
pub mod redis;
pub mod state;
pub mod store;

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

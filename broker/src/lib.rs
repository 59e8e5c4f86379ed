//! ringmq broker: config, shards, sessions, routing and the QoS flows.
//!
//! Not built yet: this crate is the home of the thread-per-core broker (issue 3). Until then
//! it holds nothing but this note, so that the workspace layout is the final one.
//!
//! # Layout (planned, see ARCHITECTURE.md)
//! - `shard/`: one shard per core, its io_uring loop and the SPSC mesh to peer shards.
//! - `session/`: the sans-IO session state machine.
//! - `router/`: topic tree, retained store, replicated route table.
//! - `handle/`: one file per packet kind.
#![forbid(unsafe_code)]

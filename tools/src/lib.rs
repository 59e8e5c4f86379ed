//! ringmq tools: the load generator `ringmq-bench` (issue 5 grows it into the comparison
//! runner and BENCHMARKS.md).
//!
//! # Layout
//! - [`loadgen`]: the io_uring client loop that drives thousands of MQTT connections from one
//!   thread, and the P2P scenario.
//! - [`accounting`]: exact per-pair sequence accounting (lost, duplicated, out of order).
//! - [`procstat`]: a process's CPU seconds and RSS from /proc.
//! - [`report`]: the result, as a table and as JSON.

pub mod accounting;
pub mod loadgen;
pub mod procstat;
pub mod report;

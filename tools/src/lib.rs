//! ringmq tools: the load generator `ringmq-bench` and its comparison runner.
//!
//! # Layout
//! - [`loadgen`]: the io_uring client loop that drives thousands of MQTT connections from one
//!   thread; scenarios (p2p, fan-in, fan-out, conn).
//! - [`accounting`]: exact per-pair sequence accounting (lost, duplicated, out of order).
//! - `published`: other brokers' published figures, cited apart in BENCHMARKS.md.
//! - [`procstat`]: a process's CPU seconds and RSS from /proc.
//! - [`report`]: the result, as a table and as JSON.
//! - [`results`]: `results.json`: every round's outcome and the run's method facts.
//! - [`relay`]: a trivial MQTT relay, the baseline the generator and brokers are measured
//!   against.
//! - [`brokers`]: the brokers the comparison runs, started and stopped (with a redis-server
//!   for the Redis-backed ones), over TCP, TLS or WebSocket.
//! - `peer_conf`: the configuration files written for the peer brokers (mosquitto, rumqttd).
//! - [`certs`]: a throwaway CA and server certificate for the TLS cells.
//! - [`compare`]: the comparison runner and BENCHMARKS.md.
//! - [`figures`]: which charts BENCHMARKS.md shows, from a run's outcomes.
//! - `limits`: what limited each measured run (which core was full), the tables' last column.
//! - [`plot`]: the charts (plotters, SVG, log axes).

pub mod accounting;
pub mod brokers;
pub mod certs;
pub mod compare;
pub mod figures;
mod limits;
pub mod loadgen;
mod matrix;
mod peer_conf;
pub mod plot;
pub mod procstat;
mod published;
pub mod relay;
pub mod report;
pub mod results;

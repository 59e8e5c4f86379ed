//! ringmq-net: the MQTT codec and the wire.
//!
//! Everything here is free of I/O types so that fuzz targets, criterion benchmarks and the load
//! generator can call it directly.
//!
//! # Layout
//! - [`codec`]: the version-neutral [`codec::Packet`]; streaming, zero-copy decoding from a
//!   `BytesMut` read buffer and encoding into a caller-provided `BytesMut`, for MQTT 3.1
//!   (`MQIsdp`, level 3), 3.1.1 (level 4) and 5.0 (level 5), with every MQTT 5 property.
//! - [`topic`]: topic name and topic filter validation, `$share` parsing.
//! - [`limits`]: the protocol's own limits (remaining length, string length, ...).
//! - [`ws`]: MQTT over WebSocket: the HTTP upgrade and the frame codec (sans-IO).
//! - [`uring`]: a shard's io_uring: ring setup, the provided buffer ring, the operations the
//!   broker issues (multishot accept and receive, send, eventfd wake-ups, a periodic timer) and
//!   fd helpers. All of the crate's `unsafe` lives there.
#![deny(unsafe_code)]

pub mod codec;
pub mod limits;
pub mod topic;
#[allow(unsafe_code)]
pub mod uring;
pub mod ws;

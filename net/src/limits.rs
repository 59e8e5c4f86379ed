//! Protocol limits fixed by the MQTT specification. Configurable limits (the broker's maximum
//! packet size and so on) live in the broker's config; these are the ceilings they sit under.

/// The largest remaining length a variable byte integer can express ([MQTT-1.5.5]).
pub const REMAINING_BYTES_MAX: usize = 268_435_455;

/// The largest value of any variable byte integer (subscription identifiers included).
pub const VARINT_MAX: u32 = 268_435_455;

/// The longest fixed header: one type/flags byte and a four-byte remaining length.
pub const FIXED_HEADER_BYTES_MAX: usize = 5;

/// The largest whole packet: fixed header plus the largest remaining length.
pub const PACKET_BYTES_MAX: usize = FIXED_HEADER_BYTES_MAX + REMAINING_BYTES_MAX;

/// The longest UTF-8 string or binary data field: a two-byte length prefix ([MQTT-1.5.4]).
pub const STRING_BYTES_MAX: usize = 65_535;

/// MQTT 3.1 limits client identifiers to 23 bytes; 3.1.1 and 5.0 let the server allow more.
pub const CLIENT_ID_BYTES_V31_MAX: usize = 23;

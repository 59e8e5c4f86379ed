//! Fuzz the decoder of a connection that speaks MQTT 31 (CONNECT switches versions).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringmq_net_fuzz::check(net::codec::ProtocolVersion::V31, data);
});

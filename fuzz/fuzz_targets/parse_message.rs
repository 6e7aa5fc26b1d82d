//! Shim: the body is `iot_ws_core::fuzzing::parse_message`, so that crashes replay in `cargo test`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| iot_ws_core::fuzzing::parse_message(data));

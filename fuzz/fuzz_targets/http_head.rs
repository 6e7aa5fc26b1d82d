//! Shim: the body is `iot_ws_core::fuzzing::http_head`, so that crashes replay in `cargo test`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| iot_ws_core::fuzzing::http_head(data));

//! Shim: the body is `iot_ws_core::world::drive_router`, so that crashes replay in `cargo test`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| iot_ws_core::world::drive_router(data));

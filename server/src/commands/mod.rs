//! Operator commands beside `serve`: `keygen` and `token` (keys.rs), `--demo` (demo.rs), the
//! offline token check `checktoken` (checktoken.rs), and the command-line clients `device` and
//! `actuate`, which drive the core's `DeviceClient` over their own small WebSocket client
//! (ws_client.rs).

pub mod actuate;
mod actuation_sink;
pub mod checktoken;
#[cfg(feature = "keys")]
pub mod demo;
pub mod device;
#[cfg(feature = "keys")]
pub mod keys;
mod ws_client;

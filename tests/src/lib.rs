//! Harness for the end-to-end tests of the built `iot-ws-server` binary on loopback.
//!
//! - [`server_bin`]: the binary under test. `IOT_WS_SERVER_BIN` names one explicitly (a release
//!   or cross build); otherwise the harness runs `cargo build -p iot-ws-server` once per test
//!   process, into the target directory and profile the test executable itself was built in
//!   (`<target>/<profile>/deps/<test>`), and uses `<target>/<profile>/iot-ws-server`. That build
//!   is a no-op when the binary is fresh, and it picks up the lead's latest server edits.
//! - [`Server`]: one server process with captured stderr, killed on drop.
//! - [`Cluster`]: a real PostgreSQL 15, initdb'd by the harness as the `postgres` user.
//! - [`Ca`]: throwaway certificate authorities and the certificates they issue, for TLS tests.
//! - [`Keys`]: fresh RSA key pairs and real (and hostile) device tokens.
//! - [`actuation`], [`delivery`], [`ack_delivered`] and friends: what a dashboard sends, the
//!   frame a device receives for it, the acks.
//! - [`Client`]: a blocking WebSocket client (tungstenite) that offers `echo-protocol`;
//!   [`register_async`] and friends: many at once, for the load runs.
//! - [`instances`], [`Fleet`]: several instances on one database, many devices at once.
//! - [`Client::connect_tls`], [`https_raw`]: the same over TLS (wss://, https://).
//! - [`Bridge`]: a WebSocket-Node client driven through `tests/node/bridge.js`.
//! - [`CliProcess`]: `iot-ws-server device` (or any subcommand) running, its output captured;
//!   [`Server::restart`]: the same server stopped and started again on its address.

mod actuation;
pub mod async_client;
mod bin;
mod certs;
mod cli;
pub mod client;
mod fleet;
mod node;
mod pg;
mod server;
mod temp;
mod tls;
mod tokens;

pub use actuation::{ack_delivered, ack_forwarded, ack_not_connected, actuation, actuation_ack, delivery};
pub use async_client::{connect_async, next_text, register_async, AsyncWs};
pub use bin::server_bin;
pub use certs::{Ca, Issued};
pub use cli::CliProcess;
pub use client::{frame, Client, Event, ACTUATOR};
pub use fleet::{device_ids, instances, instances_on, register_each, run_bounded, Fleet};
pub use node::Bridge;
pub use pg::{Cluster, Db, SCRAM_USER};
pub use server::{free_port, log_message, loopback_port, run_to_exit, Server, ServerOpts};
pub use temp::TempDir;
pub use tls::{https_raw, tls_over, tls_wire, trusting, TlsWire};
pub use tokens::{alg_none, b64, hs256_with_public_key, now_secs, Keys};

use std::time::{Duration, Instant};

/// The one generous timeout for anything that should happen "at once" on loopback.
pub const WAIT: Duration = Duration::from_secs(10);

/// Polls `check` until it returns `Some` or `timeout` passes. Every wait in the tests is bounded.
pub fn eventually<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

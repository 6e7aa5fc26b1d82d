//! Sans-IO core of the IoT WebSocket actuation server.
//!
//! Everything here is pure logic: no sockets, no clock, no crypto, no database. The host (the
//! `iot-ws-server` binary, a browser, an edge device) feeds facts in and performs the commands
//! that come out. That is what lets the same rules be unit-tested with a fake clock, fuzzed,
//! built `no_std` and compiled to WASM.
//!
//! - [`message`]: the wire format, parsed from text into [`ClientMessage`] and answered with [`Reply`].
//! - [`session`]: one server-side connection's state machine, [`Session`].
//! - [`hub`]: which session currently holds which device, [`Hub`].
//! - [`held`]: actuations kept for a device between two of its connections, [`HeldActuations`].
//! - [`router`]: the hub's rules joining sessions (supersede, hold, forward), [`Router`].
//! - [`refusal`]: why the server refuses a peer, each reason with its reply and close code.
//! - [`claims`]: the claims check of a device token whose signature the host verified.
//! - [`client`]: the device end of the protocol, [`DeviceClient`].
//! - [`http_head`]: the HTTP request head that opens a connection: plain answer or WebSocket upgrade.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

extern crate alloc;

pub mod claims;
pub mod client;
mod credentials;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod held;
pub mod http_head;
pub mod hub;
pub mod message;
pub mod refusal;
pub mod router;
pub mod session;
mod time;
#[cfg(feature = "wasm")]
pub mod wasm;
#[cfg(feature = "fuzzing")]
pub mod world;

pub use claims::{check_claims, TokenRejected, UnixSeconds};
pub use client::{ClientConfig, ClientEvent, ClientInput, ClientOutput, DeviceClient};
pub use credentials::Credentials;
pub use held::{HeldActuations, Hold};
pub use hub::{Hub, SessionId};
pub use message::{
    parse, Body, ClientMessage, CloseCode, DeviceId, FormatError, Reply, RouteOutcome, MAX_DEVICE_ID_CHARS,
};
pub use refusal::{FrameError, StoreFailed, WrongCredentials};
pub use router::{Command, Fact, Parcel, RouteCounts, Router, RouterConfig};
pub use session::{Input, Output, Session, SessionConfig};
pub use time::Millis;

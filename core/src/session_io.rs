//! What a [`Session`] takes in ([`Input`]: facts) and gives out ([`Output`]: commands).

use alloc::string::String;

use crate::claims::TokenRejected;
use crate::message::{Body, CloseCode, DeviceId, Reply, RouteOutcome};
use crate::refusal::{FrameError, StoreFailed};
#[cfg(doc)]
use crate::session::Session;

/// A fact the host observed, fed to [`Session::handle_input`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// A complete text message arrived.
    Text(&'a str),
    /// A complete binary message arrived.
    Binary,
    /// The WebSocket layer refused a frame: the session closes with the fault's code.
    FrameRefused(FrameError),
    /// The verdict on the token of the pending [`Output::VerifyToken`].
    TokenChecked(Result<(), TokenRejected>),
    /// The result of the pending [`Output::StoreBinding`].
    BindingStored(Result<(), StoreFailed>),
    /// What became of an actuation this session asked to [`Output::Route`] with `ack`. Outcomes
    /// for one device come in the order its actuations were routed; those for different
    /// devices may come in any order (one may wait for another instance).
    Routed {
        /// The actuation's device.
        device: DeviceId,
        /// What became of it.
        outcome: RouteOutcome,
    },
    /// An actuation for a device, routed to this session.
    Deliver {
        /// The device it is for.
        device: DeviceId,
        /// Its body, raw.
        body: Body,
    },
    /// A newer connection of the same device registered.
    Superseded,
    /// The peer went away (close frame, reset, timeout): nothing more can be sent.
    PeerGone,
    /// The server is shutting down.
    Shutdown,
    /// The host gave this pending connection's place to a fairer claim (its cap on pending
    /// connections is full): closed 1013, try again later.
    Evicted,
}

/// A command for the host, drained with [`Session::poll_output`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send this reply as a text frame.
    Send(Reply),
    /// Send a close frame with this code; the session is closed.
    Close(CloseCode),
    /// Verify this token for this device, then feed [`Input::TokenChecked`].
    VerifyToken {
        /// The device the token must be for.
        device: DeviceId,
        /// The JWT, as sent.
        token: String,
    },
    /// Record that the device is connected here and make this session its route, then feed
    /// [`Input::BindingStored`]. Exactly one [`Output::Detach`] follows, stored or not.
    StoreBinding {
        /// The device.
        device: DeviceId,
    },
    /// Stop routing the device to this session: it has closed. Comes exactly once after each
    /// [`Output::StoreBinding`], and is the last output but handed-back deliveries.
    Detach {
        /// The device.
        device: DeviceId,
        /// Whether the binding must be cleared (the device recorded as disconnected): `true`
        /// unless the device lives on in a newer connection that superseded this one. Hosts
        /// clear it only if this session is still the device's current route, so that a newer
        /// registration the session has not heard of yet is never undone.
        clear_binding: bool,
    },
    /// Route an actuation to its device; if `ack`, feed back [`Input::Routed`].
    Route {
        /// The device it is for.
        device: DeviceId,
        /// Its body, raw.
        body: Body,
        /// Whether the sender wants to know what became of it.
        ack: bool,
    },
    /// A delivered actuation this session can no longer pass on (it is not, or no longer, the
    /// device's connection): route it again rather than lose it.
    Undelivered {
        /// The device it is for.
        device: DeviceId,
        /// Its body, raw.
        body: Body,
    },
}

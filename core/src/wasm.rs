//! The device client for JavaScript, through `wasm-bindgen` (feature `wasm`).
//!
//! JavaScript owns the `WebSocket` and the timer; [`WasmDeviceClient`] owns the protocol. Every
//! output crosses the boundary as a small JSON string, so that the JavaScript side needs no
//! generated classes beyond the client itself:
//!
//! ```text
//! {"kind":"connect"}                                   open a WebSocket, then handleConnected
//! {"kind":"send","text":"{\"type\":\"ping\"}"}         ws.send(text)
//! {"kind":"close"}                                     ws.close(), then handleDisconnected
//! {"kind":"event","event":"registered"}                also rejected, server_error, pong, pong_missed
//! {"kind":"event","event":"backing_off","delayMs":2500}  the next connect is this far away
//! {"kind":"event","event":"actuation","body":{...},"text":"{...}"}
//!                                                      the dashboard's body, as JSON and as the
//!                                                      exact text it sent (byte for byte)
//! ```
//!
//! A JavaScript driver, in the same shape as the server's connection loop:
//!
//! ```text
//! const c = new WasmDeviceClient(performance.now(), "dev-1", token);
//! function pump() {
//!   for (let out; (out = c.poll_output()) !== undefined; ) perform(JSON.parse(out));
//!   clearTimeout(timer);
//!   const at = c.poll_timeout();
//!   if (at !== undefined) timer = setTimeout(() => { c.handle_timeout(performance.now()); pump(); },
//!                                            Math.max(0, at - performance.now()));
//! }
//! ```

use alloc::string::String;
use wasm_bindgen::prelude::wasm_bindgen;

use crate::client::{ClientConfig, ClientEvent, ClientInput, ClientOutput, DeviceClient};
use crate::message::{parse, ClientMessage, DeviceId};
use crate::time::Millis;

/// JavaScript's milliseconds (`performance.now()`, `Date.now()`) as [`Millis`]: fractions are
/// dropped, and negative, NaN or infinite times count as 0 (the core ignores time going back).
fn millis(now_ms: f64) -> Millis {
    if now_ms.is_finite() && now_ms > 0.0 {
        // `as` saturates at u64::MAX.
        Millis(now_ms as u64)
    } else {
        Millis(0)
    }
}

/// A JSON string literal for `text`.
fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| String::from("\"\""))
}

/// The device end of the protocol, for JavaScript: registration, keep-alive and reconnects.
///
/// Call a `handle_*` method for each thing that happens, then drain
/// [`poll_output`](WasmDeviceClient::poll_output) until it returns `undefined`, then re-arm
/// the timer from [`poll_timeout`](WasmDeviceClient::poll_timeout).
#[wasm_bindgen]
pub struct WasmDeviceClient {
    inner: DeviceClient,
}

#[wasm_bindgen]
impl WasmDeviceClient {
    /// A client for `device_id` with its `token`, with the platform agent's timing, that wants to
    /// connect right away (its first output is `{"kind":"connect"}`).
    #[wasm_bindgen(constructor)]
    pub fn new(now_ms: f64, device_id: String, token: String) -> WasmDeviceClient {
        let inner = DeviceClient::new(millis(now_ms), DeviceId(device_id.into()), token, ClientConfig::default());
        WasmDeviceClient { inner }
    }

    /// The WebSocket opened: the client queues its registration.
    pub fn handle_connected(&mut self, now_ms: f64) {
        self.inner.handle_input(millis(now_ms), ClientInput::Connected);
    }

    /// A text frame arrived from the server.
    pub fn handle_text(&mut self, now_ms: f64, text: &str) {
        self.inner.handle_input(millis(now_ms), ClientInput::Text(text));
    }

    /// The WebSocket closed, failed to open, or was closed as asked: a reconnect is scheduled.
    pub fn handle_disconnected(&mut self, now_ms: f64) {
        self.inner.handle_input(millis(now_ms), ClientInput::Disconnected);
    }

    /// The timer armed from [`poll_timeout`](WasmDeviceClient::poll_timeout) fired.
    pub fn handle_timeout(&mut self, now_ms: f64) {
        self.inner.handle_timeout(millis(now_ms));
    }

    /// The next command or event as a JSON string (see the module docs), or `undefined` when
    /// there is none; call after every `handle_*` until it returns `undefined`.
    pub fn poll_output(&mut self) -> Option<String> {
        self.inner.poll_output().map(|out| output_json(&out))
    }

    /// When to call [`handle_timeout`](WasmDeviceClient::handle_timeout), in the same
    /// milliseconds as `now_ms`, or `undefined` for no timer; read it after draining the outputs.
    pub fn poll_timeout(&self) -> Option<f64> {
        self.inner.poll_timeout().map(|t| t.0 as f64)
    }

    /// Whether the last registration was answered 200 and the connection is still up.
    pub fn is_registered(&self) -> bool {
        self.inner.is_registered()
    }
}

/// One output as the JSON string JavaScript reads.
fn output_json(out: &ClientOutput) -> String {
    let event = |name: &str| alloc::format!(r#"{{"kind":"event","event":"{name}"}}"#);
    match out {
        ClientOutput::Connect => String::from(r#"{"kind":"connect"}"#),
        ClientOutput::Send(text) => alloc::format!(r#"{{"kind":"send","text":{}}}"#, json_string(text)),
        ClientOutput::Close => String::from(r#"{"kind":"close"}"#),
        ClientOutput::Event(ClientEvent::Registered) => event("registered"),
        ClientOutput::Event(ClientEvent::Rejected) => event("rejected"),
        ClientOutput::Event(ClientEvent::ServerError) => event("server_error"),
        ClientOutput::Event(ClientEvent::Pong) => event("pong"),
        ClientOutput::Event(ClientEvent::PongMissed) => event("pong_missed"),
        ClientOutput::Event(ClientEvent::BackingOff { delay_ms }) => {
            alloc::format!(r#"{{"kind":"event","event":"backing_off","delayMs":{delay_ms}}}"#)
        }
        // The body is JSON text the client took from the server's reply: embedded as is, and
        // again as a string, because JSON.parse alone would lose its exact spelling.
        ClientOutput::Event(ClientEvent::Actuation(body)) => {
            alloc::format!(r#"{{"kind":"event","event":"actuation","body":{body},"text":{}}}"#, json_string(body))
        }
    }
}

/// Parses `text` as a client message, as the server would, and describes the result as JSON:
/// `{"kind":"ping"}`, `{"kind":"device","deviceId":…}`,
/// `{"kind":"actuation","deviceId":…,"ack":…,"body":{…}}`, or
/// `{"kind":"error","error":"missing field deviceToken","reply":"{\"code\":401,…}","close":1003}`
/// with the server's answer to it. Tokens and credentials are never echoed.
#[wasm_bindgen]
pub fn parse_message(text: &str) -> String {
    match parse(text) {
        Ok(ClientMessage::Ping) => String::from(r#"{"kind":"ping"}"#),
        Ok(ClientMessage::Device { device, .. }) => {
            alloc::format!(r#"{{"kind":"device","deviceId":{}}}"#, json_string(device.as_str()))
        }
        Ok(ClientMessage::Actuation { device, body, ack, .. }) => alloc::format!(
            r#"{{"kind":"actuation","deviceId":{},"ack":{ack},"body":{}}}"#,
            json_string(device.as_str()),
            body.as_str()
        ),
        Err(error) => {
            let (reply, close) = error.reply();
            alloc::format!(
                r#"{{"kind":"error","error":{},"reply":{},"close":{}}}"#,
                json_string(&alloc::format!("{error}")),
                json_string(&reply.to_text()),
                close.0
            )
        }
    }
}

//! The device end of the protocol, for browser and edge clients.
//!
//! [`DeviceClient`] is sans-IO and driven like the server's session: the host opens and closes
//! the socket, feeds what happens with [`DeviceClient::handle_input`] (or
//! [`DeviceClient::handle_timeout`] when the timer fires), drains [`DeviceClient::poll_output`]
//! and re-arms its timer from [`DeviceClient::poll_timeout`]. It registers on every
//! connection, pings every 30 s once registered and notices a missing pong, and schedules
//! reconnects with the platform agent's back-off: 2.5 s, doubling after each failure up to
//! 10 minutes, back to 2.5 s after a 200.

use alloc::collections::VecDeque;
use alloc::string::String;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::message::DeviceId;
use crate::time::Millis;

/// Timing of the device client; [`Default`] is the platform agent's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Ping period once registered.
    pub ping_interval_ms: u64,
    /// How long to wait for a pong before the connection is deemed dead.
    pub pong_timeout_ms: u64,
    /// First reconnect delay, and the delay again after each 200.
    pub initial_backoff_ms: u64,
    /// The longest reconnect delay.
    pub max_backoff_ms: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            ping_interval_ms: 30_000,
            pong_timeout_ms: 10_000,
            initial_backoff_ms: 2_500,
            max_backoff_ms: 600_000,
        }
    }
}

/// What the application hears from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// 200: registered.
    Registered,
    /// 401: refused (invalid token or wrong format); the server closes.
    Rejected,
    /// 500: the server could not record the binding; the server closes.
    ServerError,
    /// 1024: an actuation, with the dashboard's body as raw JSON text.
    Actuation(String),
    /// 202: the answer to a ping.
    Pong,
    /// No pong came in time: the client asks the host to close and will reconnect.
    PongMissed,
    /// The connection is gone (or never opened): the next attempt is in `delay_ms`. Hosts show
    /// it; they need not compute it, since [`DeviceClient::poll_timeout`] already says when.
    BackingOff {
        /// The wait before the next connection attempt, in milliseconds.
        delay_ms: u64,
    },
}

/// A fact the host observed, fed to [`DeviceClient::handle_input`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientInput<'a> {
    /// The connection asked for by [`ClientOutput::Connect`] is open: the client registers.
    Connected,
    /// A text frame arrived from the server.
    Text(&'a str),
    /// The connection closed, failed to open, or was closed as asked: the client schedules the
    /// reconnect and says when ([`ClientEvent::BackingOff`]). A repeat, while already waiting,
    /// is ignored.
    Disconnected,
}

/// A command for the host, or an event for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOutput {
    /// Open a connection now; then feed [`ClientInput::Connected`] or, on failure,
    /// [`ClientInput::Disconnected`].
    Connect,
    /// Send this text frame.
    Send(String),
    /// Close the connection; then feed [`ClientInput::Disconnected`].
    Close,
    /// Tell the application.
    Event(ClientEvent),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for the time to reconnect.
    Waiting { reconnect_at: Millis },
    /// The host is opening the connection.
    Connecting,
    /// Registration sent, no 200 yet.
    Registering,
    /// Registered; pinging.
    Registered { next_ping: Millis, pong_deadline: Option<Millis> },
    /// Asked the host to close; waiting for it to say the connection is gone.
    Closing,
}

/// One device's connection life: registration, keep-alive and reconnects.
///
/// Drive it as the server drives a [`Session`](crate::Session): feed every fact with
/// [`handle_input`](DeviceClient::handle_input) (or [`handle_timeout`](DeviceClient::handle_timeout)
/// when the timer fires), then drain [`poll_output`](DeviceClient::poll_output) until `None`,
/// then re-arm the timer from [`poll_timeout`](DeviceClient::poll_timeout).
///
/// ```
/// use iot_ws_core::{ClientConfig, ClientEvent, ClientInput, ClientOutput, DeviceClient, DeviceId, Millis};
/// let mut c = DeviceClient::new(Millis(0), DeviceId("dev-1".into()), "a.b.c".into(), ClientConfig::default());
/// assert_eq!(c.poll_output(), Some(ClientOutput::Connect));
/// c.handle_input(Millis(10), ClientInput::Connected);
/// assert!(matches!(c.poll_output(), Some(ClientOutput::Send(text)) if text.contains("\"deviceId\":\"dev-1\"")));
/// c.handle_input(Millis(20), ClientInput::Text(r#"{"code":200,"content":"Subscribed"}"#));
/// assert_eq!(c.poll_output(), Some(ClientOutput::Event(ClientEvent::Registered)));
/// assert_eq!(c.poll_output(), None);
/// assert_eq!(c.poll_timeout(), Some(Millis(30_020))); // the first ping
/// ```
#[derive(Clone, Debug)]
pub struct DeviceClient {
    device: DeviceId,
    token: String,
    config: ClientConfig,
    state: State,
    backoff_ms: u64,
    now: Millis,
    outputs: VecDeque<ClientOutput>,
}

#[derive(Deserialize)]
struct ServerReply<'a> {
    code: i64,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

impl DeviceClient {
    /// A client that wants to connect right away.
    pub fn new(now: Millis, device: DeviceId, token: String, config: ClientConfig) -> Self {
        let mut client = DeviceClient {
            device,
            token,
            config,
            state: State::Connecting,
            backoff_ms: config.initial_backoff_ms,
            now,
            outputs: VecDeque::new(),
        };
        client.outputs.push_back(ClientOutput::Connect);
        client
    }

    /// Feeds one fact observed at `now`. Then drain [`poll_output`](DeviceClient::poll_output).
    pub fn handle_input(&mut self, now: Millis, input: ClientInput<'_>) {
        self.advance(now);
        match input {
            ClientInput::Connected => self.on_connected(),
            ClientInput::Text(text) => self.on_text(text),
            ClientInput::Disconnected => self.on_disconnected(),
        }
    }

    /// The connection is open: the client sends its registration.
    fn on_connected(&mut self) {
        self.state = State::Registering;
        let message = registration_message(&self.device, &self.token);
        self.outputs.push_back(ClientOutput::Send(message));
    }

    fn on_text(&mut self, text: &str) {
        let Ok(reply) = serde_json::from_str::<ServerReply<'_>>(text) else { return };
        match reply.code {
            // Only the answer to our registration: a stray 200 on a connection we are closing,
            // or after one already answered, must not restart the ping schedule.
            200 if !matches!(self.state, State::Registering) => {}
            200 => {
                self.backoff_ms = self.config.initial_backoff_ms;
                self.state =
                    State::Registered { next_ping: self.now.plus(self.config.ping_interval_ms), pong_deadline: None };
                self.event(ClientEvent::Registered);
            }
            202 => {
                if let State::Registered { pong_deadline, .. } = &mut self.state {
                    *pong_deadline = None;
                }
                self.event(ClientEvent::Pong);
            }
            401 => self.event(ClientEvent::Rejected),
            500 => self.event(ClientEvent::ServerError),
            1024 => {
                if let Some(body) = reply.content {
                    self.event(ClientEvent::Actuation(body.get().into()));
                }
            }
            _ => {}
        }
    }

    fn on_disconnected(&mut self) {
        if let State::Waiting { .. } = self.state {
            return;
        }
        self.state = State::Waiting { reconnect_at: self.now.plus(self.backoff_ms) };
        self.event(ClientEvent::BackingOff { delay_ms: self.backoff_ms });
        self.backoff_ms = self.backoff_ms.saturating_mul(2).min(self.config.max_backoff_ms);
    }

    /// Tells the client that `now` has come; call it when
    /// [`poll_timeout`](DeviceClient::poll_timeout) is reached. Then drain
    /// [`poll_output`](DeviceClient::poll_output).
    pub fn handle_timeout(&mut self, now: Millis) {
        self.advance(now);
        match self.state {
            State::Waiting { reconnect_at } if self.now >= reconnect_at => {
                self.state = State::Connecting;
                self.outputs.push_back(ClientOutput::Connect);
            }
            State::Registered { pong_deadline: Some(deadline), .. } if self.now >= deadline => {
                self.state = State::Closing;
                self.event(ClientEvent::PongMissed);
                self.outputs.push_back(ClientOutput::Close);
            }
            State::Registered { next_ping, pong_deadline } if self.now >= next_ping => {
                let deadline = pong_deadline.unwrap_or(self.now.plus(self.config.pong_timeout_ms));
                self.state = State::Registered {
                    next_ping: self.now.plus(self.config.ping_interval_ms),
                    pong_deadline: Some(deadline),
                };
                self.outputs.push_back(ClientOutput::Send(String::from(r#"{"type":"ping"}"#)));
            }
            _ => {}
        }
    }

    /// The next command or event; call after every `handle_*` until it returns `None`.
    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](DeviceClient::handle_timeout) must be called next, if ever; read
    /// it after draining the outputs.
    pub fn poll_timeout(&self) -> Option<Millis> {
        match self.state {
            State::Waiting { reconnect_at } => Some(reconnect_at),
            State::Registered { next_ping, pong_deadline } => {
                Some(pong_deadline.map_or(next_ping, |d| d.min(next_ping)))
            }
            State::Connecting | State::Registering | State::Closing => None,
        }
    }

    /// Whether the last registration was answered 200 and the connection is still up.
    pub fn is_registered(&self) -> bool {
        matches!(self.state, State::Registered { .. })
    }

    fn advance(&mut self, now: Millis) {
        self.now = self.now.max(now);
    }

    fn event(&mut self, event: ClientEvent) {
        self.outputs.push_back(ClientOutput::Event(event));
    }
}

/// The registration message, with both strings escaped as JSON.
fn registration_message(device: &DeviceId, token: &str) -> String {
    let id = serde_json::to_string(device.as_str()).unwrap_or_default();
    let token = serde_json::to_string(token).unwrap_or_default();
    alloc::format!(r#"{{"type":"device","deviceId":{id},"deviceToken":{token}}}"#)
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;

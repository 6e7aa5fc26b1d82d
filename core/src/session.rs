//! One server-side connection's state machine.
//!
//! The rules, in one place:
//!
//! - `{"type":"ping"}` is answered 202 `"PONG"` in every open state, registered or not.
//! - A registration moves `AwaitingInit -> Verifying -> Storing -> Registered`: the host is asked
//!   to verify the token ([`Output::VerifyToken`]), then to store the binding
//!   ([`Output::StoreBinding`]); exactly one 200 follows. An invalid token is answered 401
//!   "Invalid device token" and closed 1008; a binding that cannot be stored is answered 500 and
//!   closed 1011. A repeat registration while one is pending is ignored.
//! - Every refusal's reply and close code come from its type's `reply()` ([`FormatError`],
//!   [`TokenRejected`], [`WrongCredentials`], [`StoreFailed`],
//!   [`FrameError`](crate::FrameError)); the other closes are these rules': 1000 at a timeout
//!   or when superseded, 1001 at shutdown, 1013 when the host evicts a pending connection
//!   ([`Input::Evicted`]).
//! - A registered device that registers again under its own id has its token verified again:
//!   200 if it verifies, else 401 "Invalid device token" and close 1008 (a stolen connection
//!   cannot be renewed with a garbage token). Under another id it is a format error.
//! - An actuation is accepted in every open state when its credentials match the configured pair
//!   (compared in constant time; none configured refuses all): the host routes it
//!   ([`Output::Route`]). Its sender hears nothing unless it asked with `"ack": true`, and then
//!   exactly one reply per actuation, once the host reports the [`RouteOutcome`]. Wrong
//!   credentials are answered 401 and closed 1008.
//! - Anything else (not JSON, unknown type, missing field, binary frame) is answered 401 "Wrong
//!   message format" and closed 1003.
//! - A connection is *pending* from its accept until it registers a device or sends an accepted
//!   actuation ([`Session::is_pending`]). A pending connection is closed 1000 at the register
//!   timeout after its accept, whatever it sends: pings do not keep it open (hosts cap pending
//!   connections, so each must end soon). If the binding is still being stored then, the answer
//!   is 500 and close 1011.
//! - A sender of an accepted actuation that is not a registered device and sends nothing for the
//!   register timeout is closed 1000: the dashboard opens one connection per actuation and never
//!   closes it.
//! - A [`Output::StoreBinding`] makes this session the device's route, whatever the store then
//!   says. So after it comes exactly one [`Output::Detach`], when the session stops being that
//!   route, and nothing more of the kind: with `clear_binding: false` when a newer registration
//!   of the device supersedes this one (closed 1000; the device lives on there), else with
//!   `clear_binding: true`, the session having ended any other way (peer gone, refusal, shutdown,
//!   a failed store, or a store not done by the deadline, which may still write the binding
//!   after the 500). A session that never asked to store a binding is never detached.
//! - A new [`SessionConfig`] ([`Session::set_config`]) rules from the next input on: every later
//!   actuation's credentials are checked against it (a connection kept open does not keep a
//!   revoked password), and a later message's idle timeout is its. A deadline already set stays.
//! - Nothing is sent after a close; every input in every state has a defined outcome, and inputs
//!   that do not apply to the current state are ignored.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;

use crate::claims::TokenRejected;
use crate::credentials::Credentials;
use crate::message::{parse, Body, ClientMessage, CloseCode, DeviceId, FormatError, Reply, RouteOutcome};
use crate::refusal::{StoreFailed, WrongCredentials};
use crate::time::Millis;

#[path = "session_io.rs"]
mod io;
pub use io::{Input, Output};

/// Settings shared by every session of a server: each session holds an [`Arc`] of them, not a
/// copy, so a thousand connections keep one set of credentials.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// The actuator's credentials; `None` refuses every actuation.
    pub actuator: Option<Credentials>,
    /// How long a connection may stay pending after its accept, and how long a sender that is
    /// not a registered device may stay silent, in milliseconds.
    pub register_timeout_ms: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig { actuator: None, register_timeout_ms: 10_000 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    AwaitingInit,
    Verifying {
        device: DeviceId,
    },
    Storing {
        device: DeviceId,
    },
    /// `rechecking`: a repeat registration's token is being verified.
    Registered {
        device: DeviceId,
        rechecking: bool,
    },
    Closed,
}

/// One connection's protocol state.
///
/// Drive it like this: feed every fact with [`handle_input`](Session::handle_input) (or
/// [`handle_timeout`](Session::handle_timeout) when the timer fires), then drain
/// [`poll_output`](Session::poll_output) until `None`, performing each command (whose results
/// come back as inputs), then re-arm the timer from [`poll_timeout`](Session::poll_timeout).
///
/// ```
/// use std::sync::Arc;
/// use iot_ws_core::{Input, Millis, Output, Reply, Session, SessionConfig};
///
/// let mut session = Session::new(Millis(0), Arc::new(SessionConfig::default()));
/// let mut sent = Vec::new();
/// session.handle_input(Millis(5), Input::Text(r#"{"type":"ping"}"#));
/// // Bounded drive loop: a session never produces unbounded output for one input.
/// for _ in 0..16 {
///     match session.poll_output() {
///         Some(Output::Send(reply)) => sent.push(reply.to_text()),
///         Some(other) => panic!("unexpected {other:?}"),
///         None => break,
///     }
/// }
/// assert_eq!(sent, [r#"{"code":202,"content":"PONG"}"#]);
/// // Still pending: closed 10 s after the accept, pings or not.
/// assert_eq!(session.poll_timeout(), Some(Millis(10_000)));
/// session.handle_timeout(Millis(10_000));
/// assert_eq!(session.poll_output(), Some(Output::Close(iot_ws_core::CloseCode::NORMAL)));
/// assert!(session.is_closed());
/// ```
#[derive(Clone, Debug)]
pub struct Session {
    state: State,
    config: Arc<SessionConfig>,
    now: Millis,
    /// Neither a registered device nor a sender of an accepted actuation yet.
    pending: bool,
    /// When an unregistered connection is closed: fixed at the accept while pending, pushed back
    /// by every message once the connection has sent an accepted actuation.
    deadline: Millis,
    outputs: VecDeque<Output>,
    /// Devices of routed actuations whose sender asked for an ack, oldest first. Boxed: only a
    /// sender asking for acks has any, and a host keeps thousands of devices' sessions.
    #[allow(clippy::box_collection)] // the point: 8 bytes per session instead of 32
    pending_acks: Option<Box<VecDeque<DeviceId>>>,
}

impl Session {
    /// A session for a connection accepted at `now` (the TCP accept, not the WebSocket upgrade:
    /// the register timeout covers the HTTP head too).
    pub fn new(now: Millis, config: Arc<SessionConfig>) -> Self {
        Session {
            state: State::AwaitingInit,
            now,
            pending: true,
            deadline: now.plus(config.register_timeout_ms),
            config,
            outputs: VecDeque::new(),
            pending_acks: None,
        }
    }

    /// Replaces the settings from the next input on (the host re-read them): later actuations
    /// are checked against the new credentials. A deadline already set stays where it is.
    pub fn set_config(&mut self, config: Arc<SessionConfig>) {
        self.config = config;
    }

    /// The settings in use: a host that swaps them compares this with its current ones.
    pub fn config(&self) -> &Arc<SessionConfig> {
        &self.config
    }

    /// Feeds one fact observed at `now`. Then drain [`poll_output`](Session::poll_output).
    pub fn handle_input(&mut self, now: Millis, input: Input<'_>) {
        self.advance(now);
        if self.is_closed() {
            self.handle_after_close(input);
            return;
        }
        match input {
            Input::Text(text) => self.handle_text(text),
            Input::Binary => self.refuse(FormatError::Binary.reply()),
            Input::FrameRefused(error) => {
                let (reply, code) = error.reply();
                if let Some(reply) = reply {
                    self.send(reply);
                }
                self.close(Some(code));
            }
            Input::TokenChecked(verdict) => self.handle_verdict(verdict),
            Input::BindingStored(result) => self.handle_stored(result),
            Input::Routed { device, outcome } => self.handle_routed(device, outcome),
            Input::Deliver { device, body } => self.handle_deliver(device, body),
            Input::Superseded => self.handle_superseded(),
            Input::PeerGone => self.close(None),
            Input::Shutdown => self.close(Some(CloseCode::GOING_AWAY)),
            Input::Evicted => self.close(Some(CloseCode::TRY_AGAIN_LATER)),
        }
    }

    /// Tells the session that `now` has come; call it when [`poll_timeout`](Session::poll_timeout)
    /// is reached. Then drain [`poll_output`](Session::poll_output).
    pub fn handle_timeout(&mut self, now: Millis) {
        self.advance(now);
        let Some(deadline) = self.poll_timeout() else { return };
        if self.now < deadline {
            return;
        }
        if let State::Storing { .. } = self.state {
            // The binding was not recorded in time: the device hears why before the close.
            self.refuse(StoreFailed.reply());
        } else {
            self.close(Some(CloseCode::NORMAL));
        }
    }

    /// The next command for the host; call after every `handle_*` until it returns `None`.
    pub fn poll_output(&mut self) -> Option<Output> {
        let output = self.outputs.pop_front();
        if output.is_none() {
            // Drained: a session at rest keeps no queue (a host holds thousands of idle ones,
            // and one message's outputs take 4 slots of 56 bytes).
            self.outputs = VecDeque::new();
        }
        output
    }

    /// Whether [`poll_output`](Session::poll_output) has something, without taking it.
    pub fn has_output(&self) -> bool {
        !self.outputs.is_empty()
    }

    /// When [`handle_timeout`](Session::handle_timeout) must be called next, if ever; read it
    /// after draining the outputs.
    pub fn poll_timeout(&self) -> Option<Millis> {
        match self.state {
            State::Registered { .. } | State::Closed => None,
            // A registration in progress is bounded too, but only by the pending deadline: a
            // sender's idle timer does not cut a registration short.
            State::Verifying { .. } | State::Storing { .. } if !self.pending => None,
            _ => Some(self.deadline),
        }
    }

    /// Whether the connection is still pending: neither a registered device nor a sender of an
    /// accepted actuation. Once `false`, it stays `false`. Hosts count pending connections
    /// against their cap; read it after each `handle_*`.
    pub fn is_pending(&self) -> bool {
        self.pending && !self.is_closed()
    }

    /// Whether the session is over; the host ends the connection once outputs are drained.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether a registration is under way (its token being checked or its binding stored).
    pub fn is_registering(&self) -> bool {
        matches!(self.state, State::Verifying { .. } | State::Storing { .. })
    }

    /// The registered device, once its 200 has been sent.
    pub fn registered_device(&self) -> Option<&DeviceId> {
        match &self.state {
            State::Registered { device, .. } => Some(device),
            _ => None,
        }
    }

    /// Time never goes backwards here, whatever the host says.
    fn advance(&mut self, now: Millis) {
        self.now = self.now.max(now);
    }

    fn handle_text(&mut self, text: &str) {
        match parse(text) {
            Err(error) => self.refuse(error.reply()),
            Ok(message) => {
                self.note_activity();
                match message {
                    ClientMessage::Ping => self.send(Reply::Pong),
                    ClientMessage::Device { device, token } => self.handle_registration(device, token),
                    ClientMessage::Actuation { credentials, device, body, ack } => {
                        self.handle_actuation(&credentials, device, body, ack)
                    }
                }
            }
        }
    }

    /// A sender's message pushes its idle timeout back: only silence closes it. A pending
    /// connection's deadline stays where its accept put it.
    fn note_activity(&mut self) {
        if !self.pending {
            self.deadline = self.now.plus(self.config.register_timeout_ms);
        }
    }

    fn handle_registration(&mut self, device: DeviceId, token: alloc::string::String) {
        match &mut self.state {
            State::AwaitingInit => {
                self.state = State::Verifying { device: device.clone() };
                self.outputs.push_back(Output::VerifyToken { device, token });
            }
            State::Registered { device: current, rechecking } if *current == device => {
                if !*rechecking {
                    *rechecking = true;
                    self.outputs.push_back(Output::VerifyToken { device, token });
                }
            }
            State::Registered { .. } => self.refuse(FormatError::WrongType("deviceId").reply()),
            State::Verifying { .. } | State::Storing { .. } | State::Closed => {}
        }
    }

    fn handle_actuation(&mut self, offered: &Credentials, device: DeviceId, body: Body, ack: bool) {
        if let Err(refused) = self.authorise(offered) {
            self.refuse(refused.reply());
            return;
        }
        if self.pending {
            // Now a sender: from here on silence, not the accept, decides its end.
            self.pending = false;
            self.deadline = self.now.plus(self.config.register_timeout_ms);
        }
        if ack {
            self.pending_acks.get_or_insert_with(Box::default).push_back(device.clone());
        }
        self.outputs.push_back(Output::Route { device, body, ack });
    }

    /// Compared in constant time; none configured refuses all.
    fn authorise(&self, offered: &Credentials) -> Result<(), WrongCredentials> {
        match &self.config.actuator {
            Some(actuator) if actuator.matches(offered) => Ok(()),
            _ => Err(WrongCredentials),
        }
    }

    fn handle_verdict(&mut self, verdict: Result<(), TokenRejected>) {
        if let State::Registered { rechecking, .. } = &mut self.state {
            if !core::mem::take(rechecking) {
                return;
            }
            match verdict {
                Ok(()) => self.send(Reply::Subscribed),
                // Registered until now: the close detaches the device and clears its binding.
                Err(refused) => self.refuse(refused.reply()),
            }
            return;
        }
        let State::Verifying { device } = &self.state else { return };
        match verdict {
            Ok(()) => {
                let device = device.clone();
                self.state = State::Storing { device: device.clone() };
                self.outputs.push_back(Output::StoreBinding { device });
            }
            // No binding was asked for: nothing to detach.
            Err(refused) => self.refuse(refused.reply()),
        }
    }

    fn handle_stored(&mut self, result: Result<(), StoreFailed>) {
        let State::Storing { device } = &self.state else { return };
        match result {
            Ok(()) => {
                self.state = State::Registered { device: device.clone(), rechecking: false };
                self.pending = false;
                self.send(Reply::Subscribed);
            }
            // The host made this session the route before storing: the close detaches it and,
            // since the store may have written part of what it was asked, clears the binding.
            Err(failed) => self.refuse(failed.reply()),
        }
    }

    fn handle_routed(&mut self, device: DeviceId, outcome: RouteOutcome) {
        // An outcome nobody asked for is a host mistake: ignore it rather than invent a reply.
        let Some(acks) = self.pending_acks.as_mut() else { return };
        if let Some(at) = acks.iter().position(|d| *d == device) {
            acks.remove(at);
            self.send(Reply::Ack { device, status: outcome });
        }
    }

    fn handle_deliver(&mut self, device: DeviceId, body: Body) {
        match &self.state {
            State::Registered { device: current, .. } if *current == device => self.send(Reply::Actuation(body)),
            _ => self.outputs.push_back(Output::Undelivered { device, body }),
        }
    }

    fn handle_superseded(&mut self) {
        if let State::Registered { .. } | State::Storing { .. } = self.state {
            // The device lives on in its newer connection: its binding is that one's now.
            self.end(Some(CloseCode::NORMAL), false);
        }
    }

    /// After the close only deliveries matter: hand them back so they are not lost.
    fn handle_after_close(&mut self, input: Input<'_>) {
        if let Input::Deliver { device, body } = input {
            self.outputs.push_back(Output::Undelivered { device, body });
        }
    }

    /// Answers a refusal as its type says, then closes.
    fn refuse(&mut self, (reply, code): (Reply, CloseCode)) {
        self.send(reply);
        self.close(Some(code));
    }

    fn send(&mut self, reply: Reply) {
        if !self.is_closed() {
            self.outputs.push_back(Output::Send(reply));
        }
    }

    /// Ends the session for any reason but a newer registration of its device: a close frame
    /// if the peer can still hear one, then, if it asked to store a binding, the [`Output::Detach`]
    /// that clears it.
    fn close(&mut self, code: Option<CloseCode>) {
        self.end(code, true);
    }

    /// Ends the session: the close frame, if any, then the one [`Output::Detach`] owed for its
    /// [`Output::StoreBinding`] (asked in `Storing`, kept through `Registered`).
    fn end(&mut self, code: Option<CloseCode>, clear_binding: bool) {
        let previous = core::mem::replace(&mut self.state, State::Closed);
        if matches!(previous, State::Closed) {
            return;
        }
        if let Some(code) = code {
            self.outputs.push_back(Output::Close(code));
        }
        if let State::Registered { device, .. } | State::Storing { device } = previous {
            self.outputs.push_back(Output::Detach { device, clear_binding });
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;

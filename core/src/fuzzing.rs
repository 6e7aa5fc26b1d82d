//! Fuzz target bodies, shared by the `fuzz/` shims and the regression tests.
//!
//! Each function takes the fuzzer's bytes and panics when a rule is broken, so that a crash is a
//! finding. They live here rather than in `fuzz/` so that a crashing input can be replayed by an
//! ordinary `cargo test --features fuzzing`, on stable, without libFuzzer.

use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::claims::{check_claims, parse_iso8601, UnixSeconds};
use crate::client::{ClientConfig, ClientEvent, ClientInput, ClientOutput, DeviceClient};
use crate::credentials::Credentials;
use crate::message::{parse, Body, ClientMessage, CloseCode, DeviceId, Reply, RouteOutcome};
use crate::refusal::{FrameError, StoreFailed};
use crate::session::{Input, Output, Session, SessionConfig};
use crate::time::Millis;
use crate::TokenRejected;

/// Parses the bytes (as UTF-8, lossily) as a client message and checks the result.
///
/// Parsing never panics; every error maps to 401 "Wrong message format" then close 1003; every
/// message survives a round trip through its own wire form; an actuation's body is the JSON
/// object found in the text, byte for byte. The same text also goes through the claims check
/// and the ISO-8601 reader, which must not panic either.
pub fn parse_message(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parsed = parse(&text);
    assert_eq!(parse(&text), parsed, "parse is not deterministic");
    match parsed {
        Err(error) => {
            assert_eq!(error.reply(), (Reply::WrongFormat, CloseCode::UNSUPPORTED_DATA));
            assert!(!error.to_string().is_empty());
        }
        Ok(message) => check_round_trip(&text, &message),
    }
    let device = DeviceId("dev-1".into());
    let _ = check_claims(&text, &device, UnixSeconds(1_764_000_000));
    let _ = check_claims(&text, &device, UnixSeconds(i64::MIN));
    let _ = check_claims(&text, &device, UnixSeconds(i64::MAX));
    let _ = parse_iso8601(&text);
}

/// Whether `text` is one JSON value by the grammar. Not `serde_json::Value`: that also wants
/// numbers to fit an `f64`, and bodies such as `{"n":1e400}` are forwarded as they are.
fn is_json(text: &str) -> bool {
    serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok()
}

fn check_round_trip(text: &str, message: &ClientMessage) {
    let json = |s: &str| serde_json::to_string(s).expect("a string serialises");
    let rebuilt = match message {
        ClientMessage::Ping => String::from(r#"{"type":"ping"}"#),
        ClientMessage::Device { device, token } => {
            assert!(!device.as_str().is_empty(), "empty device id accepted");
            alloc::format!(r#"{{"type":"device","deviceId":{},"deviceToken":{}}}"#, json(device.as_str()), json(token))
        }
        ClientMessage::Actuation { credentials, device, body, ack } => {
            assert!(!device.as_str().is_empty(), "empty device id accepted");
            assert!(text.contains(body.as_str()), "the body is not the text's own bytes");
            assert_eq!(Body::from_json_object(body.as_str()).as_ref(), Some(body), "the body is not an object");
            // The 1024 that carries it is JSON, with the body verbatim as its content.
            let wire = Reply::Actuation(body.clone()).to_text();
            assert!(wire.ends_with(&alloc::format!(",\"content\":{}}}", body.as_str())));
            assert!(is_json(&wire), "1024 is not JSON");
            alloc::format!(
                r#"{{"type":"actuation","credentials":{{"username":{},"password":{}}},"body":{},"ack":{}}}"#,
                json(&credentials.username),
                json(&credentials.password),
                body.as_str(),
                ack
            )
        }
    };
    assert_eq!(parse(&rebuilt).as_ref(), Ok(message), "round trip of {rebuilt}");
}

/// Reads the fuzzer's bytes as a sequence of small choices; zeros once they run out.
struct Choices<'a> {
    data: &'a [u8],
}

impl<'a> Choices<'a> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.data.split_first().unwrap_or((&0, &[]));
        self.data = rest;
        *first
    }

    fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// A time step: mostly small, sometimes around the timeouts, once in a while enormous.
    fn millis(&mut self) -> u64 {
        match self.byte() {
            0..=199 => u64::from(self.byte()),
            200..=249 => u64::from(u16::from_le_bytes([self.byte(), self.byte()])) * 16,
            250..=254 => u64::from(u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])),
            255 => u64::MAX / 2,
        }
    }

    /// Up to 64 raw bytes, as the text of a frame.
    fn raw_text(&mut self) -> String {
        let len = self.below(65).min(self.data.len());
        let (taken, rest) = self.data.split_at(len);
        self.data = rest;
        String::from_utf8_lossy(taken).into_owned()
    }
}

const DEVICES: [&str; 3] = ["dev-a", "dev-b", "dev-c"];
const MAX_STEPS: usize = 256;
const MAX_OUTPUTS_PER_INPUT: usize = 8;

fn session_config() -> SessionConfig {
    SessionConfig {
        actuator: Some(Credentials { username: "admin".into(), password: "s3cret".into() }),
        register_timeout_ms: 10_000,
    }
}

/// A client message, well-formed or not, chosen by the fuzzer.
fn session_text(c: &mut Choices<'_>) -> String {
    let device = DEVICES[c.below(DEVICES.len())];
    match c.below(8) {
        0 => String::from(r#"{"type":"ping"}"#),
        1 | 2 => alloc::format!(r#"{{"type":"device","deviceId":"{device}","deviceToken":"t"}}"#),
        3 | 4 => {
            let password = if c.byte() < 200 { "s3cret" } else { "s3cre" };
            let ack = ["", r#","ack":true"#, r#","ack":false"#, r#","ack":1"#][c.below(4)];
            alloc::format!(
                r#"{{"type":"actuation","credentials":{{"username":"admin","password":"{password}"}},"body":{{"content":{{"deviceId":"{device}"}}}}{ack}}}"#
            )
        }
        _ => c.raw_text(),
    }
}

/// A fact to feed the session, owned.
#[derive(Clone, Debug)]
enum Fact {
    Text(String),
    Binary,
    FrameRefused(FrameError),
    TokenChecked(Result<(), TokenRejected>),
    BindingStored(Result<(), StoreFailed>),
    Routed(DeviceId, RouteOutcome),
    Deliver(DeviceId, Body),
    Superseded,
    PeerGone,
    Shutdown,
    Evicted,
}

impl Fact {
    fn as_input(&self) -> Input<'_> {
        match self {
            Fact::Text(t) => Input::Text(t),
            Fact::Binary => Input::Binary,
            Fact::FrameRefused(e) => Input::FrameRefused(*e),
            Fact::TokenChecked(v) => Input::TokenChecked(*v),
            Fact::BindingStored(r) => Input::BindingStored(*r),
            Fact::Routed(device, outcome) => Input::Routed { device: device.clone(), outcome: outcome.clone() },
            Fact::Deliver(device, body) => Input::Deliver { device: device.clone(), body: body.clone() },
            Fact::Superseded => Input::Superseded,
            Fact::PeerGone => Input::PeerGone,
            Fact::Shutdown => Input::Shutdown,
            Fact::Evicted => Input::Evicted,
        }
    }
}

/// One session as its connection task sees it, with the rules its outputs must keep.
struct Conn {
    session: Session,
    /// A `Close` went out, or the session said it is closed.
    closed: bool,
    /// A `StoreBinding` went out: the session owes exactly one `Detach`.
    stored: bool,
    detached: bool,
}

/// Drives one session with inputs, verdicts and time steps chosen by the bytes, host mistakes
/// included (a verdict nobody asked for, an ack or a delivery out of the blue). Its own
/// `StoreBinding` is answered, as the hub does, with a store result the bytes choose.
///
/// Checks, after every input: at most a few outputs; nothing but handed-back deliveries after a
/// close; only the protocol's reply and close codes; exactly one `Detach` after a
/// `StoreBinding` (by the close), none without one, nothing after it but handed-back deliveries;
/// the timer, once fired, is in the future. Every loop is bounded. Several sessions around the
/// router, and what becomes of actuations between them, are the `router` target's (the world).
pub fn drive_session(data: &[u8]) {
    let mut c = Choices { data };
    let mut now = Millis(0);
    let session = Session::new(now, Arc::new(session_config()));
    let mut conn = Conn { session, closed: false, stored: false, detached: false };
    for _ in 0..MAX_STEPS {
        if c.is_empty() {
            break;
        }
        match session_fact(&mut c) {
            Some(fact) => conn.session.handle_input(now, fact.as_input()),
            None if c.byte() < 64 => conn.session.handle_timeout(now),
            None => {
                now = now.plus(c.millis());
                let Some(due) = conn.session.poll_timeout().filter(|t| *t <= now) else { continue };
                conn.session.handle_timeout(now);
                let next = conn.session.poll_timeout();
                assert!(next.is_none_or(|t| t > now), "timer {due:?} fired at {now:?}, next {next:?} not ahead");
            }
        }
        let outputs = drain(&mut conn);
        if outputs.iter().any(|out| matches!(out, Output::StoreBinding { .. })) {
            let stored = if c.byte() < 192 { Ok(()) } else { Err(StoreFailed) };
            conn.session.handle_input(now, Input::BindingStored(stored));
            drain(&mut conn);
        }
    }
}

/// A fact for the session chosen by the bytes, or `None` for the clock: the timer fires now
/// (hosts wake up early), or time moves on.
fn session_fact(c: &mut Choices<'_>) -> Option<Fact> {
    let device = |c: &mut Choices<'_>| DeviceId(DEVICES[c.below(DEVICES.len())].into());
    Some(match c.below(12) {
        0..=4 => Fact::Text(session_text(c)),
        5 => Fact::Binary,
        6 => Fact::TokenChecked(if c.byte() < 192 { Ok(()) } else { Err(TokenRejected::Expired) }),
        7 => Fact::BindingStored(if c.byte() < 192 { Ok(()) } else { Err(StoreFailed) }),
        8 => {
            let outcome = match c.below(4) {
                0 => RouteOutcome::Delivered,
                1 => RouteOutcome::Held,
                2 => RouteOutcome::NotConnected,
                _ => RouteOutcome::Forwarded { server: "10.0.0.2:5000".into() },
            };
            Fact::Routed(device(c), outcome)
        }
        9 => match c.below(6) {
            0 => Fact::Superseded,
            1 => Fact::PeerGone,
            2 => Fact::Shutdown,
            3 => Fact::Evicted,
            4 => Fact::FrameRefused([FrameError::Protocol, FrameError::InvalidUtf8, FrameError::TooBig][c.below(3)]),
            _ => {
                let body = Body::from_json_object(r#"{"content":{"x":1}}"#).expect("an object");
                Fact::Deliver(device(c), body)
            }
        },
        _ => return None,
    })
}

/// Drains one session, bounded, checking what a single input may produce.
fn drain(conn: &mut Conn) -> Vec<Output> {
    let mut outputs = Vec::new();
    while let Some(out) = conn.session.poll_output() {
        assert!(outputs.len() < MAX_OUTPUTS_PER_INPUT, "one input produced too many outputs: {outputs:?}");
        outputs.push(out);
    }
    let mut closing = false;
    for out in &outputs {
        if conn.closed {
            assert!(matches!(out, Output::Undelivered { .. }), "{out:?} after the session closed");
        } else if closing {
            assert!(matches!(out, Output::Detach { .. } | Output::Undelivered { .. }), "{out:?} after Close");
        }
        match out {
            Output::Send(reply) => {
                assert!(matches!(reply.code(), 200 | 202 | 401 | 500 | 1024), "reply code {}", reply.code());
                assert!(is_json(&reply.to_text()), "reply is not JSON");
            }
            Output::Close(code) => {
                let codes = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 1013];
                assert!(codes.contains(&code.0), "close code {code:?}");
                closing = true;
            }
            Output::StoreBinding { .. } => {
                assert!(!conn.stored, "a second StoreBinding");
                conn.stored = true;
            }
            Output::Detach { .. } => {
                assert!(conn.stored, "a Detach without a StoreBinding");
                assert!(!conn.detached, "detached twice");
                conn.detached = true;
                closing = true;
            }
            _ => {}
        }
    }
    let closed = conn.session.is_closed();
    assert!(!closing || closed, "closing outputs from an open session");
    assert!(!closed || conn.detached == conn.stored, "closed without the Detach its StoreBinding owes");
    conn.closed |= closed;
    outputs
}

/// A server frame, well-formed or not, chosen by the fuzzer.
fn server_text(c: &mut Choices<'_>) -> String {
    match c.below(8) {
        0 => String::from(r#"{"code":200,"content":"Subscribed"}"#),
        1 => String::from(r#"{"code":202,"content":"PONG"}"#),
        2 => String::from(r#"{"code":401,"content":"Invalid device token"}"#),
        3 => String::from(r#"{"code":500,"content":"Cannot record the device binding"}"#),
        4 => String::from(r#"{"code":1024,"content":{"content":{"deviceId":"dev-1","on":true}}}"#),
        5 => alloc::format!(r#"{{"code":{},"content":{}}}"#, c.byte(), c.raw_text()),
        _ => c.raw_text(),
    }
}

/// What the host knows of its socket, when it keeps the client's contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Socket {
    Closed,
    Opening,
    Open,
    Closing,
}

/// Drives a [`DeviceClient`] with connection events, server frames and time chosen by the bytes.
///
/// The first byte picks the host: one that keeps the client's contract (connects when asked,
/// feeds frames only while open, reports every close), checked against a model of registration,
/// keep-alive and back-off; or one that calls anything at any time, which must merely not panic
/// and stay bounded. Every registration the client sends is one the server's parser accepts, for
/// the client's own device and token.
pub fn drive_client(data: &[u8]) {
    let mut c = Choices { data };
    let lawful = c.byte() < 192;
    let config = ClientConfig {
        ping_interval_ms: 1 + u64::from(c.byte()) * 500,
        pong_timeout_ms: 1 + u64::from(c.byte()) * 100,
        initial_backoff_ms: 1 + u64::from(c.byte()) * 100,
        max_backoff_ms: 1 + u64::from(c.byte()) * 10_000,
    };
    let device = DeviceId(String::from_utf8_lossy(&[b'd', c.byte() % 3 + b'0', c.byte().max(1)]).into());
    let token = c.raw_text();
    let mut now = Millis(u64::from(c.byte()));
    let mut client = DeviceClient::new(now, device.clone(), token.clone(), config);
    let mut model = ClientModel {
        socket: Socket::Closed,
        registered: false,
        backoff: config.initial_backoff_ms,
        announce: None,
        config,
    };
    if lawful {
        model.check(&mut client, &device, &token, now);
    } else {
        drain_client(&mut client, &device, &token);
    }
    for _ in 0..MAX_STEPS {
        if c.is_empty() {
            break;
        }
        let choice = c.below(8);
        if lawful && !model.allows(choice) {
            continue;
        }
        match choice {
            0 => client.handle_input(now, ClientInput::Connected),
            1 => client.handle_input(now, ClientInput::Text(&server_text(&mut c))),
            2 => client.handle_input(now, ClientInput::Disconnected),
            3 => client.handle_timeout(now),
            _ => {
                now = now.plus(c.millis());
                if let Some(t) = client.poll_timeout().filter(|t| *t <= now) {
                    client.handle_timeout(now);
                    let next = client.poll_timeout();
                    // Only a clock saturated at the end of time may leave the timer due.
                    let ahead = next.is_none_or(|n| n > now) || now == Millis(u64::MAX);
                    assert!(ahead, "timer {t:?} fired at {now:?}, next {next:?} not ahead");
                }
            }
        }
        if lawful {
            model.observe(choice, &mut client, now);
            model.check(&mut client, &device, &token, now);
        } else {
            drain_client(&mut client, &device, &token);
        }
    }
}

/// Drains a client driven by a lawless host: bounded, and whatever it sends is protocol.
fn drain_client(client: &mut DeviceClient, device: &DeviceId, token: &str) {
    for _ in 0..MAX_OUTPUTS_PER_INPUT {
        let Some(out) = client.poll_output() else { return };
        if let ClientOutput::Send(text) = out {
            check_client_text(&text, device, token);
        }
    }
    assert_eq!(client.poll_output(), None, "one call produced too many outputs");
}

/// A frame from the client is its own registration or a ping, as the server parses it.
fn check_client_text(text: &str, device: &DeviceId, token: &str) {
    match parse(text) {
        Ok(ClientMessage::Device { device: d, token: t }) => {
            assert!(d == *device && t == token, "registration for another device or token: {text}")
        }
        Ok(ClientMessage::Ping) => {}
        other => panic!("the client sent {text:?}, which parses as {other:?}"),
    }
}

/// What a lawful host expects of the client.
struct ClientModel {
    socket: Socket,
    registered: bool,
    /// The delay the next failure will wait.
    backoff: u64,
    /// The back-off the client must announce after the host's last disconnect.
    announce: Option<u64>,
    config: ClientConfig,
}

impl ClientModel {
    /// Whether a lawful host may do this now: connect results only while opening, frames only
    /// while open, a close only once the socket exists.
    fn allows(&self, choice: usize) -> bool {
        match choice {
            0 => self.socket == Socket::Opening,
            1 => self.socket == Socket::Open,
            2 => self.socket != Socket::Closed,
            _ => true,
        }
    }

    /// Updates the model with the host's own action, before the client's outputs are read.
    fn observe(&mut self, choice: usize, client: &mut DeviceClient, now: Millis) {
        match choice {
            0 => self.socket = Socket::Open,
            2 => {
                self.socket = Socket::Closed;
                self.registered = false;
                // The reconnect waits the current back-off, which then doubles up to the cap.
                assert_eq!(client.poll_timeout(), Some(now.plus(self.backoff)), "reconnect delay");
                self.announce = Some(self.backoff);
                self.backoff = self.backoff.saturating_mul(2).min(self.config.max_backoff_ms);
            }
            _ => {}
        }
    }

    /// Drains the client, bounded, and checks its outputs against the model.
    fn check(&mut self, client: &mut DeviceClient, device: &DeviceId, token: &str, now: Millis) {
        for _ in 0..MAX_OUTPUTS_PER_INPUT {
            let Some(out) = client.poll_output() else { break };
            match out {
                ClientOutput::Connect => {
                    assert_eq!(self.socket, Socket::Closed, "connect while a socket exists");
                    self.socket = Socket::Opening;
                }
                ClientOutput::Send(text) => {
                    assert_eq!(self.socket, Socket::Open, "send without an open socket");
                    check_client_text(&text, device, token);
                    if parse(&text) == Ok(ClientMessage::Ping) {
                        assert!(self.registered, "ping before registering");
                    }
                }
                ClientOutput::Close => {
                    assert_eq!(self.socket, Socket::Open, "close without an open socket");
                    self.socket = Socket::Closing;
                    self.registered = false;
                }
                ClientOutput::Event(ClientEvent::Registered) => {
                    self.registered = true;
                    self.backoff = self.config.initial_backoff_ms;
                }
                ClientOutput::Event(ClientEvent::Actuation(body)) => {
                    assert!(is_json(&body), "actuation body is not JSON");
                }
                ClientOutput::Event(ClientEvent::BackingOff { delay_ms }) => {
                    assert_eq!(self.announce.take(), Some(delay_ms), "announced back-off");
                }
                ClientOutput::Event(_) => {}
            }
        }
        assert_eq!(client.poll_output(), None, "one call produced too many outputs");
        assert_eq!(self.announce, None, "a disconnect without its back-off event");
        assert_eq!(client.is_registered(), self.registered, "registered at {now:?}");
    }
}

/// Classifies the bytes as a connection's request head and checks what the answer says of them.
///
/// Never panics; deterministic. An upgrade only for a head that ends at the bytes' first CRLF
/// CRLF, within [`MAX_HEAD_BYTES`](crate::http_head::MAX_HEAD_BYTES), with a non-empty trimmed
/// key found in that head and exactly the bytes after it as leftover. Only the head decides:
/// without the bytes after it, the answer is the same. No head within the limit, a 400.
pub fn http_head(data: &[u8]) {
    use crate::http_head::{classify, head_complete, Answer, Request, MAX_HEAD_BYTES};

    let request = classify(data);
    assert_eq!(classify(data), request, "classify is not deterministic");
    let end = head_complete(data).filter(|end| *end <= MAX_HEAD_BYTES);
    let Some(end) = end else {
        assert_eq!(request, Request::Plain(Answer::BadRequest), "no head within the limit");
        return;
    };
    let head = &data[..end];
    match &request {
        Request::Upgrade { key, leftover } => {
            assert!(!key.is_empty(), "empty key");
            assert_eq!(key.trim(), key, "untrimmed key");
            assert!(head.windows(key.len()).any(|w| w == key.as_bytes()), "the key is not in the head");
            assert_eq!(leftover[..], data[end..], "the leftover is not the bytes after the head");
        }
        Request::Plain(Answer::BadUpgrade(why)) => assert!(!why.is_empty(), "a refusal without a reason"),
        Request::Plain(_) => {}
    }
    let alone = match classify(head) {
        Request::Upgrade { key, leftover } => {
            assert!(leftover.is_empty(), "leftover from a head alone");
            Request::Upgrade { key, leftover: data[end..].to_vec() }
        }
        plain => plain,
    };
    assert_eq!(alone, request, "the bytes after the head changed the answer");
}

//! Properties of the session state machine over random input sequences, with time that only
//! moves forward (as the host's monotonic clock does).
//!
//! One session alone, fed every kind of input in any order (host mistakes included): it never
//! panics, says nothing after its close, only uses the protocol's reply codes, and is
//! deterministic. Several sessions and a [`Hub`] driven the way the server drives them: a device
//! is routable exactly when its session says it is registered.
#![cfg(not(target_arch = "wasm32"))]

use std::collections::VecDeque;

use iot_ws_core::{
    Body, CloseCode, Credentials, DeviceId, Hub, Input, Millis, Output, Reply, RouteOutcome, Session, SessionConfig,
    SessionId, StoreFailed, TokenRejected,
};
use proptest::prelude::*;

const DEVICES: [&str; 3] = ["dev-a", "dev-b", "dev-c"];
const BODIES: [&str; 2] = [r#"{"content":{"deviceId":"dev-a","on":true}}"#, r#"{"n":1}"#];
/// Outputs one input may cause in one session: a handful, never a stream.
const MAX_OUTPUTS_PER_INPUT: usize = 8;
/// Inputs one step may cause across all sessions of the hub model before it must have settled.
const MAX_CASCADE: usize = 1_000;

fn config() -> SessionConfig {
    SessionConfig {
        actuator: Some(Credentials { username: "admin".into(), password: "s3cret".into() }),
        register_timeout_ms: 10_000,
    }
}

/// One thing that happens to a session (`usize`: which one, modulo the number of sessions).
#[derive(Clone, Debug)]
enum Step {
    Text(usize, String),
    Binary(usize),
    TokenChecked(usize, bool),
    BindingStored(usize, bool),
    Routed(usize, usize, RouteOutcome),
    Deliver(usize, usize, usize),
    Superseded(usize),
    PeerGone(usize),
    Shutdown(usize),
    /// The session's timer fires now, due or not (hosts wake up early).
    Timer(usize),
    /// The clock moves on; every due timer fires.
    Advance(u64),
    /// A new connection (hub model; ignored by the single-session property).
    Connect,
    /// The binding store starts or stops failing (hub model).
    StoreHealthy(bool),
}

fn registration(device: usize, token: &str) -> String {
    format!(r#"{{"type":"device","deviceId":"{}","deviceToken":"{token}"}}"#, DEVICES[device])
}

fn actuation(device: usize, right_credentials: bool, ack: Option<bool>) -> String {
    let password = if right_credentials { "s3cret" } else { "guess" };
    let ack = ack.map_or(String::new(), |a| format!(r#","ack":{a}"#));
    format!(
        r#"{{"type":"actuation","credentials":{{"username":"admin","password":"{password}"}},"body":{{"content":{{"deviceId":"{}","v":1}}}}{ack}}}"#,
        DEVICES[device]
    )
}

fn junk() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,24}",
        Just(String::new()),
        Just("null".to_string()),
        Just("[]".to_string()),
        Just(r#"{"type":"ping","type":"ping"}"#.to_string()),
        Just(r#"{"type":"device","deviceId":"","deviceToken":"t"}"#.to_string()),
        Just(r#"{"type":"device","deviceId":"dev-a","deviceToken":null}"#.to_string()),
        Just(r#"{"type":"actuation","credentials":{"username":"admin","password":"s3cret"},"body":[]}"#.to_string()),
        Just(r#"{"type":"unknown"}"#.to_string()),
        Just(r#"{"type":"ping""#.to_string()),
    ]
}

fn text() -> impl Strategy<Value = String> {
    let device = 0..DEVICES.len();
    prop_oneof![
        3 => Just(r#"{"type":"ping"}"#.to_string()),
        4 => (device.clone(), "[a-z]{1,6}").prop_map(|(d, token)| registration(d, &token)),
        4 => (device, prop::bool::weighted(0.8), prop::option::of(any::<bool>()))
            .prop_map(|(d, right, ack)| actuation(d, right, ack)),
        2 => junk(),
    ]
}

fn outcome() -> impl Strategy<Value = RouteOutcome> {
    prop_oneof![
        Just(RouteOutcome::Delivered),
        Just(RouteOutcome::Held),
        Just(RouteOutcome::NotConnected),
        Just(RouteOutcome::Forwarded { server: "10.0.0.2:5000".into() }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let s = 0..8usize;
    prop_oneof![
        8 => (s.clone(), text()).prop_map(|(i, t)| Step::Text(i, t)),
        1 => s.clone().prop_map(Step::Binary),
        3 => (s.clone(), prop::bool::weighted(0.8)).prop_map(|(i, ok)| Step::TokenChecked(i, ok)),
        2 => (s.clone(), prop::bool::weighted(0.8)).prop_map(|(i, ok)| Step::BindingStored(i, ok)),
        1 => (s.clone(), 0..DEVICES.len(), outcome()).prop_map(|(i, d, o)| Step::Routed(i, d, o)),
        1 => (s.clone(), 0..DEVICES.len(), 0..BODIES.len()).prop_map(|(i, d, b)| Step::Deliver(i, d, b)),
        1 => s.clone().prop_map(Step::Superseded),
        1 => s.clone().prop_map(Step::PeerGone),
        1 => s.clone().prop_map(Step::Shutdown),
        1 => s.prop_map(Step::Timer),
        2 => prop_oneof![0..50u64, 0..20_000u64, Just(u64::MAX / 2)].prop_map(Step::Advance),
        2 => Just(Step::Connect),
        1 => any::<bool>().prop_map(Step::StoreHealthy),
    ]
}

/// An input, owned, so that it can wait in a queue.
#[derive(Clone, Debug)]
enum Fact {
    Text(String),
    Binary,
    TokenChecked(Result<(), TokenRejected>),
    BindingStored(Result<(), StoreFailed>),
    Routed(DeviceId, RouteOutcome),
    Deliver(DeviceId, Body),
    Superseded,
    PeerGone,
    Shutdown,
}

impl Fact {
    fn as_input(&self) -> Input<'_> {
        match self {
            Fact::Text(t) => Input::Text(t),
            Fact::Binary => Input::Binary,
            Fact::TokenChecked(v) => Input::TokenChecked(*v),
            Fact::BindingStored(r) => Input::BindingStored(*r),
            Fact::Routed(device, outcome) => Input::Routed { device: device.clone(), outcome: outcome.clone() },
            Fact::Deliver(device, body) => Input::Deliver { device: device.clone(), body: body.clone() },
            Fact::Superseded => Input::Superseded,
            Fact::PeerGone => Input::PeerGone,
            Fact::Shutdown => Input::Shutdown,
        }
    }

    /// The fact a step feeds to a session, if the step is one.
    fn of(step: &Step) -> Option<(usize, Fact)> {
        let verdict = |ok: bool| if ok { Ok(()) } else { Err(TokenRejected::Signature) };
        let stored = |ok: bool| if ok { Ok(()) } else { Err(StoreFailed) };
        Some(match step {
            Step::Text(i, t) => (*i, Fact::Text(t.clone())),
            Step::Binary(i) => (*i, Fact::Binary),
            Step::TokenChecked(i, ok) => (*i, Fact::TokenChecked(verdict(*ok))),
            Step::BindingStored(i, ok) => (*i, Fact::BindingStored(stored(*ok))),
            Step::Routed(i, d, o) => (*i, Fact::Routed(dev(*d), o.clone())),
            Step::Deliver(i, d, b) => (*i, Fact::Deliver(dev(*d), body(*b))),
            Step::Superseded(i) => (*i, Fact::Superseded),
            Step::PeerGone(i) => (*i, Fact::PeerGone),
            Step::Shutdown(i) => (*i, Fact::Shutdown),
            Step::Timer(_) | Step::Advance(_) | Step::Connect | Step::StoreHealthy(_) => return None,
        })
    }
}

fn dev(i: usize) -> DeviceId {
    DeviceId(DEVICES[i].into())
}

fn body(i: usize) -> Body {
    Body::from_json_object(BODIES[i]).expect("test bodies are JSON objects")
}

/// Watches one session's outputs for the rules that hold whatever the inputs.
#[derive(Default)]
struct Watch {
    /// A `Close` was output, or the session said it is closed.
    closed: bool,
    marked_disconnected: bool,
}

impl Watch {
    /// Checks one drain: `outputs` followed the last input; `closed_now` is `is_closed()` after it.
    fn check(&mut self, outputs: &[Output], closed_now: bool) -> Result<(), TestCaseError> {
        prop_assert!(outputs.len() <= MAX_OUTPUTS_PER_INPUT, "too many outputs for one input: {outputs:?}");
        let mut closing_here = false;
        for out in outputs {
            if self.closed {
                // After the close only deliveries are handed back, so that they are not lost.
                prop_assert!(matches!(out, Output::Undelivered { .. }), "{out:?} after the session closed");
            } else if closing_here {
                prop_assert!(
                    matches!(out, Output::MarkDisconnected { .. } | Output::Undelivered { .. }),
                    "{out:?} after Close"
                );
            }
            match out {
                Output::Send(reply) => {
                    prop_assert!([200, 202, 401, 500, 1024].contains(&reply.code()), "code {}", reply.code());
                    // Every reply is one JSON object on the wire.
                    let v: serde_json::Value = serde_json::from_str(&reply.to_text()).expect("reply is JSON");
                    prop_assert_eq!(v["code"].as_u64(), Some(u64::from(reply.code())));
                }
                Output::Close(code) => {
                    prop_assert!(
                        [CloseCode::NORMAL, CloseCode::GOING_AWAY, CloseCode::UNSUPPORTED_DATA]
                            .into_iter()
                            .chain([CloseCode::POLICY_VIOLATION, CloseCode::INTERNAL_ERROR])
                            .any(|c| c == *code),
                        "close code {code:?}"
                    );
                    closing_here = true;
                }
                Output::MarkDisconnected { .. } => {
                    prop_assert!(!self.marked_disconnected, "marked disconnected twice");
                    self.marked_disconnected = true;
                    closing_here = true;
                }
                _ => {}
            }
        }
        prop_assert!(!closing_here || closed_now, "Close or MarkDisconnected output, but the session is open");
        self.closed |= closed_now;
        Ok(())
    }
}

/// Drains a session with a bounded loop.
fn drain(session: &mut Session) -> Vec<Output> {
    let mut outputs = Vec::new();
    for _ in 0..=MAX_OUTPUTS_PER_INPUT {
        match session.poll_output() {
            Some(out) => outputs.push(out),
            None => break,
        }
    }
    outputs
}

/// What a session said after each step, and its timer then.
type Transcript = Vec<(Vec<Output>, Option<Millis>)>;

/// Feeds `steps` to one session; returns everything it said, step by step, with its timer.
fn run_one(steps: &[Step]) -> Result<Transcript, TestCaseError> {
    let mut now = Millis(1_000);
    let mut session = Session::new(now, &config());
    let mut watch = Watch::default();
    let mut transcript = Vec::new();
    for step in steps {
        match (step, Fact::of(step)) {
            (_, Some((_, fact))) => session.handle_input(now, fact.as_input()),
            (Step::Timer(_), None) => session.handle_timeout(now),
            (Step::Advance(dt), None) => {
                now = now.plus(*dt);
                if session.poll_timeout().is_some_and(|t| t <= now) {
                    session.handle_timeout(now);
                }
            }
            _ => continue,
        }
        let outputs = drain(&mut session);
        watch.check(&outputs, session.is_closed())?;
        let timer = session.poll_timeout();
        // A timer in the past would make the host spin: after a step it is ahead of a fired clock.
        if let (Step::Advance(_), Some(t)) = (step, timer) {
            prop_assert!(t > now, "timer {t:?} still due at {now:?} after firing");
        }
        transcript.push((outputs, timer));
    }
    Ok(transcript)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// No panic; nothing after the close; only the protocol's codes; same inputs, same outputs.
    #[test]
    fn one_session_keeps_its_rules_and_is_deterministic(steps in prop::collection::vec(step(), 0..60)) {
        let first = run_one(&steps)?;
        let second = run_one(&steps)?;
        prop_assert_eq!(first, second);
    }

    /// A device is routable in the hub exactly when its session is registered.
    #[test]
    fn hub_routes_exactly_the_registered_devices(steps in prop::collection::vec(step(), 0..80)) {
        let mut host = Host::new();
        for step in &steps {
            host.step(step)?;
            host.check_routing()?;
        }
    }
}

/// Several sessions and a hub, driven as the server drives them, all synchronously.
struct Host {
    now: Millis,
    config: SessionConfig,
    sessions: Vec<Session>,
    watches: Vec<Watch>,
    /// What each session sent its peer.
    sent: Vec<Vec<Reply>>,
    hub: Hub,
    store_healthy: bool,
    queue: VecDeque<(usize, Fact)>,
}

impl Host {
    fn new() -> Self {
        let mut host = Host {
            now: Millis(1_000),
            config: config(),
            sessions: Vec::new(),
            watches: Vec::new(),
            sent: Vec::new(),
            hub: Hub::new(),
            store_healthy: true,
            queue: VecDeque::new(),
        };
        host.connect();
        host
    }

    fn connect(&mut self) {
        if self.sessions.len() < 6 {
            self.sessions.push(Session::new(self.now, &self.config));
            self.watches.push(Watch::default());
            self.sent.push(Vec::new());
        }
    }

    fn step(&mut self, step: &Step) -> Result<(), TestCaseError> {
        let n = self.sessions.len();
        match (step, Fact::of(step)) {
            (_, Some((i, fact))) => {
                self.queue.push_back((i % n, fact));
                self.settle()?;
            }
            (Step::Timer(i), None) => self.fire(i % n)?,
            (Step::Advance(dt), None) => {
                self.now = self.now.plus(*dt);
                for i in 0..n {
                    if self.sessions[i].poll_timeout().is_some_and(|t| t <= self.now) {
                        self.fire(i)?;
                    }
                }
            }
            (Step::Connect, None) => self.connect(),
            (Step::StoreHealthy(h), None) => self.store_healthy = *h,
            _ => unreachable!("every step is a fact or a host event"),
        }
        Ok(())
    }

    fn fire(&mut self, i: usize) -> Result<(), TestCaseError> {
        self.sessions[i].handle_timeout(self.now);
        self.perform_all(i)?;
        self.settle()
    }

    /// Feeds queued facts until none is left: each may cause more, in other sessions too.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..MAX_CASCADE {
            let Some((i, fact)) = self.queue.pop_front() else { return Ok(()) };
            self.sessions[i].handle_input(self.now, fact.as_input());
            self.perform_all(i)?;
        }
        Err(TestCaseError::fail("the hub model did not settle"))
    }

    fn perform_all(&mut self, i: usize) -> Result<(), TestCaseError> {
        let outputs = drain(&mut self.sessions[i]);
        self.watches[i].check(&outputs, self.sessions[i].is_closed())?;
        for out in outputs {
            self.perform(i, out)?;
        }
        if self.sessions[i].is_closed() {
            // The connection ends once a closed session's outputs are drained, and the host
            // leaves the hub then (the server's `finish`): after a failed store the session has
            // no `MarkDisconnected` to say so, although its `StoreBinding` made it the route.
            self.hub.remove(SessionId(i as u64));
        }
        Ok(())
    }

    fn perform(&mut self, i: usize, out: Output) -> Result<(), TestCaseError> {
        let sid = SessionId(i as u64);
        match out {
            Output::Send(reply) => self.sent[i].push(reply),
            // Verdicts arrive later, as their own steps; closes go to the peer.
            Output::Close(_) | Output::VerifyToken { .. } => {}
            Output::StoreBinding { device } => {
                // As the hub task does: the route first, then the store's answer.
                if let Some(old) = self.hub.register(sid, device) {
                    prop_assert_ne!(old, sid);
                    self.queue.push_back((old.0 as usize, Fact::Superseded));
                }
                let result = if self.store_healthy { Ok(()) } else { Err(StoreFailed) };
                self.queue.push_back((i, Fact::BindingStored(result)));
            }
            Output::MarkDisconnected { device } => {
                if let Some(removed) = self.hub.remove(sid) {
                    prop_assert_eq!(removed, device);
                }
            }
            Output::Route { device, body, ack } => {
                let outcome = match self.hub.route(&device) {
                    Some(target) => {
                        self.queue.push_back((target.0 as usize, Fact::Deliver(device.clone(), body)));
                        RouteOutcome::Delivered
                    }
                    None => RouteOutcome::NotConnected,
                };
                if ack {
                    self.queue.push_back((i, Fact::Routed(device, outcome)));
                }
            }
            Output::Undelivered { device, body } => {
                if let Some(target) = self.hub.route(&device).filter(|t| *t != sid) {
                    self.queue.push_back((target.0 as usize, Fact::Deliver(device, body)));
                }
            }
        }
        Ok(())
    }

    /// The property: hub routes and session registrations agree, both ways.
    fn check_routing(&self) -> Result<(), TestCaseError> {
        for (i, session) in self.sessions.iter().enumerate() {
            if let Some(device) = session.registered_device() {
                prop_assert_eq!(
                    self.hub.route(device),
                    Some(SessionId(i as u64)),
                    "registered {} not routable",
                    device
                );
            }
        }
        for (device, sid) in self.hub.iter() {
            let session = &self.sessions[sid.0 as usize];
            prop_assert_eq!(session.registered_device(), Some(device), "routable {} not registered", device);
        }
        Ok(())
    }
}

/// The hub model itself must be able to fail: a registration that completes is routable, and an
/// actuation routed to it arrives as a 1024 with the body verbatim.
#[test]
fn hub_model_registers_and_delivers() {
    let mut host = Host::new();
    host.step(&Step::Text(0, registration(0, "t"))).unwrap();
    host.step(&Step::TokenChecked(0, true)).unwrap();
    assert_eq!(host.sessions[0].registered_device(), Some(&dev(0)));
    assert_eq!(host.hub.route(&dev(0)), Some(SessionId(0)));
    host.step(&Step::Connect).unwrap();
    host.step(&Step::Text(1, actuation(0, true, Some(true)))).unwrap();
    host.check_routing().unwrap();
    let body = Body::from_json_object(r#"{"content":{"deviceId":"dev-a","v":1}}"#).unwrap();
    assert_eq!(host.sent[0], [Reply::Subscribed, Reply::Actuation(body)]);
    assert_eq!(host.sent[1], [Reply::Ack { device: dev(0), status: RouteOutcome::Delivered }]);
    // The second connection re-registers the device: the first is superseded, the hub follows.
    host.step(&Step::Text(1, registration(0, "t"))).unwrap();
    host.step(&Step::TokenChecked(1, true)).unwrap();
    host.check_routing().unwrap();
    assert!(host.sessions[0].is_closed());
    assert_eq!(host.hub.route(&dev(0)), Some(SessionId(1)));
}

#[test]
fn watch_catches_a_send_after_close() {
    let mut watch = Watch::default();
    let outputs = [Output::Close(CloseCode::NORMAL), Output::Send(Reply::Pong)];
    assert!(watch.check(&outputs, true).is_err());
    let mut watch = Watch::default();
    assert!(watch.check(&[Output::Send(Reply::Pong)], false).is_ok());
    assert!(watch.check(&[Output::Close(CloseCode::NORMAL)], true).is_ok());
    assert!(watch.check(&[Output::Send(Reply::Pong)], true).is_err());
}

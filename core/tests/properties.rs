//! Properties of the session state machine over random input sequences, with time that only
//! moves forward (as the host's monotonic clock does).
//!
//! One session alone, fed every kind of input in any order (host mistakes included): it never
//! panics, says nothing after its close, only uses the protocol's reply codes, and is
//! deterministic. Several sessions around the router, with a model of the README's guarantees,
//! are tests/world_properties.rs's.
//!
//! Then the rules of issue 9, each against the real type with a model beside it: a pending
//! connection ends at its accept's deadline whatever it sends, and never becomes pending again; a
//! registered device is answered 200 again only on a fresh token verdict; a device id is 1 to 255
//! characters without U+0000; held actuations stay within their byte and per-device bounds, in
//! order.
#![cfg(not(target_arch = "wasm32"))]

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use iot_ws_core::{
    parse, Body, ClientMessage, CloseCode, Credentials, DeviceId, FormatError, FrameError, HeldActuations, Hold, Input,
    Millis, Output, Reply, RouteOutcome, Session, SessionConfig, StoreFailed, TokenRejected, MAX_DEVICE_ID_CHARS,
};
use proptest::prelude::*;

const DEVICES: [&str; 3] = ["dev-a", "dev-b", "dev-c"];
const BODIES: [&str; 2] = [r#"{"content":{"deviceId":"dev-a","on":true}}"#, r#"{"n":1}"#];
/// Outputs one input may cause in one session: a handful, never a stream.
const MAX_OUTPUTS_PER_INPUT: usize = 8;

fn config() -> SessionConfig {
    SessionConfig {
        actuator: Some(Credentials { username: "admin".into(), password: "s3cret".into() }),
        register_timeout_ms: 10_000,
    }
}

/// One thing that happens to the session.
#[derive(Clone, Debug)]
enum Step {
    Text(String),
    Binary,
    FrameRefused(FrameError),
    TokenChecked(bool),
    BindingStored(bool),
    /// An ack for one of [`DEVICES`].
    Routed(usize, RouteOutcome),
    /// One of [`BODIES`] for one of [`DEVICES`].
    Deliver(usize, usize),
    Superseded,
    PeerGone,
    Shutdown,
    Evicted,
    /// The session's timer fires now, due or not (hosts wake up early).
    Timer,
    /// The clock moves on; every due timer fires.
    Advance(u64),
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

fn frame_error() -> impl Strategy<Value = FrameError> {
    prop_oneof![Just(FrameError::Protocol), Just(FrameError::InvalidUtf8), Just(FrameError::TooBig)]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => text().prop_map(Step::Text),
        1 => Just(Step::Binary),
        3 => prop::bool::weighted(0.8).prop_map(Step::TokenChecked),
        2 => prop::bool::weighted(0.8).prop_map(Step::BindingStored),
        1 => (0..DEVICES.len(), outcome()).prop_map(|(d, o)| Step::Routed(d, o)),
        1 => (0..DEVICES.len(), 0..BODIES.len()).prop_map(|(d, b)| Step::Deliver(d, b)),
        1 => Just(Step::Superseded),
        1 => Just(Step::PeerGone),
        1 => Just(Step::Shutdown),
        1 => Just(Step::Evicted),
        1 => frame_error().prop_map(Step::FrameRefused),
        1 => Just(Step::Timer),
        2 => prop_oneof![0..50u64, 0..20_000u64, Just(u64::MAX / 2)].prop_map(Step::Advance),
    ]
}

/// An input, owned: the `Input` fed to the session borrows from it.
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

    /// The fact a step feeds to the session, if the step is one.
    fn of(step: &Step) -> Option<Fact> {
        let verdict = |ok: bool| if ok { Ok(()) } else { Err(TokenRejected::Signature) };
        let stored = |ok: bool| if ok { Ok(()) } else { Err(StoreFailed) };
        Some(match step {
            Step::Text(t) => Fact::Text(t.clone()),
            Step::Binary => Fact::Binary,
            Step::FrameRefused(e) => Fact::FrameRefused(*e),
            Step::TokenChecked(ok) => Fact::TokenChecked(verdict(*ok)),
            Step::BindingStored(ok) => Fact::BindingStored(stored(*ok)),
            Step::Routed(d, o) => Fact::Routed(dev(*d), o.clone()),
            Step::Deliver(d, b) => Fact::Deliver(dev(*d), body(*b)),
            Step::Superseded => Fact::Superseded,
            Step::PeerGone => Fact::PeerGone,
            Step::Shutdown => Fact::Shutdown,
            Step::Evicted => Fact::Evicted,
            Step::Timer | Step::Advance(_) => return None,
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
    /// A `StoreBinding` was output: the session is a route, and owes one `Detach`.
    stored: bool,
    detached: bool,
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
                prop_assert!(matches!(out, Output::Detach { .. } | Output::Undelivered { .. }), "{out:?} after Close");
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
                        [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 1013].contains(&code.0),
                        "close code {code:?}"
                    );
                    closing_here = true;
                }
                Output::StoreBinding { .. } => {
                    prop_assert!(!self.stored, "a second StoreBinding");
                    self.stored = true;
                }
                Output::Detach { .. } => {
                    prop_assert!(self.stored, "a Detach without a StoreBinding");
                    prop_assert!(!self.detached, "detached twice");
                    self.detached = true;
                    closing_here = true;
                }
                _ => {}
            }
        }
        prop_assert!(!closing_here || closed_now, "Close or Detach output, but the session is open");
        // Exactly one Detach after a StoreBinding: by the time the session is closed, it came.
        prop_assert!(!closed_now || self.detached == self.stored, "closed without its Detach");
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
    let mut session = Session::new(now, Arc::new(config()));
    let mut watch = Watch::default();
    let mut transcript = Vec::new();
    for step in steps {
        match (step, Fact::of(step)) {
            (_, Some(fact)) => session.handle_input(now, fact.as_input()),
            (Step::Timer, None) => session.handle_timeout(now),
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

// Issue 9: the pending deadline, re-verification, device id limits and held actuation bounds, one
// session or one `HeldActuations` at a time.

const PING: &str = r#"{"type":"ping"}"#;

/// Feeds one step to a lone session at `now`: `Advance` moves `now` on and fires the timer if it
/// is due, as a host does. Returns whether `handle_timeout` was called.
fn apply(session: &mut Session, now: &mut Millis, step: &Step) -> bool {
    match (step, Fact::of(step)) {
        (_, Some(fact)) => {
            session.handle_input(*now, fact.as_input());
            false
        }
        (Step::Timer, None) => {
            session.handle_timeout(*now);
            true
        }
        (Step::Advance(dt), None) => {
            *now = now.plus(*dt);
            let due = session.poll_timeout().is_some_and(|t| t <= *now);
            if due {
                session.handle_timeout(*now);
            }
            due
        }
        _ => false,
    }
}

/// Steps for one session that never complete a registration (no `BindingStored(Ok)`) nor send an
/// accepted actuation (wrong credentials only), so it is pending until it closes. Mostly steps
/// that keep it open: pings, registrations that wait for their verdict or store, host noise.
fn pending_step() -> impl Strategy<Value = Step> {
    let device = 0..DEVICES.len();
    prop_oneof![
        12 => Just(Step::Text(PING.to_string())),
        6 => (device.clone(), "[a-z]{1,6}").prop_map(|(d, token)| Step::Text(registration(d, &token))),
        6 => Just(Step::TokenChecked(true)),
        1 => Just(Step::TokenChecked(false)),
        1 => Just(Step::BindingStored(false)),
        1 => (device.clone(), prop::option::of(any::<bool>()))
            .prop_map(|(d, ack)| Step::Text(actuation(d, false, ack))),
        4 => (device.clone(), outcome()).prop_map(|(d, o)| Step::Routed(d, o)),
        4 => (device, 0..BODIES.len()).prop_map(|(d, b)| Step::Deliver(d, b)),
        1 => Just(Step::Superseded),
        1 => junk().prop_map(Step::Text),
        6 => Just(Step::Timer),
        16 => prop_oneof![0..50u64, 0..3_000u64, 0..25_000u64].prop_map(Step::Advance),
    ]
}

/// Whether `outputs` end the session the way the pending deadline does: 1000, or 500 then 1011
/// if the binding was still being stored.
fn closed_by_deadline(outputs: &[Output]) -> bool {
    outputs.contains(&Output::Close(CloseCode::NORMAL))
        || outputs.starts_with(&[Output::Send(Reply::CannotStoreBinding), Output::Close(CloseCode::INTERNAL_ERROR)])
}

/// Feeds `steps` (none of which registers or actuates) to a session accepted at `accept`. While it
/// is open it must be pending, with a timer no later than `accept + timeout`; a timer firing
/// before then must not close it, and one firing at or after then must.
fn run_pending(accept: Millis, timeout: u64, steps: &[Step]) -> Result<(), TestCaseError> {
    let deadline = accept.plus(timeout);
    let mut now = accept;
    let mut session = Session::new(now, Arc::new(SessionConfig { register_timeout_ms: timeout, ..config() }));
    for step in steps {
        let fired = apply(&mut session, &mut now, step);
        let outputs = drain(&mut session);
        if fired && now < deadline {
            prop_assert!(outputs.is_empty(), "timer at {now:?}, before the deadline {deadline:?}: {outputs:?}");
        }
        if fired && now >= deadline {
            prop_assert!(session.is_closed(), "open after its timer fired at {now:?} >= {deadline:?}");
            prop_assert!(closed_by_deadline(&outputs), "deadline close said {outputs:?}");
        }
        if session.is_closed() {
            return Ok(());
        }
        prop_assert!(session.is_pending(), "not pending after {step:?}, without registering or actuating");
        let timer = session.poll_timeout();
        prop_assert!(timer.is_some_and(|t| t <= deadline), "timer {timer:?} while pending, deadline {deadline:?}");
        if now.0 + 1 < deadline.0 {
            // Nor earlier: a timer a millisecond before the deadline leaves it open and silent.
            let mut probe = session.clone();
            probe.handle_timeout(Millis(deadline.0 - 1));
            prop_assert!(!probe.is_closed() && !probe.has_output(), "closed before the deadline {deadline:?}");
        }
        if now >= deadline {
            // A host whose clock jumped past the timer calls it now.
            session.handle_timeout(now);
            let outputs = drain(&mut session);
            prop_assert!(session.is_closed(), "open at {now:?}, past the deadline {deadline:?}");
            prop_assert!(closed_by_deadline(&outputs), "deadline close said {outputs:?}");
            return Ok(());
        }
    }
    // Still open before the deadline: the timer at the deadline itself closes it.
    session.handle_timeout(deadline);
    let outputs = drain(&mut session);
    prop_assert!(session.is_closed(), "open at the deadline {deadline:?}");
    prop_assert!(closed_by_deadline(&outputs), "deadline close said {outputs:?}");
    Ok(())
}

/// The device a registered session registered, in the re-verification property.
const OWN: usize = 0;

/// Any step, with the registration of [`OWN`] and its happy verdicts more likely than in [`step`]:
/// the pending state is left by registering, and registered sessions register again, often.
fn lifecycle_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => step(),
        2 => "[a-z]{1,6}".prop_map(|token| Step::Text(registration(OWN, &token))),
        2 => Just(Step::TokenChecked(true)),
        2 => Just(Step::BindingStored(true)),
    ]
}

/// Feeds `steps` to one session: it leaves the pending state only with its 200, an accepted
/// actuation's `Route` or its close, and never comes back to it.
fn run_pending_once(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut now = Millis(1_000);
    let mut session = Session::new(now, Arc::new(config()));
    prop_assert!(session.is_pending());
    for step in steps {
        let was = session.is_pending();
        apply(&mut session, &mut now, step);
        let outputs = drain(&mut session);
        let is = session.is_pending();
        let left = outputs.iter().any(|o| matches!(o, Output::Send(Reply::Subscribed) | Output::Route { .. }));
        prop_assert!(was || !is, "pending again after {step:?}: {outputs:?}");
        prop_assert!(!left || !is, "still pending after {outputs:?}");
        prop_assert!(!was || is || left || session.is_closed(), "no longer pending after {step:?}: {outputs:?}");
    }
    Ok(())
}

/// Steps for a registered session: mostly registrations again under its own id and verdicts, with
/// now and then another id (a format error), a rejected token, and host noise.
fn recheck_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => "[a-z]{1,6}".prop_map(|token| Step::Text(registration(OWN, &token))),
        1 => (1..DEVICES.len(), "[a-z]{1,6}").prop_map(|(d, token)| Step::Text(registration(d, &token))),
        6 => prop::bool::weighted(0.85).prop_map(Step::TokenChecked),
        1 => any::<bool>().prop_map(Step::BindingStored),
        2 => Just(Step::Text(PING.to_string())),
        1 => (0..DEVICES.len(), 0..BODIES.len()).prop_map(|(d, b)| Step::Deliver(d, b)),
        1 => (0..DEVICES.len(), outcome()).prop_map(|(d, o)| Step::Routed(d, o)),
        1 => Just(Step::Timer),
        2 => prop_oneof![0..50u64, 0..100_000u64].prop_map(Step::Advance),
    ]
}

/// Token checks seen on one connection, counted from its outputs and the verdicts fed to it.
#[derive(Debug, Default)]
struct Verdicts {
    /// `VerifyToken` outputs.
    asked: usize,
    /// Verdicts fed to the open session while a `VerifyToken` was unanswered.
    answered: usize,
    /// Of those, the `Ok` ones.
    ok: usize,
    /// 200s sent.
    subscribed: usize,
    /// 401 "Invalid device token" sent.
    rejected: usize,
    /// `Detach` outputs.
    disconnected: usize,
}

impl Verdicts {
    /// Counts one step: `open`, whether the session was open when it came; then `outputs`.
    fn observe(&mut self, step: &Step, open: bool, outputs: &[Output]) -> Result<(), TestCaseError> {
        if let Step::TokenChecked(ok) = step {
            if open && self.asked > self.answered {
                self.answered += 1;
                self.ok += usize::from(*ok);
            }
        }
        for out in outputs {
            match out {
                Output::VerifyToken { .. } => self.asked += 1,
                Output::Send(Reply::Subscribed) => self.subscribed += 1,
                Output::Send(Reply::InvalidToken) => self.rejected += 1,
                Output::Detach { .. } => self.disconnected += 1,
                _ => {}
            }
        }
        prop_assert!(self.asked - self.answered <= 1, "two token checks at once: {self:?}");
        prop_assert!(self.subscribed <= self.ok, "a 200 without an Ok verdict for it: {self:?}");
        prop_assert!(self.rejected <= 1 && self.disconnected <= 1, "rejected or disconnected twice: {self:?}");
        Ok(())
    }
}

/// Registers a session, then feeds it `steps`, checking each step's outputs against a model of the
/// re-verification rule and the token checks counted over the whole connection.
fn run_recheck(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut now = Millis(1_000);
    let mut session = Session::new(now, Arc::new(config()));
    let mut verdicts = Verdicts::default();
    let setup = [Step::Text(registration(OWN, "first")), Step::TokenChecked(true), Step::BindingStored(true)];
    for step in &setup {
        apply(&mut session, &mut now, step);
        verdicts.observe(step, true, &drain(&mut session))?;
    }
    prop_assert_eq!(session.registered_device(), Some(&dev(OWN)));
    prop_assert_eq!(verdicts.subscribed, 1);
    let (mut rechecking, mut closed) = (false, false);
    for step in steps {
        apply(&mut session, &mut now, step);
        let outputs = drain(&mut session);
        verdicts.observe(step, !closed, &outputs)?;
        let deliver = |d: usize, b: usize| match d == OWN && !closed {
            true => vec![Output::Send(Reply::Actuation(body(b)))],
            false => vec![Output::Undelivered { device: dev(d), body: body(b) }],
        };
        let disconnect = |reply: Reply, code: CloseCode| {
            vec![Output::Send(reply), Output::Close(code), Output::Detach { device: dev(OWN), clear_binding: true }]
        };
        let expected = match step {
            Step::Deliver(d, b) => deliver(*d, *b),
            _ if closed => vec![],
            Step::Text(text) => match parse(text) {
                Ok(ClientMessage::Ping) => vec![Output::Send(Reply::Pong)],
                Ok(ClientMessage::Device { device, token }) if device == dev(OWN) => {
                    if core::mem::replace(&mut rechecking, true) {
                        vec![]
                    } else {
                        vec![Output::VerifyToken { device, token }]
                    }
                }
                Ok(ClientMessage::Device { .. }) => {
                    closed = true;
                    disconnect(Reply::WrongFormat, CloseCode::UNSUPPORTED_DATA)
                }
                other => unreachable!("recheck_step sends no {other:?}"),
            },
            Step::TokenChecked(ok) if core::mem::take(&mut rechecking) => {
                if *ok {
                    vec![Output::Send(Reply::Subscribed)]
                } else {
                    closed = true;
                    disconnect(Reply::InvalidToken, CloseCode::POLICY_VIOLATION)
                }
            }
            // A verdict nobody asked for, a store result, an unasked outcome, time: nothing.
            _ => vec![],
        };
        prop_assert_eq!(&outputs, &expected, "after {:?}", step);
        prop_assert_eq!(session.is_closed(), closed);
        prop_assert_eq!(session.registered_device().is_some(), !closed);
    }
    prop_assert_eq!(verdicts.subscribed, verdicts.ok, "an Ok verdict without its 200: {:?}", verdicts);
    Ok(())
}

/// Whether the platform can store `id` as a device id.
fn storable(id: &str) -> bool {
    (1..=MAX_DEVICE_ID_CHARS).contains(&id.chars().count()) && !id.contains('\0')
}

/// Any string, plus the edges: around 255 characters of several bytes each, and U+0000 anywhere.
fn device_id_candidate() -> impl Strategy<Value = String> {
    let wide = prop::sample::select(vec!['a', 'é', '€', '字', '😀']);
    prop_oneof![
        3 => any::<String>(),
        2 => prop::collection::vec(any::<char>(), 0..300).prop_map(String::from_iter),
        4 => prop::collection::vec(wide.clone(), 250..=260).prop_map(String::from_iter),
        1 => prop::collection::vec(wide, 0..=2).prop_map(String::from_iter),
        2 => ("\\PC{0,8}", "\\PC{0,8}").prop_map(|(a, b)| format!("{a}\0{b}")),
        1 => (0..MAX_DEVICE_ID_CHARS).prop_map(|at| {
            // The longest id there is, but with a NUL.
            let mut id = "字".repeat(MAX_DEVICE_ID_CHARS - 1);
            id.insert(at * '字'.len_utf8(), '\0');
            id
        }),
    ]
}

/// One call on [`HeldActuations`] (devices index [`DEVICES`]; sizes are padding), or time moving on.
#[derive(Clone, Debug)]
enum HeldOp {
    Departed(usize),
    Hold(usize, usize),
    HoldFirst(usize, usize),
    Arrived(usize),
    Expire,
    Advance(u64),
}

fn held_op() -> impl Strategy<Value = HeldOp> {
    let device = 0..DEVICES.len();
    let pad = 0..40usize;
    prop_oneof![
        3 => device.clone().prop_map(HeldOp::Departed),
        5 => (device.clone(), pad.clone()).prop_map(|(d, n)| HeldOp::Hold(d, n)),
        3 => (device.clone(), pad).prop_map(|(d, n)| HeldOp::HoldFirst(d, n)),
        1 => device.prop_map(HeldOp::Arrived),
        1 => Just(HeldOp::Expire),
        2 => prop_oneof![Just(0u64), Just(50), Just(100), 0..300u64].prop_map(HeldOp::Advance),
    ]
}

/// The model of the held actuations: each away device's deadline and its bodies, oldest first.
type HeldModel = BTreeMap<usize, (Millis, VecDeque<Body>)>;

/// Feeds `ops` to a [`HeldActuations`] and to a model: same answers, same bodies in the same
/// order, the byte count exact and within its bound, no device over its count.
fn run_held(hold_ms: u64, max_per_device: usize, max_bytes: usize, ops: &[HeldOp]) -> Result<(), TestCaseError> {
    let mut held = HeldActuations::new(hold_ms, max_per_device, max_bytes);
    let mut model = HeldModel::new();
    let model_bytes = |m: &HeldModel| m.values().flat_map(|(_, b)| b).map(|b| b.as_str().len()).sum::<usize>();
    let mut now = Millis(0);
    for (serial, op) in ops.iter().enumerate() {
        match *op {
            HeldOp::Departed(d) => {
                held.departed(now, dev(d));
                if hold_ms > 0 {
                    model.entry(d).or_insert_with(|| (now, VecDeque::new())).0 = now.plus(hold_ms);
                }
            }
            HeldOp::Hold(d, pad) | HeldOp::HoldFirst(d, pad) => {
                let first = matches!(op, HeldOp::HoldFirst(..));
                // Each body tells which call it came from, so that the order can be checked.
                let body = Body::from_json_object(&format!(r#"{{"n":{serial},"p":"{}"}}"#, "x".repeat(pad)))
                    .expect("a JSON object");
                let size = body.as_str().len();
                let total = model_bytes(&model);
                let expected = match model.get_mut(&d) {
                    Some((until, _)) if *until <= now => Hold::NotAway,
                    None => Hold::NotAway,
                    Some((_, bodies)) if bodies.len() >= max_per_device || total + size > max_bytes => Hold::Full,
                    Some((_, bodies)) => {
                        if first {
                            bodies.push_front(body.clone());
                        } else {
                            bodies.push_back(body.clone());
                        }
                        Hold::Held
                    }
                };
                let got = if first { held.hold_first(now, &dev(d), body) } else { held.hold(now, &dev(d), body) };
                prop_assert_eq!(got, expected, "{:?} at {:?}", op, now);
            }
            HeldOp::Arrived(d) => {
                let expected: Vec<Body> = model.remove(&d).map(|(_, b)| b.into()).unwrap_or_default();
                let got = held.arrived(&dev(d));
                prop_assert!(got.len() <= max_per_device, "{} held for one device", got.len());
                prop_assert_eq!(got, expected);
            }
            HeldOp::Expire => {
                let gone: Vec<usize> = model.iter().filter(|(_, (until, _))| *until <= now).map(|(d, _)| *d).collect();
                let dropped: usize = gone.iter().filter_map(|d| model.remove(d)).map(|(_, b)| b.len()).sum();
                prop_assert_eq!(held.expire(now), dropped, "expire at {:?}", now);
            }
            HeldOp::Advance(dt) => now = now.plus(dt),
        }
        prop_assert_eq!(held.bytes(), model_bytes(&model), "after {:?}", op);
        prop_assert!(held.bytes() <= max_bytes, "{} bytes held, bound {}", held.bytes(), max_bytes);
        prop_assert_eq!(held.len(), model.values().map(|(_, b)| b.len()).sum::<usize>());
        prop_assert!(model.values().all(|(_, b)| b.len() <= max_per_device));
        // Waking early is harmless; waking after a device's hold time has ended is not.
        if let Some(first) = model.values().map(|(until, _)| *until).min() {
            let timer = held.poll_timeout();
            prop_assert!(timer.is_some_and(|t| t <= first), "timer {:?}, first deadline {:?}", timer, first);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A connection that neither registers nor actuates is pending while open, its timer never
    /// lies beyond its accept's deadline (pings do not move it) and the timer closes it there.
    #[test]
    fn a_pending_session_is_closed_by_its_accept_deadline_whatever_it_sends(
        accept in 0..1_000_000u64,
        timeout in prop_oneof![Just(10_000u64), 0..30_000u64],
        steps in prop::collection::vec(pending_step(), 0..40),
    ) {
        run_pending(Millis(accept), timeout, &steps)?;
    }

    /// Pending ends with a 200, a `Route` or the close, and never comes back.
    #[test]
    fn a_session_leaves_pending_once_and_never_returns(steps in prop::collection::vec(lifecycle_step(), 0..60)) {
        run_pending_once(&steps)?;
    }

    /// A registered device registering again is verified again: one `VerifyToken` at a time, a 200
    /// only on an Ok verdict, a rejected token answered 401 and closed 1008, once.
    #[test]
    fn a_registered_device_is_answered_200_again_only_on_a_fresh_ok_verdict(
        steps in prop::collection::vec(recheck_step(), 0..40),
    ) {
        run_recheck(&steps)?;
    }

    /// A registration and an actuation accept a device id iff it is 1 to 255 characters without
    /// U+0000.
    #[test]
    fn a_device_id_is_accepted_iff_1_to_255_chars_without_nul(id in device_id_candidate()) {
        let fits = storable(&id);
        let registration = serde_json::json!({"type": "device", "deviceId": &id, "deviceToken": "t"}).to_string();
        match parse(&registration) {
            Ok(ClientMessage::Device { device, .. }) => {
                prop_assert!(fits, "registration accepted {:?}", id);
                prop_assert_eq!(device.as_str(), id.as_str());
            }
            Err(error) => {
                prop_assert!(!fits, "registration refused {:?}: {:?}", id, error);
                prop_assert_eq!(error, FormatError::WrongType("deviceId"));
            }
            Ok(other) => prop_assert!(false, "a registration parsed as {:?}", other),
        }
        let actuation = serde_json::json!({
            "type": "actuation",
            "credentials": {"username": "admin", "password": "s3cret"},
            "body": {"content": {"deviceId": &id, "on": true}},
        })
        .to_string();
        match parse(&actuation) {
            Ok(ClientMessage::Actuation { device, .. }) => {
                prop_assert!(fits, "actuation accepted {:?}", id);
                prop_assert_eq!(device.as_str(), id.as_str());
            }
            Err(error) => {
                prop_assert!(!fits, "actuation refused {:?}: {:?}", id, error);
                prop_assert_eq!(error, FormatError::WrongType("body.content.deviceId"));
            }
            Ok(other) => prop_assert!(false, "an actuation parsed as {:?}", other),
        }
    }

    /// Held actuations agree with a queue model: bytes exact and bounded, no device over its count,
    /// taken-back bodies ahead of those held since.
    #[test]
    fn held_actuations_stay_within_their_bounds_and_in_order(
        hold_ms in prop_oneof![Just(0u64), Just(100), 1..1_000u64, 1_000..10_000u64],
        max_per_device in 0..5usize,
        max_bytes in prop_oneof![0..200usize, Just(usize::MAX)],
        ops in prop::collection::vec(held_op(), 0..60),
    ) {
        run_held(hold_ms, max_per_device, max_bytes, &ops)?;
    }
}

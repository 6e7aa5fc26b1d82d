use super::*;
use crate::hub::{Hub, SessionId};
use crate::refusal::FrameError;
use alloc::string::String;
use alloc::vec::Vec;

const CREDS: &str = r#""credentials":{"username":"admin","password":"s3cret"}"#;

fn config() -> SessionConfig {
    SessionConfig {
        actuator: Some(Credentials { username: "admin".into(), password: "s3cret".into() }),
        register_timeout_ms: 10_000,
    }
}

fn dev(id: &str) -> DeviceId {
    DeviceId(id.into())
}

fn register_text(id: &str) -> String {
    alloc::format!(r#"{{"type":"device","deviceId":"{id}","deviceToken":"tok-{id}"}}"#)
}

fn actuation_text(id: &str, extra: &str) -> String {
    alloc::format!(r#"{{"type":"actuation",{CREDS},"body":{{"content":{{"deviceId":"{id}","v":1.0}}}}{extra}}}"#)
}

fn body(id: &str) -> Body {
    Body::from_json_object(&alloc::format!(r#"{{"content":{{"deviceId":"{id}","v":1.0}}}}"#)).unwrap()
}

/// One session with a fake clock.
struct Harness {
    s: Session,
    now: u64,
}

impl Harness {
    fn new() -> Self {
        Harness { s: Session::new(Millis(0), Arc::new(config())), now: 0 }
    }
    fn with(config: SessionConfig) -> Self {
        Harness { s: Session::new(Millis(0), Arc::new(config)), now: 0 }
    }
    fn input(&mut self, input: Input<'_>) -> Vec<Output> {
        self.s.handle_input(Millis(self.now), input);
        self.take()
    }
    fn text(&mut self, text: &str) -> Vec<Output> {
        self.input(Input::Text(text))
    }
    fn advance(&mut self, ms: u64) -> Vec<Output> {
        self.now += ms;
        self.s.handle_timeout(Millis(self.now));
        self.take()
    }
    fn take(&mut self) -> Vec<Output> {
        core::iter::from_fn(|| self.s.poll_output()).take(64).collect()
    }
    /// Registers `id` with a valid token and a stored binding.
    fn registered(id: &str) -> Self {
        let mut h = Harness::new();
        h.text(&register_text(id));
        h.input(Input::TokenChecked(Ok(())));
        assert_eq!(h.input(Input::BindingStored(Ok(()))), [send(Reply::Subscribed)]);
        h
    }
}

fn send(reply: Reply) -> Output {
    Output::Send(reply)
}

fn close(code: CloseCode) -> Output {
    Output::Close(code)
}

/// The end of a route that clears the device's binding.
fn detach(id: &str) -> Output {
    Output::Detach { device: dev(id), clear_binding: true }
}

#[test]
fn a_drained_session_keeps_no_output_queue() {
    let mut h = Harness::registered("d1");
    assert_eq!(h.s.outputs.capacity(), 0, "after registering");
    h.s.handle_input(Millis(0), Input::Text(r#"{"type":"ping"}"#));
    assert!(h.s.outputs.capacity() > 0);
    assert_eq!(h.take(), [send(Reply::Pong)]);
    assert_eq!(h.s.outputs.capacity(), 0, "after a ping's answer is taken");
}

#[test]
fn ping_before_registration_gets_pong() {
    let mut h = Harness::new();
    assert_eq!(h.text(r#"{"type":"ping"}"#), [send(Reply::Pong)]);
    assert!(!h.s.is_closed());
}

#[test]
fn ping_when_registered_gets_pong() {
    let mut h = Harness::registered("d1");
    assert_eq!(h.text(r#"{"type":"ping"}"#), [send(Reply::Pong)]);
}

#[test]
fn a_registration_is_under_way_from_its_message_to_its_answer() {
    let mut h = Harness::new();
    assert!(!h.s.is_registering());
    h.text(&register_text("d1"));
    assert!(h.s.is_registering(), "verifying");
    h.input(Input::TokenChecked(Ok(())));
    assert!(h.s.is_registering(), "storing");
    h.input(Input::BindingStored(Ok(())));
    assert!(!h.s.is_registering() && h.s.registered_device().is_some());
    let mut pinged = Harness::new();
    pinged.text(r#"{"type":"ping"}"#);
    assert!(!pinged.s.is_registering());
}

#[test]
fn registration_asks_to_verify_then_store_then_replies_200_once() {
    let mut h = Harness::new();
    assert_eq!(h.text(&register_text("d1")), [Output::VerifyToken { device: dev("d1"), token: "tok-d1".into() }]);
    assert_eq!(h.input(Input::TokenChecked(Ok(()))), [Output::StoreBinding { device: dev("d1") }]);
    assert_eq!(h.input(Input::BindingStored(Ok(()))), [send(Reply::Subscribed)]);
    assert_eq!(h.s.registered_device(), Some(&dev("d1")));
    // A stray second verdict or store result changes nothing.
    assert!(h.input(Input::BindingStored(Ok(()))).is_empty());
    assert!(h.input(Input::TokenChecked(Ok(()))).is_empty());
}

#[test]
fn bad_token_replies_401_then_closes_1008() {
    let mut h = Harness::new();
    h.text(&register_text("d1"));
    assert_eq!(
        h.input(Input::TokenChecked(Err(TokenRejected::Signature))),
        [send(Reply::InvalidToken), close(CloseCode::POLICY_VIOLATION)]
    );
    assert!(h.s.is_closed());
}

#[test]
fn store_failure_replies_500_then_closes_1011() {
    let mut h = Harness::new();
    h.text(&register_text("d1"));
    h.input(Input::TokenChecked(Ok(())));
    assert_eq!(
        h.input(Input::BindingStored(Err(StoreFailed))),
        [send(Reply::CannotStoreBinding), close(CloseCode::INTERNAL_ERROR), detach("d1")]
    );
    assert!(h.s.is_closed());
}

#[test]
fn repeat_registration_while_pending_is_ignored() {
    let mut h = Harness::new();
    h.text(&register_text("d1"));
    assert!(h.text(&register_text("d1")).is_empty());
    h.input(Input::TokenChecked(Ok(())));
    assert!(h.text(&register_text("d2")).is_empty());
}

#[test]
fn registered_device_registering_again_is_verified_again_then_gets_200() {
    let mut h = Harness::registered("d1");
    assert_eq!(h.text(&register_text("d1")), [Output::VerifyToken { device: dev("d1"), token: "tok-d1".into() }]);
    // Still the device's connection while its token is checked again.
    assert_eq!(h.s.registered_device(), Some(&dev("d1")));
    assert_eq!(h.input(Input::TokenChecked(Ok(()))), [send(Reply::Subscribed)]);
    assert_eq!(h.s.poll_timeout(), None);
    // And again: each repeat is checked.
    assert_eq!(h.text(&register_text("d1")).len(), 1);
}

#[test]
fn re_registration_with_a_bad_token_replies_401_closes_1008_and_detaches() {
    let mut h = Harness::registered("d1");
    h.text(&register_text("d1"));
    assert_eq!(
        h.input(Input::TokenChecked(Err(TokenRejected::Signature))),
        [send(Reply::InvalidToken), close(CloseCode::POLICY_VIOLATION), detach("d1")]
    );
    assert!(h.s.is_closed());
}

#[test]
fn a_repeat_while_a_re_registration_is_checked_is_ignored_and_stray_verdicts_too() {
    let mut h = Harness::registered("d1");
    h.text(&register_text("d1"));
    assert!(h.text(&register_text("d1")).is_empty());
    assert_eq!(h.input(Input::TokenChecked(Ok(()))), [send(Reply::Subscribed)]);
    // A verdict nobody asked for changes nothing.
    assert!(h.input(Input::TokenChecked(Err(TokenRejected::Signature))).is_empty());
    assert_eq!(h.s.registered_device(), Some(&dev("d1")));
}

#[test]
fn registered_device_registering_as_another_id_is_a_format_error() {
    let mut h = Harness::registered("d1");
    assert_eq!(
        h.text(&register_text("d2")),
        [send(Reply::WrongFormat), close(CloseCode::UNSUPPORTED_DATA), detach("d1")]
    );
}

#[test]
fn malformed_text_replies_401_wrong_format_then_closes_1003() {
    for text in ["", "{", "[]", r#"{"type":"nope"}"#, r#"{"type":"device"}"#] {
        let mut h = Harness::new();
        assert_eq!(h.text(text), [send(Reply::WrongFormat), close(CloseCode::UNSUPPORTED_DATA)], "{text}");
        assert!(h.s.is_closed());
    }
}

#[test]
fn binary_frame_is_a_format_error() {
    let mut h = Harness::new();
    assert_eq!(h.input(Input::Binary), [send(Reply::WrongFormat), close(CloseCode::UNSUPPORTED_DATA)]);
}

#[test]
fn registered_device_sending_garbage_is_closed_and_detached() {
    let mut h = Harness::registered("d1");
    assert_eq!(h.text("garbage"), [send(Reply::WrongFormat), close(CloseCode::UNSUPPORTED_DATA), detach("d1")]);
}

#[test]
fn valid_actuation_is_routed_without_a_reply() {
    let mut h = Harness::new();
    assert_eq!(h.text(&actuation_text("d1", "")), [Output::Route { device: dev("d1"), body: body("d1"), ack: false }]);
    assert!(h.input(Input::Routed { device: dev("d1"), outcome: RouteOutcome::Delivered }).is_empty());
    assert!(!h.s.is_closed());
}

#[test]
fn acknowledged_actuation_gets_exactly_one_reply_per_actuation() {
    let mut h = Harness::new();
    h.text(&actuation_text("d1", r#","ack":true"#));
    h.text(&actuation_text("d2", r#","ack":true"#));
    h.text(&actuation_text("d1", r#","ack":true"#));
    // d2's outcome may come first (d1's waits for another instance); d1's keep their order.
    assert_eq!(
        h.input(Input::Routed { device: dev("d2"), outcome: RouteOutcome::NotConnected }),
        [send(Reply::Ack { device: dev("d2"), status: RouteOutcome::NotConnected })]
    );
    let forwarded = RouteOutcome::Forwarded { server: "10.0.0.2:5000".into() };
    assert_eq!(
        h.input(Input::Routed { device: dev("d1"), outcome: forwarded.clone() }),
        [send(Reply::Ack { device: dev("d1"), status: forwarded })]
    );
    assert_eq!(
        h.input(Input::Routed { device: dev("d1"), outcome: RouteOutcome::Held }),
        [send(Reply::Ack { device: dev("d1"), status: RouteOutcome::Held })]
    );
    // No third outcome for d1 and none for d2 was asked for.
    assert!(h.input(Input::Routed { device: dev("d1"), outcome: RouteOutcome::Delivered }).is_empty());
    assert!(h.input(Input::Routed { device: dev("d2"), outcome: RouteOutcome::Delivered }).is_empty());
}

#[test]
fn wrong_credentials_reply_401_then_close_1008() {
    let mut h = Harness::new();
    let text = actuation_text("d1", "").replace("s3cret", "guess");
    assert_eq!(h.text(&text), [send(Reply::InvalidCredentials), close(CloseCode::POLICY_VIOLATION)]);
}

#[test]
fn without_configured_credentials_every_actuation_is_refused() {
    let mut h = Harness::with(SessionConfig { actuator: None, ..config() });
    assert_eq!(
        h.text(&actuation_text("d1", "")),
        [send(Reply::InvalidCredentials), close(CloseCode::POLICY_VIOLATION)]
    );
}

/// The settings a host swaps in when the actuator's password changes.
fn config_with_password(password: &str) -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        actuator: Some(Credentials { username: "admin".into(), password: password.into() }),
        ..config()
    })
}

#[test]
fn a_new_config_refuses_the_old_password_on_a_connection_already_open() {
    let mut h = Harness::new();
    assert_eq!(h.text(&actuation_text("d1", "")), [Output::Route { device: dev("d1"), body: body("d1"), ack: false }]);
    h.s.set_config(config_with_password("n3w"));
    assert_eq!(
        h.text(&actuation_text("d1", "")),
        [send(Reply::InvalidCredentials), close(CloseCode::POLICY_VIOLATION)]
    );
}

#[test]
fn a_new_config_accepts_the_new_password() {
    let mut h = Harness::new();
    h.s.set_config(config_with_password("n3w"));
    let text = actuation_text("d1", "").replace("s3cret", "n3w");
    assert_eq!(h.text(&text), [Output::Route { device: dev("d1"), body: body("d1"), ack: false }]);
}

#[test]
fn config_is_the_one_given_not_a_copy() {
    let shared = config_with_password("s3cret");
    let mut h = Harness { s: Session::new(Millis(0), shared.clone()), now: 0 };
    assert!(Arc::ptr_eq(h.s.config(), &shared));
    let newer = config_with_password("n3w");
    h.s.set_config(newer.clone());
    assert!(Arc::ptr_eq(h.s.config(), &newer));
}

#[test]
fn a_new_register_timeout_leaves_the_deadline_set_and_rules_the_next_message() {
    let mut h = Harness::new();
    h.text(&actuation_text("d1", ""));
    assert_eq!(h.s.poll_timeout(), Some(Millis(10_000)));
    h.s.set_config(Arc::new(SessionConfig { register_timeout_ms: 1_000, ..config() }));
    assert_eq!(h.s.poll_timeout(), Some(Millis(10_000)));
    h.advance(2_000);
    h.text(r#"{"type":"ping"}"#);
    assert_eq!(h.s.poll_timeout(), Some(Millis(3_000)));
}

#[test]
fn delivered_actuation_reaches_the_registered_device_verbatim() {
    let mut h = Harness::registered("d1");
    assert_eq!(h.input(Input::Deliver { device: dev("d1"), body: body("d1") }), [send(Reply::Actuation(body("d1")))]);
}

#[test]
fn delivery_to_a_session_that_is_not_the_device_is_handed_back() {
    let mut h = Harness::new();
    assert_eq!(
        h.input(Input::Deliver { device: dev("d1"), body: body("d1") }),
        [Output::Undelivered { device: dev("d1"), body: body("d1") }]
    );
    let mut h = Harness::registered("d1");
    assert_eq!(
        h.input(Input::Deliver { device: dev("d2"), body: body("d2") }),
        [Output::Undelivered { device: dev("d2"), body: body("d2") }],
        "another device's actuation never reaches this one"
    );
    h.input(Input::PeerGone);
    assert_eq!(
        h.input(Input::Deliver { device: dev("d1"), body: body("d1") }),
        [Output::Undelivered { device: dev("d1"), body: body("d1") }]
    );
}

#[test]
fn has_output_tells_whether_poll_output_would_give_something() {
    let mut h = Harness::new();
    assert!(!h.s.has_output());
    h.s.handle_input(Millis(0), Input::Text(r#"{"type":"ping"}"#));
    assert!(h.s.has_output());
    assert_eq!(h.take(), [send(Reply::Pong)]);
    assert!(!h.s.has_output());
}

#[test]
fn silent_unregistered_connection_is_closed_after_the_register_timeout() {
    let mut h = Harness::new();
    assert_eq!(h.s.poll_timeout(), Some(Millis(10_000)));
    assert!(h.advance(9_999).is_empty());
    assert_eq!(h.advance(1), [close(CloseCode::NORMAL)]);
    assert!(h.s.is_closed());
}

#[test]
fn pings_do_not_keep_a_pending_connection_open() {
    let mut h = Harness::new();
    for _ in 0..9 {
        h.advance(1_000);
        assert_eq!(h.text(r#"{"type":"ping"}"#), [send(Reply::Pong)]);
        assert!(h.s.is_pending());
        assert_eq!(h.s.poll_timeout(), Some(Millis(10_000)));
    }
    assert_eq!(h.advance(1_000), [close(CloseCode::NORMAL)]);
    assert!(!h.s.is_pending());
}

#[test]
fn a_refused_registration_or_actuation_does_not_end_pending_but_closes() {
    let mut h = Harness::new();
    h.text(&register_text("d1"));
    assert!(h.s.is_pending());
    h.input(Input::TokenChecked(Err(TokenRejected::Signature)));
    assert!(h.s.is_closed() && !h.s.is_pending());
    let mut h = Harness::new();
    h.text(r#"{"type":"actuation","credentials":{"username":"admin","password":"no"},"body":{"content":{"deviceId":"d"}}}"#);
    assert!(h.s.is_closed());
}

#[test]
fn an_accepted_actuation_ends_pending_and_from_then_each_message_pushes_the_timeout_back() {
    let mut h = Harness::new();
    h.advance(9_000);
    h.text(&actuation_text("d1", ""));
    assert!(!h.s.is_pending());
    assert_eq!(h.s.poll_timeout(), Some(Millis(19_000)));
    h.advance(5_000);
    h.text(r#"{"type":"ping"}"#);
    assert_eq!(h.s.poll_timeout(), Some(Millis(24_000)));
    assert!(h.advance(9_999).is_empty());
    assert_eq!(h.advance(1), [close(CloseCode::NORMAL)]);
}

#[test]
fn registration_ends_pending() {
    let h = Harness::registered("d1");
    assert!(!h.s.is_pending());
}

#[test]
fn a_binding_not_stored_by_the_pending_deadline_is_answered_500_and_closed() {
    let mut h = Harness::new();
    h.text(&register_text("d1"));
    h.input(Input::TokenChecked(Ok(())));
    assert_eq!(h.s.poll_timeout(), Some(Millis(10_000)));
    assert_eq!(h.advance(10_000), [send(Reply::CannotStoreBinding), close(CloseCode::INTERNAL_ERROR), detach("d1")]);
    // The store's late answer changes nothing.
    assert!(h.input(Input::BindingStored(Ok(()))).is_empty());
}

#[test]
fn a_sender_registering_is_not_cut_short_by_its_idle_timer() {
    let mut h = Harness::new();
    h.text(&actuation_text("d1", ""));
    h.text(&register_text("d2"));
    h.input(Input::TokenChecked(Ok(())));
    assert_eq!(h.s.poll_timeout(), None);
    assert!(h.advance(60_000).is_empty());
    assert_eq!(h.input(Input::BindingStored(Ok(()))), [send(Reply::Subscribed)]);
}

#[test]
fn device_ids_are_1_to_255_characters_without_nul() {
    let ok = "é".repeat(255);
    for (id, valid) in [(ok.as_str(), true), ("x", true), ("", false), ("a\\u0000b", false)] {
        let mut h = Harness::new();
        let out = h.text(&register_text(id));
        assert_eq!(matches!(out.as_slice(), [Output::VerifyToken { .. }]), valid, "{id:?}: {out:?}");
    }
    let long = "é".repeat(256);
    for text in [register_text(&long), actuation_text(&long, ""), actuation_text("a\\u0000", "")] {
        let mut h = Harness::new();
        assert_eq!(h.text(&text), [send(Reply::WrongFormat), close(CloseCode::UNSUPPORTED_DATA)], "{text:.40}");
    }
}

#[test]
fn registered_device_has_no_timeout() {
    let mut h = Harness::registered("d1");
    assert_eq!(h.s.poll_timeout(), None);
    assert!(h.advance(3_600_000).is_empty());
}

#[test]
fn time_going_backwards_is_ignored() {
    let mut h = Harness::new();
    h.advance(5_000);
    h.s.handle_timeout(Millis(1));
    h.s.handle_input(Millis(2), Input::Text(&actuation_text("d1", "")));
    h.take();
    // The actuation counted as happening at 5 s, not 2 ms.
    assert_eq!(h.s.poll_timeout(), Some(Millis(15_000)));
}

#[test]
fn peer_gone_detaches_a_registered_device_once() {
    let mut h = Harness::registered("d1");
    assert_eq!(h.input(Input::PeerGone), [detach("d1")]);
    assert!(h.input(Input::PeerGone).is_empty());
    assert!(h.input(Input::Shutdown).is_empty());
}

#[test]
fn shutdown_closes_1001_and_detaches() {
    let mut h = Harness::registered("d1");
    assert_eq!(h.input(Input::Shutdown), [close(CloseCode::GOING_AWAY), detach("d1")]);
    let mut h = Harness::new();
    assert_eq!(h.input(Input::Shutdown), [close(CloseCode::GOING_AWAY)]);
}

#[test]
fn nothing_is_sent_after_close() {
    let mut h = Harness::new();
    h.text("junk");
    assert!(h.s.is_closed());
    assert!(h.text(r#"{"type":"ping"}"#).is_empty());
    assert!(h.text(&actuation_text("d1", "")).is_empty());
    assert!(h.input(Input::TokenChecked(Ok(()))).is_empty());
    assert!(h.advance(60_000).is_empty());
}

#[test]
fn prototype_names_register_like_any_id() {
    let mut h = Harness::new();
    h.text(&register_text("__proto__"));
    h.input(Input::TokenChecked(Ok(())));
    h.input(Input::BindingStored(Ok(())));
    assert_eq!(h.s.registered_device(), Some(&dev("__proto__")));
}

/// Two sessions and a hub, wired the way the server wires them.
#[test]
fn newer_registration_supersedes_the_older_without_clearing_the_binding() {
    let mut hub = Hub::new();
    let mut old = Harness::registered("d1");
    assert_eq!(hub.register(SessionId(1), dev("d1")), None);
    let mut new = Harness::new();
    new.text(&register_text("d1"));
    assert_eq!(new.input(Input::TokenChecked(Ok(()))), [Output::StoreBinding { device: dev("d1") }]);
    // The host stores, then routes the device to the new session and supersedes the old one.
    assert_eq!(hub.register(SessionId(2), dev("d1")), Some(SessionId(1)));
    assert_eq!(
        old.input(Input::Superseded),
        [close(CloseCode::NORMAL), Output::Detach { device: dev("d1"), clear_binding: false }]
    );
    assert_eq!(new.input(Input::BindingStored(Ok(()))), [send(Reply::Subscribed)]);
    // The old connection's end is not the device's: its binding stays, and the hub agrees.
    assert!(old.input(Input::PeerGone).is_empty());
    assert_eq!(hub.remove(SessionId(1)), None);
    assert_eq!(hub.route(&dev("d1")), Some(SessionId(2)));
}

#[test]
fn actuation_routes_through_the_hub_to_the_device() {
    let mut hub = Hub::new();
    let mut device = Harness::registered("d1");
    hub.register(SessionId(1), dev("d1"));
    let mut dashboard = Harness::new();
    let out = dashboard.text(&actuation_text("d1", ""));
    let [Output::Route { device: target, body, ack: false }] = out.as_slice() else { panic!("{out:?}") };
    assert_eq!(hub.route(target), Some(SessionId(1)));
    let delivered = device.input(Input::Deliver { device: target.clone(), body: body.clone() });
    assert_eq!(delivered, [send(Reply::Actuation(body.clone()))]);
    let Output::Send(reply) = &delivered[0] else { unreachable!() };
    assert_eq!(reply.to_text(), r#"{"code":1024,"content":{"content":{"deviceId":"d1","v":1.0}}}"#);
}

/// A session that has asked to store `id`'s binding and not heard back.
fn storing(id: &str) -> Harness {
    let mut h = Harness::new();
    h.text(&register_text(id));
    assert_eq!(h.input(Input::TokenChecked(Ok(()))), [Output::StoreBinding { device: dev(id) }]);
    h
}

#[test]
fn detach_after_a_failed_store_clears_the_binding() {
    let mut h = storing("d1");
    let out = h.input(Input::BindingStored(Err(StoreFailed)));
    assert_eq!(out.last(), Some(&detach("d1")));
}

#[test]
fn detach_after_a_store_timed_out_clears_the_binding() {
    // The store may still write the binding after the 500: it must be cleared.
    let mut h = storing("d1");
    assert_eq!(h.advance(10_000), [send(Reply::CannotStoreBinding), close(CloseCode::INTERNAL_ERROR), detach("d1")]);
}

#[test]
fn detach_after_superseded_does_not_clear_the_binding() {
    let registered = Output::Detach { device: dev("d1"), clear_binding: false };
    let mut h = Harness::registered("d1");
    assert_eq!(h.input(Input::Superseded), [close(CloseCode::NORMAL), registered.clone()]);
    // Superseded while its own store is under way: the newer connection owns the binding too.
    let mut h = storing("d1");
    assert_eq!(h.input(Input::Superseded), [close(CloseCode::NORMAL), registered]);
}

#[test]
fn every_end_after_a_store_request_detaches_exactly_once() {
    type End = fn(&mut Harness) -> Vec<Output>;
    let ends: [(&str, End); 6] = [
        ("peer gone", |h| h.input(Input::PeerGone)),
        ("shutdown", |h| h.input(Input::Shutdown)),
        ("evicted", |h| h.input(Input::Evicted)),
        ("garbage", |h| h.text("garbage")),
        ("frame refused", |h| h.input(Input::FrameRefused(FrameError::TooBig))),
        ("superseded", |h| h.input(Input::Superseded)),
    ];
    for (what, end) in ends {
        for mut h in [storing("d1"), Harness::registered("d1")] {
            let mut out = end(&mut h);
            // Whatever comes later: the store's answer, a timer, more ends.
            out.extend(h.input(Input::BindingStored(Err(StoreFailed))));
            out.extend(h.input(Input::PeerGone));
            out.extend(h.input(Input::Superseded));
            out.extend(h.advance(60_000));
            let detaches = out.iter().filter(|o| matches!(o, Output::Detach { .. })).count();
            assert_eq!(detaches, 1, "{what}: {out:?}");
            assert!(matches!(out.last(), Some(Output::Detach { .. })), "{what}: something after the detach: {out:?}");
        }
    }
}

#[test]
fn a_session_that_never_asked_to_store_is_never_detached() {
    let mut h = Harness::new();
    h.text(&register_text("d1"));
    let mut out = h.input(Input::TokenChecked(Err(TokenRejected::Expired)));
    out.extend(h.input(Input::PeerGone));
    assert!(!out.iter().any(|o| matches!(o, Output::Detach { .. })), "{out:?}");
    let mut h = Harness::new();
    h.text(&actuation_text("d1", ""));
    assert_eq!(h.input(Input::Shutdown), [close(CloseCode::GOING_AWAY)]);
}

#[test]
fn frame_refusals_close_with_their_code_and_no_reply() {
    for (error, code) in [
        (FrameError::Protocol, CloseCode::PROTOCOL_ERROR),
        (FrameError::InvalidUtf8, CloseCode::INVALID_PAYLOAD),
        (FrameError::TooBig, CloseCode::MESSAGE_TOO_BIG),
    ] {
        let mut h = Harness::new();
        assert_eq!(h.input(Input::FrameRefused(error)), [close(code)], "{error}");
        assert!(h.s.is_closed());
        let mut h = Harness::registered("d1");
        assert_eq!(h.input(Input::FrameRefused(error)), [close(code), detach("d1")], "{error}");
    }
}

#[test]
fn an_evicted_pending_connection_is_closed_1013() {
    let mut h = Harness::new();
    h.text(r#"{"type":"ping"}"#);
    assert_eq!(h.input(Input::Evicted), [close(CloseCode::TRY_AGAIN_LATER)]);
    assert!(h.s.is_closed() && !h.s.is_pending());
}

#[test]
fn each_refusal_is_answered_as_its_type_says() {
    let mut h = Harness::new();
    h.text(&register_text("d1"));
    let (reply, code) = TokenRejected::Subject.reply();
    assert_eq!(h.input(Input::TokenChecked(Err(TokenRejected::Subject))), [send(reply), close(code)]);
    let mut h = Harness::new();
    let (reply, code) = WrongCredentials.reply();
    assert_eq!(h.text(&actuation_text("d1", "").replace("admin", "root")), [send(reply), close(code)]);
    let mut h = storing("d1");
    let (reply, code) = StoreFailed.reply();
    assert_eq!(h.input(Input::BindingStored(Err(StoreFailed))), [send(reply), close(code), detach("d1")]);
}

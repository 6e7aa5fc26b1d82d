use super::*;
use alloc::vec::Vec;

fn client() -> DeviceClient {
    let mut c = DeviceClient::new(Millis(0), DeviceId("dev-\"1".into()), "tok".into(), ClientConfig::default());
    assert_eq!(c.poll_output(), Some(ClientOutput::Connect));
    c
}

fn drain(c: &mut DeviceClient) -> Vec<ClientOutput> {
    core::iter::from_fn(|| c.poll_output()).take(64).collect()
}

fn registered(now: u64) -> DeviceClient {
    let mut c = client();
    c.handle_input(Millis(now), ClientInput::Connected);
    c.handle_input(Millis(now), ClientInput::Text(r#"{"code":200,"content":"Subscribed"}"#));
    drain(&mut c);
    c
}

#[test]
fn connecting_sends_an_escaped_registration() {
    let mut c = client();
    c.handle_input(Millis(1), ClientInput::Connected);
    let out = drain(&mut c);
    let [ClientOutput::Send(text)] = out.as_slice() else { panic!("{out:?}") };
    let parsed = crate::message::parse(text).unwrap();
    assert_eq!(
        parsed,
        crate::message::ClientMessage::Device { device: DeviceId("dev-\"1".into()), token: "tok".into() }
    );
}

#[test]
fn replies_become_events() {
    let mut c = registered(0);
    c.handle_input(Millis(1), ClientInput::Text(r#"{"code":1024,"content":{"b":1.50,"x":"\u00e9"}}"#));
    c.handle_input(Millis(2), ClientInput::Text(r#"{"code":202,"content":"PONG"}"#));
    c.handle_input(Millis(3), ClientInput::Text(r#"{"code":500,"content":"x"}"#));
    c.handle_input(Millis(4), ClientInput::Text(r#"{"code":401,"content":"Invalid device token"}"#));
    c.handle_input(Millis(5), ClientInput::Text("garbage"));
    c.handle_input(Millis(6), ClientInput::Text(r#"{"code":999}"#));
    assert_eq!(
        drain(&mut c),
        [
            ClientOutput::Event(ClientEvent::Actuation(r#"{"b":1.50,"x":"\u00e9"}"#.into())),
            ClientOutput::Event(ClientEvent::Pong),
            ClientOutput::Event(ClientEvent::ServerError),
            ClientOutput::Event(ClientEvent::Rejected),
        ]
    );
}

#[test]
fn pings_every_30_seconds_after_a_200() {
    let mut c = registered(1_000);
    assert_eq!(c.poll_timeout(), Some(Millis(31_000)));
    c.handle_timeout(Millis(31_000));
    assert_eq!(drain(&mut c), [ClientOutput::Send(r#"{"type":"ping"}"#.into())]);
    c.handle_input(Millis(31_050), ClientInput::Text(r#"{"code":202,"content":"PONG"}"#));
    drain(&mut c);
    assert_eq!(c.poll_timeout(), Some(Millis(61_000)));
}

#[test]
fn missing_pong_closes_the_connection() {
    let mut c = registered(0);
    c.handle_timeout(Millis(30_000));
    drain(&mut c);
    assert_eq!(c.poll_timeout(), Some(Millis(40_000)));
    c.handle_timeout(Millis(40_000));
    assert_eq!(drain(&mut c), [ClientOutput::Event(ClientEvent::PongMissed), ClientOutput::Close]);
    c.handle_input(Millis(40_010), ClientInput::Disconnected);
    assert_eq!(c.poll_timeout(), Some(Millis(42_510)));
}

#[test]
fn backoff_doubles_up_to_ten_minutes() {
    let mut c = client();
    let mut now = 0;
    let mut delays = Vec::new();
    for _ in 0..12 {
        c.handle_input(Millis(now), ClientInput::Disconnected);
        let at = c.poll_timeout().unwrap().0;
        delays.push(at - now);
        assert_eq!(drain(&mut c), [ClientOutput::Event(ClientEvent::BackingOff { delay_ms: at - now })]);
        now = at;
        c.handle_timeout(Millis(now));
        assert_eq!(drain(&mut c), [ClientOutput::Connect]);
    }
    assert_eq!(delays[..4], [2_500, 5_000, 10_000, 20_000]);
    assert_eq!(*delays.last().unwrap(), 600_000);
    assert!(delays.windows(2).all(|w| w[1] == (w[0] * 2).min(600_000)));
}

#[test]
fn a_200_resets_the_backoff() {
    let mut c = client();
    c.handle_input(Millis(0), ClientInput::Disconnected);
    c.handle_timeout(Millis(2_500));
    c.handle_input(Millis(2_600), ClientInput::Disconnected); // next delay 5 s
    c.handle_timeout(Millis(7_600));
    c.handle_input(Millis(7_700), ClientInput::Connected);
    c.handle_input(Millis(7_800), ClientInput::Text(r#"{"code":200}"#));
    c.handle_input(Millis(8_000), ClientInput::Disconnected);
    assert_eq!(c.poll_timeout(), Some(Millis(10_500)));
}

#[test]
fn reconnects_only_when_the_time_comes() {
    let mut c = client();
    c.handle_input(Millis(0), ClientInput::Disconnected);
    drain(&mut c);
    c.handle_timeout(Millis(2_499));
    assert!(drain(&mut c).is_empty());
    c.handle_timeout(Millis(2_500));
    assert_eq!(drain(&mut c), [ClientOutput::Connect]);
}

#[test]
fn a_stray_200_after_registration_does_not_restart_the_ping_schedule() {
    let mut c = registered(0);
    let first_ping = c.poll_timeout();
    c.handle_input(Millis(20_000), ClientInput::Text(r#"{"code":200,"content":"Subscribed"}"#));
    assert_eq!(c.poll_timeout(), first_ping);
    assert!(drain(&mut c).is_empty(), "no second Registered event");
}

#[test]
fn an_early_timer_neither_pings_nor_gives_up_on_the_pong() {
    let mut c = registered(0);
    c.handle_timeout(Millis(29_999));
    assert!(drain(&mut c).is_empty(), "no ping before 30 s");
    c.handle_timeout(Millis(30_000));
    drain(&mut c);
    c.handle_timeout(Millis(39_999));
    assert!(drain(&mut c).is_empty(), "the pong still has time");
    assert!(c.is_registered());
}

#[test]
fn registered_only_between_a_200_and_the_disconnect() {
    let mut c = client();
    assert!(!c.is_registered());
    c.handle_input(Millis(1), ClientInput::Connected);
    assert!(!c.is_registered(), "connected is not registered");
    c.handle_input(Millis(2), ClientInput::Text(r#"{"code":200,"content":"Subscribed"}"#));
    assert!(c.is_registered());
    c.handle_input(Millis(3), ClientInput::Disconnected);
    assert!(!c.is_registered());
}

#[test]
fn each_disconnect_announces_its_backoff_once() {
    let mut c = registered(0);
    c.handle_input(Millis(10), ClientInput::Text(r#"{"code":401,"content":"Invalid device token"}"#));
    c.handle_input(Millis(20), ClientInput::Disconnected);
    // The host may report the same loss twice (an error, then a close): one wait, one event.
    c.handle_input(Millis(30), ClientInput::Disconnected);
    assert_eq!(
        drain(&mut c),
        [ClientOutput::Event(ClientEvent::Rejected), ClientOutput::Event(ClientEvent::BackingOff { delay_ms: 2_500 })]
    );
    assert_eq!(c.poll_timeout(), Some(Millis(2_520)));
}

//! The core compiled to WASM: the same rules in Node.js and in a browser.
//!
//! Run with `wasm-bindgen-test-runner` as the target's runner; `WASM_BINDGEN_USE_BROWSER=1`
//! (with `CHROMEDRIVER`) runs the same tests in headless Chromium instead of Node.js. The
//! `WasmDeviceClient` tests need `--features wasm`.
#![cfg(target_arch = "wasm32")]

use iot_ws_core::{
    check_claims, parse, ClientMessage, CloseCode, Credentials, DeviceId, FormatError, Input, Millis, Output, Reply,
    Session, SessionConfig, TokenRejected, UnixSeconds,
};
use std::sync::Arc;

use wasm_bindgen_test::wasm_bindgen_test;

fn drain(session: &mut Session) -> Vec<Output> {
    let mut outputs = Vec::new();
    for _ in 0..16 {
        match session.poll_output() {
            Some(out) => outputs.push(out),
            None => return outputs,
        }
    }
    panic!("the session did not stop talking: {outputs:?}");
}

#[wasm_bindgen_test]
fn parse_reads_messages_and_refuses_others() {
    assert_eq!(parse(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping));
    assert_eq!(
        parse(r#"{"type":"device","deviceId":"dev-1","deviceToken":"a.b.c"}"#),
        Ok(ClientMessage::Device { device: DeviceId("dev-1".into()), token: "a.b.c".into() })
    );
    assert_eq!(parse(r#"{"type":"device","deviceId":"dev-1"}"#), Err(FormatError::MissingField("deviceToken")));
    assert_eq!(parse("[1]"), Err(FormatError::NotAnObject));
    assert_eq!(parse("{").unwrap_err().reply(), (Reply::WrongFormat, CloseCode::UNSUPPORTED_DATA));
}

#[wasm_bindgen_test]
fn session_registers_then_receives_an_actuation_verbatim() {
    let config = Arc::new(SessionConfig {
        actuator: Some(Credentials { username: "admin".into(), password: "s3cret".into() }),
        register_timeout_ms: 10_000,
    });
    let device = DeviceId("dev-1".into());
    let mut s = Session::new(Millis(0), config.clone());
    s.handle_input(Millis(1), Input::Text(r#"{"type":"device","deviceId":"dev-1","deviceToken":"jwt"}"#));
    assert_eq!(drain(&mut s), [Output::VerifyToken { device: device.clone(), token: "jwt".into() }]);
    s.handle_input(Millis(2), Input::TokenChecked(Ok(())));
    assert_eq!(drain(&mut s), [Output::StoreBinding { device: device.clone() }]);
    s.handle_input(Millis(3), Input::BindingStored(Ok(())));
    assert_eq!(drain(&mut s), [Output::Send(Reply::Subscribed)]);
    assert_eq!(s.registered_device(), Some(&device));
    assert_eq!(s.poll_timeout(), None);

    // The dashboard's connection: its actuation is routed, then delivered to the device's.
    let mut dashboard = Session::new(Millis(4), config);
    let body = r#"{"content":{"deviceId":"dev-1","value": 1.50}}"#;
    let actuation =
        format!(r#"{{"type":"actuation","credentials":{{"username":"admin","password":"s3cret"}},"body":{body}}}"#);
    dashboard.handle_input(Millis(5), Input::Text(&actuation));
    let Some(Output::Route { device: to, body: routed, ack: false }) = dashboard.poll_output() else {
        panic!("no route");
    };
    assert_eq!(to, device);
    s.handle_input(Millis(6), Input::Deliver { device: to, body: routed });
    let sent = drain(&mut s);
    let [Output::Send(reply)] = sent.as_slice() else { panic!("{sent:?}") };
    assert_eq!(reply.to_text(), format!(r#"{{"code":1024,"content":{body}}}"#));
}

#[wasm_bindgen_test]
fn wrong_credentials_are_refused_and_closed() {
    let mut s = Session::new(Millis(0), Arc::new(SessionConfig::default()));
    let text =
        r#"{"type":"actuation","credentials":{"username":"a","password":"b"},"body":{"content":{"deviceId":"d"}}}"#;
    s.handle_input(Millis(1), Input::Text(text));
    assert_eq!(drain(&mut s), [Output::Send(Reply::InvalidCredentials), Output::Close(CloseCode::POLICY_VIOLATION)]);
    assert!(s.is_closed());
}

#[wasm_bindgen_test]
fn claims_accept_numeric_and_iso_exp_until_they_pass() {
    let device = DeviceId("dev-1".into());
    let now = UnixSeconds(1_764_000_000);
    assert_eq!(check_claims(r#"{"sub":"dev-1","exp":"2035-11-24T10:00:00.000Z"}"#, &device, now), Ok(()));
    assert_eq!(check_claims(r#"{"sub":"dev-1","exp":1700000000}"#, &device, now), Err(TokenRejected::Expired));
    assert_eq!(check_claims(r#"{"sub":"dev-2"}"#, &device, now), Err(TokenRejected::Subject));
}

#[cfg(feature = "wasm")]
mod js_client {
    use iot_ws_core::wasm::{parse_message, WasmDeviceClient};
    use serde_json::{json, Value};
    use wasm_bindgen_test::wasm_bindgen_test;

    /// Every pending output, parsed.
    fn outputs(c: &mut WasmDeviceClient) -> Vec<Value> {
        let mut all = Vec::new();
        for _ in 0..16 {
            match c.poll_output() {
                Some(text) => all.push(serde_json::from_str(&text).expect("outputs are JSON")),
                None => return all,
            }
        }
        panic!("the client did not stop talking: {all:?}");
    }

    #[wasm_bindgen_test]
    fn client_connects_registers_pings_and_hands_over_actuations() {
        let mut c = WasmDeviceClient::new(1_000.5, "dev-\"1\"".into(), "a.b.c".into());
        assert_eq!(outputs(&mut c), [json!({"kind": "connect"})]);
        assert_eq!(c.poll_timeout(), None);
        c.handle_connected(1_010.0);
        let sent = outputs(&mut c);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0]["kind"], "send");
        let registration: Value = serde_json::from_str(sent[0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(registration, json!({"type": "device", "deviceId": "dev-\"1\"", "deviceToken": "a.b.c"}));
        assert!(!c.is_registered());

        c.handle_text(1_020.0, r#"{"code":200,"content":"Subscribed"}"#);
        assert_eq!(outputs(&mut c), [json!({"kind": "event", "event": "registered"})]);
        assert!(c.is_registered());
        assert_eq!(c.poll_timeout(), Some(31_020.0));

        c.handle_text(1_030.0, r#"{"code":1024,"content":{"content":{"deviceId":"dev-1","on":true,"v":1.50}}}"#);
        let body = json!({"content": {"deviceId": "dev-1", "on": true, "v": 1.50}});
        let text = r#"{"content":{"deviceId":"dev-1","on":true,"v":1.50}}"#;
        assert_eq!(outputs(&mut c), [json!({"kind": "event", "event": "actuation", "body": body, "text": text})]);

        c.handle_timeout(31_020.0);
        assert_eq!(outputs(&mut c), [json!({"kind": "send", "text": "{\"type\":\"ping\"}"})]);
        // No pong within 10 s: the client gives the connection up and asks for a close.
        c.handle_timeout(41_020.0);
        assert_eq!(outputs(&mut c), [json!({"kind": "event", "event": "pong_missed"}), json!({"kind": "close"})]);
        assert!(!c.is_registered());
        c.handle_disconnected(41_030.0);
        assert_eq!(outputs(&mut c), [json!({"kind": "event", "event": "backing_off", "delayMs": 2_500})]);
        assert_eq!(c.poll_timeout(), Some(43_530.0));
    }

    #[wasm_bindgen_test]
    fn client_backs_off_and_odd_times_count_as_zero() {
        let mut c = WasmDeviceClient::new(f64::NAN, "d".into(), "t".into());
        outputs(&mut c);
        c.handle_disconnected(-5.0);
        assert_eq!(outputs(&mut c), [json!({"kind": "event", "event": "backing_off", "delayMs": 2_500})]);
        assert_eq!(c.poll_timeout(), Some(2_500.0));
        c.handle_timeout(2_500.0);
        assert_eq!(outputs(&mut c), [json!({"kind": "connect"})]);
        c.handle_disconnected(2_600.0);
        assert_eq!(outputs(&mut c), [json!({"kind": "event", "event": "backing_off", "delayMs": 5_000})]);
        assert_eq!(c.poll_timeout(), Some(7_600.0), "the delay doubles");
        c.handle_timeout(7_600.0);
        c.handle_connected(7_700.0);
        c.handle_text(7_800.0, r#"{"code":401,"content":"Invalid device token"}"#);
        let events = outputs(&mut c);
        assert_eq!(events.last(), Some(&json!({"kind": "event", "event": "rejected"})));
    }

    #[wasm_bindgen_test]
    fn parse_message_describes_messages_and_errors() {
        let ping: Value = serde_json::from_str(&parse_message(r#"{"type":"ping"}"#)).unwrap();
        assert_eq!(ping, json!({"kind": "ping"}));
        let device: Value =
            serde_json::from_str(&parse_message(r#"{"type":"device","deviceId":"d","deviceToken":"secret"}"#)).unwrap();
        assert_eq!(device, json!({"kind": "device", "deviceId": "d"}));
        let text = r#"{"type":"actuation","credentials":{"username":"u","password":"p"},"body":{"content":{"deviceId":"d"}},"ack":true}"#;
        let actuation: Value = serde_json::from_str(&parse_message(text)).unwrap();
        assert_eq!(
            actuation,
            json!({"kind": "actuation", "deviceId": "d", "ack": true, "body": {"content": {"deviceId": "d"}}})
        );
        let error: Value = serde_json::from_str(&parse_message(r#"{"type":"device","deviceId":"d"}"#)).unwrap();
        assert_eq!(
            error,
            json!({
                "kind": "error",
                "error": "missing field deviceToken",
                "reply": "{\"code\":401,\"content\":\"Wrong message format\"}",
                "close": 1003
            })
        );
    }
}

//! Tokens, actuator credentials and malformed messages: each refusal is answered, then closed,
//! and no secret ever reaches the server's logs.

use std::time::Duration;

use iot_ws_tests::{
    actuation, alg_none, hs256_with_public_key, now_secs, Client, Keys, Server, ServerOpts, ACTUATOR, WAIT,
};
use serde_json::{json, Value};

fn invalid_token() -> Value {
    json!({"code": 401, "content": "Invalid device token"})
}

/// Registers `device` with `token` on a fresh connection and expects 401 + close 1008.
fn assert_refused(server: &Server, device: &str, token: &str, case: &str) {
    let mut client = Client::connect(server.addr);
    assert_eq!(client.register(device, token), invalid_token(), "case {case}");
    client.expect_close(1008);
    if token.len() >= 8 {
        server.assert_never_logged(token);
    }
}

/// A fresh device on the same server still registers and gets an actuation.
fn assert_still_serving(server: &Server, device: &str) {
    let mut d = Client::registered(server.addr, device, &Keys::shared().token(device));
    let (message, body) = actuation(ACTUATOR, device, r#""still":"serving""#);
    Client::connect(server.addr).send(&message);
    d.expect_delivery(device, &body);
}

#[test]
fn hostile_tokens_get_401_invalid_device_token_then_close_1008_and_are_never_logged() {
    let server = Server::start(ServerOpts::default());
    let keys = Keys::shared();
    let dev = "victim";
    let now = now_secs();
    let cases: Vec<(&str, String)> = vec![
        ("signed by another key", Keys::other().token(dev)),
        ("sub mismatch", keys.token("someone-else")),
        ("no sub", keys.sign_claims(&format!(r#"{{"exp":{}}}"#, now + 3600))),
        ("expired numeric exp", keys.sign_claims(&format!(r#"{{"sub":"{dev}","exp":{}}}"#, now - 3600))),
        ("expired ISO exp", keys.sign_claims(&format!(r#"{{"sub":"{dev}","exp":"2020-01-01T00:00:00.000Z"}}"#))),
        ("nbf in the future", keys.token_not_yet_valid(dev)),
        ("nbf in the future, hand-built", keys.sign_claims(&format!(r#"{{"sub":"{dev}","nbf":{}}}"#, now + 3600))),
        ("alg none", alg_none(dev)),
        ("HS256 keyed with the public key PEM", hs256_with_public_key(&keys.public_pem, dev)),
        (
            "RS256 header, HS256-style body",
            keys.sign_raw(r#"{"alg":"HS256","typ":"JWT"}"#, &format!(r#"{{"sub":"{dev}"}}"#)),
        ),
        ("signature of another token", {
            let good = keys.token(dev);
            let other = keys.token("other");
            let sig = other.rsplit('.').next().unwrap().to_string();
            format!("{}.{sig}", good.rsplit_once('.').unwrap().0)
        }),
        ("tampered payload", {
            let good = keys.token(dev);
            let mut parts: Vec<String> = good.split('.').map(String::from).collect();
            parts[1] = iot_ws_tests::b64(format!(r#"{{"sub":"{dev}","exp":{}}}"#, now + 999_999).as_bytes());
            parts.join(".")
        }),
        ("garbage", "garbage-token-value".into()),
        ("three dots of nothing", "..".into()),
        ("base64 junk", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ2aWN0aW0ifQ.AAAA".into()),
        ("empty", String::new()),
        ("huge", "A".repeat(20_000)),
        ("unicode", "токен.🙂.ü".into()),
        ("claims not JSON", keys.sign_claims("not json")),
        ("exp as garbage string", keys.sign_claims(&format!(r#"{{"sub":"{dev}","exp":"soon"}}"#))),
    ];
    for (case, token) in &cases {
        assert_refused(&server, dev, token, case);
    }
    assert_still_serving(&server, "after-tokens");
    let refused = server.metric(r#"iot_ws_registrations_total{outcome="invalid_token"}"#).unwrap();
    assert!(refused >= cases.len() as f64, "metrics count {refused} refusals");
}

#[test]
fn the_platforms_token_shapes_are_accepted() {
    let server = Server::start(ServerOpts::default());
    let keys = Keys::shared();
    let cases = [
        ("iso-exp", r#"{"sub":"iso-exp","exp":"2099-11-24T10:00:00.000Z","iat":1700000000}"#.to_string()),
        ("no-exp", r#"{"sub":"no-exp"}"#.to_string()),
        ("frac-exp", format!(r#"{{"sub":"frac-exp","exp":{}.5}}"#, now_secs() + 3600)),
    ];
    for (device, claims) in &cases {
        let token = keys.sign_claims(claims);
        let mut client = Client::connect(server.addr);
        assert_eq!(client.register(device, &token), json!({"code": 200, "content": "Subscribed"}), "{claims}");
        server.assert_never_logged(&token);
    }
}

#[test]
fn wrong_actuator_credentials_get_401_then_close_1008_and_the_password_is_never_logged() {
    let server = Server::start(ServerOpts::default());
    let mut device = Client::registered(server.addr, "guarded", &Keys::shared().token("guarded"));
    let wrong =
        [("dashboard", "Wrong-Password-Xyz"), ("intruder", ACTUATOR.1), ("", ""), ("dashboard", "s3cret-Actuator-Pa5")];
    for creds in wrong {
        let (message, _) = actuation(creds, "guarded", r#""evil":true"#);
        let mut client = Client::connect(server.addr);
        client.send(&message);
        assert_eq!(client.recv_json(WAIT), json!({"code": 401, "content": "Invalid credentials"}), "{creds:?}");
        client.expect_close(1008);
        if creds.1.len() > 4 {
            server.assert_never_logged(creds.1);
        }
    }
    device.expect_silence(Duration::from_millis(200));
    server.assert_never_logged(ACTUATOR.1);
    let refused = server.metric(r#"iot_ws_actuations_total{outcome="refused"}"#).unwrap();
    assert!(refused >= 4.0, "metrics count {refused} refused actuations");
}

#[test]
fn without_configured_credentials_every_actuation_is_refused() {
    let server = Server::start(ServerOpts { actuator: None, ..ServerOpts::default() });
    let mut device = Client::registered(server.addr, "unreachable", &Keys::shared().token("unreachable"));
    for creds in [ACTUATOR, ("", "")] {
        let (message, _) = actuation(creds, "unreachable", "");
        let mut client = Client::connect(server.addr);
        client.send(&message);
        assert_eq!(client.recv_json(WAIT), json!({"code": 401, "content": "Invalid credentials"}));
        client.expect_close(1008);
    }
    device.expect_silence(Duration::from_millis(200));
    assert!(server.log().contains("every actuation is refused"), "{}", server.log());
}

#[test]
fn malformed_messages_get_401_wrong_message_format_then_close_1003() {
    let server = Server::start(ServerOpts::default());
    let token = Keys::shared().token("fmt");
    let cases = [
        "not json",
        "",
        "[]",
        "42",
        "\"device\"",
        "null",
        "{}",
        r#"{"type":"unknown"}"#,
        r#"{"type":null}"#,
        r#"{"type":1}"#,
        r#"{"type":"device"}"#,
        r#"{"type":"device","deviceId":"fmt"}"#,
        r#"{"type":"device","deviceToken":"x"}"#,
        r#"{"type":"device","deviceId":"","deviceToken":"x"}"#,
        r#"{"type":"device","deviceId":7,"deviceToken":"x"}"#,
        r#"{"type":"device","deviceId":"fmt","deviceToken":null}"#,
        r#"{"type":"device","type":"ping","deviceId":"fmt","deviceToken":"x"}"#,
        r#"{"type":"actuation"}"#,
        r#"{"type":"actuation","credentials":{"username":"dashboard","password":"x"}}"#,
        r#"{"type":"actuation","credentials":"dashboard","body":{"content":{"deviceId":"d"}}}"#,
        r#"{"type":"actuation","credentials":{"username":"u","password":"p"},"body":{}}"#,
        r#"{"type":"actuation","credentials":{"username":"u","password":"p"},"body":{"content":{}}}"#,
        r#"{"type":"actuation","credentials":{"username":"u","password":"p"},"body":[1]}"#,
        r#"{"type":"actuation","credentials":{"username":"u","password":"p"},"body":{"content":{"deviceId":"d"}},"ack":"yes"}"#,
        r#"{"type":"ping""#,
        r#"{"type":"ping"} trailing"#,
    ];
    for text in cases {
        let mut client = Client::connect(server.addr);
        client.send(text);
        assert_eq!(client.recv_json(WAIT), json!({"code": 401, "content": "Wrong message format"}), "message {text:?}");
        client.expect_close(1003);
    }
    // A registered device that sends garbage is closed too, and its binary frame as well.
    let mut device = Client::registered(server.addr, "fmt", &token);
    device.send_binary(b"\x00\x01");
    assert_eq!(device.recv_json(WAIT), json!({"code": 401, "content": "Wrong message format"}));
    device.expect_close(1003);
    assert_still_serving(&server, "after-format");
    let rejected = server.metric("iot_ws_messages_rejected_total").unwrap();
    assert!(rejected >= cases.len() as f64, "metrics count {rejected} rejected messages");
}

//! The platform's own client library, WebSocket-Node (npm `websocket`), against the server:
//! through `tests/node/bridge.js`. Needs `node` and `npm` (the harness runs `npm ci` in
//! tests/node when `node_modules` is missing).

use std::time::Duration;

use iot_ws_tests::{
    ack_delivered, actuation, actuation_ack, delivery, Bridge, Client, Keys, Server, ServerOpts, ACTUATOR, WAIT,
};
use serde_json::{json, Value};

fn event_of(id: &'static str, kind: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["id"] == id && e["event"] == kind
}

fn open(bridge: &mut Bridge, id: &'static str, server: &Server) {
    bridge.command(json!({"op": "connect", "id": id, "url": server.url(), "protocol": "echo-protocol"}));
    let opened = bridge.wait(WAIT, |e| e["id"] == id && (e["event"] == "open" || e["event"] == "connect_failed"));
    assert_eq!(opened["event"], "open", "{opened}");
    assert_eq!(opened["protocol"], "echo-protocol");
}

fn message_text(bridge: &mut Bridge, id: &'static str) -> String {
    let event = bridge.wait(WAIT, event_of(id, "message"));
    event["text"].as_str().unwrap_or_else(|| panic!("not text: {event}")).to_string()
}

#[test]
fn websocket_node_device_registers_gets_a_pong_and_receives_an_actuation() {
    let server = Server::start(ServerOpts::default());
    let mut bridge = Bridge::start();
    open(&mut bridge, "device", &server);
    let token = Keys::shared().token("node-device");
    let register = json!({"type": "device", "deviceId": "node-device", "deviceToken": token}).to_string();
    bridge.command(json!({"op": "send", "id": "device", "text": register}));
    assert_eq!(message_text(&mut bridge, "device"), r#"{"code":200,"content":"Subscribed"}"#);
    bridge.command(json!({"op": "send", "id": "device", "text": r#"{"type":"ping"}"#}));
    assert_eq!(message_text(&mut bridge, "device"), r#"{"code":202,"content":"PONG"}"#);

    // From a Rust dashboard...
    let (message, body) = actuation(ACTUATOR, "node-device", r#""v":1.50,"s":"\u00e9""#);
    Client::connect(server.addr).send(&message);
    assert_eq!(message_text(&mut bridge, "device"), delivery(&body));

    // ...and from a WebSocket-Node dashboard, with a body large enough to be fragmented.
    open(&mut bridge, "dashboard", &server);
    let pad = "x".repeat(40_000);
    let (message, body) = actuation(ACTUATOR, "node-device", &format!(r#""pad":"{pad}""#));
    bridge.command(json!({"op": "send", "id": "dashboard", "text": message}));
    assert_eq!(message_text(&mut bridge, "device"), delivery(&body));

    bridge.command(json!({"op": "close", "id": "device", "code": 1000}));
    let closed = bridge.wait(WAIT, event_of("device", "close"));
    assert_eq!(closed["code"], 1000, "{closed}");
    server.assert_never_logged(&token);
}

#[test]
fn websocket_node_dashboard_actuation_reaches_a_rust_device() {
    let server = Server::start(ServerOpts::default());
    let mut device = Client::registered(server.addr, "rust-device", &Keys::shared().token("rust-device"));
    let mut bridge = Bridge::start();
    open(&mut bridge, "dashboard", &server);
    let (acked, body) = actuation_ack("rust-device", r#""zeta":2,"alpha":[1.0,"\ud83d\ude00"]"#);
    bridge.command(json!({"op": "send", "id": "dashboard", "text": acked}));
    device.expect_delivery("rust-device", &body);
    let ack: Value = serde_json::from_str(&message_text(&mut bridge, "dashboard")).unwrap();
    assert_eq!(ack, ack_delivered("rust-device"));
}

#[test]
fn websocket_node_without_echo_protocol_fails_the_handshake() {
    let server = Server::start(ServerOpts::default());
    let mut bridge = Bridge::start();
    bridge.command(json!({"op": "connect", "id": "bare", "url": server.url(), "protocol": null}));
    let event = bridge.wait(WAIT, |e| e["id"] == "bare" && (e["event"] == "open" || e["event"] == "connect_failed"));
    assert_eq!(event["event"], "connect_failed", "{event}");
}

#[test]
fn websocket_node_bad_token_sees_401_and_close_1008() {
    let server = Server::start(ServerOpts::default());
    // Minted first: the first use of another key pair generates it, which can take longer than
    // a pending connection may live on a loaded machine.
    let token = Keys::other().token("node-victim");
    let mut bridge = Bridge::start();
    open(&mut bridge, "device", &server);
    let register = json!({"type": "device", "deviceId": "node-victim", "deviceToken": token}).to_string();
    bridge.command(json!({"op": "send", "id": "device", "text": register}));
    assert_eq!(message_text(&mut bridge, "device"), r#"{"code":401,"content":"Invalid device token"}"#);
    let closed = bridge.wait(Duration::from_secs(10), event_of("device", "close"));
    assert_eq!(closed["code"], 1008, "{closed}");
}

//! Registration, bindings in PostgreSQL, actuation delivery, supersede, timeouts and acks.

use std::io::Write;
use std::time::Duration;

use iot_ws_tests::{
    ack_delivered, ack_not_connected, actuation, actuation_ack, frame, Client, Cluster, Db, Event, Keys, Server,
    ServerOpts, ACTUATOR, WAIT,
};
use serde_json::json;

fn server_with_db() -> (Server, Db) {
    let db = Cluster::shared().create_db();
    let server = Server::start(ServerOpts::default().with_db(&db.url()));
    (server, db)
}

#[test]
fn device_registers_200_and_its_binding_row_is_true_with_the_external_address() {
    let (server, db) = server_with_db();
    let token = Keys::shared().token("reg-1");
    let _device = Client::registered(server.addr, "reg-1", &token);
    assert_eq!(db.binding("reg-1"), Some((true, "10.1.2.3:5000".into())));
    let mut client = db.client();
    let row = client
        .query_one(r#"SELECT type::text, "lastConnectedAt" IS NOT NULL FROM dashboard."connectionBindings" WHERE "deviceId" = 'reg-1'"#, &[])
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "ws");
    assert!(row.get::<_, bool>(1));
    server.assert_never_logged(&token);
}

#[test]
fn actuation_reaches_the_device_byte_for_byte() {
    let (server, _db) = server_with_db();
    let mut device = Client::registered(server.addr, "byte-dev", &Keys::shared().token("byte-dev"));
    let extra = r#""zeta":1.50,"alpha":{"b":2,"a":1},"s":"caf\u00e9 \ud83d\ude00","n":[1e3,-0.0,12345678901234567890],"t":true"#;
    let (message, body) = actuation(ACTUATOR, "byte-dev", extra);
    let mut dashboard = Client::connect(server.addr);
    dashboard.send(&message);
    device.expect_delivery("byte-dev", &body);
    // The dashboard hears nothing when it did not ask for an ack.
    dashboard.expect_silence(Duration::from_millis(300));
    server.assert_never_logged(ACTUATOR.1);
}

#[test]
fn ping_before_registration_gets_202_pong() {
    let (server, _db) = server_with_db();
    let mut client = Client::connect(server.addr);
    assert_eq!(client.ping(), json!({"code": 202, "content": "PONG"}));
    // Still open and usable: it can register afterwards.
    assert_eq!(
        client.register("pinger", &Keys::shared().token("pinger")),
        json!({"code": 200, "content": "Subscribed"})
    );
    assert_eq!(client.ping(), json!({"code": 202, "content": "PONG"}));
}

/// The server renews a connection's WebSocket state after its first frame when that frame is
/// all it has read (to drop the buffer the token grew; connection/mod.rs, `Rebuild`): whatever
/// the device sent behind it, at once or in pieces, is still read and answered.
#[test]
fn frames_behind_a_registration_are_answered_however_the_bytes_arrive() {
    let server = Server::start(ServerOpts::default());
    let registration = |device: &str| {
        let token = Keys::shared().token(device);
        json!({"type": "device", "deviceId": device, "deviceToken": token}).to_string()
    };
    let subscribed = json!({"code": 200, "content": "Subscribed"});
    let pong = json!({"code": 202, "content": "PONG"});

    // The registration and a ping in one write: the ping waits inside the WebSocket state.
    let mut together = Client::connect(server.addr);
    let mut bytes = frame(true, 1, registration("burst-1").as_bytes(), true);
    bytes.extend(frame(true, 1, br#"{"type":"ping"}"#, true));
    together.stream().write_all(&bytes).unwrap();
    assert_eq!(together.recv_json(WAIT), subscribed);
    assert_eq!(together.recv_json(WAIT), pong);

    // The registration in two writes, the second with the start of a ping: the ping's first
    // bytes wait in the state, its last ones come later.
    let mut pieces = Client::connect(server.addr);
    let first = frame(true, 1, registration("burst-2").as_bytes(), true);
    let ping = frame(true, 1, br#"{"type":"ping"}"#, true);
    pieces.stream().write_all(&first[..100]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    pieces.stream().write_all(&[&first[100..], &ping[..5]].concat()).unwrap();
    assert_eq!(pieces.recv_json(WAIT), subscribed);
    std::thread::sleep(Duration::from_millis(50));
    pieces.stream().write_all(&ping[5..]).unwrap();
    assert_eq!(pieces.recv_json(WAIT), pong);

    // The registration alone, then a ping and an actuation later.
    let mut alone = Client::registered_on(&server, "burst-3");
    assert_eq!(alone.ping(), pong);
    for (device, client) in [("burst-1", &mut together), ("burst-2", &mut pieces), ("burst-3", &mut alone)] {
        let (message, body) = actuation(ACTUATOR, device, r#""n":1"#);
        Client::connect(server.addr).send(&message);
        client.expect_delivery(device, &body);
    }
}

#[test]
fn good_upgrade_answers_with_echo_protocol() {
    let (server, _db) = server_with_db();
    let client = Client::connect(server.addr);
    assert_eq!(client.response.status(), 101);
    let protocol = client.response.headers().get("Sec-WebSocket-Protocol").map(|v| v.to_str().unwrap().to_string());
    assert_eq!(protocol.as_deref(), Some("echo-protocol"));
}

#[test]
fn newer_registration_supersedes_the_old_connection_and_the_row_stays_true() {
    let (server, db) = server_with_db();
    let token = Keys::shared().token("twice");
    let mut old = Client::registered(server.addr, "twice", &token);
    let mut new = Client::registered(server.addr, "twice", &token);
    old.expect_close(1000);
    // The old connection's end must not mark the device disconnected.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(db.binding("twice"), Some((true, "10.1.2.3:5000".into())));
    // Actuations go to the new connection.
    let (message, body) = actuation(ACTUATOR, "twice", r#""n":1"#);
    Client::connect(server.addr).send(&message);
    new.expect_delivery("twice", &body);
}

#[test]
fn device_disconnect_sets_its_row_false() {
    let (server, db) = server_with_db();
    let mut device = Client::registered(server.addr, "leaver", &Keys::shared().token("leaver"));
    assert!(db.wait_binding("leaver", true));
    device.close(1000);
    assert!(db.wait_binding("leaver", false), "row still {:?}", db.binding("leaver"));

    let other = Client::registered(server.addr, "dropper", &Keys::shared().token("dropper"));
    other.drop_tcp();
    assert!(db.wait_binding("dropper", false), "row still {:?}", db.binding("dropper"));
}

#[test]
fn register_timeout_closes_an_idle_unregistered_connection_but_not_a_registered_device() {
    let db = Cluster::shared().create_db();
    let server = Server::start(ServerOpts::default().with_db(&db.url()).arg("--register-timeout-secs", "1"));
    let mut idle = Client::connect(server.addr);
    let mut device = Client::registered(server.addr, "patient", &Keys::shared().token("patient"));
    idle.expect_close(1000);
    device.expect_silence(Duration::from_millis(2_500));
    assert_eq!(device.ping(), json!({"code": 202, "content": "PONG"}));
    assert_eq!(db.binding("patient").map(|b| b.0), Some(true));
}

#[test]
fn ack_actuation_gets_exactly_one_reply_per_outcome() {
    let (server, _db) = server_with_db();
    let mut dashboard = Client::connect(server.addr);

    let mut device = Client::registered(server.addr, "acked", &Keys::shared().token("acked"));
    let (message, body) = actuation_ack("acked", r#""k":1"#);
    dashboard.send(&message);
    assert_eq!(dashboard.recv_json(WAIT), ack_delivered("acked"));
    device.expect_delivery("acked", &body);

    let (message, _) = actuation_ack("nobody-here", r#""k":2"#);
    dashboard.send(&message);
    assert_eq!(dashboard.recv_json(WAIT), ack_not_connected("nobody-here"));

    // Exactly one reply each: nothing more follows.
    dashboard.expect_silence(Duration::from_millis(300));
}

#[test]
fn actuations_for_a_device_that_just_left_are_held_and_delivered_in_order_when_it_returns() {
    let (server, _db) = server_with_db();
    let token = Keys::shared().token("returner");
    let mut device = Client::registered(server.addr, "returner", &token);
    device.close(1000);
    device.finish_close();
    // The hub learns of the departure asynchronously: wait until an ack says Held.
    let mut dashboard = Client::connect(server.addr);
    let mut bodies = Vec::new();
    for i in 0..3 {
        let (message, body) = actuation_ack("returner", &format!(r#""seq":{i}"#));
        dashboard.send(&message);
        let reply = dashboard.recv_json(WAIT);
        assert_eq!(reply, json!({"code": 202, "content": "Held", "deviceId": "returner"}), "actuation {i}");
        bodies.push(body);
    }
    let mut back = Client::connect(server.addr);
    assert_eq!(back.register("returner", &token), json!({"code": 200, "content": "Subscribed"}));
    for body in &bodies {
        back.expect_delivery("returner", body);
    }
    match back.recv(Duration::from_millis(300)) {
        Event::Timeout => {}
        other => panic!("nothing more expected, got {other:?}"),
    }
}

/// The server sends a WebSocket ping every 20 s and drops a peer silent for 10 s after one (its
/// binding goes false); a peer that answers stays. The intervals are the protocol's, not
/// settings, so this takes about 35 s.
#[test]
fn a_peer_silent_after_a_ping_is_dropped_and_one_that_answers_stays() {
    let (server, db) = server_with_db();
    let mut silent = Client::registered(server.addr, "ka-silent", &Keys::shared().token("ka-silent"));
    let mut lively = Client::registered(server.addr, "ka-lively", &Keys::shared().token("ka-lively"));
    let start = std::time::Instant::now();
    // Reading is what answers pings (tungstenite sends the pong); the silent client never reads.
    while start.elapsed() < Duration::from_secs(35) {
        assert_eq!(lively.recv(Duration::from_millis(500)), Event::Timeout, "only pings, answered");
        if db.binding("ka-silent") == Some((false, "10.1.2.3:5000".into())) {
            break;
        }
    }
    let dropped_after = start.elapsed();
    assert_eq!(db.binding("ka-silent"), Some((false, "10.1.2.3:5000".into())), "silent peer still bound");
    assert!(dropped_after >= Duration::from_secs(25), "dropped after {dropped_after:?}, before a ping went unanswered");
    // What the silent client missed: the unanswered ping, then the end of the connection.
    assert!(matches!(silent.recv(WAIT), Event::Gone(_) | Event::Close(_)), "the server ended the connection");

    // The answering device is still there, past the point where the silent one was dropped.
    while start.elapsed() < Duration::from_secs(32) {
        assert_eq!(lively.recv(Duration::from_millis(500)), Event::Timeout);
    }
    assert_eq!(db.binding("ka-lively"), Some((true, "10.1.2.3:5000".into())));
    let (message, body) = actuation(ACTUATOR, "ka-lively", r#""after":"keepalive""#);
    Client::connect(server.addr).send(&message);
    lively.expect_delivery("ka-lively", &body);
}

//! A corpus of hostile messages, frames and HTTP requests. After each one a fresh device still
//! registers and gets an actuation from the same server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use iot_ws_tests::client::http_raw;
use iot_ws_tests::{
    ack_delivered, actuation, delivery, Client, Cluster, Db, Event, Keys, Server, ServerOpts, ACTUATOR, WAIT,
};
use serde_json::json;

type Case = (&'static str, fn(&Server));

/// The corpus server: PostgreSQL bindings, messages up to 200 000 bytes (so that 100k '[' is
/// judged as JSON, not as size).
fn corpus_server() -> (Server, Db) {
    let db = Cluster::shared().create_db();
    let server = Server::start(ServerOpts::default().with_db(&db.url()).arg("--max-message-bytes", "200000"));
    (server, db)
}

fn run_corpus(server: &Server, prefix: &str, cases: &[Case]) {
    for (i, (name, case)) in cases.iter().enumerate() {
        case(server);
        let device = format!("{prefix}-fresh-{i}");
        let mut d = Client::connect(server.addr);
        assert_eq!(
            d.register(&device, &Keys::shared().token(&device)),
            json!({"code": 200, "content": "Subscribed"}),
            "after {name}"
        );
        let (message, body) = actuation(ACTUATOR, &device, &format!(r#""after":{}"#, json!(name)));
        Client::connect(server.addr).send(&message);
        d.expect_delivery(&format!("after {name}"), &body);
    }
}

fn wrong_format_then(client: &mut Client, code: u16, what: &str) {
    assert_eq!(client.recv_json(WAIT), json!({"code": 401, "content": "Wrong message format"}), "{what}");
    client.expect_close(code);
}

fn sends_then_closed(server: &Server, text: &str, code: u16) {
    let mut c = Client::connect(server.addr);
    c.send(text);
    let shown: String = text.chars().take(80).collect();
    wrong_format_then(&mut c, code, &shown);
}

/// Sends raw frame bytes after a good handshake and expects a close with `code`.
fn raw_frames_then_close(server: &Server, frames: &[Vec<u8>], code: u16) {
    let mut c = Client::connect(server.addr);
    for f in frames {
        c.stream().write_all(f).expect("write raw frame");
    }
    match c.recv(WAIT) {
        Event::Close(got) => assert_eq!(got, Some(code), "close code for raw frames"),
        other => panic!("expected close {code}, got {other:?}"),
    }
}

fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    iot_ws_tests::frame(fin, opcode, payload, true)
}

fn registration_padded(device: &str, pad: usize) -> String {
    json!({"type": "device", "deviceId": device, "deviceToken": Keys::shared().token(device), "pad": "x".repeat(pad)})
        .to_string()
}

#[test]
fn hostile_frames_are_closed_with_the_rfc_codes_and_the_server_keeps_serving() {
    let (server, _db) = corpus_server();
    let cases: &[Case] = &[
        ("binary frame", |s| {
            let mut c = Client::connect(s.addr);
            c.send_binary(b"\x7b\x7d");
            wrong_format_then(&mut c, 1003, "binary");
        }),
        ("invalid UTF-8 text", |s| raw_frames_then_close(s, &[frame(true, 1, b"{\"type\":\"ping\xff\xfe\"}")], 1007)),
        ("invalid UTF-8 split across fragments", |s| {
            raw_frames_then_close(s, &[frame(false, 1, b"{\"a\":\"\xe2\x82"), frame(true, 0, b"\xff\"}")], 1007)
        }),
        ("message over --max-message-bytes", |s| {
            let mut c = Client::connect(s.addr);
            let _ = c.try_send(&"x".repeat(300_000));
            c.expect_close(1009);
        }),
        ("fragments adding up over the limit", |s| {
            let piece = vec![b'a'; 60_000];
            let frames =
                [frame(false, 1, &piece), frame(false, 0, &piece), frame(false, 0, &piece), frame(true, 0, &piece)];
            raw_frames_then_close(s, &frames, 1009);
        }),
        ("reserved opcode 3", |s| raw_frames_then_close(s, &[frame(true, 3, b"x")], 1002)),
        ("reserved control opcode 0xB", |s| raw_frames_then_close(s, &[frame(true, 0xB, b"")], 1002)),
        ("unmasked client frame", |s| {
            raw_frames_then_close(s, &[iot_ws_tests::frame(true, 1, br#"{"type":"ping"}"#, false)], 1002)
        }),
        ("RSV1 set without an extension", |s| {
            let mut f = frame(true, 1, br#"{"type":"ping"}"#);
            f[0] |= 0x40;
            raw_frames_then_close(s, &[f], 1002);
        }),
        ("continuation without a start", |s| raw_frames_then_close(s, &[frame(true, 0, b"x")], 1002)),
        ("new text frame inside a fragmented message", |s| {
            raw_frames_then_close(s, &[frame(false, 1, b"{\"type\""), frame(true, 1, b":\"ping\"}")], 1002)
        }),
        ("fragmented ping", |s| raw_frames_then_close(s, &[frame(false, 9, b"p")], 1002)),
        ("ping payload over 125 bytes", |s| raw_frames_then_close(s, &[frame(true, 9, &[0u8; 126])], 1002)),
        ("half a frame, then the TCP connection drops", |s| {
            let mut c = Client::connect(s.addr);
            let f = frame(true, 1, br#"{"type":"ping"}"#);
            c.stream().write_all(&f[..5]).unwrap();
            c.drop_tcp();
        }),
        ("frame header claiming 2^62 bytes", |s| {
            let mut c = Client::connect(s.addr);
            let mut header = vec![0x81u8, 0x80 | 127];
            header.extend_from_slice(&(1u64 << 62).to_be_bytes());
            header.extend_from_slice(&[1, 2, 3, 4]);
            c.stream().write_all(&header).unwrap();
            c.expect_close(1009);
        }),
        ("close frame with a reserved code", |s| {
            let mut c = Client::connect(s.addr);
            c.stream().write_all(&frame(true, 8, &999u16.to_be_bytes())).unwrap();
            match c.recv(WAIT) {
                Event::Close(code) => assert_eq!(code, Some(1002)),
                Event::Gone(_) => {}
                other => panic!("after a close 999: {other:?}"),
            }
        }),
    ];
    run_corpus(&server, "frames", cases);
}

#[test]
fn fragmented_message_above_16_kib_is_reassembled_and_accepted() {
    let (server, db) = corpus_server();
    let text = registration_padded("fragmented", 40_000);
    let bytes = text.as_bytes();
    let (a, rest) = bytes.split_at(16 * 1024);
    let (b, c) = rest.split_at(16 * 1024);
    let mut client = Client::connect(server.addr);
    let stream = client.stream();
    stream.write_all(&frame(false, 1, a)).unwrap();
    // A control frame may come between fragments.
    stream.write_all(&frame(true, 9, b"mid")).unwrap();
    stream.write_all(&frame(false, 0, b)).unwrap();
    stream.write_all(&frame(true, 0, c)).unwrap();
    assert_eq!(client.recv_json(WAIT), json!({"code": 200, "content": "Subscribed"}));
    assert!(db.wait_binding("fragmented", true));

    // An actuation fragmented the same way, with a large body, arrives whole and unchanged.
    let pad = "é".repeat(15_000);
    let (message, body) = actuation(ACTUATOR, "fragmented", &format!(r#""pad":"{pad}""#));
    let mut dashboard = Client::connect(server.addr);
    let chunks: Vec<&[u8]> = message.as_bytes().chunks(16 * 1024 + 1).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let opcode = if i == 0 { 1 } else { 0 };
        dashboard.stream().write_all(&frame(i + 1 == chunks.len(), opcode, chunk)).unwrap();
    }
    client.expect_delivery("fragmented", &body);
}

#[test]
fn hostile_messages_are_answered_and_the_server_keeps_serving() {
    let (server, db) = corpus_server();
    let cases: &[Case] = &[
        ("100k '['", |s| sends_then_closed(s, &"[".repeat(100_000), 1003)),
        ("100k '{\"a\":'", |s| sends_then_closed(s, &"{\"a\":".repeat(30_000), 1003)),
        ("deep nesting inside an actuation body", |s| {
            // Bodies are forwarded raw and unparsed: a deep one is delivered as it came (the
            // server neither recurses into it nor crashes).
            let mut d = Client::registered(s.addr, "deep", &Keys::shared().token("deep"));
            let deep = format!("{}1{}", "[".repeat(50_000), "]".repeat(50_000));
            let (message, body) = iot_ws_tests::actuation_ack("deep", &format!(r#""deep":{deep}"#));
            let mut c = Client::connect(s.addr);
            c.send(&message);
            assert_eq!(c.recv_json(WAIT), ack_delivered("deep"));
            assert!(d.recv_text(WAIT) == delivery(&body), "deep body changed");
        }),
        ("deep nesting in an ignored field", |s| {
            let deep = format!(r#"{{"type":"ping","x":{}{}}}"#, "[".repeat(50_000), "]".repeat(50_000));
            let mut c = Client::connect(s.addr);
            c.send(&deep);
            assert_eq!(c.recv_json(WAIT), json!({"code": 202, "content": "PONG"}));
        }),
        ("huge exponent", |s| {
            // Bodies are forwarded raw: a number no float can hold is still the dashboard's text.
            let mut d = Client::registered(s.addr, "numbers", &Keys::shared().token("numbers"));
            let extra = r#""big":123456789012345678901234567890123456789,"tiny":1e-999999,"huge":-1E+999999"#;
            let (message, body) = actuation(ACTUATOR, "numbers", extra);
            Client::connect(s.addr).send(&message);
            d.expect_delivery("numbers", &body);
        }),
        ("huge number as the message", |s| sends_then_closed(s, &"9".repeat(150_000), 1003)),
        ("raw NUL in a string", |s| sends_then_closed(s, "{\"type\":\"ping\u{0}\"}", 1003)),
        ("NUL after the object", |s| sends_then_closed(s, "{\"type\":\"ping\"}\u{0}", 1003)),
        ("escaped NUL in a device id", |s| {
            // Not an id the platform's column can hold: refused before any token check or
            // database write (issue 9, rule 7).
            let device = "nul\u{0}dev";
            let token = Keys::shared().sign_claims(&json!({"sub": device}).to_string());
            let mut c = Client::connect(s.addr);
            let reply = c.register(device, &token);
            assert_eq!(reply, json!({"code": 401, "content": "Wrong message format"}));
            c.expect_close(1003);
        }),
        ("escaped NUL in an actuation body", |s| {
            let mut d = Client::registered(s.addr, "nul-body", &Keys::shared().token("nul-body"));
            let (message, body) = actuation(ACTUATOR, "nul-body", r#""v":"a\u0000b""#);
            Client::connect(s.addr).send(&message);
            d.expect_delivery("nul-body", &body);
        }),
        ("__proto__ and constructor device ids", |s| {
            for device in ["__proto__", "constructor", "hasOwnProperty", "toString", "prototype"] {
                let mut d = Client::registered(s.addr, device, &Keys::shared().token(device));
                let (message, body) = actuation(ACTUATOR, device, r#""__proto__":{"admin":true}"#);
                Client::connect(s.addr).send(&message);
                d.expect_delivery(device, &body);
            }
        }),
        ("actuation for __proto__ when nobody is connected", |s| {
            let mut c = Client::connect(s.addr);
            let (message, _) = iot_ws_tests::actuation_ack("valueOf", "");
            c.send(&message);
            assert_eq!(c.recv_json(WAIT)["code"], 500);
        }),
        ("device id too long for varchar(255)", |s| {
            let device = "L".repeat(256);
            let mut c = Client::connect(s.addr);
            let reply = c.register(&device, &Keys::shared().token(&device));
            assert_eq!(reply, json!({"code": 401, "content": "Wrong message format"}));
            c.expect_close(1003);
        }),
        ("empty text message", |s| sends_then_closed(s, "", 1003)),
        ("duplicate keys", |s| sends_then_closed(s, r#"{"type":"ping","type":"ping"}"#, 1003)),
        ("BOM before the object", |s| sends_then_closed(s, "\u{feff}{\"type\":\"ping\"}", 1003)),
        ("a thousand pings", |s| {
            let mut c = Client::connect(s.addr);
            for _ in 0..1_000 {
                c.send(r#"{"type":"ping"}"#);
            }
            for i in 0..1_000 {
                assert_eq!(c.recv_json(WAIT), json!({"code": 202, "content": "PONG"}), "pong {i}");
            }
        }),
        ("registering under a second id on a registered connection", |s| {
            let mut c = Client::registered(s.addr, "first-id", &Keys::shared().token("first-id"));
            c.send(
                &json!({"type": "device", "deviceId": "second-id", "deviceToken": Keys::shared().token("second-id")})
                    .to_string(),
            );
            wrong_format_then(&mut c, 1003, "second id");
        }),
    ];
    run_corpus(&server, "messages", cases);
    // Nothing above left a connected row behind, except for the devices still connected.
    let mut client = db.client();
    let stuck: i64 = client
        .query_one(r#"SELECT count(*) FROM dashboard."connectionBindings" WHERE "connectingStatus" AND "deviceId" LIKE 'nul%'"#, &[])
        .unwrap()
        .get(0);
    assert_eq!(stuck, 0);
}

fn raw_tcp(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

#[test]
fn hostile_http_is_answered_without_upgrading_and_the_server_keeps_serving() {
    let (server, _db) = corpus_server();
    let cases: &[Case] = &[
        ("GET / without upgrade", |s| {
            let (status, head, _) = http_raw(s.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(status, 404, "{head}");
        }),
        ("POST without upgrade", |s| {
            assert_eq!(http_raw(s.addr, b"POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n").0, 404)
        }),
        ("GET /health", |s| {
            let (status, _, body) = http_raw(s.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!((status, body.as_str()), (200, "ok\n"));
        }),
        ("GET /metrics", |s| {
            let (status, head, body) = http_raw(s.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(status, 200);
            assert!(head.to_ascii_lowercase().contains("content-type: text/plain"), "{head}");
            for name in [
                "iot_ws_connections ",
                "iot_ws_registered_devices ",
                "iot_ws_registrations_total{outcome=\"ok\"} ",
                "iot_ws_registrations_total{outcome=\"invalid_token\"} ",
                "iot_ws_registrations_total{outcome=\"store_failed\"} ",
                "iot_ws_actuations_total{outcome=\"delivered\"} ",
                "iot_ws_actuations_total{outcome=\"not_connected\"} ",
                "iot_ws_actuations_total{outcome=\"refused\"} ",
                "iot_ws_messages_rejected_total ",
                "# TYPE iot_ws_registrations_total counter",
            ] {
                assert!(body.contains(name), "metrics lack {name:?}:\n{body}");
            }
        }),
        ("upgrade without a subprotocol", |s| upgrade_refused(s, None)),
        ("upgrade offering another subprotocol", |s| upgrade_refused(s, Some("chat"))),
        ("upgrade offering Echo-Protocol in another case", |s| upgrade_refused(s, Some("Echo-Protocol"))),
        ("upgrade with a wrong version", |s| {
            let req = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: echo-protocol\r\n\r\n";
            let (status, head, _) = http_raw(s.addr, req);
            assert!((400..500).contains(&status), "{head}");
        }),
        ("garbage before the handshake", |s| {
            let answer = raw_tcp(s.addr, b"\x00\xffgarbage\r\n\r\nGET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
            let text = String::from_utf8_lossy(&answer);
            assert!(!text.contains(" 101 "), "{text}");
            assert!(text.is_empty() || text.starts_with("HTTP/1.1 4"), "{text}");
        }),
        ("a TLS client hello", |s| {
            let answer = raw_tcp(s.addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
            assert!(!String::from_utf8_lossy(&answer).contains(" 101 "));
        }),
        ("a request head over 8 KiB", |s| {
            let mut req = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
            req.extend(std::iter::repeat_n(b'p', 20_000));
            req.extend_from_slice(b"\r\n\r\n");
            let answer = raw_tcp(s.addr, &req);
            let text = String::from_utf8_lossy(&answer);
            assert!(text.is_empty() || text.starts_with("HTTP/1.1 4"), "{text}");
        }),
        ("a connection that says nothing and leaves", |s| {
            drop(TcpStream::connect_timeout(&s.addr, WAIT).unwrap());
        }),
    ];
    run_corpus(&server, "http", cases);
}

fn upgrade_refused(server: &Server, protocol: Option<&str>) {
    match Client::connect_offering(server.addr, protocol) {
        Ok(_) => panic!("upgrade offering {protocol:?} was accepted"),
        Err(tungstenite::Error::Http(response)) => {
            assert!(response.status().is_client_error(), "status {}", response.status());
            assert_ne!(response.status(), 101);
        }
        Err(e) => panic!("expected an HTTP 4xx, got {e}"),
    }
}

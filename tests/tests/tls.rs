//! wss:// and https:// on the TLS listener (`--tls-cert`/`--tls-key`), with a throwaway CA:
//! real clients (tungstenite over rustls, WebSocket-Node) register, get their pong and receive
//! actuations byte for byte; clear text is refused; a client stalling in the handshake is pending
//! and closed at the register timeout; SIGHUP swaps the certificate for new connections only.

use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use iot_ws_tests::client::{http_raw, tcp_with_recv_buffer};
use iot_ws_tests::{
    ack_delivered, actuation_ack, delivery, eventually, https_raw, run_to_exit, tls_over, Bridge, Ca, CliProcess,
    Client, Keys, Server, ServerOpts, TempDir, ACTUATOR, WAIT,
};
use serde_json::json;

/// The names the test certificates are for; clients check `localhost`.
const NAMES: &[&str] = &["localhost", "127.0.0.1"];

/// A server on a certificate of its own CA, and where the pair lives (for a reload).
struct TlsServer {
    server: Server,
    ca: Ca,
    cert: PathBuf,
    key: PathBuf,
    _dir: TempDir,
}

impl TlsServer {
    fn start(opts: ServerOpts) -> TlsServer {
        let dir = TempDir::new("tls");
        let ca = Ca::new("iot-ws test CA");
        let (cert, key, _) = ca.write(dir.path(), "server", NAMES);
        let opts = opts.arg("--tls-cert", &cert.display().to_string()).arg("--tls-key", &key.display().to_string());
        let server = Server::start(opts);
        TlsServer { server, ca, cert, key, _dir: dir }
    }

    fn ca_pem(&self) -> String {
        self.ca.cert_pem()
    }

    fn device(&self, device: &str) -> Client<iot_ws_tests::TlsWire> {
        let token = Keys::shared().token(device);
        Client::registered_tls(self.server.addr, "localhost", &self.ca_pem(), device, &token)
    }

    fn https_get(&self, path: &str) -> (u16, String) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        https_raw(self.server.addr, "localhost", &self.ca_pem(), request.as_bytes()).expect("https")
    }

    fn metric(&self, name_and_labels: &str) -> Option<f64> {
        let (status, body) = self.https_get("/metrics");
        assert_eq!(status, 200, "{body}");
        body.lines().find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

#[test]
fn a_device_registers_over_wss_gets_its_pong_and_an_actuation_byte_for_byte() {
    let tls = TlsServer::start(ServerOpts::default());
    let mut device = tls.device("tls-device");
    assert_eq!(device.ping(), json!({"code": 202, "content": "PONG"}));

    let mut dashboard = Client::connect_tls(tls.server.addr, "localhost", &tls.ca_pem()).expect("dashboard over wss");
    // Multi-byte text, escapes and a body past one TLS record (16 KiB).
    let pad = "é\\u00e9".repeat(6_000);
    let (message, body) = actuation_ack("tls-device", &format!(r#""led":"on","pad":"{pad}""#));
    dashboard.send(&message);
    device.expect_delivery("device over wss", &body);
    assert_eq!(dashboard.recv_json(WAIT), ack_delivered("tls-device"));

    assert_eq!(tls.https_get("/health"), (200, "ok\n".to_string()));
    tls.server.assert_never_logged(&Keys::shared().token("tls-device"));
}

#[test]
fn websocket_node_registers_over_wss_and_receives_an_actuation() {
    let tls = TlsServer::start(ServerOpts::default());
    let mut bridge = Bridge::start();
    let url = format!("wss://localhost:{}/", tls.server.addr.port());
    bridge.command(json!({"op": "connect", "url": url, "protocol": "echo-protocol", "ca": tls.ca_pem()}));
    let opened = bridge.wait(WAIT, |e| e["event"] == "open" || e["event"] == "connect_failed");
    assert_eq!(opened["event"], "open", "{opened}");
    let token = Keys::shared().token("node-tls");
    let register = json!({"type": "device", "deviceId": "node-tls", "deviceToken": token}).to_string();
    bridge.command(json!({"op": "send", "text": register}));
    let text =
        |bridge: &mut Bridge| bridge.wait(WAIT, |e| e["event"] == "message")["text"].as_str().unwrap().to_string();
    assert_eq!(text(&mut bridge), r#"{"code":200,"content":"Subscribed"}"#);
    bridge.command(json!({"op": "send", "text": r#"{"type":"ping"}"#}));
    assert_eq!(text(&mut bridge), r#"{"code":202,"content":"PONG"}"#);

    let mut dashboard = Client::connect_tls(tls.server.addr, "localhost", &tls.ca_pem()).expect("dashboard");
    let (message, body) = actuation_ack("node-tls", r#""v":1.50,"s":"\u00e9""#);
    dashboard.send(&message);
    assert_eq!(text(&mut bridge), delivery(&body));
    assert_eq!(dashboard.recv_json(WAIT), ack_delivered("node-tls"));
}

#[test]
fn clear_text_to_the_tls_port_gets_no_answer_and_is_counted() {
    let tls = TlsServer::start(ServerOpts::default());
    let addr = tls.server.addr;
    let (status, head, _) = http_raw(addr, b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!((status, head.contains("ok")), (0, false), "plain HTTP answered: {head}");
    assert!(Client::connect_offering(addr, Some("echo-protocol")).is_err(), "plain ws:// to the TLS port worked");
    // A client that does not trust the server's CA does not get in either.
    let stranger = Ca::new("another CA");
    assert!(Client::connect_tls(addr, "localhost", &stranger.cert_pem()).is_err());
    let failed = eventually(WAIT, || tls.metric("iot_ws_tls_handshake_failures_total").filter(|n| *n >= 3.0));
    assert_eq!(failed, Some(3.0));
}

#[test]
fn a_client_stalling_in_the_tls_handshake_is_pending_until_the_register_timeout() {
    let tls = TlsServer::start(ServerOpts::default().arg("--register-timeout-secs", "1"));
    // Only the metrics request itself is pending while it is answered.
    assert_eq!(tls.metric("iot_ws_pending_connections"), Some(1.0));
    let mut stalled = TcpStream::connect(tls.server.addr).expect("connect");
    assert_eq!(eventually(WAIT, || tls.metric("iot_ws_pending_connections").filter(|n| *n == 2.0)), Some(2.0));
    stalled.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 64];
    // The server ends it without a byte: no TLS handshake was ever started.
    assert!(matches!(stalled.read(&mut buf), Ok(0)), "the stalled client was not closed");
    assert_eq!(tls.metric("iot_ws_pending_connections"), Some(1.0));
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections_and_keeps_open_ones() {
    let mut tls = TlsServer::start(ServerOpts::default());
    let old_ca = tls.ca_pem();
    let mut device = tls.device("reload-device");

    // A new pair from another CA, written over the files; SIGHUP.
    let new_ca = Ca::new("iot-ws rotated CA");
    let dir = tls.cert.parent().unwrap().to_path_buf();
    let (cert, key, _) = new_ca.write(&dir, "server", NAMES);
    assert_eq!((&cert, &key), (&tls.cert, &tls.key));
    assert!(Client::connect_tls(tls.server.addr, "localhost", &new_ca.cert_pem()).is_err(), "new pair before reload");
    tls.server.signal(libc::SIGHUP);
    tls.server.wait_for_log("TLS certificate reloaded", WAIT).expect("reload logged");
    tls.ca = new_ca;

    // New handshakes get the new pair; the old CA no longer matches; the open connection stays.
    let mut renewed = tls.device("renewed-device");
    assert_eq!(renewed.ping(), json!({"code": 202, "content": "PONG"}));
    assert!(Client::connect_tls(tls.server.addr, "localhost", &old_ca).is_err(), "old pair after reload");
    assert_eq!(device.ping(), json!({"code": 202, "content": "PONG"}));

    // A broken key file: the reload fails, says why, and the pair in use stays.
    std::fs::write(&tls.key, "not a key").unwrap();
    tls.server.signal(libc::SIGHUP);
    let kept = tls.server.wait_for_log("TLS certificate kept", WAIT).expect("failed reload logged");
    assert!(kept.contains("--tls-key") && kept.contains(&tls.key.display().to_string()), "{kept}");
    let mut after = tls.device("after-bad-reload");
    assert_eq!(after.ping(), json!({"code": 202, "content": "PONG"}));
    assert_eq!(tls.metric(r#"iot_ws_tls_reloads_total{outcome="ok"}"#), Some(1.0));
    assert_eq!(tls.metric(r#"iot_ws_tls_reloads_total{outcome="failed"}"#), Some(1.0));
    assert!(tls.server.wait_exit(Duration::from_millis(100)).is_none(), "SIGHUP must not stop the server");
}

#[test]
fn bad_tls_settings_are_one_line_and_exit_2() {
    let dir = TempDir::new("tls-config");
    let ca = Ca::new("config CA");
    let (cert, key, _) = ca.write(dir.path(), "server", NAMES);
    let (other_cert, _, _) = Ca::new("other CA").write(dir.path(), "other", NAMES);
    let public_key = Keys::shared().public_path().display().to_string();
    let path = |p: &PathBuf| p.display().to_string();
    let missing = dir.path().join("missing.pem");
    let cases: Vec<(Vec<String>, String)> = vec![
        (vec!["--tls-cert".into(), path(&cert)], "--tls-cert and --tls-key go together".into()),
        (
            vec!["--tls-cert".into(), path(&missing), "--tls-key".into(), path(&key)],
            format!("--tls-cert {}", path(&missing)),
        ),
        (vec!["--tls-cert".into(), path(&key), "--tls-key".into(), path(&key)], "no CERTIFICATE".into()),
        (vec!["--tls-cert".into(), path(&cert), "--tls-key".into(), path(&cert)], "--tls-key".into()),
        (vec!["--tls-cert".into(), path(&other_cert), "--tls-key".into(), path(&key)], "not a usable pair".into()),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["--listen", "127.0.0.1:0", "--public-key", &public_key];
        args.extend(flags.iter().map(String::as_str));
        let (status, _, stderr) = run_to_exit(&args, &[], WAIT);
        assert_eq!(status.and_then(|s| s.code()), Some(2), "{flags:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{flags:?}: one line: {stderr}");
        assert!(stderr.contains(&expected), "{flags:?}: {stderr}");
    }
}

#[test]
fn a_device_reading_slowly_over_wss_gets_every_byte_once_it_reads() {
    // More than the kernel's buffers hold on loopback (up to 4 MiB sent, 8 KiB received), so
    // the server's queue and the TLS records it holds back up until the device reads.
    let tls = TlsServer::start(ServerOpts::default().arg("--send-queue-bytes", "16777216"));
    let tcp = tcp_with_recv_buffer(tls.server.addr, 4096).expect("connect");
    let wire = tls_over(tcp, "localhost", &tls.ca_pem()).expect("tls");
    let mut device = Client::handshake_tls(wire, "localhost").expect("wss handshake");
    let token = Keys::shared().token("slow-tls");
    assert_eq!(device.register("slow-tls", &token), json!({"code": 200, "content": "Subscribed"}));

    let mut dashboard = Client::connect_tls(tls.server.addr, "localhost", &tls.ca_pem()).expect("dashboard");
    let pad = "z".repeat(20_000);
    let bodies: Vec<String> = (0..300)
        .map(|n| {
            let (message, body) = actuation_ack("slow-tls", &format!(r#""n":{n},"pad":"{pad}""#));
            dashboard.send(&message);
            body
        })
        .collect();
    for body in &bodies {
        device.expect_delivery("slow reader over wss", body);
    }
    for _ in &bodies {
        assert_eq!(dashboard.recv_json(WAIT), ack_delivered("slow-tls"));
    }
}

#[test]
fn the_command_line_device_and_actuate_speak_wss_trusting_the_given_ca() {
    let tls = TlsServer::start(ServerOpts::default());
    let dir = TempDir::new("tls-cli");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, tls.ca_pem()).unwrap();
    let ca = ca.display().to_string();
    let url = format!("wss://localhost:{}/", tls.server.addr.port());
    let token = Keys::shared().token("cli-tls");
    let device_args = ["device", "--url", &url, "--ca", &ca, "--device-id", "cli-tls", "--token", &token];
    let mut device = CliProcess::start(&device_args, &[]);
    device.wait_for_stderr_count("registered", 1);

    let content = r#"{"led":"on","s":"\u00e9"}"#;
    let (user, password) = ACTUATOR;
    let actuate = ["actuate", "--url", &url, "--ca", &ca, "--device-id", "cli-tls", "--content", content];
    let credentials = ["--username", user, "--password", password];
    let (status, stdout, stderr) = run_to_exit(&[&actuate[..], &credentials].concat(), &[], WAIT * 2);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{stderr}");
    assert!(stdout.contains("Delivered"), "{stdout}");
    let delivered = device.wait_for_stdout_lines(1);
    assert_eq!(delivered, [r#"{"type":"command","content":{"deviceId":"cli-tls","led":"on","s":"\u00e9"}}"#]);

    // Without the CA (the system's do not know it), the certificate is refused.
    let untrusting = ["actuate", "--url", &url, "--device-id", "cli-tls", "--content", content];
    let (status, _, stderr) = run_to_exit(&[&untrusting[..], &credentials].concat(), &[], WAIT * 2);
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{stderr}");
    assert!(stderr.contains("TLS") && stderr.contains("certificate"), "{stderr}");
    device.signal(libc::SIGTERM);
    assert_eq!(device.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
}

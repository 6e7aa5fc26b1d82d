//! Hostile load (issue 9): one bad client must never take the server down. One test per rule of
//! the contract, several where a rule has parts; each names what it shows.
//!
//! Every flood runs on loopback, in threads with a stop flag and a bounded duration; every wait
//! has a deadline. Floods and memory measurements hold [`heavy`], so that no two of them share
//! the machine's cores: a liveness measurement must time the server, not a neighbouring test's
//! flood. Liveness is [`assert_live`]: a fresh device registers and receives an actuation within
//! 2 s. Memory is the server's peak resident set (`VmHWM` in `/proc/PID/status`). Every test
//! runs the release build (`ServerOpts::release`): what holds up is the shipped binary, and a
//! debug build's cost per frame would make a flood measure the build.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use iot_ws_tests::client::http_raw;
use iot_ws_tests::{
    ack_delivered, ack_not_connected, actuation, actuation_ack, delivery, device_ids, eventually, frame, register_each,
    Client, Cluster, Event, Keys, Server, ServerOpts, ACTUATOR, WAIT,
};
use serde_json::{json, Value};

/// Rule 1: a fresh device registers and receives an actuation within this, every time.
const LIVE: Duration = Duration::from_secs(2);
const MIB: u64 = 1024 * 1024;
/// Rule 5: the server's resident set under every attack, with the default limits.
const RSS_LIMIT: u64 = 64 * MIB;
const SUBSCRIBED: &str = r#"{"code":200,"content":"Subscribed"}"#;

mod floods;
mod ids_and_reregistration;
mod logs;
mod pending_and_caps;
mod stalls_and_memory;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Serialises the tests that flood or measure memory (see the module docs).
fn heavy() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A server with the default settings plus `flags`.
fn start(flags: &[(&str, &str)]) -> Server {
    let opts = flags.iter().fold(ServerOpts::default().release(), |opts, (name, value)| opts.arg(name, value));
    Server::start(opts)
}

/// Rule 1's liveness, measured: a fresh device connects, registers and receives an actuation
/// sent by a fresh dashboard connection, within 2 s from its TCP connect (its token is signed
/// before the clock starts). Fails with the measured time. Returns the device id and the time.
fn assert_live(server: &Server) -> (String, Duration) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let device = format!("live-{}-{}", server.addr.port(), NEXT.fetch_add(1, Relaxed));
    let token = Keys::shared().token(&device);
    let (message, body) = actuation(ACTUATOR, &device, r#""live":true"#);
    let started = Instant::now();
    let outcome = live_once(server.addr, &device, &token, &message, &body);
    let took = started.elapsed();
    match outcome {
        Ok(()) => assert!(
            took <= LIVE,
            "liveness: fresh device {device} took {took:?} (limit {LIVE:?}) to register and receive an actuation"
        ),
        Err(e) => panic!("liveness: fresh device {device} failed after {took:?}: {e}"),
    }
    (device, took)
}

fn live_once(addr: SocketAddr, device: &str, token: &str, message: &str, body: &str) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    let left = || deadline.saturating_duration_since(Instant::now());
    let mut d = Client::connect_offering(addr, Some("echo-protocol")).map_err(|e| format!("device connect: {e}"))?;
    d.try_send(&registration(device, token)).map_err(|e| format!("send registration: {e}"))?;
    match d.recv(left()) {
        Event::Text(t) if t == SUBSCRIBED => {}
        other => return Err(format!("registration answered {other:?}")),
    }
    let mut dashboard =
        Client::connect_offering(addr, Some("echo-protocol")).map_err(|e| format!("dashboard connect: {e}"))?;
    dashboard.try_send(message).map_err(|e| format!("send actuation: {e}"))?;
    let expected = delivery(body);
    match d.recv(left()) {
        Event::Text(t) if t == expected => Ok(()),
        other => Err(format!("device got {other:?} instead of its actuation")),
    }
}

/// Rule 5: the server's peak resident set so far is at most 64 MiB.
fn assert_peak_rss(server: &Server, what: &str) {
    let peak = server.peak_rss_bytes();
    let now = server.proc_status_kib("VmRSS") * 1024;
    eprintln!("{what}: peak RSS {:.1} MiB, now {:.1} MiB", peak as f64 / MIB as f64, now as f64 / MIB as f64);
    assert!(
        peak <= RSS_LIMIT,
        "{what}: peak RSS {:.1} MiB over {} MiB (VmRSS now {:.1} MiB)",
        peak as f64 / MIB as f64,
        RSS_LIMIT / MIB,
        now as f64 / MIB as f64
    );
}

/// One metric line's value from `GET /metrics`; `None` if the server refused the request (a
/// full cap) or has no such line.
fn metric(addr: SocketAddr, name_and_labels: &str) -> Option<f64> {
    let (status, _, body) = http_raw(addr, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    if status != 200 {
        return None;
    }
    body.lines().find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' ')?.trim().parse().ok())
}

const REFUSED_PENDING: &str = r#"iot_ws_connections_refused_total{reason="pending"}"#;
const REFUSED_PENDING_PER_ADDRESS: &str = r#"iot_ws_connections_refused_total{reason="pending_per_address"}"#;
const REFUSED_LIMIT: &str = r#"iot_ws_connections_refused_total{reason="limit"}"#;

/// Waits (bounded) until the metric is at least `at_least`; returns the last value seen.
fn metric_reaches(addr: SocketAddr, name_and_labels: &str, at_least: f64) -> Option<f64> {
    let mut last = None;
    eventually(WAIT, || {
        last = metric(addr, name_and_labels);
        last.filter(|v| *v >= at_least)
    });
    last
}

/// Raises this test process's soft file descriptor limit (the server inherits it) so that
/// thousands of loopback connections fit.
fn raise_nofile(want: libc::rlim_t) {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on this process with a valid rlimit struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl), 0);
        if rl.rlim_cur < want {
            rl.rlim_cur = want.min(rl.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &rl), 0);
        }
    }
}

/// A raw TCP connection that sends nothing: pending in its HTTP head.
fn idle(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    s.set_nodelay(true).unwrap();
    s
}

/// A new connection is answered `HTTP/1.1 503` and closed at once (within 1 s). It sends
/// nothing, so that the server's close is a clean FIN after its answer.
fn assert_refused_503(addr: SocketAddr, what: &str) {
    let started = Instant::now();
    let mut s = idle(addr);
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut answer = Vec::new();
    let read = s.read_to_end(&mut answer);
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 503"),
        "{what}: expected `HTTP/1.1 503`, got {text:?} ({read:?}) after {took:?}"
    );
    assert!(read.is_ok(), "{what}: 503 but the connection was not closed within 3 s: {read:?}");
    assert!(took < Duration::from_secs(1), "{what}: 503 and close took {took:?}");
}

/// Waits until the server ends `stream` (EOF or reset), discarding what it sends; the time it
/// did, or `None` at `until`.
fn wait_closed(stream: &mut TcpStream, until: Instant) -> Option<Instant> {
    let mut buf = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left.min(Duration::from_millis(200)))).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Some(Instant::now()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(Instant::now()),
        }
    }
}

/// Sends `{"type":"ping"}` every 300 ms (checking each answer is PONG) until the server closes
/// the connection; the time from `t0` it did and how (a close frame must carry 1000).
fn ping_until_closed(c: &mut Client, t0: Instant, limit: Duration) -> Result<(Duration, String), String> {
    loop {
        if t0.elapsed() > limit {
            return Err(format!("still open {:?} after its connect", t0.elapsed()));
        }
        let sent = Instant::now();
        if let Err(e) = c.try_send(r#"{"type":"ping"}"#) {
            return Ok((t0.elapsed(), format!("send failed: {e}")));
        }
        let next = sent + Duration::from_millis(300);
        loop {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match c.recv(left) {
                Event::Text(t) if t == r#"{"code":202,"content":"PONG"}"# => {}
                Event::Text(t) => return Err(format!("unexpected text {t}")),
                Event::Close(code) => {
                    return match code {
                        Some(1000) => Ok((t0.elapsed(), "close 1000".into())),
                        other => Err(format!("closed with {other:?}, not 1000")),
                    }
                }
                Event::Gone(e) => return Ok((t0.elapsed(), format!("EOF ({e})"))),
                Event::Binary(_) => return Err("unexpected binary".into()),
                Event::Timeout => break,
            }
        }
    }
}

/// The server's last log lines, for failure messages.
fn log_tail(server: &Server) -> String {
    let lines = server.log_lines();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A registration message.
fn registration(device: &str, token: &str) -> String {
    json!({"type": "device", "deviceId": device, "deviceToken": token}).to_string()
}

//! systemd's notifications (`Type=notify`, cross/iot-ws-server.service): READY=1 once the server
//! accepts devices, WATCHDOG=1 from the serving thread at half `WATCHDOG_USEC`, STOPPING=1 when
//! SIGTERM starts the stop. The test stands in for systemd with a datagram socket of its own.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use iot_ws_tests::{Client, Server, ServerOpts, TempDir, WAIT};

/// The next notification, or `None` after `timeout`.
fn next(socket: &UnixDatagram, timeout: Duration) -> Option<String> {
    socket.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn the_server_says_ready_feeds_the_watchdog_and_says_stopping() {
    let dir = TempDir::new("notify");
    let path = dir.path().join("notify.sock");
    let systemd = UnixDatagram::bind(&path).unwrap();
    let opts = ServerOpts::default().env("NOTIFY_SOCKET", &path.display().to_string()).env("WATCHDOG_USEC", "200000");
    let server = Server::start(opts);

    assert_eq!(next(&systemd, WAIT).as_deref(), Some("READY=1"));
    // Ready means ready: a device registers at once.
    let _device = Client::registered_on(&server, "notify-device");

    // The watchdog is fed every 100 ms or so, for as long as the server runs.
    let since = Instant::now();
    for _ in 0..5 {
        assert_eq!(next(&systemd, WAIT).as_deref(), Some("WATCHDOG=1"));
    }
    assert!(since.elapsed() < WAIT);

    server.sigterm();
    let stopping = std::iter::from_fn(|| next(&systemd, WAIT)).find(|state| state != "WATCHDOG=1");
    assert_eq!(stopping.as_deref(), Some("STOPPING=1"));
}

#[test]
fn without_notify_socket_nothing_is_sent_and_a_watchdog_for_another_pid_is_not_fed() {
    let dir = TempDir::new("notify-other");
    let path = dir.path().join("notify.sock");
    let systemd = UnixDatagram::bind(&path).unwrap();
    // WATCHDOG_PID names another process: the variables were meant for it, not inherited by us.
    let opts = ServerOpts::default()
        .env("NOTIFY_SOCKET", &path.display().to_string())
        .env("WATCHDOG_USEC", "200000")
        .env("WATCHDOG_PID", "1");
    let _server = Server::start(opts);
    assert_eq!(next(&systemd, WAIT).as_deref(), Some("READY=1"));
    assert_eq!(next(&systemd, Duration::from_millis(600)), None, "no WATCHDOG=1 for another pid");
}

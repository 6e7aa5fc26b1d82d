//! systemd's notifications (`Type=notify`, cross/iot-ws-server.service): READY=1 once the server
//! accepts devices, WATCHDOG=1 from the serving thread at half `WATCHDOG_USEC`, RELOADING=1 and
//! READY=1 around a reload, STOPPING=1 when SIGTERM starts the stop. The test stands in for systemd with a datagram socket of its own.

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

/// `CLOCK_MONOTONIC` in microseconds, as systemd reads it.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

#[test]
fn the_server_says_ready_feeds_the_watchdog_says_reloading_and_stopping() {
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

    // A reload (SIGHUP, `systemctl reload`): RELOADING=1 with the monotonic clock's time, as
    // Type=notify-reload requires, then READY=1.
    let before = monotonic_usec();
    server.signal(libc::SIGHUP);
    let mut states = std::iter::from_fn(|| next(&systemd, WAIT)).filter(|state| state != "WATCHDOG=1");
    let reloading = states.next().expect("a notification after SIGHUP");
    let usec: u64 = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{reloading:?}"));
    assert!((before..=monotonic_usec()).contains(&usec), "{usec} not between {before} and now");
    assert_eq!(states.next().as_deref(), Some("READY=1"));

    server.sigterm();
    assert_eq!(states.next().as_deref(), Some("STOPPING=1"));
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

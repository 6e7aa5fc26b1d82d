//! systemd's service notifications (sd_notify(3)) for a `Type=notify` unit: `READY=1` once the
//! server accepts connections (after the database lock, if any, is taken), `STOPPING=1` when a
//! stop begins, and `WATCHDOG=1` sent by the serving thread itself at half the unit's
//! `WatchdogSec=`: if that thread stops turning, systemd restarts the server. Around a reload
//! (SIGHUP), `RELOADING=1` and then `READY=1` again. Not under systemd (no `NOTIFY_SOCKET`),
//! nothing is sent.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `state` to systemd, if it listens; never blocks, and a lost notification is only that.
pub fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let Ok(socket) = UnixDatagram::unbound() else { return };
    let _ = socket.set_nonblocking(true);
    let _ = match path.as_encoded_bytes().strip_prefix(b"@") {
        // An abstract socket address, as systemd may hand out.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
                .and_then(|address| socket.send_to_addr(state.as_bytes(), &address))
        }
        None => socket.send_to(state.as_bytes(), path),
    };
}

/// Says a reload began: `RELOADING=1` with the time on the monotonic clock, which systemd 253's
/// `Type=notify-reload` requires (older ones show the unit as reloading). [`reloaded`] ends it.
pub fn reloading() {
    send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
}

/// Says the reload [`reloading`] began is done, whatever came of it.
pub fn reloaded() {
    send("READY=1");
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares with.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when systemd set it for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let for_us = std::env::var("WATCHDOG_PID").map_or(true, |pid| pid == std::process::id().to_string());
    (for_us && usec > 0).then(|| Duration::from_micros(usec / 2))
}

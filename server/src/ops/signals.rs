//! Signals: SIGTERM and SIGINT stop (a channel that yields the first), and for the server
//! SIGHUP reloads what can change without a restart (the public keys, the actuator's password
//! file, the TLS certificate: see `reloader` in serve.rs).

use async_channel::Receiver;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// SIGTERM and SIGINT, for the command-line clients (SIGHUP keeps its default: it ends them).
pub fn watch() -> std::io::Result<Receiver<i32>> {
    spawn(&[SIGTERM, SIGINT], || {})
}

/// SIGTERM and SIGINT, and SIGHUP running `reload` on the signal thread, once per signal (a few
/// in quick succession may be handled as one).
pub fn watch_with_reload(reload: impl Fn() + Send + 'static) -> std::io::Result<Receiver<i32>> {
    spawn(&[SIGTERM, SIGINT, SIGHUP], reload)
}

fn spawn(which: &[i32], reload: impl Fn() + Send + 'static) -> std::io::Result<Receiver<i32>> {
    let mut signals = Signals::new(which)?;
    let (tx, rx) = async_channel::bounded(1);
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for signal in signals.forever() {
            if signal == SIGHUP {
                reload();
            } else {
                let _ = tx.try_send(signal);
            }
        }
    })?;
    Ok(rx)
}

//! SIGTERM and SIGINT as a channel that yields once.

use async_channel::Receiver;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

pub fn watch() -> std::io::Result<Receiver<i32>> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    let (tx, rx) = async_channel::bounded(1);
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let _ = tx.send_blocking(signal);
        }
    })?;
    Ok(rx)
}

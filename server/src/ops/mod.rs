//! What operators watch and send: the log (one line per event, written off the serving
//! thread), the metrics served at `GET /metrics`, the stop signals, and systemd's notifications.

pub mod logging;
pub mod metrics;
pub mod notify;
pub mod process;
pub mod signals;

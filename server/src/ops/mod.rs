//! What operators watch and send: the log (one line per event, written off the serving
//! thread), the metrics served at `GET /metrics`, the signals (stop, reload) and what a reload
//! re-reads, and systemd's notifications; and, in bench builds, the heap census.

pub mod actuator_reload;
pub mod census;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod process;
pub mod signals;

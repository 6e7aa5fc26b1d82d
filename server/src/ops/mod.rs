//! What operators watch and send: the log (one line per event, written off the serving
//! thread), the metrics served at `GET /metrics`, and the stop signals.

pub mod log;
pub mod metrics;
pub mod signals;

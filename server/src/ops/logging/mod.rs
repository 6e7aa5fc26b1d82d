//! The server's log: the `log` facade, so the WebSocket, TLS and database libraries' records
//! appear too, written one line per record by a thread of its own (see [`writer`]).
//!
//! - Which records: [`Filter`] (`IOT_WS_LOG`, e.g. `info,tokio_postgres=debug`); how:
//!   [`Format`] (`IOT_WS_LOG_FORMAT=text|json`). Lines start with an RFC 3339 UTC time.
//! - Errors and warnings go to stderr, everything else to stdout ([`writer::Stream`]).
//!
//! Rules for callers (who log with `log::info!`, `log::warn!`, `log::error!`):
//! - Text that came from a client goes through [`client_text`]: quoted, escaped and cut.
//! - A line about a connection starts with [`Peer`]: `peer 192.0.2.7:50123: ...`.
//! - Tokens and passwords are never logged: pass the reason of a refusal, not what was refused.
//! - Events a client can cause at will go through [`limited`]: 10 lines per [`Kind`] per 10 s,
//!   then a summary of how many were not shown. They are logged at info level.
//!
//! Whatever the caller formats, a control character never reaches the output raw and a message
//! is cut at 1 KiB, so one record is one line. Before [`start`] (startup, unit tests) lines are
//! written at once.

mod filter;
mod format;
mod text;
mod timestamp;
mod writer;

use std::fmt::Display;
use std::io::{self, Write};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use log::{Level, Log, Metadata};

pub use filter::Filter;
pub use format::Format;
pub use text::{client_text, Peer};
use writer::{Limits, Logger, Stream};

/// How the log is written: `--log` and `--log-format`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub filter: Filter,
    pub format: Format,
}

/// Events a client can cause at will, whose lines go through [`limited`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A device registration whose token was refused.
    TokenRefused,
    /// An actuation whose credentials were refused.
    CredentialsRefused,
    /// A connection closed for not taking its output.
    SlowPeer,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::TokenRefused, Kind::CredentialsRefused, Kind::SlowPeer];

    fn label(self) -> &'static str {
        match self {
            Kind::TokenRefused => "token refused",
            Kind::CredentialsRefused => "credentials refused",
            Kind::SlowPeer => "slow peer closed",
        }
    }
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();
static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Installs the log with `settings`: from now on records (this crate's and the libraries') are
/// written. Later calls do nothing.
pub fn init(settings: Settings) {
    let max = settings.filter.max_level();
    if SETTINGS.set(settings).is_ok() && log::set_logger(&Facade).is_ok() {
        log::set_max_level(max);
    }
}

fn settings() -> &'static Settings {
    static DEFAULT: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get().unwrap_or_else(|| DEFAULT.get_or_init(Settings::default))
}

/// Starts the writer thread; from then on logging never blocks. Later calls do nothing.
pub fn start() -> io::Result<()> {
    if LOGGER.get().is_none() {
        let outputs: writer::Outputs = [Box::new(io::stdout()), Box::new(io::stderr())];
        let logger = Logger::spawn(outputs, Limits::DEFAULT, settings().format)?;
        // Should another start win the race, this logger's thread ends when it is dropped.
        let _ = LOGGER.set(logger);
    }
    Ok(())
}

/// Logs the info line `text()` (for module path `target`: the caller's `module_path!()`) unless
/// 10 lines of `kind` were already logged in this window: then it only counts (`text` is not
/// called), and the count is logged at the window's end.
pub fn limited<T: Display>(kind: Kind, target: &str, text: impl FnOnce() -> T) {
    if !settings().filter.enabled(target, Level::Info) {
        return;
    }
    match LOGGER.get() {
        Some(logger) => logger.limited(kind, target, text),
        None => write_now(Level::Info, target, &text()),
    }
}

/// Lines dropped since [`start`] because the queue was full or an output failed.
pub fn dropped() -> u64 {
    LOGGER.get().map_or(0, |l| l.shared.dropped.load(Relaxed))
}

/// Writes every queued line and the pending summaries of [`limited`], waiting at most `timeout`;
/// `false` if they were not all written by then. For the last lines before the process exits.
pub fn flush(timeout: Duration) -> bool {
    LOGGER.get().is_none_or(|l| l.flush(timeout))
}

/// Before [`start`]: nothing to protect from a slow reader yet. Not `print!`, which panics
/// when the reader is gone (EPIPE): a server whose log collector died must still serve.
fn write_now(level: Level, target: &str, message: &dyn Display) {
    let record = format::Record { time: SystemTime::now(), level, target, message };
    format::with_line(settings().format, &record, |line| {
        let _ = match Stream::of(level) {
            Stream::Out => io::stdout().write_all(line.as_bytes()),
            Stream::Err => io::stderr().write_all(line.as_bytes()),
        };
    });
}

/// Whether a record is written: as `filter` says, except that libraries' trace records never
/// are. They trace what crosses the wire (tungstenite: every frame's payload, tokens included).
fn admits(filter: &Filter, target: &str, level: Level) -> bool {
    let wire_trace = level == Level::Trace && !format::is_own(target);
    !wire_trace && filter.enabled(target, level)
}

/// What the `log` crate calls.
struct Facade;

impl Log for Facade {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        admits(&settings().filter, metadata.target(), metadata.level())
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args();
        match LOGGER.get() {
            Some(logger) => logger.record(record.level(), record.target(), message),
            None => write_now(record.level(), record.target(), message),
        }
    }

    fn flush(&self) {
        flush(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests;

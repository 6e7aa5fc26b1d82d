//! One record as one line: text for people, JSON for log collectors (`IOT_WS_LOG_FORMAT`).
//!
//! Text: `2026-12-02T00:11:23.123Z INFO  listening on 0.0.0.0:5000`; a record from a library
//! names its module: `… WARN  tokio_postgres::connection: …`.
//! JSON: `{"time":"2026-12-02T00:11:23.123Z","level":"info","target":"iot_ws_server::serve","message":"…"}`.

use std::fmt::{Display, Write as _};
use std::time::SystemTime;

use log::Level;

use super::text::{append_message, floor_char_boundary, Escape};
use super::timestamp::Rfc3339;

/// Most bytes of a record's target (module path) in a line.
const TARGET_MAX: usize = 128;
/// This crate's records, whose module path the text format leaves out.
const OWN_TARGET: &str = "iot_ws_server";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Text,
    Json,
}

impl Format {
    /// `text` or `json`; the error says what is accepted.
    pub fn parse(name: &str) -> Result<Format, String> {
        match name.to_ascii_lowercase().as_str() {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(format!("{name:?} is not a log format (text, json)")),
        }
    }
}

/// What one line says.
pub struct Record<'a> {
    pub time: SystemTime,
    pub level: Level,
    /// The module path of the code that logged it.
    pub target: &'a str,
    pub message: &'a dyn Display,
}

/// Replaces `buf` with `record` as one line, newline included. At most 1 KiB of message, and
/// the target is cut too: a line stays under 1.5 KiB in text, 2.2 KiB in JSON (escapes).
pub fn render(buf: &mut String, format: Format, record: &Record<'_>) {
    buf.clear();
    // Module paths are short; a library that logs under a long target still gives a short line.
    let target = &record.target[..floor_char_boundary(record.target, TARGET_MAX)];
    match format {
        Format::Text => {
            let _ = write!(buf, "{} {:<5} ", Rfc3339(record.time), record.level);
            if !is_own(target) {
                // From code, not from clients, but a library may name any target.
                append_message(buf, &target, Escape::Controls);
                buf.push_str(": ");
            }
            append_message(buf, record.message, Escape::Controls);
        }
        Format::Json => {
            let level = lowercase(record.level);
            let _ = write!(buf, r#"{{"time":"{}","level":"{level}","target":""#, Rfc3339(record.time));
            append_message(buf, &target, Escape::Json);
            buf.push_str(r#"","message":""#);
            append_message(buf, record.message, Escape::Json);
            buf.push_str("\"}");
        }
    }
    buf.push('\n');
}

/// Whether `target` is a module of this crate.
pub fn is_own(target: &str) -> bool {
    target.strip_prefix(OWN_TARGET).is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

fn lowercase(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

thread_local! {
    /// Where a line is formatted before it is copied into the queue: no allocation per line.
    static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Calls `then` with `record` rendered as one line.
pub fn with_line(format: Format, record: &Record<'_>, then: impl FnOnce(&str)) {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            render(&mut buf, format, record);
            then(&buf);
        }
        // A `Display` that logs while being formatted.
        Err(_) => {
            let mut buf = String::new();
            render(&mut buf, format, record);
            then(&buf);
        }
    });
}

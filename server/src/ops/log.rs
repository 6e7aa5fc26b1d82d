//! The server's log: one line per event on stderr, written by a thread of its own so that serving
//! never waits for whoever reads stderr (issue 9).
//!
//! Rules for callers:
//! - Text that came from a client goes through [`client_text`]: quoted, escaped and cut.
//! - A line about a connection starts with [`Peer`]: `peer 192.0.2.7:50123: ...`.
//! - Tokens and passwords are never logged: pass the reason of a refusal, not what was refused.
//! - Events a client can cause at will go through [`limited`]: [`PER_WINDOW`] lines per [`Kind`]
//!   per [`WINDOW`], then a summary of how many were not shown.
//!
//! After [`start`], [`line`] only copies the text into a bounded queue, under a lock the writer
//! thread holds for a buffer swap; when the queue is full the line is dropped and counted
//! ([`dropped`], `iot_ws_log_lines_dropped_total`). Before [`start`] (startup, unit tests) lines go
//! straight to stderr. Whatever the caller formats, a control character never reaches the output
//! raw, so one call is one line.

use std::cell::RefCell;
use std::fmt::{self, Display, Write as _};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Most characters of one client text, quotes and `…` included.
const CLIENT_TEXT_MAX: usize = 128;
/// Most bytes of one line, `…` included, newline not.
const LINE_MAX: usize = 1024;
/// Most bytes queued or being written; a line that does not fit is dropped.
const QUEUE_BYTES: usize = 256 * 1024;
/// Most capacity a buffer of the queue keeps once written.
const KEPT_CAPACITY: usize = 16 * 1024;
/// Lines of one [`Kind`] written per window; the others are counted and summarised.
const PER_WINDOW: u64 = 10;
/// The rate limit's window.
const WINDOW: Duration = Duration::from_secs(10);

/// Client-supplied text as it may appear in a line: quoted, escaped as `{:?}` escapes a `str`
/// (control characters, `"` and `\` never pass raw) and at most 128 characters, quotes included.
/// Longer text ends in `…"`, cut between whole characters of the input, never inside an escape.
/// Formatting reads at most 127 characters of the input, however long it is.
#[derive(Clone, Copy)]
pub struct ClientText<'a>(pub &'a str);

/// `s` as it may appear in a line; see [`ClientText`].
pub fn client_text(s: &str) -> ClientText<'_> {
    ClientText(s)
}

impl Display for ClientText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (shown, cut) = fit(self.0, CLIENT_TEXT_MAX - 2);
        f.write_char('"')?;
        for c in shown.chars() {
            // Inside double quotes a single quote needs no escape, as in `{:?}`.
            if c == '\'' {
                f.write_char(c)?;
            } else {
                write!(f, "{}", c.escape_debug())?;
            }
        }
        if cut {
            f.write_char('…')?;
        }
        f.write_char('"')
    }
}

fn escaped_len(c: char) -> usize {
    if c == '\'' {
        1
    } else {
        c.escape_debug().len()
    }
}

/// The longest prefix of `s` whose escaped form fits `budget` characters, and whether that is
/// not all of `s`; a cut prefix leaves room for the `…`.
fn fit(s: &str, budget: usize) -> (&str, bool) {
    let mut used = 0;
    let mut end_with_marker = 0;
    for (i, c) in s.char_indices() {
        used += escaped_len(c);
        if used > budget {
            return (&s[..end_with_marker], true);
        }
        if used < budget {
            end_with_marker = i + c.len_utf8();
        }
    }
    (s, false)
}

/// The start of a line about a connection: `peer 192.0.2.7:50123` or `peer [2001:db8::7]:50123`.
#[derive(Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer {}", self.0)
    }
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

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Starts the writer thread; from then on [`line`] never blocks. Later calls do nothing.
pub fn start() -> io::Result<()> {
    if LOGGER.get().is_none() {
        let logger = Logger::spawn(Box::new(io::stderr()), Limits::DEFAULT)?;
        // Should another start win the race, this logger's thread ends when it is dropped.
        let _ = LOGGER.set(logger);
    }
    Ok(())
}

/// Logs one line, cut to 1 KiB; drops and counts it if the queue is full.
pub fn line(text: impl Display) {
    match LOGGER.get() {
        Some(logger) => logger.line(&text),
        // Not serving yet: nothing to protect, and `eprint!` is captured by `cargo test`.
        None => with_line(&text, |l| eprint!("{l}")),
    }
}

/// Logs the line `text()` unless [`PER_WINDOW`] lines of `kind` were already logged in this
/// window: then it only counts (`text` is not called), and the count is logged at the window's end.
pub fn limited<T: Display>(kind: Kind, text: impl FnOnce() -> T) {
    match LOGGER.get() {
        Some(logger) => logger.limited(kind, text),
        None => line(text()),
    }
}

/// Lines dropped since [`start`] because the queue was full or stderr failed.
pub fn dropped() -> u64 {
    LOGGER.get().map_or(0, |l| l.shared.dropped.load(Relaxed))
}

/// Writes every queued line and the pending summaries of [`limited`], waiting at most `timeout`;
/// `false` if they were not all written by then. For the last lines before the process exits.
pub fn flush(timeout: Duration) -> bool {
    LOGGER.get().is_none_or(|l| l.flush(timeout))
}

thread_local! {
    /// Where a line is formatted before it is copied into the queue: no allocation per line.
    static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Calls `then` with `text` as one line: cut, control characters escaped, newline added.
fn with_line(text: &dyn Display, then: impl FnOnce(&str)) {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            render(&mut buf, text);
            then(&buf);
        }
        // A `Display` that logs while being formatted.
        Err(_) => {
            let mut buf = String::new();
            render(&mut buf, text);
            then(&buf);
        }
    });
}

fn render(buf: &mut String, text: &dyn Display) {
    buf.clear();
    let mut capped = Capped { buf, cut: false };
    let _ = write!(capped, "{text}");
    if capped.cut {
        buf.push('…');
    }
    buf.push('\n');
}

/// Appends text, control characters escaped, until a `…` would not fit in [`LINE_MAX`] bytes;
/// then stops formatting. (So a line of 1022 to 1024 bytes is cut a little early: simpler.)
struct Capped<'a> {
    buf: &'a mut String,
    cut: bool,
}

impl Capped<'_> {
    fn push(&mut self, s: &str, is_escape: bool) -> fmt::Result {
        let room = LINE_MAX - '…'.len_utf8() - self.buf.len();
        if s.len() <= room {
            self.buf.push_str(s);
            return Ok(());
        }
        // An escape goes in whole or not at all.
        if !is_escape {
            self.buf.push_str(&s[..floor_char_boundary(s, room)]);
        }
        self.cut = true;
        Err(fmt::Error)
    }
}

impl fmt::Write for Capped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.cut {
            return Err(fmt::Error);
        }
        let mut rest = s;
        while let Some((i, c)) = rest.char_indices().find(|(_, c)| c.is_control()) {
            self.push(&rest[..i], false)?;
            // Allocates, but only for text that skipped `client_text`: rare, and a bug to fix.
            self.push(&c.escape_debug().to_string(), true)?;
            rest = &rest[i + c.len_utf8()..];
        }
        self.push(rest, false)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[derive(Clone, Copy)]
struct Limits {
    queue_bytes: usize,
    per_window: u64,
    window: Duration,
}

impl Limits {
    const DEFAULT: Limits = Limits { queue_bytes: QUEUE_BYTES, per_window: PER_WINDOW, window: WINDOW };
}

/// A queue and the thread that writes it; the thread ends when this is dropped.
struct Logger {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// The writer waits here for lines, a flush or the end of the window.
    wake: Condvar,
    /// [`Logger::flush`] waits here for the writer to be done.
    written: Condvar,
    dropped: AtomicU64,
    /// Events per [`Kind`] in the current window, shown or not.
    seen: [AtomicU64; Kind::ALL.len()],
    limits: Limits,
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    /// Bytes the writer took and has not written yet: they count against the bound too, so
    /// memory stays bounded while stderr blocks.
    in_flight: usize,
    busy: bool,
    /// Saves a futex wake per line while the writer is busy anyway.
    writer_waiting: bool,
    flush_requested: bool,
    closed: bool,
}

impl Logger {
    fn spawn(out: Box<dyn Write + Send>, limits: Limits) -> io::Result<Logger> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            written: Condvar::new(),
            dropped: AtomicU64::new(0),
            seen: std::array::from_fn(|_| AtomicU64::new(0)),
            limits,
        });
        let writer = shared.clone();
        std::thread::Builder::new().name("log".into()).spawn(move || writer.run(out))?;
        Ok(Logger { shared })
    }

    fn line(&self, text: &dyn Display) {
        with_line(text, |l| self.push(l.as_bytes()));
    }

    fn limited<T: Display>(&self, kind: Kind, text: impl FnOnce() -> T) {
        // The whole cost of a suppressed event: the summary is the writer thread's work.
        if self.shared.seen[kind as usize].fetch_add(1, Relaxed) < self.shared.limits.per_window {
            self.line(&text());
        }
    }

    fn push(&self, line: &[u8]) {
        let mut st = self.shared.lock();
        if st.pending.len() + st.in_flight + line.len() > self.shared.limits.queue_bytes {
            drop(st);
            self.shared.dropped.fetch_add(1, Relaxed);
            return;
        }
        st.pending.extend_from_slice(line);
        if std::mem::take(&mut st.writer_waiting) {
            self.shared.wake.notify_one();
        }
    }

    fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        st.flush_requested = true;
        self.shared.wake.notify_one();
        while st.flush_requested || st.busy || !st.pending.is_empty() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { return false };
            st = self.shared.written.wait_timeout(st, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }
}

impl Drop for Logger {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer thread: takes all queued lines at once, writes them, and at the end of each
    /// window (or on a flush) the summaries. Lines get no prefix yet (timestamps, levels: issue 11).
    fn run(&self, mut out: Box<dyn Write + Send>) {
        let mut batch = Vec::new();
        let mut window_start = Instant::now();
        loop {
            let mut st = self.lock();
            let summarise = loop {
                if st.closed {
                    return;
                }
                // Wakes once a window even when idle: one wake-up per 10 s is not worth a
                // cleverer scheme, and the summary must come without a further event.
                let end = window_start + self.limits.window;
                let flush = std::mem::take(&mut st.flush_requested);
                let Some(left) = end.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                    break true;
                };
                if flush || !st.pending.is_empty() {
                    break flush;
                }
                st.writer_waiting = true;
                st = self.wake.wait_timeout(st, left).unwrap_or_else(PoisonError::into_inner).0;
                st.writer_waiting = false;
            };
            std::mem::swap(&mut st.pending, &mut batch);
            st.in_flight = batch.len();
            st.busy = true;
            drop(st);
            self.write(&mut *out, &batch);
            batch.clear();
            // A burst must not leave two 256 KiB buffers behind on a gateway (issue 4).
            batch.shrink_to(KEPT_CAPACITY);
            if summarise {
                self.summarise(&mut *out, window_start.elapsed());
                window_start = Instant::now();
            }
            let mut st = self.lock();
            st.in_flight = 0;
            st.busy = false;
            self.written.notify_all();
        }
    }

    fn write(&self, out: &mut dyn Write, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if out.write_all(bytes).and_then(|()| out.flush()).is_err() {
            // Nobody reads them (stderr closed): as good as dropped. Counts a partly written
            // batch whole, which is near enough.
            let lines = bytes.iter().filter(|&&b| b == b'\n').count();
            self.dropped.fetch_add(lines as u64, Relaxed);
        }
    }

    fn summarise(&self, out: &mut dyn Write, span: Duration) {
        for kind in Kind::ALL {
            let hidden = self.seen[kind as usize].swap(0, Relaxed).saturating_sub(self.limits.per_window);
            if hidden > 0 {
                let label = kind.label();
                let line = format!("{label}: {hidden} more like this in the last {} not shown\n", Span(span));
                self.write(out, line.as_bytes());
            }
        }
    }
}

/// A window's length as a person reads it: `10 s`, or `250 ms` below a second.
struct Span(Duration);

impl Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms < 1000 {
            write!(f, "{ms} ms")
        } else {
            write!(f, "{} s", (ms + 500) / 1000)
        }
    }
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;

//! The log's queue and the thread that writes it, so that serving never waits for whoever reads
//! stdout or stderr (issue 9).
//!
//! A record is formatted by the caller into a thread-local buffer and copied into a bounded
//! queue, under a lock the writer thread holds only for a buffer swap; when the queue is full
//! the line is dropped and counted (`iot_ws_log_lines_dropped_total`).

use std::fmt::{self, Display};
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use log::Level;

use super::format::{with_line, Format, Record};
use super::Kind;

/// Most bytes queued or being written, both streams together; a line that does not fit is
/// dropped.
pub const QUEUE_BYTES: usize = 256 * 1024;
/// Most capacity a buffer of the queue keeps once written.
const KEPT_CAPACITY: usize = 16 * 1024;
/// Lines of one [`Kind`] written per window; the others are counted and summarised.
const PER_WINDOW: u64 = 10;
/// The rate limit's window.
const WINDOW: Duration = Duration::from_secs(10);
/// The target of the lines the writer itself makes (the summaries).
const TARGET: &str = "iot_ws_server::ops::logging";

/// Where a line goes: errors and warnings to stderr, the rest to stdout, so that a platform
/// that marks stderr as errors (Cloud Foundry's `ERR`) marks only those.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Out = 0,
    Err = 1,
}

impl Stream {
    pub fn of(level: Level) -> Stream {
        if level <= Level::Warn {
            Stream::Err
        } else {
            Stream::Out
        }
    }
}

#[derive(Clone, Copy)]
pub struct Limits {
    pub queue_bytes: usize,
    pub per_window: u64,
    pub window: Duration,
}

impl Limits {
    pub const DEFAULT: Limits = Limits { queue_bytes: QUEUE_BYTES, per_window: PER_WINDOW, window: WINDOW };
}

/// What the writer writes to: stdout and stderr, or a test's sinks.
pub type Outputs = [Box<dyn Write + Send>; 2];

/// A queue and the thread that writes it; the thread ends when this is dropped.
pub struct Logger {
    pub(super) shared: Arc<Shared>,
}

pub(super) struct Shared {
    state: Mutex<State>,
    /// The writer waits here for lines, a flush or the end of the window.
    wake: Condvar,
    /// [`Logger::flush`] waits here for the writer to be done.
    written: Condvar,
    pub(super) dropped: AtomicU64,
    /// Events per [`Kind`] in the current window, shown or not.
    seen: [AtomicU64; Kind::ALL.len()],
    limits: Limits,
    format: Format,
}

#[derive(Default)]
struct State {
    /// Lines for stdout and for stderr, indexed by [`Stream`].
    pending: [Vec<u8>; 2],
    /// Bytes the writer took and has not written yet: they count against the bound too, so
    /// memory stays bounded while an output blocks.
    in_flight: usize,
    busy: bool,
    /// Saves a futex wake per line while the writer is busy anyway.
    writer_waiting: bool,
    flush_requested: bool,
    closed: bool,
}

impl State {
    fn queued(&self) -> usize {
        self.pending[0].len() + self.pending[1].len() + self.in_flight
    }
}

impl Logger {
    pub fn spawn(outputs: Outputs, limits: Limits, format: Format) -> io::Result<Logger> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            written: Condvar::new(),
            dropped: AtomicU64::new(0),
            seen: std::array::from_fn(|_| AtomicU64::new(0)),
            limits,
            format,
        });
        let writer = shared.clone();
        std::thread::Builder::new().name("log".into()).spawn(move || writer.run(outputs))?;
        Ok(Logger { shared })
    }

    /// Queues one record, rendered now (its time is now).
    pub fn record(&self, level: Level, target: &str, message: &dyn Display) {
        let record = Record { time: SystemTime::now(), level, target, message };
        with_line(self.shared.format, &record, |line| self.push(Stream::of(level), line.as_bytes()));
    }

    /// An info record of this crate, unless `per_window` of `kind` were already written in this
    /// window: then it only counts (`text` is not called), and the count is written at the
    /// window's end.
    pub fn limited<T: Display>(&self, kind: Kind, target: &str, text: impl FnOnce() -> T) {
        // The whole cost of a suppressed event: the summary is the writer thread's work.
        if self.shared.seen[kind as usize].fetch_add(1, Relaxed) < self.shared.limits.per_window {
            self.record(Level::Info, target, &text());
        }
    }

    fn push(&self, stream: Stream, line: &[u8]) {
        let mut st = self.shared.lock();
        if st.queued() + line.len() > self.shared.limits.queue_bytes {
            drop(st);
            self.shared.dropped.fetch_add(1, Relaxed);
            return;
        }
        st.pending[stream as usize].extend_from_slice(line);
        if std::mem::take(&mut st.writer_waiting) {
            self.shared.wake.notify_one();
        }
    }

    /// Writes every queued line and the pending summaries, waiting at most `timeout`; `false`
    /// if they were not all written by then.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        st.flush_requested = true;
        self.shared.wake.notify_one();
        while st.flush_requested || st.busy || st.queued() > 0 {
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
    /// window (or on a flush) the summaries.
    fn run(&self, mut outputs: Outputs) {
        let mut batch: [Vec<u8>; 2] = Default::default();
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
                if flush || st.queued() > 0 {
                    break flush;
                }
                st.writer_waiting = true;
                st = self.wake.wait_timeout(st, left).unwrap_or_else(PoisonError::into_inner).0;
                st.writer_waiting = false;
            };
            for (taken, pending) in batch.iter_mut().zip(&mut st.pending) {
                std::mem::swap(taken, pending);
            }
            st.in_flight = batch[0].len() + batch[1].len();
            st.busy = true;
            drop(st);
            for (out, bytes) in outputs.iter_mut().zip(&mut batch) {
                self.write(&mut **out, bytes);
                bytes.clear();
                // A burst must not leave 256 KiB buffers behind on a gateway (issue 4).
                bytes.shrink_to(KEPT_CAPACITY);
            }
            if summarise {
                self.summarise(&mut *outputs[Stream::Out as usize], window_start.elapsed());
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
            // Nobody reads them (the output is closed): as good as dropped. Counts a partly
            // written batch whole, which is near enough.
            let lines = bytes.iter().filter(|&&b| b == b'\n').count();
            self.dropped.fetch_add(lines as u64, Relaxed);
        }
    }

    fn summarise(&self, out: &mut dyn Write, span: Duration) {
        for kind in Kind::ALL {
            let hidden = self.seen[kind as usize].swap(0, Relaxed).saturating_sub(self.limits.per_window);
            if hidden > 0 {
                let label = kind.label();
                let message = format_args!("{label}: {hidden} more like this in the last {} not shown", Span(span));
                let record = Record { time: SystemTime::now(), level: Level::Info, target: TARGET, message: &message };
                with_line(self.format, &record, |line| self.write(out, line.as_bytes()));
            }
        }
    }
}

/// A window's length as a person reads it: `10 s`, or `250 ms` below a second.
pub(super) struct Span(pub Duration);

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

//! Where `iot-ws-server device` puts each actuation: one line on stdout, or the stdin of a
//! command (`--exec`), run one at a time in arrival order so that hardware sees them in order.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_channel::{Sender, TrySendError};

/// Actuations waiting for a slow `--exec` command, in number and in bytes; beyond either they are
/// dropped (and said so), rather than letting a burst from the dashboard grow the process
/// without bound.
const EXEC_QUEUE: usize = 1024;
const EXEC_QUEUE_BYTES: usize = 16 << 20;

pub enum ActuationSink {
    Stdout,
    Exec { queue: Sender<String>, queued_bytes: Arc<AtomicUsize> },
}

impl ActuationSink {
    /// `--exec CMD` starts the thread that runs CMD (with `sh -c`) once per actuation.
    pub fn new(exec: Option<String>) -> std::io::Result<ActuationSink> {
        let Some(command) = exec else { return Ok(ActuationSink::Stdout) };
        // async-channel rather than std's mpsc: the server links it already.
        let (queue, rx) = async_channel::bounded::<String>(EXEC_QUEUE);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let taken = queued_bytes.clone();
        std::thread::Builder::new().name("exec".into()).spawn(move || {
            while let Ok(line) = rx.recv_blocking() {
                taken.fetch_sub(line.len(), Ordering::Relaxed);
                run(&command, &line);
            }
        })?;
        Ok(ActuationSink::Exec { queue, queued_bytes })
    }

    /// Hands over one actuation body; `Err` only when stdout is gone (nobody reads us).
    pub fn deliver(&self, body: &str) -> std::io::Result<()> {
        let line = one_line(body);
        match self {
            ActuationSink::Stdout => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{line}")?;
                out.flush()
            }
            ActuationSink::Exec { queue, queued_bytes } => {
                let len = line.len();
                // Counted before it is sent: the thread subtracts as soon as it takes the line.
                if queued_bytes.fetch_add(len, Ordering::Relaxed) + len > EXEC_QUEUE_BYTES {
                    queued_bytes.fetch_sub(len, Ordering::Relaxed);
                    eprintln!("device: --exec is {} MiB behind; this actuation is dropped", EXEC_QUEUE_BYTES >> 20);
                } else if let Err(TrySendError::Full(_) | TrySendError::Closed(_)) = queue.try_send(line) {
                    queued_bytes.fetch_sub(len, Ordering::Relaxed);
                    eprintln!("device: --exec is {EXEC_QUEUE} actuations behind; this one is dropped");
                }
                Ok(())
            }
        }
    }
}

/// The body on one line. JSON forbids raw line breaks inside strings, so any in a valid body
/// are whitespace between tokens: a space means the same JSON, and keeps "one line each" true.
/// A body without line breaks (the usual case) is passed on byte for byte.
pub fn one_line(body: &str) -> String {
    body.replace(['\n', '\r'], " ")
}

fn run(command: &str, line: &str) {
    let child = Command::new("sh").arg("-c").arg(command).stdin(Stdio::piped()).spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return eprintln!("device: --exec could not start sh: {e}"),
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin closes the pipe early: that is its right.
        let _ = stdin.write_all(line.as_bytes()).and_then(|()| stdin.write_all(b"\n"));
    }
    match child.wait() {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("device: --exec command ended with {status}"),
        Err(e) => eprintln!("device: --exec command: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn line_breaks_between_tokens_become_spaces_and_nothing_else_changes() {
        assert_eq!(one_line(r#"{"a":1.50,"s":"\n\u00e9"}"#), r#"{"a":1.50,"s":"\n\u00e9"}"#);
        assert_eq!(one_line("{\r\n  \"a\": 1\n}"), "{    \"a\": 1 }");
    }
}

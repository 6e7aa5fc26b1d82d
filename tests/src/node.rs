//! A WebSocket-Node (npm `websocket`) client, driven through `tests/node/bridge.js`.
//!
//! The bridge reads JSON commands on stdin and writes JSON events on stdout, one per line (see
//! the bridge's header). Its `node_modules` are installed with `npm ci` on first use if missing.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

fn node_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/node"))
}

fn ensure_node_modules() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = node_dir();
        if dir.join("node_modules/websocket").exists() {
            return;
        }
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("run `npm ci` in tests/node (is npm installed?)");
        assert!(out.status.success(), "npm ci failed:\n{}", String::from_utf8_lossy(&out.stderr));
    });
}

/// One bridge process (one or more WebSocket-Node connections, by id); killed on drop.
pub struct Bridge {
    child: Child,
    stdin: ChildStdin,
    events: Receiver<Value>,
}

impl Bridge {
    pub fn start() -> Bridge {
        ensure_node_modules();
        let mut child = Command::new("node")
            .arg(node_dir().join("bridge.js"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn node tests/node/bridge.js (is node installed?)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("bridge wrote non-JSON ({e}): {line}"));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        Bridge { child, stdin, events }
    }

    /// Sends one command.
    pub fn command(&mut self, command: Value) {
        writeln!(self.stdin, "{command}").expect("write to bridge");
        self.stdin.flush().expect("flush bridge");
    }

    /// The next event, within `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Option<Value> {
        self.events.recv_timeout(timeout).ok()
    }

    /// The first event (skipping others) that `pred` accepts; panics after `timeout`.
    pub fn wait(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(event) if pred(&event) => return event,
                Some(event) => skipped.push(event),
                None => panic!("no matching bridge event; saw {skipped:?}"),
            }
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

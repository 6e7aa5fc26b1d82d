//! A server the bench starts and stops itself (the restart mode): its output goes to a log file,
//! "listening on" in it says it is up, a signal stops it. Dropped, it is killed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::proc::ServerProc;

/// Longest a launch may take to say "listening on" (the instance lock may wait for the previous
/// instance's database session to end).
const LISTEN_LIMIT: Duration = Duration::from_secs(30);
/// Longest a stop may take before the server is killed.
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// How to stop the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: it closes its connections and clears its bindings, as on a deployment.
    Term,
    /// SIGKILL: a crash; its bindings stay true until the next instance clears them.
    Kill,
}

impl Stop {
    pub fn parse(s: &str) -> Result<Stop, String> {
        match s {
            "term" => Ok(Stop::Term),
            "kill" => Ok(Stop::Kill),
            _ => Err(format!("--restart-signal {s:?}: term or kill")),
        }
    }
}

/// What every launch is given.
pub struct Launch {
    pub bin: String,
    pub listen: std::net::SocketAddr,
    pub public_key: PathBuf,
    pub database_url: String,
    pub log: PathBuf,
}

pub struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Starts the server (its file limit is the bench's, raised to the hard limit).
    pub fn start(launch: &Launch) -> Result<Server, String> {
        let log = std::fs::File::create(&launch.log).map_err(|e| format!("{}: {e}", launch.log.display()))?;
        let err = log.try_clone().map_err(|e| format!("{}: {e}", launch.log.display()))?;
        let child = Command::new(&launch.bin)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .arg("--listen")
            .arg(launch.listen.to_string())
            .arg("--public-key")
            .arg(&launch.public_key)
            .arg("--database-url")
            .arg(&launch.database_url)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", launch.bin))?;
        Ok(Server { child, log: launch.log.clone() })
    }

    pub fn proc(&self) -> ServerProc {
        ServerProc { pid: self.child.id() }
    }

    /// Waits (bounded) until its log says "listening on".
    pub async fn listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + LISTEN_LIMIT;
        loop {
            if read(&self.log).contains("listening on") {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("the server exited ({status}): {}", tail(&self.log)));
            }
            if Instant::now() > deadline {
                return Err(format!("the server did not listen within {LISTEN_LIMIT:?}: {}", tail(&self.log)));
            }
            smol::Timer::after(Duration::from_millis(1)).await;
        }
    }

    /// Sends the signal and waits (bounded) for the process to end; returns how long it took.
    pub async fn stop(mut self, how: Stop) -> Duration {
        let t0 = Instant::now();
        let signal = match how {
            Stop::Term => libc::SIGTERM,
            Stop::Kill => libc::SIGKILL,
        };
        // SAFETY: kill only sends a signal to our own child, which has not been waited for.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        while t0.elapsed() < STOP_LIMIT {
            if let Ok(Some(_)) = self.child.try_wait() {
                return t0.elapsed();
            }
            smol::Timer::after(Duration::from_millis(5)).await;
        }
        t0.elapsed()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// The log's last lines, for an error.
fn tail(log: &Path) -> String {
    let text = read(log);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

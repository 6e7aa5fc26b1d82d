//! The command-line clients as processes: `iot-ws-server device` running in the background with
//! stdout and stderr captured line by line, and a server restarted on the same port.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bin::server_bin;
use crate::server::{Lines, Server, ServerOpts};
use crate::{eventually, WAIT};

/// What the clients read from the environment; removed so the caller's shell cannot leak in.
const CLIENT_ENV: &[&str] = &["IOT_WS_DEVICE_TOKEN", "IOT_WS_ACTUATOR_USERNAME", "IOT_WS_ACTUATOR_PASSWORD"];

/// One `iot-ws-server ARGS` process (`device`, usually); SIGKILLed on drop if still running.
pub struct CliProcess {
    child: Child,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
}

impl CliProcess {
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> CliProcess {
        let mut cmd = Command::new(server_bin());
        cmd.args(args);
        CliProcess::spawn(cmd, envs)
    }

    /// Runs a command line exactly as a person would paste it (`sh -c`, exec'd so that signals
    /// reach the program itself).
    pub fn shell(command_line: &str) -> CliProcess {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!("exec {command_line}"));
        CliProcess::spawn(cmd, &[])
    }

    fn spawn(mut cmd: Command, envs: &[(&str, &str)]) -> CliProcess {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for var in CLIENT_ENV {
            cmd.env_remove(var);
        }
        cmd.envs(envs.iter().copied());
        let mut child = cmd.spawn().expect("spawn iot-ws-server");
        let stdout = Lines::collect(child.stdout.take().expect("stdout"));
        let stderr = Lines::collect(child.stderr.take().expect("stderr"));
        CliProcess { child, stdout, stderr }
    }

    /// Waits until stderr holds `count` lines containing `needle`; panics with stderr if not.
    pub fn wait_for_stderr_count(&self, needle: &str, count: usize) {
        let seen = eventually(WAIT * 3, || (self.count_stderr(needle) >= count).then_some(()));
        assert!(seen.is_some(), "no {count} stderr lines with {needle:?}; stderr:\n{}", self.stderr.text());
    }

    pub fn count_stderr(&self, needle: &str) -> usize {
        self.stderr.all().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits for at least `count` stdout lines and returns them all.
    pub fn wait_for_stdout_lines(&self, count: usize) -> Vec<String> {
        eventually(WAIT, || Some(self.stdout.all()).filter(|lines| lines.len() >= count)).unwrap_or_else(|| {
            panic!("fewer than {count} stdout lines: {:?}; stderr:\n{}", self.stdout.all(), self.stderr.text())
        })
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.all()
    }

    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.child.id());
    }

    /// Waits (bounded) for the process to end; `None` if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // The reader threads finish at EOF, right after the exit.
                let _ = self.stderr.wait_for(Duration::from_secs(2), |_| false);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for CliProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Server {
    /// Stops this server gracefully (SIGTERM) and starts it again with the same options, so on
    /// the same address: what its clients see of an upgrade or a reboot.
    pub fn restart(mut self) -> Server {
        let opts = self.opts.clone();
        self.sigterm();
        assert!(self.wait_exit(WAIT).is_some(), "the server did not stop on SIGTERM");
        Server::start_again(&opts)
    }

    /// Starts `opts` again (same port, same external address) after its process ended, cleanly
    /// or in a crash. The old socket may linger a moment in the kernel, so "in use" is retried
    /// (bounded); a refusal for any other reason fails the test.
    pub fn start_again(opts: &ServerOpts) -> Server {
        let mut last = String::new();
        let started = eventually(WAIT, || match Server::try_start(opts.clone()) {
            Ok(server) => Some(server),
            Err(stderr) if stderr.contains("in use") => {
                last = stderr;
                std::thread::sleep(Duration::from_millis(100));
                None
            }
            Err(stderr) => panic!("the server on {} did not start again; stderr:\n{stderr}", opts.external_address),
        });
        started.unwrap_or_else(|| panic!("the port of {} stayed taken; last stderr:\n{last}", opts.external_address))
    }
}

//! One `iot-ws-server` process on loopback, its stderr captured line by line.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::bin::{release_server_bin, server_bin};
use crate::tokens::Keys;
use crate::WAIT;

/// The actuator credentials every test server is configured with (unless told otherwise).
pub const ACTUATOR_USER: &str = "dashboard";
pub const ACTUATOR_PASSWORD: &str = "s3cret-Actuator-Pa55";

/// The environment variables the server reads; removed so the caller's shell cannot leak in.
const SERVER_ENV: &[&str] = &[
    "IOT_WS_LISTEN",
    "IOT_WS_METRICS_LISTEN",
    "IOT_WS_PUBLIC_KEY",
    "DATABASE_URL",
    "IOT_WS_ACTUATOR_USERNAME",
    "IOT_WS_ACTUATOR_PASSWORD",
    "IOT_WS_ACTUATOR_PASSWORD_FILE",
    "DATABASE_URL_FILE",
    "IOT_WS_EXTERNAL_ADDRESS",
    "IOT_WS_MAX_MESSAGE_BYTES",
    "IOT_WS_REGISTER_TIMEOUT_SECS",
    "IOT_WS_HOLD_ACTUATIONS_SECS",
    "IOT_WS_MAX_CONNECTIONS",
    "IOT_WS_MAX_PENDING",
    "IOT_WS_MAX_PENDING_PER_ADDRESS",
    "IOT_WS_SEND_QUEUE_BYTES",
    "IOT_WS_HOLD_MAX_BYTES",
    "IOT_WS_INSTANCE_LOCK_WAIT",
    "PORT",
    "VCAP_SERVICES",
    "VCAP_APPLICATION",
    // Where rustls-native-certs looks for the system's CA certificates.
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// How to start a server.
#[derive(Clone, Debug)]
pub struct ServerOpts {
    pub public_key: PathBuf,
    pub database_url: Option<String>,
    /// `None`: no actuator credentials at all (every actuation refused).
    pub actuator: Option<(String, String)>,
    pub external_address: String,
    /// `--listen`; `127.0.0.1:0` unless [`routable`](ServerOpts::routable) chose a port.
    pub listen: String,
    /// Anything else, e.g. `["--register-timeout-secs", "1"]`.
    pub extra: Vec<String>,
    /// Run the release build rather than this test build's profile (see
    /// [`release_server_bin`](crate::bin::release_server_bin)).
    pub release: bool,
    /// Environment variables set for the server (after the ones it reads are cleared).
    pub env: Vec<(String, String)>,
}

impl Default for ServerOpts {
    fn default() -> Self {
        ServerOpts {
            public_key: Keys::shared().public_path(),
            database_url: None,
            actuator: Some((ACTUATOR_USER.into(), ACTUATOR_PASSWORD.into())),
            external_address: "10.1.2.3:5000".into(),
            listen: "127.0.0.1:0".into(),
            extra: Vec::new(),
            release: false,
            env: Vec::new(),
        }
    }
}

impl ServerOpts {
    pub fn with_db(mut self, url: &str) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// Listens on `127.0.0.1:port` and stores exactly that as `server` in the bindings, so that
    /// a dashboard reading the row can connect to it (several instances on one database).
    pub fn routable(mut self, port: u16) -> Self {
        self.listen = format!("127.0.0.1:{port}");
        self.external_address = self.listen.clone();
        self
    }

    /// Runs the release build.
    pub fn release(mut self) -> Self {
        self.release = true;
        self
    }

    /// Sets an environment variable for the server, e.g. `DATABASE_URL`.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn arg(mut self, name: &str, value: &str) -> Self {
        self.extra.push(name.into());
        self.extra.push(value.into());
        self
    }

    fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec!["--listen".into(), self.listen.clone(), "--public-key".into()];
        args.push(self.public_key.display().to_string());
        args.extend(["--external-address".into(), self.external_address.clone()]);
        if let Some(url) = &self.database_url {
            args.extend(["--database-url".into(), url.clone()]);
        }
        if let Some((user, password)) = &self.actuator {
            args.extend(["--actuator-username".into(), user.clone(), "--actuator-password".into(), password.clone()]);
        }
        args.extend(self.extra.iter().cloned());
        args
    }
}

/// Lines a process wrote on one stream (or two, merged), shared with the threads that read them.
#[derive(Default)]
pub(crate) struct Lines {
    lines: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
    /// For merged lines: the streams still being read.
    streams_left: std::sync::atomic::AtomicUsize,
}

impl Lines {
    pub(crate) fn collect(stream: impl Read + Send + 'static) -> Arc<Lines> {
        Lines::collect_also(stream, None)
    }

    /// Like [`collect`](Lines::collect), each line also pushed to `also` (the server's log,
    /// which is its stdout and stderr together).
    pub(crate) fn collect_also(stream: impl Read + Send + 'static, also: Option<Arc<Lines>>) -> Arc<Lines> {
        let lines = Arc::new(Lines::default());
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                sink.push(line, also.as_deref());
            }
            sink.end(also.as_deref());
        });
        lines
    }

    /// Pushes `line` here, then to `also`: a line seen in the log is in its stream's lines too.
    fn push(&self, line: String, also: Option<&Lines>) {
        self.lines.lock().unwrap().0.push(line.clone());
        self.changed.notify_all();
        if let Some(also) = also {
            also.lines.lock().unwrap().0.push(line);
            also.changed.notify_all();
        }
    }

    /// The stream ended; `also` ends with the last of its streams.
    fn end(&self, also: Option<&Lines>) {
        self.lines.lock().unwrap().1 = true;
        self.changed.notify_all();
        if let Some(also) = also {
            let mut guard = also.lines.lock().unwrap();
            guard.1 = also.streams_left.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) <= 1;
            also.changed.notify_all();
        }
    }

    /// Lines fed by two streams (see [`collect_also`](Lines::collect_also)).
    fn merged() -> Arc<Lines> {
        let lines = Lines::default();
        lines.streams_left.store(2, std::sync::atomic::Ordering::Relaxed);
        Arc::new(lines)
    }

    /// Like [`collect`](Lines::collect) up to the `listening on` line, then never reads again:
    /// the pipe stays open and fills, as when whatever reads a service's stderr hangs. The
    /// unread end is held until process `pid` is gone.
    pub(crate) fn collect_until_listening(
        stream: impl Read + Send + 'static,
        pid: u32,
        also: Arc<Lines>,
    ) -> Arc<Lines> {
        let lines = Arc::new(Lines::default());
        let sink = lines.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = line.trim_end_matches(['\n', '\r']).to_string();
                        let listening = line.contains("listening on ");
                        sink.push(line, Some(&also));
                        if listening {
                            // SAFETY: kill(2) with signal 0 only asks whether the pid exists.
                            while unsafe { libc::kill(pid as libc::pid_t, 0) } == 0 {
                                std::thread::sleep(Duration::from_millis(100));
                            }
                            break;
                        }
                    }
                }
            }
            sink.end(Some(&also));
        });
        lines
    }

    /// The first line (counting from the start) that `pred` accepts, waiting up to `timeout`.
    pub(crate) fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lines.lock().unwrap();
        loop {
            if let Some(line) = guard.0.iter().find(|l| pred(l)) {
                return Some(line.clone());
            }
            let now = Instant::now();
            if guard.1 || now >= deadline {
                return None;
            }
            guard = self.changed.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    pub(crate) fn text(&self) -> String {
        self.lines.lock().unwrap().0.join("\n")
    }

    pub(crate) fn all(&self) -> Vec<String> {
        self.lines.lock().unwrap().0.clone()
    }
}

/// A running server; killed (SIGKILL) on drop if still running.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub opts: ServerOpts,
    /// Its log: stdout (info and below) and stderr (warnings and errors) as read.
    log: Arc<Lines>,
    stderr: Arc<Lines>,
    stdout: Arc<Lines>,
}

impl Server {
    /// Starts the server with `opts` and waits for its `listening on` line.
    pub fn start(opts: ServerOpts) -> Server {
        let args = opts.args();
        Server::spawn(opts, &args)
    }

    /// Like [`start`](Server::start), waiting up to `startup` for `listening on` (an instance that
    /// waits for its address's lock says it only once it has it).
    pub fn start_within(opts: ServerOpts, startup: Duration) -> Server {
        let args = opts.args();
        Server::spawn_waiting(opts, &args, startup)
    }

    /// Starts `iot-ws-server ARGS` (the caller gives every flag) and waits for `listening on`.
    pub fn spawn(opts: ServerOpts, args: &[String]) -> Server {
        Server::spawn_waiting(opts, args, WAIT)
    }

    /// Like [`spawn`](Server::spawn), waiting up to `startup` (`--demo` generates an RSA key
    /// first, which an unoptimised build under load can take many seconds to do).
    pub fn spawn_waiting(opts: ServerOpts, args: &[String], startup: Duration) -> Server {
        Server::try_spawn_waiting(opts, args, startup)
            .unwrap_or_else(|stderr| panic!("server did not say `listening on`; stderr:\n{stderr}"))
    }

    /// Starts the server with `opts`; `Err(stderr)` if it never said `listening on` (it exited,
    /// e.g. because its port was taken, or hung: then it is killed).
    pub fn try_start(opts: ServerOpts) -> Result<Server, String> {
        let args = opts.args();
        Server::try_spawn_waiting(opts, &args, WAIT)
    }

    /// Starts an instance with [`ServerOpts::routable`] on a free loopback port, trying another
    /// port if the one picked was taken meanwhile.
    pub fn start_routable(opts: ServerOpts) -> Server {
        let mut last = String::new();
        for _ in 0..10 {
            match Server::try_start(opts.clone().routable(loopback_port())) {
                Ok(server) => return server,
                Err(stderr) if stderr.contains("in use") => last = stderr,
                Err(stderr) => panic!("instance did not start; stderr:\n{stderr}"),
            }
        }
        panic!("no free port for an instance; last stderr:\n{last}");
    }

    fn try_spawn_waiting(opts: ServerOpts, args: &[String], startup: Duration) -> Result<Server, String> {
        Server::try_spawn_custom(opts, args, startup, |_| {}, |stream, _, log| Lines::collect_also(stream, Some(log)))
    }

    /// Spawns with `customize` applied to the command; `stdout` turns the server's stdout pipe
    /// into [`Lines`], each line also pushed to the log that `listening on` is awaited in.
    fn try_spawn_custom(
        opts: ServerOpts,
        args: &[String],
        startup: Duration,
        customize: impl FnOnce(&mut Command),
        stdout: impl FnOnce(std::process::ChildStdout, u32, Arc<Lines>) -> Arc<Lines>,
    ) -> Result<Server, String> {
        let bin = if opts.release { release_server_bin() } else { server_bin() };
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for var in SERVER_ENV {
            cmd.env_remove(var);
        }
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
        customize(&mut cmd);
        let mut child = cmd.spawn().expect("spawn iot-ws-server");
        let pid = child.id();
        let log = Lines::merged();
        let stdout = stdout(child.stdout.take().expect("stdout"), pid, log.clone());
        let stderr = Lines::collect_also(child.stderr.take().expect("stderr"), Some(log.clone()));
        let line = log.wait_for(startup, |l| l.contains("listening on "));
        let Some(line) = line else {
            let _ = child.kill();
            let _ = child.wait();
            // The reader threads finish at EOF, right after the exit.
            let _ = log.wait_for(Duration::from_secs(2), |_| false);
            return Err(log.text());
        };
        // A text line ends with the address, a JSON line with the address and `"}`.
        let addr = line.rsplit("listening on ").next().unwrap().trim().trim_end_matches("\"}");
        let addr: SocketAddr = addr.parse().unwrap_or_else(|_| panic!("listening on what? {line:?}"));
        Ok(Server { child, addr, opts, log, stderr, stdout })
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server logged so far, on stdout and stderr.
    pub fn log(&self) -> String {
        self.log.text()
    }

    /// What the server wrote on stderr: its warnings and errors.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Waits (bounded) for a stdout line containing `needle`: stdout and stderr are read by
    /// separate threads, so `listening on` may be seen before earlier stdout lines.
    pub fn wait_for_stdout(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.stdout.wait_for(timeout, |l| l.contains(needle))
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.all()
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.log.wait_for(timeout, |l| l.contains(needle))
    }

    /// Asserts that `secret` (a token, a password) was never logged.
    pub fn assert_never_logged(&self, secret: &str) {
        // Give any late log line of the same event a moment to arrive.
        std::thread::sleep(Duration::from_millis(50));
        let text = self.log();
        assert!(!text.contains(secret), "secret {secret:?} appears in the server's log:\n{text}");
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.child.id());
    }

    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// SIGKILL (a crash: nothing is cleaned up) and waits for the process to be gone.
    pub fn kill(&mut self) -> ExitStatus {
        self.signal(libc::SIGKILL);
        self.wait_exit(WAIT).expect("a SIGKILLed server exits")
    }

    /// What this instance stores as `server` in the bindings.
    pub fn external_address(&self) -> &str {
        &self.opts.external_address
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Prometheus text from `GET /metrics`.
    pub fn metrics(&self) -> String {
        let (status, body) = crate::client::http_get(self.addr, "/metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    /// The value of one metric line (name with labels, exactly as exposed).
    pub fn metric(&self, name_and_labels: &str) -> Option<f64> {
        self.metrics().lines().find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Waits (bounded) until this instance counts exactly `devices` registered devices (its
    /// gauge): it has seen every other connection end.
    pub fn wait_registered(&self, devices: usize) {
        let ok = crate::eventually(WAIT, || {
            (self.metric("iot_ws_registered_devices") == Some(devices as f64)).then_some(())
        });
        assert!(
            ok.is_some(),
            "{} still counts {:?} registered devices, expected {devices}",
            self.external_address(),
            self.metric("iot_ws_registered_devices")
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A text log line's message: what follows the time and the (padded) level. A line that is not
/// of that form (a JSON line, a line written before the logger) is returned whole.
pub fn log_message(line: &str) -> &str {
    let mut parts = line.splitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(time), Some(level), Some(rest))
            if time.ends_with('Z') && ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level) =>
        {
            rest.trim_start()
        }
        _ => line,
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// A loopback port that was free a moment ago, below the ephemeral range (32768-60999) so that
/// no outgoing connection takes it between now and the server's bind; differs per call.
pub fn loopback_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    for _ in 0..1000 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()));
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 20_000 + ((u64::from(std::process::id()) * 7_919 + n * 104_729 + nanos / 1_000) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below 32768");
}

/// Runs `iot-ws-server ARGS` to its end (killed after `timeout`): status, stdout, stderr.
pub fn run_to_exit(args: &[&str], envs: &[(&str, &str)], timeout: Duration) -> (Option<ExitStatus>, String, String) {
    let mut cmd = Command::new(server_bin());
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for var in SERVER_ENV {
        cmd.env_remove(var);
    }
    cmd.envs(envs.iter().copied());
    let mut child = cmd.spawn().expect("spawn iot-ws-server");
    let out = Lines::collect(child.stdout.take().expect("stdout"));
    let err = Lines::collect(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // The reader threads finish at EOF, right after the exit.
    let _ = out.wait_for(Duration::from_secs(2), |_| false);
    let _ = err.wait_for(Duration::from_secs(2), |_| false);
    let mut stderr = err.text();
    if !stderr.is_empty() {
        stderr.push('\n');
    }
    (status, out.text(), stderr)
}

/// Hostile-load helpers: resource limits, unread stderr, memory.
impl Server {
    /// Starts the server with its file descriptor limit (soft and hard `RLIMIT_NOFILE`) set to
    /// `nofile`, as a small service limit would.
    pub fn start_with_nofile(opts: ServerOpts, nofile: u64) -> Server {
        use std::os::unix::process::CommandExt;
        let args = opts.args();
        let limit = |cmd: &mut Command| {
            // SAFETY: setrlimit(2) is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let rl = libc::rlimit { rlim_cur: nofile as libc::rlim_t, rlim_max: nofile as libc::rlim_t };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        };
        Server::try_spawn_custom(opts, &args, WAIT, limit, |stream, _, log| Lines::collect_also(stream, Some(log)))
            .unwrap_or_else(|log| panic!("server did not say `listening on`; log:\n{log}"))
    }

    /// Starts the server and reads its stdout (where the info lines go) only up to `listening
    /// on`: from then on nobody reads it and the pipe fills (a hung log collector). Its stderr is
    /// read as usual.
    pub fn start_stdout_unread(opts: ServerOpts) -> Server {
        let args = opts.args();
        Server::try_spawn_custom(opts, &args, WAIT, |_| {}, Lines::collect_until_listening)
            .unwrap_or_else(|log| panic!("server did not say `listening on`; log:\n{log}"))
    }

    /// A `kB` field of `/proc/PID/status`, in KiB: `VmRSS` (resident now), `VmHWM` (the peak
    /// resident size since the start).
    pub fn proc_status_kib(&self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {path}:\n{status}"))
    }

    /// The server's peak resident set size so far (`VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        self.proc_status_kib("VmHWM") * 1024
    }

    /// Every log line so far, stdout and stderr.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.all()
    }

    /// Every log line's message so far: without the time and level of the text format.
    pub fn log_messages(&self) -> Vec<String> {
        self.log.all().iter().map(|l| log_message(l).to_string()).collect()
    }
}

//! A real PostgreSQL 15 cluster, made by the harness itself.
//!
//! `initdb` refuses to run as root, so every cluster command runs as the `postgres` user
//! (`runuser`); the data directory, socket directory and log live in one temp dir owned by it.
//! The port is below 32768 (the ephemeral range may be taken by outgoing connections) and is
//! retried if taken. One cluster is shared by the tests of a test process ([`Cluster::shared`]),
//! each test getting a fresh database ([`Cluster::create_db`]); a test that stops PostgreSQL
//! makes its own ([`Cluster::new`]). Statics are never dropped, so each cluster also starts a
//! detached watchdog that stops it and removes its directory once the test process is gone.
//!
//! [`Cluster::with_tls`] starts one with `ssl = on` and a certificate from a test CA. It listens
//! on 127.0.0.1 and 127.0.0.2 (both loopback), so that a test can reach it under an IP address
//! its certificate names and under one it does not. Clear text is still accepted, so a client
//! that fell back to it would be let in: tests look at `pg_stat_ssl` ([`Db::server_tls`]). Its
//! role [`SCRAM_USER`] logs in with a password (SCRAM-SHA-256) and over TLS only; every other
//! login is trusted, as in the harness's other clusters.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::certs::Ca;
use crate::temp::TempDir;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The role of a [`Cluster::with_tls`] that must log in with SCRAM over TLS, and its password.
pub const SCRAM_USER: (&str, &str) = ("scram", "scram-pw");

/// One PostgreSQL cluster; stopped and removed on drop.
pub struct Cluster {
    dir: PathBuf,
    pub port: u16,
    /// Serialises start/stop.
    state: Mutex<bool>,
    /// `postgres -c` settings besides the harness's own: TLS, listen addresses.
    settings: String,
}

/// A database in a cluster.
pub struct Db {
    pub name: String,
    pub port: u16,
}

impl Db {
    /// libpq key=value connection string, as given to the server's `--database-url`.
    pub fn url(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname={} connect_timeout=2", self.port, self.name)
    }

    /// A fresh client connection (the test's own, not the server's).
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url(), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.name))
    }

    /// The iot-ws-server connections to this database, and how many of them are over TLS.
    pub fn server_tls(&self) -> (i64, i64) {
        let row = self
            .client()
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                 WHERE a.application_name = 'iot-ws-server' AND a.datname = current_database()",
                &[],
            )
            .expect("query pg_stat_ssl");
        (row.get(0), row.get(1))
    }

    /// `connectingStatus` and `server` of the device's 'ws' binding row, if there is one.
    pub fn binding(&self, device: &str) -> Option<(bool, String)> {
        let mut client = self.client();
        let rows = client
            .query(
                r#"SELECT "connectingStatus", server FROM dashboard."connectionBindings"
                   WHERE "deviceId" = $1 AND type::text = 'ws'"#,
                &[&device],
            )
            .expect("query binding");
        assert!(rows.len() <= 1, "more than one ws row for {device}");
        rows.first().map(|r| (r.get(0), r.get(1)))
    }

    /// Every 'ws' binding row: (deviceId, connectingStatus, server), by deviceId; for checks over
    /// many devices and for failure messages.
    pub fn bindings(&self) -> Vec<(String, bool, String)> {
        let mut client = self.client();
        let rows = client
            .query(
                r#"SELECT "deviceId"::text, "connectingStatus", server::text FROM dashboard."connectionBindings"
                   WHERE type::text = 'ws' ORDER BY "deviceId""#,
                &[],
            )
            .expect("query bindings");
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
    }

    /// Advisory locks currently held in this database (instances hold one each while alive).
    pub fn advisory_locks(&self) -> i64 {
        let mut client = self.client();
        client
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[],
            )
            .expect("query pg_locks")
            .get(0)
    }

    /// Waits until the device's row says `connected` (bounded); returns whether it did.
    pub fn wait_binding(&self, device: &str, connected: bool) -> bool {
        crate::eventually(crate::WAIT, || (self.binding(device).map(|b| b.0) == Some(connected)).then_some(()))
            .is_some()
    }
}

impl Cluster {
    /// The cluster shared by the tests of this process, started on first use.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(Cluster::new)
    }

    /// A new cluster of its own, initialised and started.
    pub fn new() -> Cluster {
        Cluster::init_and_start(|_| "-c listen_addresses=127.0.0.1".into())
    }

    /// A new cluster that offers TLS with a certificate `ca` issues for `names`, on 127.0.0.1 and
    /// 127.0.0.2, with the role [`SCRAM_USER`].
    pub fn with_tls(ca: &Ca, names: &[&str]) -> Cluster {
        let cluster = Cluster::init_and_start(|dir| {
            // In the cluster's directory: PostgreSQL wants the key owned by its user, mode 0600.
            let (cert, key, _) = ca.write(dir, "server", names);
            // The first line that matches decides: SCRAM_USER's go before initdb's `trust`.
            let hba = dir.join("data/pg_hba.conf");
            let trusted = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
            let user = SCRAM_USER.0;
            let scram = format!("hostssl all {user} 127.0.0.0/8 scram-sha-256\nhost all {user} all reject\n");
            std::fs::write(&hba, scram + &trusted).expect("write pg_hba.conf");
            format!(
                "-c listen_addresses=127.0.0.1,127.0.0.2 -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert.display(),
                key.display()
            )
        });
        let (user, password) = SCRAM_USER;
        let admin = Db { name: "postgres".into(), port: cluster.port };
        admin
            .client()
            .batch_execute(&format!("CREATE ROLE {user} LOGIN SUPERUSER PASSWORD '{password}'"))
            .expect("create role");
        cluster
    }

    /// Makes a cluster in a new directory; `settings` gives its `-c` settings, given that
    /// directory.
    fn init_and_start(settings: impl FnOnce(&Path) -> String) -> Cluster {
        let dir = TempDir::new("pg").into_path();
        std::fs::create_dir_all(dir.join("sock")).expect("mkdir sock");
        run_ok(Command::new("chown").arg("-R").arg("postgres:postgres").arg(&dir));
        let data = dir.join("data");
        run_ok(as_postgres(&format!("{PG_BIN}/initdb")).arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]));
        watchdog(&dir);
        let settings = settings(&dir);
        for attempt in 0..20 {
            let port = candidate_port(attempt);
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            let cluster = Cluster { dir: dir.clone(), port, state: Mutex::new(false), settings: settings.clone() };
            if cluster.try_start() {
                return cluster;
            }
            std::mem::forget(cluster);
        }
        panic!("could not start PostgreSQL; log:\n{}", std::fs::read_to_string(dir.join("log")).unwrap_or_default());
    }

    fn try_start(&self) -> bool {
        let mut running = self.state.lock().unwrap();
        let options = format!(
            "-p {} -k {} {} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.join("sock").display(),
            self.settings
        );
        let status = as_postgres(&format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-o", &options, "-l"])
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "30", "start"])
            .status()
            .expect("run pg_ctl start");
        *running = status.success();
        *running
    }

    /// Starts it again after [`stop`](Cluster::stop), on the same port.
    pub fn start(&self) {
        assert!(self.try_start(), "pg_ctl start failed; log:\n{}", self.log());
    }

    /// Stops it (fast shutdown: clients are disconnected).
    pub fn stop(&self) {
        let mut running = self.state.lock().unwrap();
        if *running {
            let _ = as_postgres(&format!("{PG_BIN}/pg_ctl"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "fast", "-w", "-t", "30", "stop"])
                .status();
            *running = false;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// A fresh, empty database.
    pub fn create_db(&self) -> Db {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("t{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let admin = Db { name: "postgres".into(), port: self.port };
        admin.client().batch_execute(&format!("CREATE DATABASE {name}")).expect("create database");
        Db { name, port: self.port }
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster::new()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn as_postgres(program: &str) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--", program]).stdin(Stdio::null()).stdout(Stdio::null());
    cmd
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.stderr(Stdio::piped()).output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A port in 15000..32000, different per process and attempt.
fn candidate_port(attempt: u32) -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() as u64);
    let mix = (u64::from(std::process::id()) * 7919
        + NEXT.fetch_add(1, Ordering::Relaxed) * 104_729
        + nanos
        + u64::from(attempt) * 31)
        % 17_000;
    15_000 + mix as u16
}

/// Stops the cluster in `dir` and removes `dir` once this process has exited. Detached
/// (`setsid`) so that a Ctrl-C to the test run does not kill it before it cleans up.
fn watchdog(dir: &Path) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         runuser -u postgres -- {PG_BIN}/pg_ctl -D '{dir}/data' -m immediate stop >/dev/null 2>&1; \
         rm -rf '{dir}'",
        pid = std::process::id(),
        dir = dir.display()
    );
    let spawned = Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    // It outlives us and is reaped by init; nothing to wait for here.
    drop(spawned);
}

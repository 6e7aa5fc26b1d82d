//! Bindings in PostgreSQL: the platform's `dashboard."connectionBindings"` table.
//!
//! One thread owns the connection and takes its work from a channel, so sockets never wait on
//! the database. Work is taken in batches: runs of registrations become one upsert and runs of
//! disconnections one update, which is what keeps a disconnect storm to a few statements. The
//! thread remembers which devices it last recorded as connected here; whenever it (re)connects
//! it makes the table agree with that (rows of this instance that are no longer connected are
//! set false, connected ones true), which repairs what a crash or an outage left behind.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use futures_lite::future;
use iot_ws_core::{DeviceId, StoreFailed};
use postgres::{Client, NoTls};

use crate::config::ConfigError;

const MAX_BATCH: usize = 2_000;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

enum Op {
    Upsert(DeviceId, Sender<Result<(), StoreFailed>>),
    Disconnect(DeviceId),
    Flush(Sender<()>),
}

/// The handle the hub task writes through.
pub struct PgStore {
    ops: Sender<Op>,
    shown: String,
}

impl PgStore {
    /// Checks the connection string and starts the database thread; connecting happens there,
    /// and an unreachable database is retried rather than fatal.
    pub fn start(url: &str, server: String) -> Result<PgStore, ConfigError> {
        let mut config = postgres::Config::from_str(url)
            .map_err(|_| ConfigError("--database-url is not a PostgreSQL connection string or URL".into()))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(2));
        }
        config.keepalives(true).application_name("iot-ws-server");
        let shown = describe(&config);
        let (ops, rx) = async_channel::unbounded();
        let worker = Worker {
            config,
            server,
            client: None,
            binding_type: String::new(),
            retry_at: Instant::now(),
            backoff: Duration::from_millis(100),
            connected: HashSet::new(),
            reported_down: false,
        };
        std::thread::Builder::new()
            .name("bindings-db".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| ConfigError(format!("cannot start the database thread: {e}")))?;
        Ok(PgStore { ops, shown })
    }

    pub fn upsert_connected(&self, device: DeviceId, reply: Sender<Result<(), StoreFailed>>) {
        if self.ops.try_send(Op::Upsert(device, reply.clone())).is_err() {
            let _ = reply.try_send(Err(StoreFailed));
        }
    }

    pub fn mark_disconnected(&self, device: DeviceId) {
        let _ = self.ops.try_send(Op::Disconnect(device));
    }

    pub async fn flush(&self, limit: Duration) {
        let (tx, rx) = async_channel::bounded(1);
        if self.ops.try_send(Op::Flush(tx)).is_ok() {
            future::or(async { rx.recv().await.ok() }, async {
                smol::Timer::after(limit).await;
                None
            })
            .await;
        }
    }

    pub fn describe(&self) -> &str {
        &self.shown
    }
}

/// Host, port and database, never the password.
fn describe(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or("(default)"))
}

struct Worker {
    config: postgres::Config,
    server: String,
    client: Option<Client>,
    /// The `type` column's SQL type, as the table has it (the platform's enum or ours).
    binding_type: String,
    retry_at: Instant,
    backoff: Duration,
    /// Devices last recorded as connected to this instance.
    connected: HashSet<DeviceId>,
    reported_down: bool,
}

impl Worker {
    fn run(mut self, ops: Receiver<Op>) {
        self.ensure_client();
        loop {
            // While the database is away, wake up to retry even if no work comes.
            let wait = if self.client.is_some() { Duration::from_secs(3600) } else { self.backoff };
            let first = smol::block_on(future::or(async { Some(ops.recv().await) }, async {
                smol::Timer::after(wait).await;
                None
            }));
            match first {
                None => {
                    self.ensure_client();
                }
                Some(Err(_)) => return,
                Some(Ok(op)) => {
                    let mut batch = vec![op];
                    while batch.len() < MAX_BATCH {
                        match ops.try_recv() {
                            Ok(op) => batch.push(op),
                            Err(_) => break,
                        }
                    }
                    self.process(batch);
                }
            }
        }
    }

    /// Applies a batch in order, grouping consecutive writes of one kind.
    fn process(&mut self, batch: Vec<Op>) {
        let mut upserts = Vec::new();
        let mut downs = Vec::new();
        for op in batch {
            match op {
                Op::Upsert(device, reply) => {
                    self.write_disconnects(std::mem::take(&mut downs));
                    upserts.push((device, reply));
                }
                Op::Disconnect(device) => {
                    self.write_upserts(std::mem::take(&mut upserts));
                    downs.push(device);
                }
                Op::Flush(reply) => {
                    self.write_upserts(std::mem::take(&mut upserts));
                    self.write_disconnects(std::mem::take(&mut downs));
                    let _ = reply.try_send(());
                }
            }
        }
        self.write_upserts(upserts);
        self.write_disconnects(downs);
    }

    fn write_upserts(&mut self, upserts: Vec<(DeviceId, Sender<Result<(), StoreFailed>>)>) {
        if upserts.is_empty() {
            return;
        }
        if !self.ensure_client() {
            for (_, reply) in upserts {
                let _ = reply.try_send(Err(StoreFailed));
            }
            return;
        }
        let mut ids: Vec<&str> = upserts.iter().map(|(d, _)| d.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let all_ok = self.upsert_many(&ids).is_ok();
        for (device, reply) in &upserts {
            // A failed batch is retried row by row, so one bad row fails only its own device.
            let ok = all_ok || self.upsert_many(&[device.as_str()]).is_ok();
            if ok {
                self.connected.insert(device.clone());
            }
            let _ = reply.try_send(if ok { Ok(()) } else { Err(StoreFailed) });
        }
    }

    fn upsert_many(&mut self, ids: &[&str]) -> Result<(), ()> {
        let sql = format!(
            r#"INSERT INTO dashboard."connectionBindings"
                 (id, "deviceId", "lastConnectedAt", server, "connectingStatus", type, created, updated)
               SELECT gen_random_uuid(), d, now(), $2, true, CAST('ws' AS {t}), now(), now()
               FROM unnest($1::text[]) AS d
               ON CONFLICT ("deviceId", type) DO UPDATE SET
                 server = EXCLUDED.server, "connectingStatus" = true,
                 "lastConnectedAt" = EXCLUDED."lastConnectedAt", updated = EXCLUDED.updated"#,
            t = self.binding_type
        );
        let server = self.server.clone();
        self.execute("record connected devices", &sql, &[&ids, &server])
    }

    fn write_disconnects(&mut self, downs: Vec<DeviceId>) {
        if downs.is_empty() {
            return;
        }
        for device in &downs {
            self.connected.remove(device);
        }
        // While the database is away, the next (re)connection's resync writes these.
        if self.ensure_client() {
            let ids: Vec<&str> = downs.iter().map(DeviceId::as_str).collect();
            let server = self.server.clone();
            let _ = self.execute(
                "record disconnected devices",
                r#"UPDATE dashboard."connectionBindings" SET "connectingStatus" = false, updated = now()
                   WHERE type = 'ws' AND server = $2 AND "deviceId" = ANY($1::text[])"#,
                &[&ids, &server],
            );
        }
    }

    /// Runs one statement; a lost connection is dropped so that the next write reconnects.
    fn execute(&mut self, what: &str, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> Result<(), ()> {
        let Some(client) = self.client.as_mut() else { return Err(()) };
        match client.execute(sql, params) {
            Ok(_) => Ok(()),
            Err(e) => {
                log_db_error(what, &e);
                if client.is_closed() {
                    self.client = None;
                    self.retry_at = Instant::now();
                }
                Err(())
            }
        }
    }

    /// A usable connection, connecting (with back-off) if there is none.
    fn ensure_client(&mut self) -> bool {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return true;
        }
        self.client = None;
        if Instant::now() < self.retry_at {
            return false;
        }
        match self.connect() {
            Ok(()) => {
                if self.reported_down {
                    eprintln!("database: connected again");
                }
                self.reported_down = false;
                self.backoff = Duration::from_millis(100);
                true
            }
            Err(e) => {
                if !self.reported_down {
                    eprintln!("database: unavailable ({}); registrations get 500 until it is back", db_error_text(&e));
                }
                self.reported_down = true;
                self.client = None;
                self.retry_at = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                false
            }
        }
    }

    fn connect(&mut self) -> Result<(), postgres::Error> {
        let mut client = self.config.connect(NoTls)?;
        client.batch_execute("SET statement_timeout = 5000")?;
        client.batch_execute(crate::schema::ENSURE_TABLE)?;
        let row = client.query_one(crate::schema::BINDING_TYPE, &[])?;
        self.binding_type = row.get(0);
        self.client = Some(client);
        self.resync();
        Ok(())
    }

    /// Makes this instance's rows agree with what it knows is connected.
    fn resync(&mut self) {
        let connected: Vec<DeviceId> = self.connected.iter().cloned().collect();
        let ids: Vec<&str> = connected.iter().map(DeviceId::as_str).collect();
        let server = self.server.clone();
        let _ = self.execute(
            "repair stale bindings",
            r#"UPDATE dashboard."connectionBindings" SET "connectingStatus" = false, updated = now()
               WHERE type = 'ws' AND server = $2 AND "connectingStatus" AND NOT ("deviceId" = ANY($1::text[]))"#,
            &[&ids, &server],
        );
        if !ids.is_empty() {
            let _ = self.upsert_many(&ids);
        }
    }
}

fn db_error_text(e: &postgres::Error) -> String {
    match (e.code(), e.as_db_error()) {
        (Some(code), Some(db)) => format!("{}: {}", code.code(), db.message()),
        _ => e.to_string(),
    }
}

fn log_db_error(what: &str, e: &postgres::Error) {
    eprintln!("database: cannot {what}: {}", db_error_text(e));
}

//! Bindings in PostgreSQL: the platform's `dashboard."connectionBindings"` table.
//!
//! One thread owns the connection and takes its work from a channel, so sockets never wait on
//! the database. Work is taken in batches: runs of registrations become one upsert and runs of
//! disconnections one update, which is what keeps a disconnect storm to a few statements.
//!
//! Several instances share the table, so every write is guarded. A registration takes the row
//! over (whoever had it) and remembers the `lastConnectedAt` it wrote: that value names this
//! registration. A disconnection only clears a row that still names this instance *and* this
//! registration, so a late disconnect on an instance the device has left never touches the row
//! its new instance wrote. Whenever the thread (re)connects it makes this instance's rows agree
//! with what it knows (rows of this instance whose devices are not connected here are set false,
//! its current registrations true again), which repairs what a crash or an outage left behind
//! and never touches another instance's rows.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use async_channel::{Receiver, Sender};
use futures_lite::future;
use iot_ws_core::{DeviceId, StoreFailed};

use crate::config::ConfigError;
use crate::db::connection::{Database, Reconnecting, PROBE};
use crate::ops::metrics::Metrics;

const MAX_BATCH: usize = 2_000;

enum Op {
    Upsert(DeviceId, Sender<Result<(), StoreFailed>>),
    Disconnect(DeviceId),
    /// The device registered with another instance: its row is not this instance's any more.
    Forget(DeviceId),
    Flush(Sender<()>),
}

/// The handle the hub task writes through.
pub struct PgStore {
    ops: Sender<Op>,
}

impl PgStore {
    /// Starts the database thread; connecting happens there, and an unreachable database is
    /// retried rather than fatal.
    pub fn start(config: Database, server: String, metrics: &Metrics) -> Result<PgStore, ConfigError> {
        let (ops, rx) = async_channel::unbounded();
        let worker = Worker {
            db: Reconnecting::new(config, "bindings", metrics),
            server,
            binding_type: String::new(),
            connected: HashMap::new(),
        };
        std::thread::Builder::new()
            .name("bindings-db".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| ConfigError(format!("cannot start the database thread: {e}")))?;
        Ok(PgStore { ops })
    }

    pub fn upsert_connected(&self, device: DeviceId, reply: Sender<Result<(), StoreFailed>>) {
        if self.ops.try_send(Op::Upsert(device, reply.clone())).is_err() {
            let _ = reply.try_send(Err(StoreFailed));
        }
    }

    pub fn mark_disconnected(&self, device: DeviceId) {
        let _ = self.ops.try_send(Op::Disconnect(device));
    }

    pub fn forget(&self, device: DeviceId) {
        let _ = self.ops.try_send(Op::Forget(device));
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
}

struct Worker {
    db: Reconnecting,
    server: String,
    /// The `type` column's SQL type, as the table has it (the platform's enum or ours); empty
    /// until the current connection has read it.
    binding_type: String,
    /// Devices recorded as connected to this instance, with the `lastConnectedAt` written at
    /// their registration.
    connected: HashMap<DeviceId, SystemTime>,
}

impl Worker {
    fn run(mut self, ops: Receiver<Op>) {
        self.ready();
        loop {
            // While the database is away, wake up to retry even if no work comes; while it is up,
            // to probe it.
            let wait = if self.db.is_up() { PROBE } else { self.db.retry_in() };
            let first = smol::block_on(future::or(async { Some(ops.recv().await) }, async {
                smol::Timer::after(wait.max(Duration::from_millis(10))).await;
                None
            }));
            match first {
                None => {
                    // The probe is a registration of no devices: the same statements and rights
                    // as a real one, so a database that refuses writes is not taken for up.
                    if self.ready() {
                        let _ = self.upsert_many(&[]);
                    }
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
                Op::Forget(device) => {
                    self.write_upserts(std::mem::take(&mut upserts));
                    self.write_disconnects(std::mem::take(&mut downs));
                    self.connected.remove(&device);
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
        if !self.ready() {
            for (_, reply) in upserts {
                let _ = reply.try_send(Err(StoreFailed));
            }
            return;
        }
        let mut ids: Vec<&str> = upserts.iter().map(|(d, _)| d.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut written: HashMap<String, SystemTime> = self.upsert_many(&ids).unwrap_or_default();
        for (device, reply) in &upserts {
            // A failed batch is retried row by row, so one bad row fails only its own device.
            if !written.contains_key(device.as_str()) {
                written.extend(self.upsert_many(&[device.as_str()]).unwrap_or_default());
            }
            let result = match written.get(device.as_str()) {
                Some(at) => {
                    self.connected.insert(device.clone(), *at);
                    Ok(())
                }
                None => Err(StoreFailed),
            };
            let _ = reply.try_send(result);
        }
    }

    /// Takes the devices' rows over for this instance; returns the `lastConnectedAt` written.
    /// The instances the rows named before are told (see `cluster/inbox.rs`): the device left them.
    fn upsert_many(&mut self, ids: &[&str]) -> Result<HashMap<String, SystemTime>, ()> {
        let sql = crate::db::sql::upsert_connected(&self.binding_type);
        let server = self.server.clone();
        let client = self.db.client(crate::db::connection::setup).ok_or(())?;
        // Two instances registering one device at once: the devices' locks make the second
        // upsert wait and then see the first one's row (a statement sees only what was committed
        // when it began), so the instance that loses the row is always told.
        let written = client.transaction().and_then(|mut tx| {
            tx.execute(crate::db::sql::LOCK_DEVICES, &[&ids])?;
            let rows = tx.query(&sql, &[&ids, &server])?;
            let (left, moved): (Vec<String>, Vec<String>) =
                rows.iter().filter_map(|r| r.get::<_, Option<String>>(2).map(|from| (from, r.get(0)))).unzip();
            if !left.is_empty() {
                tx.execute(crate::db::sql::TELL_MOVED, &[&left, &moved])?;
            }
            tx.commit()?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        });
        if written.is_ok() {
            self.db.worked();
        }
        written.map_err(|e| self.db.failed("record connected devices", &e))
    }

    fn write_disconnects(&mut self, downs: Vec<DeviceId>) {
        // Only registrations this instance recorded have a row of its own to clear.
        let (ids, ats): (Vec<String>, Vec<SystemTime>) =
            downs.iter().filter_map(|d| self.connected.remove(d).map(|at| (d.as_str().to_owned(), at))).unzip();
        // While the database is away, the next (re)connection's resync writes these.
        if !ids.is_empty() && self.ready() {
            let server = self.server.clone();
            let _ =
                self.execute("record disconnected devices", crate::db::sql::MARK_DISCONNECTED, &[&ids, &ats, &server]);
        }
    }

    /// Runs one statement on the current connection.
    fn execute(&mut self, what: &str, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> Result<(), ()> {
        let client = self.db.client(crate::db::connection::setup).ok_or(())?;
        match client.execute(sql, params) {
            Ok(_) => {
                self.db.worked();
                Ok(())
            }
            Err(e) => {
                self.db.failed(what, &e);
                Err(())
            }
        }
    }

    /// Whether the database can take writes; on a new connection, learns the table's shape and
    /// repairs this instance's rows first.
    fn ready(&mut self) -> bool {
        let fresh = !self.db.is_up();
        let Some(client) = self.db.client(crate::db::connection::setup) else { return false };
        if fresh || self.binding_type.is_empty() {
            match client.query_one(crate::db::sql::BINDING_TYPE, &[]) {
                Ok(row) => self.binding_type = row.get(0),
                Err(e) => {
                    self.db.failed("read the bindings table's type column", &e);
                    return false;
                }
            }
            self.resync();
        }
        self.db.is_up()
    }

    /// Makes this instance's rows agree with what it knows is connected, and only its own.
    fn resync(&mut self) {
        let (ids, ats): (Vec<String>, Vec<SystemTime>) =
            self.connected.iter().map(|(d, at)| (d.as_str().to_owned(), *at)).unzip();
        let server = self.server.clone();
        let _ = self.execute("repair stale bindings", crate::db::sql::CLEAR_STALE, &[&ids, &server]);
        if !ids.is_empty() {
            let _ = self.execute("restore current bindings", crate::db::sql::RESTORE_CURRENT, &[&ids, &ats, &server]);
        }
    }
}

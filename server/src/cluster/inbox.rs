//! Receiving actuations that other instances forwarded to this one.
//!
//! This thread's connection holds the instance's advisory lock (its proof of life for the
//! others, see `db/sql.rs`) and LISTENs on the instance's channel. A NOTIFY only wakes it: the
//! actuations themselves wait in `dashboard."iotWsForwarded"`, so nothing is lost while this
//! instance is restarting or its connection is down; it takes them (a DELETE ... RETURNING,
//! in queue order) when it wakes, and at least every second. Taking and delivering are not one
//! transaction: an actuation taken just before this process dies is lost with the device's
//! connection, never delivered twice.
//!
//! The same channel carries "moved:<device>": the device registered with another instance, so
//! a connection of it still open here is stale (half-open, most likely) and is closed as
//! superseded, and anything held here for it is sent after it.
//!
//! A starting instance that finds its address's lock held waits for it, up to
//! `--instance-lock-wait`: after a crash or a power cut the dead instance's
//! session holds it until PostgreSQL notices the silence (30 s, see `db/sql.rs`), and the restarted
//! instance is the same one under the same address.
//!
//! It also looks after queues that nobody will take: actuations for an instance that died are
//! moved to wherever their device is bound now, and dropped (and counted) once they are older
//! than the hold time.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use iot_ws_core::{Body, DeviceId};
use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;

use crate::config::ConfigError;
use crate::db::connection::{Database, Reconnecting};
use crate::ops::metrics::Metrics;

/// Rows taken from the queue at once: with bodies of up to 64 KiB, a few MiB in memory.
const TAKE_AT_ONCE: i64 = 64;
/// How often queues are checked without a NOTIFY, and stranded actuations looked after.
const POLL: Duration = Duration::from_secs(1);

/// What other instances tell this one.
pub enum Inbound {
    /// An actuation forwarded here.
    Actuation { device: DeviceId, body: Body, hops: u8 },
    /// The device registered with another instance since it registered here. `attaches_seen`:
    /// the hub's count of attached registrations when the move was noticed (after the other
    /// instance's write, before checking it). A registration here numbered above it was sent
    /// to the bindings after the other one: it is the newer, and stays.
    Moved { device: DeviceId, attaches_seen: u64 },
}

/// Connects, takes the instance's lock and starts the thread. The lock still held by another
/// session after `lock_wait_secs` is a configuration error (another live instance with the
/// same external address); an unreachable database is not (the thread keeps trying).
pub fn start(
    config: Database,
    server: String,
    hold_secs: u64,
    lock_wait_secs: u64,
    metrics: std::sync::Arc<Metrics>,
    attaches: &std::sync::Arc<AtomicU64>,
) -> Result<Receiver<Inbound>, ConfigError> {
    let mut db = Reconnecting::new(config.clone(), "inbox", &metrics);
    if let Ok(mut client) = config.connect() {
        let give_up = Instant::now() + Duration::from_secs(lock_wait_secs);
        let mut waiting = false;
        loop {
            match claim(&mut client, &server) {
                Ok(true) => {
                    check_fits(&mut client, &server)?;
                    db = db.with_client(client);
                    break;
                }
                Ok(false) if Instant::now() < give_up => {
                    if !waiting {
                        log::warn!(
                            "database (inbox): external address {server:?} is taken; waiting up to {lock_wait_secs} s for it"
                        );
                        waiting = true;
                    }
                    std::thread::sleep(POLL);
                }
                Ok(false) => return Err(another_instance(&server)),
                Err(e) => {
                    log::warn!("database (inbox): {}", crate::db::connection::error_text(&e));
                    break;
                }
            }
        }
    }
    // Bounded: the thread waits for the hub rather than piling actuations up in memory.
    let (tx, rx) = async_channel::bounded(TAKE_AT_ONCE as usize);
    let attaches = attaches.clone();
    let thread = Thread { db, server, hold_secs, metrics, attaches, reported_taken: false };
    std::thread::Builder::new()
        .name("inbox-db".into())
        .spawn(move || thread.run(tx))
        .map_err(|e| ConfigError(format!("cannot start the inbox thread: {e}")))?;
    Ok(rx)
}

fn another_instance(server: &str) -> ConfigError {
    ConfigError(format!(
        "another instance is running with external address {server:?} on this database; give each instance its own --external-address"
    ))
}

/// An external address longer than the table's `server` column (the platform's holds 20
/// characters) would make every registration fail: refused before serving.
fn check_fits(client: &mut Client, server: &str) -> Result<(), ConfigError> {
    let row = client.query_one(crate::db::sql::SERVER_COLUMN_LENGTH, &[]);
    let limit = row.ok().and_then(|row| row.get::<_, Option<i32>>(0));
    match limit {
        Some(limit) if server.chars().count() > limit as usize => Err(ConfigError(format!(
            "--external-address {server:?} is longer than the {limit} characters the bindings table's server column holds"
        ))),
        _ => Ok(()),
    }
}

/// A taken row as an actuation; `None` when it holds what no actuation can (a body that is not
/// a JSON object, text that is not UTF-8 in a database whose encoding lets it in): anyone may
/// write to the queue, and one such row is dropped on its own rather than failing the take
/// (the rows are already deleted) or the thread.
fn actuation(row: &postgres::Row) -> Option<Inbound> {
    let device: String = row.try_get(1).ok()?;
    let body = Body::from_json_object(row.try_get(2).ok()?)?;
    let hops: i16 = row.try_get(3).ok()?;
    // A count no instance wrote is as far as an actuation may go.
    let hops = u8::try_from(hops).unwrap_or(u8::MAX);
    Some(Inbound::Actuation { device: DeviceId(device.into()), body, hops })
}

/// Prepares a new connection: the lock (false when another process holds it) and LISTEN.
fn claim(client: &mut Client, server: &str) -> Result<bool, postgres::Error> {
    crate::db::connection::setup(client)?;
    if !client.query_one(crate::db::sql::LOCK_INSTANCE, &[&server])?.get::<_, bool>(0) {
        return Ok(false);
    }
    let channel: String = client.query_one(crate::db::sql::INBOX_CHANNEL, &[&server])?.get(0);
    client.batch_execute(&crate::db::sql::listen(&channel))?;
    Ok(true)
}

struct Thread {
    db: Reconnecting,
    server: String,
    hold_secs: u64,
    metrics: std::sync::Arc<Metrics>,
    attaches: std::sync::Arc<AtomicU64>,
    reported_taken: bool,
}

impl Thread {
    fn run(mut self, hub: Sender<Inbound>) {
        let mut next_sweep = Instant::now();
        loop {
            if !self.connected() {
                let pause = if self.reported_taken { POLL } else { Duration::from_millis(100) };
                std::thread::sleep(self.db.retry_in().max(pause));
                continue;
            }
            if self.take(&hub).is_err() {
                return;
            }
            if Instant::now() >= next_sweep {
                self.sweep();
                next_sweep = Instant::now() + POLL;
            }
            let moved = self.wait_for_notify();
            // Read once the notices are in and before they are checked (see `Inbound::Moved`).
            let attaches_seen = self.attaches.load(SeqCst);
            if !moved.is_empty() && self.tell_moved(moved, attaches_seen, &hub).is_err() {
                return;
            }
        }
    }

    /// Whether the connection is up with the lock held, (re)connecting if due.
    fn connected(&mut self) -> bool {
        let server = self.server.clone();
        let mut lock_taken = false;
        let up = self
            .db
            .client(|c| {
                lock_taken = !claim(c, &server)?;
                Ok(())
            })
            .is_some();
        if lock_taken {
            // Another process took the address while this one's connection was down: its
            // queue is that process's now. Say so once and keep trying.
            let why = format!("database (inbox): {}", another_instance(&self.server).0);
            if !self.reported_taken {
                log::warn!("{why}");
                self.reported_taken = true;
            }
            self.db.down(why);
            self.db.drop_client();
            return false;
        }
        self.reported_taken = false;
        up
    }

    /// Hands every queued actuation to the hub, oldest first. Err: the hub is gone.
    fn take(&mut self, hub: &Sender<Inbound>) -> Result<(), ()> {
        loop {
            let Some(client) = self.db.current() else { return Ok(()) };
            let mut rows = match client.query(crate::db::sql::TAKE_FORWARDED, &[&self.server, &TAKE_AT_ONCE]) {
                Ok(rows) => {
                    // At least every second (POLL): this thread's probe.
                    self.db.worked();
                    rows
                }
                Err(e) => {
                    self.db.failed("take forwarded actuations", &e);
                    return Ok(());
                }
            };
            rows.sort_by_key(|row| row.get::<_, i64>(0));
            let full = rows.len() as i64 == TAKE_AT_ONCE;
            let mut unreadable = 0;
            for row in rows {
                let Some(inbound) = actuation(&row) else {
                    unreadable += 1;
                    continue;
                };
                Metrics::inc(&self.metrics.actuations_received);
                hub.send_blocking(inbound).map_err(|_| ())?;
            }
            if unreadable > 0 {
                self.metrics.actuations_lost_in_transit.fetch_add(unreadable, std::sync::atomic::Ordering::Relaxed);
                log::error!("forwarding: dropped {unreadable} queued actuations that are not a JSON object in UTF-8");
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Moves actuations stranded on dead instances to their devices' new instances, and drops
    /// those older than the hold time.
    fn sweep(&mut self) {
        let Some(client) = self.db.current() else { return };
        if let Err(e) = client.batch_execute(crate::db::sql::RESCUE_FORWARDED) {
            self.db.failed("move stranded actuations", &e);
            return;
        }
        let Some(client) = self.db.current() else { return };
        match client.execute(crate::db::sql::DROP_STRANDED, &[&(self.hold_secs as f64)]) {
            Ok(0) => {}
            Ok(n) => {
                self.metrics.actuations_lost_in_transit.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                log::warn!("forwarding: dropped {n} actuations queued for an instance that is gone");
            }
            Err(e) => self.db.failed("drop stranded actuations", &e),
        }
    }

    /// Sleeps until a NOTIFY arrives or the poll interval passes, and returns the devices said
    /// to have moved. Actuation wake-ups are not counted: one take serves them all.
    fn wait_for_notify(&mut self) -> Vec<String> {
        let Some(client) = self.db.current() else { return Vec::new() };
        let mut moved = Vec::new();
        let result = {
            let mut notifications = client.notifications();
            let mut note = |n: postgres::Notification| {
                if let Some(device) = n.payload().strip_prefix("moved:") {
                    moved.push(device.to_owned());
                }
            };
            let first = notifications.timeout_iter(POLL).next();
            first.map(|n| n.map(&mut note)).and_then(|_| {
                let mut rest = notifications.iter();
                while let Some(n) = rest.next()? {
                    note(n);
                }
                Ok(())
            })
        };
        if let Err(e) = result {
            self.db.failed("wait for forwarded actuations", &e);
        }
        moved
    }

    /// Passes the moves on to the hub, once the bindings confirm them: the device may have come
    /// back here since. Err: the hub is gone.
    fn tell_moved(&mut self, moved: Vec<String>, attaches_seen: u64, hub: &Sender<Inbound>) -> Result<(), ()> {
        let Some(client) = self.db.current() else { return Ok(()) };
        match client.query(crate::db::sql::MOVED_AWAY, &[&moved, &self.server]) {
            Ok(rows) => {
                for row in rows {
                    let device = DeviceId(row.get::<_, &str>(0).into());
                    hub.send_blocking(Inbound::Moved { device, attaches_seen }).map_err(|_| ())?;
                }
            }
            Err(e) => self.db.failed("check moved devices", &e),
        }
        Ok(())
    }
}

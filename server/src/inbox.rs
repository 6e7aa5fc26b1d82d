//! Receiving actuations that other instances forwarded to this one.
//!
//! This thread's connection holds the instance's advisory lock (its proof of life for the
//! others, see `schema.rs`) and LISTENs on the instance's channel. A NOTIFY only wakes it: the
//! actuations themselves wait in `dashboard."iotWsForwarded"`, so nothing is lost while this
//! instance is restarting or its connection is down; it takes them (a DELETE ... RETURNING,
//! in queue order) when it wakes, and at least every second. Taking and delivering are not one
//! transaction: an actuation taken just before this process dies is lost with the device's
//! connection, never delivered twice.
//!
//! It also looks after queues that nobody will take: actuations for an instance that died are
//! moved to wherever their device is bound now, and dropped (and counted) once they are older
//! than the hold time.

use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use iot_ws_core::{Body, DeviceId};
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};

use crate::config::ConfigError;
use crate::metrics::Metrics;
use crate::pg_conn::Reconnecting;

const TAKE_AT_ONCE: i64 = 1_000;
/// How often queues are checked without a NOTIFY, and stranded actuations looked after.
const POLL: Duration = Duration::from_secs(1);

/// An actuation forwarded here by another instance.
pub struct Inbound {
    pub device: DeviceId,
    pub body: Body,
    pub hops: i16,
}

/// Connects, takes the instance's lock and starts the thread. Another live instance with the
/// same external address is a configuration error; an unreachable database is not (the
/// thread keeps trying).
pub fn start(
    config: postgres::Config,
    server: String,
    hold_secs: u64,
    metrics: std::sync::Arc<Metrics>,
) -> Result<Receiver<Inbound>, ConfigError> {
    let mut db = Reconnecting::new(config.clone(), "inbox");
    if let Ok(mut client) = config.connect(NoTls) {
        match claim(&mut client, &server) {
            Ok(true) => db = db.with_client(client),
            Ok(false) => return Err(another_instance(&server)),
            Err(e) => eprintln!("database (inbox): {}", crate::pg_conn::error_text(&e)),
        }
    }
    let (tx, rx) = async_channel::unbounded();
    let thread = Thread { db, server, hold_secs, metrics, reported_taken: false };
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

/// Prepares a new connection: the lock (false when another process holds it) and LISTEN.
fn claim(client: &mut Client, server: &str) -> Result<bool, postgres::Error> {
    crate::pg::setup(client)?;
    if !client.query_one(crate::schema::LOCK_INSTANCE, &[&server])?.get::<_, bool>(0) {
        return Ok(false);
    }
    let channel: String = client.query_one(crate::schema::INBOX_CHANNEL, &[&server])?.get(0);
    client.batch_execute(&format!("LISTEN {channel}"))?;
    Ok(true)
}

struct Thread {
    db: Reconnecting,
    server: String,
    hold_secs: u64,
    metrics: std::sync::Arc<Metrics>,
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
            self.wait_for_notify();
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
            if !self.reported_taken {
                eprintln!("database (inbox): {}", another_instance(&self.server).0);
                self.reported_taken = true;
            }
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
            let mut rows = match client.query(crate::schema::TAKE_FORWARDED, &[&self.server, &TAKE_AT_ONCE]) {
                Ok(rows) => rows,
                Err(e) => {
                    self.db.failed("take forwarded actuations", &e);
                    return Ok(());
                }
            };
            rows.sort_by_key(|row| row.get::<_, i64>(0));
            let full = rows.len() as i64 == TAKE_AT_ONCE;
            for row in rows {
                let Some(body) = Body::from_json_object(row.get(2)) else { continue };
                let inbound = Inbound { device: DeviceId(row.get(1)), body, hops: row.get(3) };
                Metrics::inc(&self.metrics.actuations_received);
                hub.try_send(inbound).map_err(|_| ())?;
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
        if let Err(e) = client.batch_execute(crate::schema::RESCUE_FORWARDED) {
            self.db.failed("move stranded actuations", &e);
            return;
        }
        let Some(client) = self.db.current() else { return };
        match client.execute(crate::schema::DROP_STRANDED, &[&(self.hold_secs as f64)]) {
            Ok(0) => {}
            Ok(n) => {
                self.metrics.actuations_lost_in_transit.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                eprintln!("forwarding: dropped {n} actuations queued for an instance that is gone");
            }
            Err(e) => self.db.failed("drop stranded actuations", &e),
        }
    }

    /// Sleeps until a NOTIFY arrives or the poll interval passes; swallows the wake-ups that
    /// came meanwhile, since one take serves them all.
    fn wait_for_notify(&mut self) {
        let Some(client) = self.db.current() else { return };
        let result = {
            let mut notifications = client.notifications();
            let woke = notifications.timeout_iter(POLL).next();
            woke.and_then(|_| notifications.iter().count())
        };
        if let Err(e) = result {
            self.db.failed("wait for forwarded actuations", &e);
        }
    }
}

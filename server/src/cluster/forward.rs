//! Sending actuations to the instance their device is connected to.
//!
//! When a device is not connected here, the hub hands its actuation to this thread, which reads
//! the device's binding. If the binding is true and names another instance that is alive (it
//! holds its advisory lock, see `db/sql.rs`), the actuation is written to that instance's queue
//! in `dashboard."iotWsForwarded"` and the instance is woken with a NOTIFY on its channel, in
//! one transaction; otherwise it goes back to the hub, which holds it or reports the device not
//! connected. Lookups are answered in the order they came, so the hub can keep each device's
//! actuations (and each sender's acks for a device) in order.
//!
//! Each actuation is forwarded or not on its own: one row the database refuses (a type, a
//! constraint, a limit, a trigger) never fails the others of its batch. The batch is written in
//! one statement; when that fails because of what a row holds, the rows are written again one by
//! one, each behind a savepoint, and only the refused ones go back to the hub.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_channel::{Receiver, Sender};
use iot_ws_core::router::Parcel;
use postgres::Client;

use crate::config::ConfigError;
use crate::db::connection::{Database, Reconnecting, PROBE};
use crate::ops::metrics::Metrics;

/// Most lookups waiting for the database; beyond it actuations are routed as if no other
/// instance existed, rather than queueing without bound.
const QUEUE_LIMIT: usize = 20_000;
/// Most bytes (bodies and device ids) waiting for the database: the count alone would let
/// 20,000 bodies of 64 KiB wait, 1.3 GB.
const QUEUE_BYTES: usize = 4 << 20;
const MAX_BATCH: usize = 500;
/// An actuation is forwarded at most this many times: a device that keeps moving does not
/// make its actuations bounce between instances for ever.
pub const MAX_HOPS: u8 = 2;

/// What a lookup holds, as counted against [`QUEUE_BYTES`].
fn size<A>(lookup: &Parcel<A>) -> usize {
    lookup.body.as_str().len() + lookup.device.as_str().len()
}

/// The answer to a lookup: forwarded to that instance, or `None` for the hub to handle. `A` is
/// where the actuation's ack goes: carried, never looked at.
pub struct Verdict<A> {
    pub lookup: Parcel<A>,
    pub forwarded_to: Option<String>,
}

/// The hub's handle on the forwarding thread.
pub struct Forwarder<A> {
    lookups: Queue<A>,
    verdicts: Receiver<Verdict<A>>,
}

impl<A: Send + 'static> Forwarder<A> {
    pub fn start(config: Database, server: String, metrics: &Metrics) -> Result<Forwarder<A>, ConfigError> {
        let (lookups, taken) = queue(QUEUE_LIMIT, QUEUE_BYTES);
        let (verdicts_tx, verdicts) = async_channel::unbounded();
        let thread = Thread { db: Reconnecting::new(config, "forwarding", metrics), server };
        std::thread::Builder::new()
            .name("forward-db".into())
            .spawn(move || thread.run(taken, verdicts_tx))
            .map_err(|e| ConfigError(format!("cannot start the forwarding thread: {e}")))?;
        Ok(Forwarder { lookups, verdicts })
    }

    /// Queues a lookup; gives it back when the queue is full (in count or in bytes).
    pub fn lookup(&self, lookup: Parcel<A>) -> Result<(), Parcel<A>> {
        self.lookups.push(lookup)
    }

    /// The verdicts, in the order of the lookups.
    pub fn verdicts(&self) -> &Receiver<Verdict<A>> {
        &self.verdicts
    }
}

/// The hub's end of the lookup queue, bounded in count and in bytes.
struct Queue<A> {
    lookups: Sender<Parcel<A>>,
    /// Bytes of the lookups sent and not yet taken, shared with [`Taken`].
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The thread's end of the lookup queue.
struct Taken<A> {
    lookups: Receiver<Parcel<A>>,
    bytes: Arc<AtomicUsize>,
}

fn queue<A>(max_count: usize, max_bytes: usize) -> (Queue<A>, Taken<A>) {
    let (tx, rx) = async_channel::bounded(max_count);
    let bytes = Arc::new(AtomicUsize::new(0));
    (Queue { lookups: tx, bytes: bytes.clone(), max_bytes }, Taken { lookups: rx, bytes })
}

impl<A> Queue<A> {
    /// Queues a lookup; gives it back when the queue is full.
    fn push(&self, lookup: Parcel<A>) -> Result<(), Parcel<A>> {
        let size = size(&lookup);
        // Counted before it is sent, so that the thread never takes off bytes not yet added.
        let waiting = self.bytes.fetch_add(size, Ordering::Relaxed);
        // One lookup larger than the whole bound still goes when nothing else waits.
        if waiting > 0 && waiting + size > self.max_bytes {
            self.bytes.fetch_sub(size, Ordering::Relaxed);
            return Err(lookup);
        }
        self.lookups.try_send(lookup).map_err(|e| {
            self.bytes.fetch_sub(size, Ordering::Relaxed);
            e.into_inner()
        })
    }
}

impl<A> Taken<A> {
    /// The next lookup, waiting up to `wait` for one (`Some(None)` if none came); `None` once
    /// the hub is gone.
    fn recv(&self, wait: std::time::Duration) -> Option<Option<Parcel<A>>> {
        let timeout = async {
            smol::Timer::after(wait).await;
            Ok(None)
        };
        let lookup = smol::block_on(futures_lite::future::or(async { self.lookups.recv().await.map(Some) }, timeout));
        lookup.ok().map(|l| l.map(|l| self.took(l)))
    }

    /// The next lookup if one waits.
    fn try_recv(&self) -> Option<Parcel<A>> {
        self.lookups.try_recv().ok().map(|l| self.took(l))
    }

    fn took(&self, lookup: Parcel<A>) -> Parcel<A> {
        self.bytes.fetch_sub(size(&lookup), Ordering::Relaxed);
        lookup
    }
}

/// Forwarded actuations as the columns of `ENQUEUE_FORWARDED`.
#[derive(Default)]
struct Rows<'a> {
    servers: Vec<&'a str>,
    ids: Vec<&'a str>,
    bodies: Vec<&'a str>,
    hops: Vec<i16>,
}

impl<'a> Rows<'a> {
    fn push<A>(&mut self, lookup: &'a Parcel<A>, server: &'a str) {
        self.servers.push(server);
        self.ids.push(lookup.device.as_str());
        self.bodies.push(lookup.body.as_str());
        self.hops.push(i16::from(lookup.hops) + 1);
    }

    /// The `n`th row alone.
    fn one(&self, n: usize) -> Rows<'a> {
        Rows {
            servers: vec![self.servers[n]],
            ids: vec![self.ids[n]],
            bodies: vec![self.bodies[n]],
            hops: vec![self.hops[n]],
        }
    }
}

struct Thread {
    db: Reconnecting,
    server: String,
}

impl Thread {
    fn run<A>(mut self, lookups: Taken<A>, verdicts: Sender<Verdict<A>>) {
        // At start and when idle: the forwarding write with no rows, so the database's state is
        // known and stays current.
        let _ = self.write(&Rows::default());
        while let Some(first) = lookups.recv(PROBE) {
            let Some(first) = first else {
                let _ = self.write(&Rows::default());
                continue;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match lookups.try_recv() {
                    Some(lookup) => batch.push(lookup),
                    None => break,
                }
            }
            // With the database away nothing can be forwarded: the hub decides locally.
            let targets = self.forward(&batch).unwrap_or_else(|()| vec![None; batch.len()]);
            for (lookup, forwarded_to) in batch.into_iter().zip(targets) {
                if verdicts.try_send(Verdict { lookup, forwarded_to }).is_err() {
                    return;
                }
            }
        }
    }

    /// Forwards what can be forwarded; returns each lookup's target, in order.
    fn forward<A>(&mut self, batch: &[Parcel<A>]) -> Result<Vec<Option<String>>, ()> {
        let mut targets = self.targets(batch)?;
        let chosen: Vec<usize> = (0..batch.len()).filter(|&n| targets[n].is_some()).collect();
        if chosen.is_empty() {
            return Ok(targets);
        }
        let mut rows = Rows::default();
        for &n in &chosen {
            rows.push(&batch[n], targets[n].as_deref().unwrap_or_default());
        }
        if self.write(&rows)? {
            return Ok(targets);
        }
        let refused = self.write_each(&rows)?;
        if let Some((first, e)) = refused.first() {
            // The values themselves may be anyone's: neither body nor id is logged.
            log::error!(
                "forwarding: the database refused {} of {} actuations, not forwarded (first: SQLSTATE {}, device id of {} bytes)",
                refused.len(),
                rows.ids.len(),
                e.code().map_or("?", |c| c.code()),
                rows.ids[*first].len()
            );
        }
        for (n, _) in refused {
            targets[chosen[n]] = None;
        }
        Ok(targets)
    }

    /// Writes all the rows ([`write_all`]); false if PostgreSQL refused what a row holds. Err:
    /// nothing was written, the database is unwell.
    fn write(&mut self, rows: &Rows<'_>) -> Result<bool, ()> {
        let client = self.db.client(crate::db::connection::setup).ok_or(())?;
        match write_all(client, rows) {
            Ok(()) => {
                self.db.worked();
                Ok(true)
            }
            Err(e) if crate::db::connection::about_the_data(&e) => Ok(false),
            Err(e) => {
                self.db.failed("forward actuations", &e);
                Err(())
            }
        }
    }

    /// Where each lookup's device is connected, if that is another live instance and the
    /// actuation may hop again.
    fn targets<A>(&mut self, batch: &[Parcel<A>]) -> Result<Vec<Option<String>>, ()> {
        let client = self.db.client(crate::db::connection::setup).ok_or(())?;
        // An id PostgreSQL text cannot hold (U+0000) would fail the whole query: no row can
        // bind it, so it is left out and its actuations stay here.
        let mut devices: Vec<&str> = batch.iter().map(|l| l.device.as_str()).filter(|d| !d.contains('\0')).collect();
        devices.sort_unstable();
        devices.dedup();
        let rows = match client.query(crate::db::sql::LOOKUP_BINDINGS, &[&devices]) {
            Ok(rows) => {
                self.db.worked();
                rows
            }
            Err(e) => {
                self.db.failed("look bindings up", &e);
                return Err(());
            }
        };
        let live: HashMap<String, String> = rows
            .iter()
            .filter(|row| row.get::<_, Option<bool>>(2) == Some(true))
            .map(|row| (row.get(0), row.get(1)))
            .filter(|(_, server): &(String, String)| *server != self.server)
            .collect();
        Ok(batch.iter().map(|l| live.get(l.device.as_str()).filter(|_| l.hops < MAX_HOPS).cloned()).collect())
    }

    /// Writes the rows one by one, each behind a savepoint, in one transaction; returns the
    /// refused ones (their place in `rows`, and why). Err: nothing was written.
    fn write_each(&mut self, rows: &Rows<'_>) -> Result<Vec<(usize, postgres::Error)>, ()> {
        let client = self.db.current().ok_or(())?;
        match write_each(client, rows) {
            Ok(refused) => Ok(refused),
            Err(e) => {
                self.db.failed("forward actuations", &e);
                Err(())
            }
        }
    }
}

/// Queues all the rows and wakes their instances, in one transaction.
fn write_all(client: &mut Client, rows: &Rows<'_>) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute(crate::db::sql::ENQUEUE_FORWARDED, &[&rows.servers, &rows.ids, &rows.bodies, &rows.hops])?;
    tx.execute(crate::db::sql::WAKE_INSTANCES, &[&rows.servers])?;
    tx.commit()
}

/// Queues each row on its own, so that a refused one leaves the others in, and wakes the
/// instances of those written. One transaction: a lost connection writes none of them.
fn write_each(client: &mut Client, rows: &Rows<'_>) -> Result<Vec<(usize, postgres::Error)>, postgres::Error> {
    let mut tx = client.transaction()?;
    let enqueue = tx.prepare(crate::db::sql::ENQUEUE_FORWARDED)?;
    let mut refused = Vec::new();
    let mut woken = Vec::new();
    for n in 0..rows.ids.len() {
        let one = rows.one(n);
        let mut row = tx.savepoint("row")?;
        match row.execute(&enqueue, &[&one.servers, &one.ids, &one.bodies, &one.hops]) {
            Ok(_) => {
                row.commit()?;
                woken.push(rows.servers[n]);
            }
            Err(e) if e.as_db_error().is_some() => {
                row.rollback()?;
                refused.push((n, e));
            }
            Err(e) => return Err(e),
        }
    }
    if !woken.is_empty() {
        tx.execute(crate::db::sql::WAKE_INSTANCES, &[&woken])?;
    }
    tx.commit()?;
    Ok(refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iot_ws_core::{Body, DeviceId};

    fn lookup(device: &str, body_bytes: usize) -> Parcel<()> {
        // {"x":"aaa…"}: 8 bytes around the padding.
        let body = format!(r#"{{"x":"{}"}}"#, "a".repeat(body_bytes - 8));
        Parcel::new(DeviceId(device.into()), Body::from_json_object(&body).unwrap(), None)
    }

    #[test]
    fn a_lookup_counts_its_body_and_device_id() {
        assert_eq!(size(&lookup("dev", 100)), 103);
    }

    #[test]
    fn the_queue_gives_a_lookup_back_once_the_bytes_waiting_would_pass_the_bound() {
        let (q, taken) = queue(100, 1_000);
        for n in 0..3 {
            assert!(q.push(lookup(&format!("d{n}"), 298)).is_ok(), "lookup {n} of 300 bytes");
        }
        let refused = q.push(lookup("d3", 298)).expect_err("a fourth passes 1,000 bytes");
        assert_eq!(refused.device.as_str(), "d3", "the same lookup comes back");
        assert_eq!(q.bytes.load(Ordering::Relaxed), 900, "a refusal leaves the count as it was");
        // Smaller ones still fit in what is left.
        assert!(q.push(lookup("e", 99)).is_ok());
        assert!(q.push(lookup("f", 10)).is_err(), "the bound is reached");
        assert_eq!(taken.try_recv().map(|l| l.device.0), Some("d0".into()));
        assert_eq!(q.bytes.load(Ordering::Relaxed), 700, "taking frees its bytes");
        assert!(q.push(lookup("d3", 298)).is_ok(), "room again");
        let mut rest = Vec::new();
        while let Some(l) = taken.try_recv() {
            rest.push(l.device.as_str().to_owned());
        }
        assert_eq!(rest, ["d1", "d2", "e", "d3"], "taken in the order queued");
        assert_eq!(q.bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_queue_still_bounds_the_count_and_a_refusal_by_count_frees_its_bytes() {
        let (q, taken) = queue(2, 1_000_000);
        assert!(q.push(lookup("a", 10)).is_ok());
        assert!(q.push(lookup("b", 10)).is_ok());
        assert!(q.push(lookup("c", 10)).is_err(), "a third is one too many");
        assert_eq!(q.bytes.load(Ordering::Relaxed), 22);
        drop(taken);
        assert!(q.push(lookup("d", 10)).is_err(), "the thread is gone");
        assert_eq!(q.bytes.load(Ordering::Relaxed), 22);
    }

    #[test]
    fn a_lookup_larger_than_the_bound_goes_only_when_nothing_else_waits() {
        let (q, taken) = queue(10, 100);
        assert!(q.push(lookup("big", 500)).is_ok(), "alone it goes");
        assert!(q.push(lookup("small", 10)).is_err(), "behind it nothing more");
        assert!(taken.try_recv().is_some());
        assert!(q.push(lookup("small", 10)).is_ok());
        assert!(q.push(lookup("big", 500)).is_err(), "not behind another");
    }

    #[test]
    fn the_default_bound_is_four_mib_of_sixty_four_kib_bodies() {
        let (q, _taken) = queue(QUEUE_LIMIT, QUEUE_BYTES);
        let fits = (0..QUEUE_LIMIT).take_while(|n| q.push(lookup(&format!("{n:04}"), 65_532)).is_ok()).count();
        assert_eq!(fits, 64, "4 MiB / (64 KiB - 4 + 4 bytes of id)");
        assert!(q.bytes.load(Ordering::Relaxed) <= QUEUE_BYTES);
    }
}

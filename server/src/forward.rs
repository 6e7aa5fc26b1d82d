//! Sending actuations to the instance their device is connected to.
//!
//! When a device is not connected here, the hub hands its actuation to this thread, which reads
//! the device's binding. If the binding is true and names another instance that is alive (it
//! holds its advisory lock, see `schema.rs`), the actuation is written to that instance's queue
//! in `dashboard."iotWsForwarded"` and the instance is woken with a NOTIFY on its channel, in
//! one transaction; otherwise it goes back to the hub, which holds it or reports the device not
//! connected. Lookups are answered in the order they came, so the hub can keep each device's
//! actuations (and each sender's acks for a device) in order.

use std::collections::HashMap;

use async_channel::{Receiver, Sender};
use iot_ws_core::{Body, DeviceId};

use crate::config::ConfigError;
use crate::mailbox::MailSender;
use crate::pg_conn::Reconnecting;

/// Most lookups waiting for the database; beyond it actuations are routed as if no other
/// instance existed, rather than queueing without bound.
const QUEUE_LIMIT: usize = 20_000;
const MAX_BATCH: usize = 500;
/// An actuation is forwarded at most this many times: a device that keeps moving does not
/// make its actuations bounce between instances for ever.
pub const MAX_HOPS: i16 = 2;

/// An actuation whose device is not connected here.
pub struct Lookup {
    pub device: DeviceId,
    pub body: Body,
    /// How many times it has been forwarded already.
    pub hops: i16,
    /// Where its ack goes, when its sender asked for one.
    pub ack_to: Option<MailSender>,
}

/// The answer to a [`Lookup`]: forwarded to that instance, or `None` for the hub to handle.
pub struct Verdict {
    pub lookup: Lookup,
    pub forwarded_to: Option<String>,
}

/// The hub's handle on the forwarding thread.
pub struct Forwarder {
    lookups: Sender<Lookup>,
    verdicts: Receiver<Verdict>,
}

impl Forwarder {
    pub fn start(config: postgres::Config, server: String) -> Result<Forwarder, ConfigError> {
        let (lookups, lookups_rx) = async_channel::bounded(QUEUE_LIMIT);
        let (verdicts_tx, verdicts) = async_channel::unbounded();
        let thread = Thread { db: Reconnecting::new(config, "forwarding"), server };
        std::thread::Builder::new()
            .name("forward-db".into())
            .spawn(move || thread.run(lookups_rx, verdicts_tx))
            .map_err(|e| ConfigError(format!("cannot start the forwarding thread: {e}")))?;
        Ok(Forwarder { lookups, verdicts })
    }

    /// Queues a lookup; gives it back when the queue is full.
    pub fn lookup(&self, lookup: Lookup) -> Result<(), Lookup> {
        self.lookups.try_send(lookup).map_err(|e| e.into_inner())
    }

    /// The verdicts, in the order of the lookups.
    pub fn verdicts(&self) -> &Receiver<Verdict> {
        &self.verdicts
    }
}

struct Thread {
    db: Reconnecting,
    server: String,
}

impl Thread {
    fn run(mut self, lookups: Receiver<Lookup>, verdicts: Sender<Verdict>) {
        while let Ok(first) = smol::block_on(lookups.recv()) {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match lookups.try_recv() {
                    Ok(lookup) => batch.push(lookup),
                    Err(_) => break,
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
    fn forward(&mut self, batch: &[Lookup]) -> Result<Vec<Option<String>>, ()> {
        let client = self.db.client(crate::pg::setup).ok_or(())?;
        let mut devices: Vec<&str> = batch.iter().map(|l| l.device.as_str()).collect();
        devices.sort_unstable();
        devices.dedup();
        let rows = match client.query(crate::schema::LOOKUP_BINDINGS, &[&devices]) {
            Ok(rows) => rows,
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
        let targets: Vec<Option<String>> =
            batch.iter().map(|l| live.get(l.device.as_str()).filter(|_| l.hops < MAX_HOPS).cloned()).collect();
        let chosen: Vec<(&Lookup, &String)> =
            batch.iter().zip(&targets).filter_map(|(l, t)| t.as_ref().map(|t| (l, t))).collect();
        if chosen.is_empty() {
            return Ok(targets);
        }
        let servers: Vec<&str> = chosen.iter().map(|(_, t)| t.as_str()).collect();
        let ids: Vec<&str> = chosen.iter().map(|(l, _)| l.device.as_str()).collect();
        let bodies: Vec<&str> = chosen.iter().map(|(l, _)| l.body.as_str()).collect();
        let hops: Vec<i16> = chosen.iter().map(|(l, _)| l.hops + 1).collect();
        let client = self.db.client(crate::pg::setup).ok_or(())?;
        let written = client.transaction().and_then(|mut tx| {
            tx.execute(crate::schema::ENQUEUE_FORWARDED, &[&servers, &ids, &bodies, &hops])?;
            tx.execute(crate::schema::WAKE_INSTANCES, &[&servers])?;
            tx.commit()
        });
        match written {
            Ok(()) => Ok(targets),
            Err(e) => {
                self.db.failed("forward actuations", &e);
                Err(())
            }
        }
    }
}

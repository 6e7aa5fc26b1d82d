//! Several instances on one bindings table: actuations for a device connected to another
//! instance are forwarded there (`forward.rs`), and theirs arrive here (`inbox.rs`).
//!
//! Built beside the binding store, not inside it: the store only records bindings, and the hub
//! asks this only whether other instances can exist (there is a cluster) and where a device is.

pub mod forward;
pub mod inbox;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use async_channel::Receiver;

use crate::config::ConfigError;
use crate::db::connection::Database;
use crate::ops::metrics::Metrics;
use forward::Forwarder;
use inbox::Inbound;

/// Forwarding out and in. `A` is where an actuation's ack goes, carried through a lookup.
pub struct Cluster<A> {
    pub forwarder: Forwarder<A>,
    /// Actuations other instances forwarded here, and devices that moved to them.
    pub inbox: Receiver<Inbound>,
    /// Registrations the hub has attached so far: a move noticed when it stood at N is older
    /// than any registration here numbered above N (see [`Inbound::Moved`]).
    pub attaches: Arc<AtomicU64>,
}

impl<A: Send + 'static> Cluster<A> {
    /// Claims this instance's address on the database, waiting up to `lock_wait_secs` for a dead
    /// instance's session to go (another live instance with it is a configuration error), and
    /// starts both threads.
    pub fn start(
        db: &Database,
        server: &str,
        hold_secs: u64,
        lock_wait_secs: u64,
        metrics: &Arc<Metrics>,
    ) -> Result<Cluster<A>, ConfigError> {
        let attaches = Arc::new(AtomicU64::new(0));
        let inbox = inbox::start(db.clone(), server.to_owned(), hold_secs, lock_wait_secs, metrics.clone(), &attaches)?;
        Ok(Cluster { forwarder: Forwarder::start(db.clone(), server.to_owned(), metrics)?, inbox, attaches })
    }
}

//! The CPU a PostgreSQL cluster spends, read from /proc: the postmaster, every process it started
//! (backends, writers, autovacuum) and the backends that ended meanwhile (the postmaster's
//! reaped children), less the bench's own polling backend.
//!
//! Found through the bench's own connection (its backend's parent is the postmaster), so other
//! clusters on the machine are not counted. Needs the bench to see those processes' /proc.

use std::time::Duration;

use crate::proc::{children, cpu_time, parent};

pub struct Cluster {
    postmaster: u32,
    /// The bench's own backend: its polling is the bench's cost, not the server's.
    own_backend: u32,
}

/// A reading of the cluster's CPU.
#[derive(Clone, Copy, Debug)]
pub struct Reading {
    /// Everything but the bench's own backend.
    pub others: Duration,
    pub own_backend: Duration,
}

impl Cluster {
    pub fn of_backend(own_backend: u32) -> Result<Cluster, String> {
        let postmaster = parent(own_backend).ok_or_else(|| {
            format!("cannot read the database's processes in /proc (backend {own_backend}): is it on this machine?")
        })?;
        Ok(Cluster { postmaster, own_backend })
    }

    pub fn read(&self) -> Reading {
        let mut total = cpu_time(self.postmaster, true).unwrap_or_default();
        for child in children(self.postmaster) {
            total += cpu_time(child, false).unwrap_or_default();
        }
        let own_backend = cpu_time(self.own_backend, false).unwrap_or_default();
        Reading { others: total.saturating_sub(own_backend), own_backend }
    }
}

impl Reading {
    /// What was spent between `self` and `later`.
    pub fn until(&self, later: &Reading) -> Reading {
        Reading {
            others: later.others.saturating_sub(self.others),
            own_backend: later.own_backend.saturating_sub(self.own_backend),
        }
    }
}

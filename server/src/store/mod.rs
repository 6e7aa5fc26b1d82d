//! Where device bindings are recorded: PostgreSQL (the platform's table) or, by default, memory.
//!
//! Both are driven only by the hub task, so the order of a device's writes is the order of its
//! registrations and disconnections. The database is never touched from the event loop: the
//! PostgreSQL store is a thread of its own fed by a channel (see `store/pg.rs`).

mod pg;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use iot_ws_core::{DeviceId, StoreFailed};

use crate::config::ConfigError;
use crate::db::connection::Database;
use crate::ops::metrics::Metrics;
use pg::PgStore;

/// The binding store in use.
pub enum Store {
    Memory(MemoryStore),
    /// The platform's table, shared with other instances (see cluster.rs).
    Postgres {
        bindings: PgStore,
        shown: String,
    },
}

/// The answer to one `upsert_connected`, to be awaited by the registering connection.
pub type StoreReply = async_channel::Receiver<Result<(), StoreFailed>>;

impl Store {
    /// Bindings in the database, or in memory without one. `server` is this instance's
    /// external address, as its rows name it; `metrics` shows the database's state.
    pub fn start(db: Option<&Database>, server: &str, metrics: &Metrics) -> Result<Store, ConfigError> {
        let Some(db) = db else { return Ok(Store::Memory(MemoryStore::default())) };
        let bindings = PgStore::start(db.clone(), server.to_owned(), metrics)?;
        Ok(Store::Postgres { bindings, shown: db.describe() })
    }

    /// Records that `device` is connected to this instance. Returns at once; the result comes
    /// on the returned channel.
    pub fn upsert_connected(&self, device: DeviceId) -> StoreReply {
        let (tx, rx) = async_channel::bounded(1);
        match self {
            Store::Memory(m) => {
                m.set(device, true);
                let _ = tx.try_send(Ok(()));
            }
            Store::Postgres { bindings, .. } => bindings.upsert_connected(device, tx),
        }
        rx
    }

    /// Records that `device` is no longer connected here. Never blocks.
    pub fn mark_disconnected(&self, device: DeviceId) {
        match self {
            Store::Memory(m) => m.set(device, false),
            Store::Postgres { bindings, .. } => bindings.mark_disconnected(device),
        }
    }

    /// The device registered with another instance: its row is that instance's now.
    pub fn forget(&self, device: DeviceId) {
        if let Store::Postgres { bindings, .. } = self {
            bindings.forget(device);
        }
    }

    /// Waits until every write sent so far is done (or `limit` passes), for a graceful stop.
    pub async fn flush(&self, limit: Duration) {
        if let Store::Postgres { bindings, .. } = self {
            bindings.flush(limit).await;
        }
    }

    /// What `serve` says at startup.
    pub fn describe(&self) -> String {
        match self {
            Store::Memory(_) => "bindings: in-memory registry (no database configured)".into(),
            Store::Postgres { shown, .. } => format!("bindings: PostgreSQL {shown}"),
        }
    }
}

/// The embedded default: bindings live as long as the process.
#[derive(Default)]
pub struct MemoryStore {
    connected: Mutex<HashMap<DeviceId, bool>>,
}

impl MemoryStore {
    fn set(&self, device: DeviceId, connected: bool) {
        self.connected.lock().unwrap_or_else(|e| e.into_inner()).insert(device, connected);
    }
}

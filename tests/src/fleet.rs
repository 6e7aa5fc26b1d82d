//! Fleet scaffolding: several instances on one PostgreSQL, and many devices registered at once.
//!
//! - [`instances`], [`instances_on`]: N routable instances sharing one database;
//! - [`device_ids`], [`register_each`]: a handful of devices, one blocking client each;
//! - [`Fleet`]: thousands of devices with tokens of their own key, registered as async tasks,
//!   and [`run_bounded`] to drive such a run on a smol executor with a bound on the whole.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_lite::future;

use crate::async_client::{register_async, AsyncWs};
use crate::client::Client;
use crate::pg::Db;
use crate::server::{Server, ServerOpts};
use crate::tokens::Keys;

/// Registrations in flight at once: a fleet's handshakes must not overrun the listen backlog.
const CONNECT_BATCH: usize = 100;

/// `N` instances sharing `opts` (and so its database), started one after another, each on its
/// own loopback port which it stores as `server`: a dashboard reading a row can connect there.
pub fn instances<const N: usize>(opts: &ServerOpts) -> [Server; N] {
    std::array::from_fn(|_| Server::start_routable(opts.clone()))
}

/// `N` instances with the default options on `db`.
pub fn instances_on<const N: usize>(db: &Db) -> [Server; N] {
    instances(&ServerOpts::default().with_db(&db.url()))
}

/// `prefix-0`, `prefix-1`, ..., `n` of them.
pub fn device_ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Registers each of `ids` on `addr`, one after another, with the shared key's tokens (signed
/// on every core first: an unoptimised build signs slowly).
pub fn register_each(addr: SocketAddr, ids: &[String]) -> Vec<Client> {
    let tokens = Keys::shared().tokens_for(ids);
    ids.iter().zip(&tokens).map(|(id, token)| Client::registered(addr, id, token)).collect()
}

/// Many devices of one fresh key pair: their ids and tokens.
pub struct Fleet {
    keys: Keys,
    pub ids: Vec<String>,
    tokens: Vec<String>,
}

impl Fleet {
    /// `n` devices `prefix-<i>`, with tokens signed on every core by a fresh 1024-bit key: it
    /// keeps the signing of thousands of tokens short, and the key size is not under test where
    /// a fleet is.
    pub fn new(prefix: &str, n: usize) -> Fleet {
        let keys = Keys::generate(1024);
        let ids = device_ids(prefix, n);
        let tokens = keys.tokens_for(&ids);
        Fleet { keys, ids, tokens }
    }

    /// Server options that trust this fleet's key.
    pub fn opts(&self) -> ServerOpts {
        ServerOpts { public_key: self.keys.public_path(), ..ServerOpts::default() }
    }

    /// Registers every device on the instance `home(i)` names, a batch at a time, as tasks on
    /// `ex`; the connections in the order of `ids`.
    pub async fn register(&self, ex: &smol::Executor<'_>, home: impl Fn(usize) -> SocketAddr) -> Vec<AsyncWs> {
        let mut devices = Vec::with_capacity(self.ids.len());
        for batch in (0..self.ids.len()).collect::<Vec<_>>().chunks(CONNECT_BATCH) {
            let tasks: Vec<_> = batch
                .iter()
                .map(|&i| {
                    let (id, token, addr) = (self.ids[i].clone(), self.tokens[i].clone(), home(i));
                    ex.spawn(async move { register_async(addr, &id, &token).await })
                })
                .collect();
            for task in tasks {
                devices.push(task.await);
            }
        }
        devices
    }
}

/// Drives `run` to its end on `ex`, in this thread and `helpers` more (the executor's tasks are
/// spread over them); `None` if `limit` passed first, so that a stuck run fails instead of
/// hanging the test process.
pub fn run_bounded<T>(
    ex: &smol::Executor<'_>,
    helpers: usize,
    limit: Duration,
    run: impl Future<Output = T>,
) -> Option<T> {
    let (stop, stopped) = smol::channel::unbounded::<()>();
    std::thread::scope(|scope| {
        for _ in 0..helpers {
            let stopped = stopped.clone();
            scope.spawn(move || smol::block_on(ex.run(async move { while stopped.recv().await.is_ok() {} })));
        }
        let outcome = smol::block_on(ex.run(future::or(async { Some(run.await) }, async {
            smol::Timer::after(limit).await;
            None
        })));
        drop(stop);
        outcome
    })
}

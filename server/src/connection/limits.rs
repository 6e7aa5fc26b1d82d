//! Caps on client connections: how many are open, how many of them are pending, and how many
//! pending ones come from one address.
//!
//! A connection counts as open from its accept to its close, and as pending from its accept
//! until it registers a device or sends an accepted actuation (or ends). The caps are checked at
//! the accept: a connection refused costs the server an accept, a best-effort 503 and a close,
//! never a task or a buffer.
//!
//! Pending connections are anonymous: anyone can open them, and each may live up to the
//! register timeout. So that no host can keep real devices out by holding the slots:
//! - one address holds at most `--max-pending-per-address` pending connections;
//! - when the open or pending cap is full, a connection from an address with fewer pending
//!   connections than the address with the most is still admitted, and the oldest pending
//!   connection of that address is closed (evicted) to make room. A flood from many addresses
//!   thus shares the slots with everyone else instead of taking them all; a device (one pending
//!   connection, for a moment) always has fewer than the flood's addresses and gets in.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::poll_fn;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Why a connection was refused at its accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `--max-connections` open connections already, none of them a fairer pending one to evict.
    Limit,
    /// `--max-pending` pending connections already, none of them a fairer one to evict.
    Pending,
    /// `--max-pending-per-address` pending connections from this address already.
    PendingPerAddress,
}

/// The counts and their caps, shared by the accept loop, the connections and `/metrics`.
#[derive(Debug, Default)]
pub struct Limits {
    pub max_connections: usize,
    pub max_pending: usize,
    pub max_pending_per_address: usize,
    open: AtomicUsize,
    pending: AtomicUsize,
    table: Mutex<PendingTable>,
    pub refused_limit: AtomicU64,
    pub refused_pending: AtomicU64,
    pub refused_pending_per_address: AtomicU64,
    pub evicted: AtomicU64,
}

/// Pending connections by address, oldest first, and the addresses ordered by how many they
/// hold (so the one with the most is found without a scan, under a flood of accepts).
#[derive(Debug, Default)]
struct PendingTable {
    by_address: HashMap<IpAddr, VecDeque<Arc<Pending>>>,
    by_count: BTreeSet<(usize, IpAddr)>,
}

/// A pending connection, shared by its slot and the table: the slot's one allocation (every
/// pending connection keeps it, so it is small and single).
struct Pending {
    limits: Arc<Limits>,
    peer: IpAddr,
    /// Set when its slot is given to a fairer claim.
    evicted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

/// An open connection; counted until dropped.
#[derive(Debug)]
pub struct OpenSlot(Arc<Limits>);

/// A pending connection from an address; counted until dropped or evicted.
#[derive(Debug)]
pub struct PendingSlot(Arc<Pending>);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Limits {
    pub fn new(max_connections: usize, max_pending: usize, max_pending_per_address: usize) -> Arc<Limits> {
        Arc::new(Limits { max_connections, max_pending, max_pending_per_address, ..Limits::default() })
    }

    /// Admits a connection just accepted from `peer` as open and pending, or says why not (and
    /// counts it). May evict another address's oldest pending connection to make room.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<(OpenSlot, PendingSlot), Refused> {
        let peer = peer.to_canonical();
        // One thread accepts, so a check then an add cannot race with another admission.
        let mut table = lock(&self.table);
        let mine = table.count(&peer);
        let refused = if mine >= self.max_pending_per_address {
            Some(Refused::PendingPerAddress)
        } else if self.open.load(Relaxed) >= self.max_connections {
            Some(Refused::Limit)
        } else if self.pending.load(Relaxed) >= self.max_pending {
            Some(Refused::Pending)
        } else {
            None
        };
        if let Some(refused) = refused {
            let fairer = refused != Refused::PendingPerAddress && table.evict_for(mine);
            if !fairer {
                let counter = match refused {
                    Refused::Limit => &self.refused_limit,
                    Refused::Pending => &self.refused_pending,
                    Refused::PendingPerAddress => &self.refused_pending_per_address,
                };
                counter.fetch_add(1, Relaxed);
                return Err(refused);
            }
            // The evicted connection leaves the counts now; its task ends on its own soon.
            self.pending.fetch_sub(1, Relaxed);
            self.evicted.fetch_add(1, Relaxed);
        }
        let pending =
            Arc::new(Pending { limits: self.clone(), peer, evicted: AtomicBool::new(false), waker: Mutex::new(None) });
        table.add(pending.clone());
        self.open.fetch_add(1, Relaxed);
        self.pending.fetch_add(1, Relaxed);
        Ok((OpenSlot(self.clone()), PendingSlot(pending)))
    }

    pub fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Relaxed)
    }
}

impl PendingTable {
    fn count(&self, peer: &IpAddr) -> usize {
        self.by_address.get(peer).map_or(0, VecDeque::len)
    }

    /// `peer` held `from` pending connections (no entry when 0) and now holds `to`.
    fn set_count(&mut self, peer: IpAddr, from: usize, to: usize) {
        self.by_count.remove(&(from, peer));
        if to > 0 {
            self.by_count.insert((to, peer));
        }
    }

    fn add(&mut self, pending: Arc<Pending>) {
        let peer = pending.peer;
        let queue = self.by_address.entry(peer).or_default();
        queue.push_back(pending);
        let n = queue.len();
        self.set_count(peer, n - 1, n);
    }

    fn remove(&mut self, pending: &Arc<Pending>) {
        let peer = pending.peer;
        let Some(queue) = self.by_address.get_mut(&peer) else { return };
        let Some(at) = queue.iter().position(|p| Arc::ptr_eq(p, pending)) else { return };
        queue.remove(at);
        let n = queue.len();
        if n == 0 {
            self.by_address.remove(&peer);
        }
        self.set_count(peer, n + 1, n);
    }

    /// For a newcomer whose address holds `mine` pending connections: evicts the oldest pending
    /// connection of the address holding the most, if that is more than `mine + 1` (after the
    /// swap the heavier address still holds at least as many). `false`: nobody to evict fairly.
    fn evict_for(&mut self, mine: usize) -> bool {
        let Some(&(most, heaviest)) = self.by_count.last() else { return false };
        if most <= mine + 1 {
            return false;
        }
        let Some(victim) = self.by_address.get(&heaviest).and_then(|q| q.front()).cloned() else { return false };
        self.remove(&victim);
        victim.evicted.store(true, Relaxed);
        if let Some(waker) = lock(&victim.waker).take() {
            waker.wake();
        }
        true
    }
}

// By hand: `limits` leads back to the table, and from it to this entry.
impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("peer", &self.peer).field("evicted", &self.evicted).finish()
    }
}

impl PendingSlot {
    /// Completes when the slot was given to a fairer claim: the connection must close.
    pub async fn evicted(&self) {
        poll_fn(|cx| self.poll_evicted(cx)).await
    }

    /// [`evicted`](PendingSlot::evicted) as a poll: waiting keeps nothing in the caller's future.
    pub fn poll_evicted(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.evicted.load(Relaxed) {
            return Poll::Ready(());
        }
        *lock(&self.0.waker) = Some(cx.waker().clone());
        if self.0.evicted.load(Relaxed) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        // An evicted slot left the counts when it was evicted.
        // (The table's own reference goes with it: no cycle through `limits` outlives the slot.)
        let limits = &self.0.limits;
        if !self.0.evicted.load(Relaxed) {
            limits.pending.fetch_sub(1, Relaxed);
            lock(&limits.table).remove(&self.0);
        }
    }
}

/// The answer to a refused connection.
const UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 20\r\nRetry-After: 5\r\nConnection: close\r\n\r\nserver at capacity.\n";

/// Answers 503 if the socket takes it at once, and closes. Never waits (the socket is accepted
/// non-blocking): the point of refusing is to spend nothing on the connection.
pub fn refuse(mut stream: TcpStream) {
    let _ = stream.write(UNAVAILABLE);
    let _ = stream.shutdown(Shutdown::Write);
    // Whatever the client already sent: read, so that the close is a FIN after the 503 rather
    // than a reset that may discard it.
    let _ = stream.read(&mut [0u8; 1024]);
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod tests;

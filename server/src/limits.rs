//! Caps on client connections: how many are open, and how many of them are pending.
//!
//! A connection counts as open from its accept to its close, and as pending from its accept
//! until it registers a device or sends an accepted actuation (or ends). Both caps are checked
//! at the accept: a connection beyond either costs the server an accept, a best-effort 503 and
//! a close, never a task or a buffer.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// Why a connection was refused at its accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `--max-connections` open connections already.
    Limit,
    /// `--max-pending` pending connections already.
    Pending,
}

/// The counts and their caps, shared by the accept loop, the connections and `/metrics`.
#[derive(Debug, Default)]
pub struct Limits {
    pub max_connections: usize,
    pub max_pending: usize,
    open: AtomicUsize,
    pending: AtomicUsize,
    pub refused_limit: AtomicU64,
    pub refused_pending: AtomicU64,
}

/// An open connection; counted until dropped.
#[derive(Debug)]
pub struct OpenSlot(Arc<Limits>);

/// A pending connection; counted until dropped.
#[derive(Debug)]
pub struct PendingSlot(Arc<Limits>);

impl Limits {
    pub fn new(max_connections: usize, max_pending: usize) -> Arc<Limits> {
        Arc::new(Limits { max_connections, max_pending, ..Limits::default() })
    }

    /// Admits a just-accepted connection as open and pending, or says why not (and counts it).
    pub fn admit(self: &Arc<Self>) -> Result<(OpenSlot, PendingSlot), Refused> {
        // One thread accepts, so a check then an add cannot race with another admission.
        if self.open.load(Relaxed) >= self.max_connections {
            self.refused_limit.fetch_add(1, Relaxed);
            return Err(Refused::Limit);
        }
        if self.pending.load(Relaxed) >= self.max_pending {
            self.refused_pending.fetch_add(1, Relaxed);
            return Err(Refused::Pending);
        }
        self.open.fetch_add(1, Relaxed);
        self.pending.fetch_add(1, Relaxed);
        Ok((OpenSlot(self.clone()), PendingSlot(self.clone())))
    }

    pub fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Relaxed)
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Relaxed);
    }
}

/// The answer to a refused connection.
const UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 20\r\nRetry-After: 5\r\nConnection: close\r\n\r\nserver at capacity.\n";

/// Answers 503 if the socket takes it at once, and closes. Never waits: the point of refusing
/// is to spend nothing on the connection.
pub fn refuse(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(true);
    let _ = stream.write(UNAVAILABLE);
    let _ = stream.shutdown(Shutdown::Write);
    // Whatever the client already sent: read, so that the close is a FIN after the 503 rather
    // than a reset that may discard it.
    let _ = stream.read(&mut [0u8; 1024]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_each_cap_and_counts_refusals_by_reason() {
        let limits = Limits::new(3, 2);
        let a = limits.admit().unwrap();
        let b = limits.admit().unwrap();
        assert_eq!(limits.admit().unwrap_err(), Refused::Pending);
        // One stops being pending (it registered): room for another pending one.
        drop(a.1);
        let c = limits.admit().unwrap();
        assert_eq!((limits.open(), limits.pending()), (3, 2));
        assert_eq!(limits.admit().unwrap_err(), Refused::Limit);
        assert_eq!((limits.refused_limit.load(Relaxed), limits.refused_pending.load(Relaxed)), (1, 1));
        drop((a.0, b, c));
        assert_eq!((limits.open(), limits.pending()), (0, 0));
    }

    #[test]
    fn a_refused_client_reads_503() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        refuse(listener.accept().unwrap().0);
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nserver at capacity.\n"), "{answer}");
    }
}

//! The hub's request queue, bounded twice: by count (a channel) and by the bytes of the
//! actuations in it, since one request may carry a body as large as `--max-message-bytes`.
//!
//! A connection whose request does not fit waits, and so stops reading its peer, until the hub
//! has taken enough: the hub runs on the same thread and takes requests as fast as they come,
//! so the wait is a few turns of the executor.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use async_channel::{Receiver, RecvError, Sender};
use futures_lite::future;

/// What the queue weighs: the actuation bytes a request carries (0 for the others).
pub trait Weighed {
    fn bytes(&self) -> usize;
}

/// Requests waiting, at most.
const QUEUE_LEN: usize = 1_024;
/// Actuation bytes waiting, at most (one request larger than this still goes, alone).
pub const QUEUE_BYTES: usize = 8 << 20;

/// The connections' end.
pub struct HubSender<T> {
    tx: Sender<T>,
    bytes: Arc<AtomicUsize>,
}

/// The hub's end.
pub struct HubReceiver<T> {
    rx: Receiver<T>,
    bytes: Arc<AtomicUsize>,
}

pub fn hub_queue<T>() -> (HubSender<T>, HubReceiver<T>) {
    let (tx, rx) = async_channel::bounded(QUEUE_LEN);
    let bytes = Arc::new(AtomicUsize::new(0));
    (HubSender { tx, bytes: bytes.clone() }, HubReceiver { rx, bytes })
}

impl<T: Weighed> HubSender<T> {
    /// Queues `request`, waiting while the queue is full; `Err` once the hub is gone.
    pub async fn send(&self, request: T) -> Result<(), ()> {
        let size = request.bytes();
        while size > 0 && self.bytes.load(Relaxed) > 0 && self.bytes.load(Relaxed) + size > QUEUE_BYTES {
            future::yield_now().await;
        }
        self.bytes.fetch_add(size, Relaxed);
        self.tx.send(request).await.map_err(|e| {
            self.bytes.fetch_sub(e.into_inner().bytes(), Relaxed);
        })
    }

    /// Actuation bytes waiting for the hub.
    #[cfg(test)]
    pub fn queued_bytes(&self) -> usize {
        self.bytes.load(Relaxed)
    }
}

impl<T: Weighed> HubReceiver<T> {
    pub async fn recv(&self) -> Result<T, RecvError> {
        let request = self.rx.recv().await?;
        self.bytes.fetch_sub(request.bytes(), Relaxed);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request carrying this many bytes of actuation.
    struct Item(usize);

    impl Weighed for Item {
        fn bytes(&self) -> usize {
            self.0
        }
    }

    fn route(size: usize) -> Item {
        Item(size)
    }

    #[test]
    fn a_request_waits_while_the_actuation_bytes_would_pass_the_bound_and_goes_once_taken() {
        smol::block_on(async {
            let (tx, rx) = hub_queue();
            tx.send(route(QUEUE_BYTES - 100)).await.unwrap();
            let second = tx.send(route(200));
            futures_lite::pin!(second);
            // Polled a few times: it keeps waiting while the first is in the queue.
            for _ in 0..3 {
                assert!(future::poll_once(&mut second).await.is_none());
            }
            assert_eq!(tx.queued_bytes(), QUEUE_BYTES - 100);
            rx.recv().await.unwrap();
            assert_eq!(tx.queued_bytes(), 0);
            second.await.unwrap();
            assert_eq!(tx.queued_bytes(), 200);
        });
    }

    #[test]
    fn one_request_larger_than_the_bound_goes_alone() {
        smol::block_on(async {
            let (tx, rx) = hub_queue();
            tx.send(route(QUEUE_BYTES + 10)).await.unwrap();
            assert_eq!(tx.queued_bytes(), QUEUE_BYTES + 10);
            rx.recv().await.unwrap();
            assert_eq!(tx.queued_bytes(), 0);
        });
    }
}

//! A connection's mailbox: what the hub sends it (actuations, acks, "superseded").
//!
//! Every registered device has one for as long as it is connected, mostly idle, so it is kept
//! small: one allocation of about 80 bytes holding a queue that is empty most of the time.
//! async-channel's unbounded channel costs 768 bytes (cache-padded head and tail, three event
//! slots) and keeps a 31-slot block of about 1.8 KiB once it has carried a message. Here one
//! receiver and a few senders share a queue under a mutex; the hub and the connections run on
//! one thread, so the lock is never contended.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use crate::hub_task::Mail;

/// A queue this long that has drained gives its memory back.
const KEEP_CAPACITY: usize = 8;

#[derive(Default)]
struct Shared {
    queue: VecDeque<Mail>,
    /// The receiver, waiting for mail.
    waker: Option<Waker>,
    /// The receiver is gone: sending fails, so the hub knows the connection ended.
    closed: bool,
}

/// Sends to one connection.
#[derive(Clone)]
pub struct MailSender(Arc<Mutex<Shared>>);

/// The connection's end.
pub struct Mailbox(Arc<Mutex<Shared>>);

/// A new mailbox and a sender to it.
pub fn mailbox() -> (MailSender, Mailbox) {
    let shared = Arc::new(Mutex::new(Shared::default()));
    (MailSender(shared.clone()), Mailbox(shared))
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // Nothing panics while holding the lock; if something did, the queue is still consistent.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl MailSender {
    /// Queues `mail`; gives it back if the connection has ended.
    pub fn try_send(&self, mail: Mail) -> Result<(), Mail> {
        let mut shared = lock(&self.0);
        if shared.closed {
            return Err(mail);
        }
        shared.queue.push_back(mail);
        if let Some(waker) = shared.waker.take() {
            waker.wake();
        }
        Ok(())
    }

    /// Mail waiting to be read.
    pub fn len(&self) -> usize {
        lock(&self.0).queue.len()
    }
}

impl Mailbox {
    /// The next mail, waiting for it.
    pub async fn recv(&self) -> Mail {
        poll_fn(|cx| match self.try_recv() {
            Some(mail) => Poll::Ready(mail),
            None => {
                lock(&self.0).waker = Some(cx.waker().clone());
                // Mail may have come between the two locks.
                match self.try_recv() {
                    Some(mail) => Poll::Ready(mail),
                    None => Poll::Pending,
                }
            }
        })
        .await
    }

    /// The next mail, if there is one.
    pub fn try_recv(&self) -> Option<Mail> {
        let mut shared = lock(&self.0);
        let mail = shared.queue.pop_front();
        if shared.queue.is_empty() && shared.queue.capacity() > KEEP_CAPACITY {
            shared.queue = VecDeque::new();
        }
        mail
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.0).queue.is_empty()
    }

    /// Refuses further mail; what is queued can still be read.
    pub fn close(&self) {
        lock(&self.0).closed = true;
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let mut shared = lock(&self.0);
        shared.closed = true;
        shared.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iot_ws_core::DeviceId;

    fn superseded() -> Mail {
        Mail::Superseded
    }

    #[test]
    fn mail_arrives_in_order_and_wakes_the_receiver() {
        let (tx, rx) = mailbox();
        let waiting = std::thread::spawn(move || smol::block_on(async { (rx.recv().await, rx) }));
        std::thread::sleep(std::time::Duration::from_millis(20));
        let device = DeviceId("d".into());
        let outcome = iot_ws_core::RouteOutcome::Held;
        assert!(tx.try_send(Mail::Routed { device: device.clone(), outcome: outcome.clone() }).is_ok());
        assert!(tx.try_send(superseded()).is_ok());
        let (first, rx) = waiting.join().unwrap();
        assert!(matches!(first, Mail::Routed { device: d, .. } if d == device));
        assert!(matches!(rx.try_recv(), Some(Mail::Superseded)));
        assert!(rx.try_recv().is_none() && rx.is_empty() && tx.len() == 0);
    }

    #[test]
    fn sending_fails_once_the_connection_is_gone() {
        let (tx, rx) = mailbox();
        rx.close();
        assert!(tx.try_send(superseded()).is_err());
        let (tx, rx) = mailbox();
        assert!(tx.try_send(superseded()).is_ok());
        drop(rx);
        assert!(tx.try_send(superseded()).is_err());
    }

    #[test]
    fn a_drained_queue_gives_its_memory_back() {
        let (tx, rx) = mailbox();
        for _ in 0..100 {
            assert!(tx.try_send(superseded()).is_ok());
        }
        while rx.try_recv().is_some() {}
        assert_eq!(lock(&rx.0).queue.capacity(), 0);
    }
}

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
    /// Body bytes of the live actuations queued (see [`Mail::bytes`]): part of the
    /// connection's unsent output.
    bytes: usize,
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
        shared.bytes += mail.bytes();
        shared.queue.push_back(mail);
        if let Some(waker) = shared.waker.take() {
            waker.wake();
        }
        Ok(())
    }

    /// Mail waiting to be read.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        lock(&self.0).queue.len()
    }

    /// Body bytes of the live actuations waiting to be read (see [`Mail::bytes`]).
    pub fn queued_bytes(&self) -> usize {
        lock(&self.0).bytes
    }
}

/// What a waiting connection is woken for.
pub enum MailWake {
    Mail(Mail),
    /// The actuations waiting here passed the given bound: the connection has fallen behind.
    Overflow,
}

impl Mailbox {
    /// The next mail it may take, or word of an overflow, waiting for either. Actuations are
    /// taken only if `take_actuations` (the connection has room to write them); other mail
    /// (a supersede, acks) is taken ahead of them then.
    pub async fn recv(&self, take_actuations: bool, overflow_at: usize) -> MailWake {
        poll_fn(|cx| {
            let mut shared = lock(&self.0);
            if shared.bytes > overflow_at {
                return Poll::Ready(MailWake::Overflow);
            }
            match take(&mut shared, take_actuations) {
                Some(mail) => Poll::Ready(MailWake::Mail(mail)),
                None => {
                    shared.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// The next mail it may take, if there is one (see [`recv`](Mailbox::recv)).
    pub fn try_recv(&self, take_actuations: bool) -> Option<Mail> {
        take(&mut lock(&self.0), take_actuations)
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        lock(&self.0).queue.is_empty()
    }

    /// Body bytes of the live actuations waiting to be read (see [`Mail::bytes`]).
    pub fn bytes(&self) -> usize {
        lock(&self.0).bytes
    }

    /// Refuses further mail; what is queued can still be read.
    pub fn close(&self) {
        lock(&self.0).closed = true;
    }
}

fn take(shared: &mut Shared, take_actuations: bool) -> Option<Mail> {
    let at =
        if take_actuations { 0 } else { shared.queue.iter().position(|mail| !matches!(mail, Mail::Deliver { .. }))? };
    let mail = shared.queue.remove(at)?;
    shared.bytes -= mail.bytes();
    if shared.queue.is_empty() && shared.queue.capacity() > KEEP_CAPACITY {
        shared.queue = VecDeque::new();
    }
    Some(mail)
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let mut shared = lock(&self.0);
        shared.closed = true;
        shared.queue.clear();
        shared.bytes = 0;
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
        let waiting = std::thread::spawn(move || smol::block_on(async { (rx.recv(true, usize::MAX).await, rx) }));
        std::thread::sleep(std::time::Duration::from_millis(20));
        let device = DeviceId("d".into());
        let outcome = iot_ws_core::RouteOutcome::Held;
        assert!(tx.try_send(Mail::Routed { device: device.clone(), outcome: outcome.clone() }).is_ok());
        assert!(tx.try_send(superseded()).is_ok());
        let (first, rx) = waiting.join().unwrap();
        assert!(matches!(first, MailWake::Mail(Mail::Routed { device: d, .. }) if d == device));
        assert!(matches!(rx.try_recv(true), Some(Mail::Superseded)));
        assert!(rx.try_recv(true).is_none() && rx.is_empty() && tx.len() == 0);
    }

    fn deliver(from_hold: bool) -> Mail {
        let body = iot_ws_core::Body::from_json_object(r#"{"content":{"deviceId":"d"}}"#).unwrap();
        Mail::Deliver { device: DeviceId("d".into()), body, ack_to: None, from_hold }
    }

    #[test]
    fn live_actuation_bytes_are_counted_until_read_and_held_ones_not() {
        let (tx, rx) = mailbox();
        let size = deliver(false).bytes();
        assert!(size > 0 && deliver(true).bytes() == 0);
        for mail in [deliver(false), superseded(), deliver(true), deliver(false)] {
            assert!(tx.try_send(mail).is_ok());
        }
        assert_eq!((tx.queued_bytes(), rx.bytes()), (2 * size, 2 * size));
        rx.try_recv(true);
        assert_eq!(tx.queued_bytes(), size);
        drop(rx);
        assert_eq!(tx.queued_bytes(), 0);
    }

    #[test]
    fn without_room_for_actuations_other_mail_is_taken_ahead_of_them() {
        let (tx, rx) = mailbox();
        for mail in [deliver(false), deliver(true), superseded()] {
            assert!(tx.try_send(mail).is_ok());
        }
        assert!(matches!(rx.try_recv(false), Some(Mail::Superseded)));
        assert!(rx.try_recv(false).is_none());
        assert!(matches!(rx.try_recv(true), Some(Mail::Deliver { from_hold: false, .. })));
        assert!(matches!(rx.try_recv(true), Some(Mail::Deliver { from_hold: true, .. })));
    }

    #[test]
    fn a_waiting_connection_hears_of_an_overflow_even_when_it_takes_no_actuations() {
        let (tx, rx) = mailbox();
        let size = deliver(false).bytes();
        assert!(tx.try_send(deliver(false)).is_ok());
        let woken = smol::block_on(futures_lite::future::poll_once(rx.recv(false, size)));
        assert!(woken.is_none(), "at the bound, not past it");
        assert!(tx.try_send(deliver(false)).is_ok());
        let woken = smol::block_on(futures_lite::future::poll_once(rx.recv(false, size)));
        assert!(matches!(woken, Some(MailWake::Overflow)));
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
        while rx.try_recv(true).is_some() {}
        assert_eq!(lock(&rx.0).queue.capacity(), 0);
    }
}

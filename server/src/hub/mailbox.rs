//! A connection's mailbox: what the hub sends it (actuations, acks, "superseded"), generic over
//! what it carries ([`Letter`]).
//!
//! Every registered device has one for as long as it is connected, mostly idle, so it is kept
//! small: one allocation of about 80 bytes holding a queue that is empty most of the time.
//! async-channel's unbounded channel costs 768 bytes (cache-padded head and tail, three event
//! slots) and keeps a 31-slot block of about 1.8 KiB once it has carried a message. Here one
//! receiver and a few senders share a queue under a mutex; the hub and the connections run on
//! one thread, so the lock is never contended.

use std::collections::VecDeque;
#[cfg(test)]
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// What a mailbox carries.
pub trait Letter {
    /// What it adds to the connection's unsent output.
    fn bytes(&self) -> usize;
    /// Whether it waits until the connection has room to write it (an actuation), rather than
    /// being taken at once, ahead of those (a supersede, an ack).
    fn waits_for_room(&self) -> bool;
}

/// A queue this long that has drained gives its memory back.
const KEEP_CAPACITY: usize = 8;

struct Shared<M> {
    queue: VecDeque<M>,
    /// What the letters queued weigh (see [`Letter::bytes`]): part of the connection's unsent
    /// output.
    bytes: usize,
    /// The receiver, waiting for mail.
    waker: Option<Waker>,
    /// The receiver is gone: sending fails, so the hub knows the connection ended.
    closed: bool,
}

/// Sends to one connection.
pub struct MailSender<M>(Arc<Mutex<Shared<M>>>);

// Not derived: that would ask `M: Clone`.
impl<M> Clone for MailSender<M> {
    fn clone(&self) -> Self {
        MailSender(self.0.clone())
    }
}

/// The connection's end.
pub struct Mailbox<M>(Arc<Mutex<Shared<M>>>);

/// A new mailbox and a sender to it.
#[cfg(test)]
pub fn mailbox<M>() -> (MailSender<M>, Mailbox<M>) {
    let mailbox = Mailbox::default();
    (mailbox.sender(), mailbox)
}

fn lock<M>(shared: &Mutex<Shared<M>>) -> MutexGuard<'_, Shared<M>> {
    // Nothing panics while holding the lock; if something did, the queue is still consistent.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl<M: Letter> MailSender<M> {
    /// Queues `mail`; gives it back if the connection has ended.
    pub fn try_send(&self, mail: M) -> Result<(), M> {
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

    /// What the letters waiting to be read weigh (see [`Letter::bytes`]).
    pub fn queued_bytes(&self) -> usize {
        lock(&self.0).bytes
    }
}

/// What a waiting connection is woken for.
pub enum MailWake<M> {
    Mail(M),
    /// The actuations waiting here passed the given bound: the connection has fallen behind.
    Overflow,
}

impl<M> Default for Mailbox<M> {
    fn default() -> Mailbox<M> {
        let shared = Shared { queue: VecDeque::new(), bytes: 0, waker: None, closed: false };
        Mailbox(Arc::new(Mutex::new(shared)))
    }
}

impl<M> Mailbox<M> {
    /// Another sender to this mailbox.
    pub fn sender(&self) -> MailSender<M> {
        MailSender(self.0.clone())
    }
}

impl<M: Letter> Mailbox<M> {
    /// The next mail it may take, or word of an overflow, waiting for either. Actuations are
    /// taken only if `take_actuations` (the connection has room to write them); other mail
    /// (a supersede, acks) is taken ahead of them then.
    #[cfg(test)]
    pub async fn recv(&self, take_actuations: bool, overflow_at: usize) -> MailWake<M> {
        poll_fn(|cx| self.poll_recv(cx, take_actuations, overflow_at)).await
    }

    /// [`recv`](Mailbox::recv) as a poll: waiting keeps nothing in the caller's future.
    pub fn poll_recv(&self, cx: &mut Context<'_>, take_actuations: bool, overflow_at: usize) -> Poll<MailWake<M>> {
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
    }

    /// The next mail it may take, if there is one (see [`recv`](Mailbox::recv)).
    pub fn try_recv(&self, take_actuations: bool) -> Option<M> {
        take(&mut lock(&self.0), take_actuations)
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        lock(&self.0).queue.is_empty()
    }

    /// What the letters waiting to be read weigh (see [`Letter::bytes`]).
    pub fn bytes(&self) -> usize {
        lock(&self.0).bytes
    }

    /// Refuses further mail; what is queued can still be read.
    pub fn close(&self) {
        lock(&self.0).closed = true;
    }
}

fn take<M: Letter>(shared: &mut Shared<M>, take_actuations: bool) -> Option<M> {
    let at = if take_actuations { 0 } else { shared.queue.iter().position(|mail| !mail.waits_for_room())? };
    let mail = shared.queue.remove(at)?;
    shared.bytes -= mail.bytes();
    if shared.queue.is_empty() && shared.queue.capacity() > KEEP_CAPACITY {
        shared.queue = VecDeque::new();
    }
    Some(mail)
}

impl<M> Drop for Mailbox<M> {
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

    /// The shapes of mail the hub sends: an actuation weighs its bytes unless it was held; the
    /// others weigh nothing and never wait for room.
    #[derive(Debug, PartialEq)]
    enum Mail {
        Deliver { from_hold: bool },
        Routed(u32),
        Superseded,
    }

    const SIZE: usize = 27;

    impl Letter for Mail {
        fn bytes(&self) -> usize {
            match self {
                Mail::Deliver { from_hold: false } => SIZE,
                _ => 0,
            }
        }
        fn waits_for_room(&self) -> bool {
            matches!(self, Mail::Deliver { .. })
        }
    }

    fn superseded() -> Mail {
        Mail::Superseded
    }

    #[test]
    fn mail_arrives_in_order_and_wakes_the_receiver() {
        let (tx, rx) = mailbox();
        let waiting = std::thread::spawn(move || smol::block_on(async { (rx.recv(true, usize::MAX).await, rx) }));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(tx.try_send(Mail::Routed(7)).is_ok());
        assert!(tx.try_send(superseded()).is_ok());
        let (first, rx) = waiting.join().unwrap();
        assert!(matches!(first, MailWake::Mail(Mail::Routed(7))));
        assert!(matches!(rx.try_recv(true), Some(Mail::Superseded)));
        assert!(rx.try_recv(true).is_none() && rx.is_empty() && tx.len() == 0);
    }

    fn deliver(from_hold: bool) -> Mail {
        Mail::Deliver { from_hold }
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

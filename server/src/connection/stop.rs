//! The stop every connection must hear of: one flag, and the wakers of the connections asleep.
//!
//! Each connection checks the flag first on every wake (one atomic load), and leaves its
//! task's waker here once, when it first goes to sleep; the stop sets the flag and wakes them
//! all. Before, each connection waited on a channel closed at the stop: that kept a listener of
//! 64 bytes per idle connection, inserted and removed under a lock on every wake.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;

#[derive(Default)]
pub struct Stop {
    stopping: AtomicBool,
    sleepers: Mutex<Sleepers>,
}

/// A slab: a connection's key is its place in `wakers` (free places are reused).
#[derive(Default)]
struct Sleepers {
    wakers: Vec<Option<Waker>>,
    free: Vec<u32>,
}

impl Stop {
    /// Whether the server is stopping: once true, true for good.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(SeqCst)
    }

    /// Has `waker` woken at the stop. `key` is the connection's place, `None` before its first
    /// call; a later call with another waker replaces it. Returns whether the server is
    /// stopping, checked after the waker is in place, so that a stop cannot slip in between.
    pub fn wake_at_stop(&self, key: &mut Option<u32>, waker: &Waker) -> bool {
        let mut sleepers = self.lock();
        match *key {
            Some(k) => {
                let slot = &mut sleepers.wakers[k as usize];
                if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    *slot = Some(waker.clone());
                }
            }
            None => {
                let k = match sleepers.free.pop() {
                    Some(k) => {
                        sleepers.wakers[k as usize] = Some(waker.clone());
                        k
                    }
                    None => {
                        sleepers.wakers.push(Some(waker.clone()));
                        (sleepers.wakers.len() - 1) as u32
                    }
                };
                *key = Some(k);
            }
        }
        drop(sleepers);
        self.is_stopping()
    }

    /// The connection has ended: its place is free.
    pub fn forget(&self, key: Option<u32>) {
        let Some(k) = key else { return };
        let mut sleepers = self.lock();
        sleepers.wakers[k as usize] = None;
        sleepers.free.push(k);
        if sleepers.free.len() == sleepers.wakers.len() {
            // Nobody left: give the memory back.
            *sleepers = Sleepers::default();
        }
    }

    /// Stops: every connection, asleep or not, wakes and sees it.
    pub fn trigger(&self) {
        self.stopping.store(true, SeqCst);
        // Woken in place: the connections still hold their keys, and forget them as they end.
        for waker in self.lock().wakers.iter().flatten() {
            waker.wake_by_ref();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Sleepers> {
        // Nothing panics while holding it; the slab stays consistent if something did.
        self.sleepers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count::default());
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn the_stop_wakes_every_sleeper_once_and_is_seen_by_all() {
        let stop = Stop::default();
        let (a, wa) = waker();
        let (b, wb) = waker();
        let (mut ka, mut kb) = (None, None);
        assert!(!stop.wake_at_stop(&mut ka, &wa));
        assert!(!stop.wake_at_stop(&mut kb, &wb));
        assert_ne!(ka, kb);
        assert!(!stop.is_stopping());
        stop.trigger();
        assert!(stop.is_stopping());
        assert_eq!((a.0.load(SeqCst), b.0.load(SeqCst)), (1, 1));
        // Whoever sleeps after the stop hears of it at once.
        let (_, wc) = waker();
        assert!(stop.wake_at_stop(&mut None, &wc));
    }

    #[test]
    fn a_new_waker_replaces_the_old_and_an_ended_connection_is_not_woken() {
        let stop = Stop::default();
        let (old, w_old) = waker();
        let (new, w_new) = waker();
        let (gone, w_gone) = waker();
        let (mut key, mut gone_key) = (None, None);
        stop.wake_at_stop(&mut key, &w_old);
        stop.wake_at_stop(&mut key, &w_new);
        stop.wake_at_stop(&mut gone_key, &w_gone);
        stop.forget(gone_key);
        stop.trigger();
        assert_eq!((old.0.load(SeqCst), new.0.load(SeqCst), gone.0.load(SeqCst)), (0, 1, 0));
        // Connections end after the stop too.
        assert!(stop.wake_at_stop(&mut key, &w_new));
        stop.forget(key);
        assert_eq!(stop.lock().wakers.capacity(), 0);
    }

    #[test]
    fn places_are_reused_and_the_memory_given_back_when_all_are_gone() {
        let stop = Stop::default();
        let (_, w) = waker();
        let mut keys: Vec<Option<u32>> = vec![None; 3];
        for key in &mut keys {
            stop.wake_at_stop(key, &w);
        }
        stop.forget(keys[1]);
        let mut again = None;
        stop.wake_at_stop(&mut again, &w);
        assert_eq!(again, keys[1], "a free place is taken first");
        assert_eq!(stop.lock().wakers.len(), 3);
        for key in [keys[0], again, keys[2]] {
            stop.forget(key);
        }
        assert_eq!(stop.lock().wakers.capacity(), 0);
    }
}

//! Actuations kept for a device between two of its connections.
//!
//! Devices reconnect: after a network blip, a server restart, a superseding connection. An
//! actuation that arrives in that gap must not be lost, so for a while after a device's
//! connection ends (the hold time) its actuations are held, in order and up to a bound, and
//! handed over when it registers again. A device that does not come back in time is gone: its
//! held actuations are dropped and counted.
//!
//! Two bounds keep this from being a way to fill the server's memory: a count per device and a
//! byte total over all devices. An actuation beyond either is not held, and the caller says so
//! to its sender ("Device not connected").

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use crate::message::{Body, DeviceId};
use crate::time::Millis;

/// Per-device queues of held actuations, each with the deadline of its device's return.
#[derive(Clone, Debug)]
pub struct HeldActuations {
    hold_ms: u64,
    max_per_device: usize,
    max_bytes: usize,
    /// Body bytes held over all devices.
    bytes: usize,
    departed: BTreeMap<DeviceId, Departed>,
    /// Every departure's deadline, oldest first. The hold time is the same for all and time only
    /// goes forward, so this is a FIFO: the next deadline is at the front, found without a scan
    /// (the host asks before every request, with thousands of devices departed). An entry whose
    /// device came back, or left again later, is stale and skipped when it comes up.
    deadlines: VecDeque<(Millis, DeviceId)>,
}

/// Whether an actuation was held, and if not, why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Held, to be handed over when the device registers again.
    Held,
    /// The device did not leave recently (or the hold time is over): nothing to hold for.
    NotAway,
    /// The device's queue, or the byte total over all devices, is full.
    Full,
}

#[derive(Clone, Debug)]
struct Departed {
    until: Millis,
    bodies: VecDeque<Body>,
}

impl HeldActuations {
    /// Holds for `hold_ms` after a device leaves, at most `max_per_device` actuations each and
    /// `max_bytes` of bodies over all devices.
    pub fn new(hold_ms: u64, max_per_device: usize, max_bytes: usize) -> Self {
        HeldActuations {
            hold_ms,
            max_per_device,
            max_bytes,
            bytes: 0,
            departed: BTreeMap::new(),
            deadlines: VecDeque::new(),
        }
    }

    /// The device's connection ended at `now`: hold its actuations until `now + hold_ms`.
    pub fn departed(&mut self, now: Millis, device: DeviceId) {
        if self.hold_ms == 0 {
            return;
        }
        let until = now.plus(self.hold_ms);
        self.departed.entry(device.clone()).or_insert_with(|| Departed { until, bodies: VecDeque::new() }).until =
            until;
        self.deadlines.push_back((until, device));
    }

    /// Holds `body` behind the device's other held actuations if it left recently and there is
    /// room.
    pub fn hold(&mut self, now: Millis, device: &DeviceId, body: Body) -> Hold {
        self.insert(now, device, body, false)
    }

    /// Holds `body` ahead of the device's other held actuations: one its connection had taken
    /// but not written when it ended, so older than anything held since. Hand several back
    /// newest first, so that they end up in their order.
    pub fn hold_first(&mut self, now: Millis, device: &DeviceId, body: Body) -> Hold {
        self.insert(now, device, body, true)
    }

    fn insert(&mut self, now: Millis, device: &DeviceId, body: Body, first: bool) -> Hold {
        let Some(d) = self.departed.get_mut(device).filter(|d| d.until > now) else { return Hold::NotAway };
        let size = body.as_str().len();
        if d.bodies.len() >= self.max_per_device || self.bytes + size > self.max_bytes {
            return Hold::Full;
        }
        self.bytes += size;
        if first {
            d.bodies.push_front(body);
        } else {
            d.bodies.push_back(body);
        }
        Hold::Held
    }

    /// Whether the device left less than the hold time ago (as of its last departure) and has
    /// not registered again.
    pub fn is_away(&self, device: &DeviceId) -> bool {
        self.departed.contains_key(device)
    }

    /// The device registered again: its held actuations, oldest first.
    pub fn arrived(&mut self, device: &DeviceId) -> Vec<Body> {
        let Some(d) = self.departed.remove(device) else { return Vec::new() };
        self.bytes -= d.bytes();
        d.bodies.into()
    }

    /// Forgets devices whose hold time has passed; returns how many actuations were dropped.
    pub fn expire(&mut self, now: Millis) -> usize {
        let mut dropped = 0;
        while let Some((until, _)) = self.deadlines.front() {
            if *until > now {
                break;
            }
            let Some((until, device)) = self.deadlines.pop_front() else { break };
            // Stale unless the device is still away under this very deadline.
            if self.departed.get(&device).is_some_and(|d| d.until == until) {
                if let Some(d) = self.departed.remove(&device) {
                    self.bytes -= d.bytes();
                    dropped += d.bodies.len();
                }
            }
        }
        dropped
    }

    /// When [`expire`](HeldActuations::expire) next has something to do (possibly earlier:
    /// waking early is harmless).
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.deadlines.front().map(|(until, _)| *until)
    }

    /// How many actuations are held in all.
    pub fn len(&self) -> usize {
        self.departed.values().map(|d| d.bodies.len()).sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Body bytes held over all devices.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Departed {
    fn bytes(&self) -> usize {
        self.bodies.iter().map(|b| b.as_str().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> DeviceId {
        DeviceId("d".into())
    }

    fn body(n: u32) -> Body {
        Body::from_json_object(&alloc::format!(r#"{{"n":{n}}}"#)).unwrap()
    }

    #[test]
    fn actuations_for_a_departed_device_are_held_in_order() {
        let mut held = HeldActuations::new(30_000, 8, usize::MAX);
        held.departed(Millis(0), dev());
        assert_eq!(Hold::Held, held.hold(Millis(10), &dev(), body(1)));
        assert_eq!(Hold::Held, held.hold(Millis(20), &dev(), body(2)));
        assert_eq!((held.len(), held.is_empty()), (2, false));
        assert_eq!(held.arrived(&dev()), [body(1), body(2)]);
        assert!(held.arrived(&dev()).is_empty());
        assert_eq!((held.len(), held.is_empty()), (0, true));
    }

    #[test]
    fn a_device_never_seen_is_not_held_for() {
        let mut held = HeldActuations::new(30_000, 8, usize::MAX);
        assert_ne!(Hold::Held, held.hold(Millis(0), &dev(), body(1)));
    }

    #[test]
    fn away_from_departure_until_arrival_or_the_end_of_the_hold() {
        let mut held = HeldActuations::new(1_000, 8, usize::MAX);
        assert!(!held.is_away(&dev()), "never seen");
        held.departed(Millis(0), dev());
        assert!(held.is_away(&dev()));
        held.arrived(&dev());
        assert!(!held.is_away(&dev()), "back");
        held.departed(Millis(10), dev());
        held.expire(Millis(1_010));
        assert!(!held.is_away(&dev()), "hold over");
    }

    #[test]
    fn hold_ends_after_the_hold_time_and_counts_drops() {
        let mut held = HeldActuations::new(1_000, 8, usize::MAX);
        held.departed(Millis(0), dev());
        assert_eq!(Hold::Held, held.hold(Millis(999), &dev(), body(1)));
        assert_ne!(Hold::Held, held.hold(Millis(1_000), &dev(), body(2)));
        assert_eq!(held.poll_timeout(), Some(Millis(1_000)));
        assert_eq!(held.expire(Millis(1_000)), 1);
        assert!(held.is_empty() && held.poll_timeout().is_none());
    }

    #[test]
    fn a_device_that_left_again_is_held_until_its_latest_deadline() {
        let mut held = HeldActuations::new(1_000, 8, usize::MAX);
        held.departed(Millis(0), dev());
        assert!(held.arrived(&dev()).is_empty());
        held.departed(Millis(500), dev());
        assert_eq!(Hold::Held, held.hold(Millis(600), &dev(), body(1)));
        // The first departure's deadline comes up first and is stale.
        assert_eq!(held.poll_timeout(), Some(Millis(1_000)));
        assert_eq!(held.expire(Millis(1_000)), 0);
        assert_eq!(held.len(), 1);
        assert_eq!(held.poll_timeout(), Some(Millis(1_500)));
        assert_eq!(held.expire(Millis(1_500)), 1);
        assert!(held.poll_timeout().is_none());
    }

    #[test]
    fn queue_is_bounded_per_device() {
        let mut held = HeldActuations::new(1_000, 2, usize::MAX);
        held.departed(Millis(0), dev());
        assert_eq!(Hold::Held, held.hold(Millis(1), &dev(), body(1)));
        assert_eq!(Hold::Held, held.hold(Millis(1), &dev(), body(2)));
        assert_ne!(Hold::Held, held.hold(Millis(1), &dev(), body(3)));
        assert_eq!(held.len(), 2);
    }

    #[test]
    fn bytes_are_bounded_over_all_devices_and_given_back_when_released() {
        let other = DeviceId("e".into());
        let size = body(1).as_str().len();
        let mut held = HeldActuations::new(1_000, 8, 3 * size);
        held.departed(Millis(0), dev());
        held.departed(Millis(0), other.clone());
        assert_eq!(held.hold(Millis(1), &dev(), body(1)), Hold::Held);
        assert_eq!(held.hold(Millis(1), &other, body(2)), Hold::Held);
        assert_eq!(held.hold(Millis(1), &dev(), body(3)), Hold::Held);
        assert_eq!(held.hold(Millis(1), &other, body(4)), Hold::Full);
        assert_eq!(held.bytes(), 3 * size);
        assert_eq!(held.arrived(&dev()).len(), 2);
        assert_eq!(held.bytes(), size);
        assert_eq!(held.expire(Millis(1_000)), 1);
        assert_eq!(held.bytes(), 0);
    }

    #[test]
    fn taken_back_actuations_go_ahead_of_those_held_since() {
        let mut held = HeldActuations::new(1_000, 8, usize::MAX);
        held.departed(Millis(0), dev());
        assert_eq!(held.hold(Millis(1), &dev(), body(3)), Hold::Held);
        assert_eq!(held.hold_first(Millis(2), &dev(), body(2)), Hold::Held);
        assert_eq!(held.hold_first(Millis(2), &dev(), body(1)), Hold::Held);
        assert_eq!(held.arrived(&dev()), [body(1), body(2), body(3)]);
    }

    #[test]
    fn a_full_device_queue_refuses_and_a_device_not_away_is_told_apart() {
        let mut held = HeldActuations::new(1_000, 1, usize::MAX);
        assert_eq!(held.hold(Millis(0), &dev(), body(1)), Hold::NotAway);
        held.departed(Millis(0), dev());
        assert_eq!(held.hold(Millis(0), &dev(), body(1)), Hold::Held);
        assert_eq!(held.hold_first(Millis(0), &dev(), body(0)), Hold::Full);
        assert_eq!(held.hold(Millis(1_000), &dev(), body(2)), Hold::NotAway);
    }

    #[test]
    fn zero_hold_time_holds_nothing() {
        let mut held = HeldActuations::new(0, 8, usize::MAX);
        held.departed(Millis(0), dev());
        assert_ne!(Hold::Held, held.hold(Millis(0), &dev(), body(1)));
    }
}

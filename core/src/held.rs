//! Actuations kept for a device between two of its connections.
//!
//! Devices reconnect: after a network blip, a server restart, a superseding connection. An
//! actuation that arrives in that gap must not be lost, so for a while after a device's
//! connection ends (the hold time) its actuations are held, in order and up to a bound, and
//! handed over when it registers again. A device that does not come back in time is gone: its
//! held actuations are dropped and counted.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use crate::message::{Body, DeviceId};
use crate::time::Millis;

/// Per-device queues of held actuations, each with the deadline of its device's return.
#[derive(Clone, Debug)]
pub struct HeldActuations {
    hold_ms: u64,
    max_per_device: usize,
    departed: BTreeMap<DeviceId, Departed>,
    /// Every departure's deadline, oldest first. The hold time is the same for all and time only
    /// goes forward, so this is a FIFO: the next deadline is at the front, found without a scan
    /// (the host asks before every request, with thousands of devices departed). An entry whose
    /// device came back, or left again later, is stale and skipped when it comes up.
    deadlines: VecDeque<(Millis, DeviceId)>,
}

#[derive(Clone, Debug)]
struct Departed {
    until: Millis,
    bodies: VecDeque<Body>,
}

impl HeldActuations {
    /// Holds for `hold_ms` after a device leaves, at most `max_per_device` actuations each.
    pub fn new(hold_ms: u64, max_per_device: usize) -> Self {
        HeldActuations { hold_ms, max_per_device, departed: BTreeMap::new(), deadlines: VecDeque::new() }
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

    /// Holds `body` if its device left recently and its queue has room; `false` means the
    /// device is not connected and nothing was kept.
    pub fn hold(&mut self, now: Millis, device: &DeviceId, body: Body) -> bool {
        match self.departed.get_mut(device) {
            Some(d) if d.until > now && d.bodies.len() < self.max_per_device => {
                d.bodies.push_back(body);
                true
            }
            _ => false,
        }
    }

    /// The device registered again: its held actuations, oldest first.
    pub fn arrived(&mut self, device: &DeviceId) -> Vec<Body> {
        self.departed.remove(device).map(|d| d.bodies.into()).unwrap_or_default()
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
                dropped += self.departed.remove(&device).map_or(0, |d| d.bodies.len());
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
        let mut held = HeldActuations::new(30_000, 8);
        held.departed(Millis(0), dev());
        assert!(held.hold(Millis(10), &dev(), body(1)));
        assert!(held.hold(Millis(20), &dev(), body(2)));
        assert_eq!(held.arrived(&dev()), [body(1), body(2)]);
        assert!(held.arrived(&dev()).is_empty());
    }

    #[test]
    fn a_device_never_seen_is_not_held_for() {
        let mut held = HeldActuations::new(30_000, 8);
        assert!(!held.hold(Millis(0), &dev(), body(1)));
    }

    #[test]
    fn hold_ends_after_the_hold_time_and_counts_drops() {
        let mut held = HeldActuations::new(1_000, 8);
        held.departed(Millis(0), dev());
        assert!(held.hold(Millis(999), &dev(), body(1)));
        assert!(!held.hold(Millis(1_000), &dev(), body(2)));
        assert_eq!(held.poll_timeout(), Some(Millis(1_000)));
        assert_eq!(held.expire(Millis(1_000)), 1);
        assert!(held.is_empty() && held.poll_timeout().is_none());
    }

    #[test]
    fn a_device_that_left_again_is_held_until_its_latest_deadline() {
        let mut held = HeldActuations::new(1_000, 8);
        held.departed(Millis(0), dev());
        assert!(held.arrived(&dev()).is_empty());
        held.departed(Millis(500), dev());
        assert!(held.hold(Millis(600), &dev(), body(1)));
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
        let mut held = HeldActuations::new(1_000, 2);
        held.departed(Millis(0), dev());
        assert!(held.hold(Millis(1), &dev(), body(1)));
        assert!(held.hold(Millis(1), &dev(), body(2)));
        assert!(!held.hold(Millis(1), &dev(), body(3)));
        assert_eq!(held.len(), 2);
    }

    #[test]
    fn zero_hold_time_holds_nothing() {
        let mut held = HeldActuations::new(0, 8);
        held.departed(Millis(0), dev());
        assert!(!held.hold(Millis(0), &dev(), body(1)));
    }
}
